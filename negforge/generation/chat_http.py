"""The OpenAI chat-completions protocol over one aiohttp session: the online transport of
every OpenAI-compatible backend (OpenAI, ``--api-base`` servers, ``--llm local``).

One request is ``POST {base}/chat/completions`` with the prepared JSON body
(:func:`negforge.generation.client.chat_request_body`) and ``Authorization: Bearer <key>``;
the answer body is read as JSON (:func:`~negforge.generation.client.completion_from_body`).
The OpenAI SDK's ``AsyncOpenAI.post`` does the same at ~1.3 ms of client CPU per request
on the 2-core development machine (httpx's connection pool scan, request options, async
library sniffing); this path takes ~0.3 ms. At 64 requests in flight against a server
answering after 100 ms the SDK's cost made the client, not the server, the limit
(``benchmarks/bench_generate.py``, docs/generation.md#speed).

Like the SDK it reads ``OPENAI_BASE_URL`` when no ``--api-base`` is given, sends
``OpenAI-Organization`` / ``OpenAI-Project`` from ``OPENAI_ORG_ID`` / ``OPENAI_PROJECT_ID``,
and honours the proxy environment variables (:func:`proxy_for`). Failures are classified by
the same rule as the SDK's exceptions (:func:`negforge.generation.errors.classify_status`);
retries are :mod:`negforge.generation.retry`'s, never the transport's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pydantic_core

from negforge.generation.client import (
    BackendSpec,
    Completion,
    SamplingParams,
    chat_request_body,
    completion_from_body,
    openai_api_key,
)
from negforge.generation.errors import (
    RetryableCallError,
    classify_status,
    parse_retry_after,
    redact_url,
)

if TYPE_CHECKING:
    import aiohttp

#: The OpenAI API's base URL when neither ``--api-base`` nor ``OPENAI_BASE_URL`` is set.
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def base_url_for(spec: BackendSpec) -> str:
    """The base URL requests go to (``--api-base``, else ``OPENAI_BASE_URL``, else OpenAI)."""
    base = spec.api_base or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    return base.rstrip("/")


def request_headers(spec: BackendSpec) -> dict[str, str]:
    """The headers of every request: the key, JSON, and the optional organisation/project."""
    from negforge import __version__

    headers = {
        "Authorization": f"Bearer {openai_api_key(spec)}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"negforge/{__version__}",
    }
    for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"),
                             ("OpenAI-Project", "OPENAI_PROJECT_ID")):  # fmt: skip
        if os.environ.get(variable):
            headers[header] = os.environ[variable]
    return headers


def encode_body(body: Mapping[str, Any]) -> bytes:
    """A request body as sent: compact UTF-8 JSON (pydantic-core's encoder, a third of
    ``json.dumps``'s time on a prompt-sized body)."""
    return pydantic_core.to_json(body)


def basic_auth_of(url: str) -> str | None:
    """The ``Basic`` authorization made of ``url``'s user-info (None when it has none): the
    OpenAI SDK's httpx client authenticates such a URL the same way."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return f"Basic {base64.b64encode(pair.encode()).decode('ascii')}"


def proxy_for(url: str) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, minus
    ``NO_PROXY``) names for ``url``, or None: looked up once per client, not per request as
    aiohttp's ``trust_env`` does (~0.4 ms of CPU each time)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def error_detail(body: bytes) -> str:
    """The message of an error answer (``{"error": {"message": ...}}``), else its text."""
    text = body.decode("utf-8", errors="replace")
    try:
        document = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)"
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    if isinstance(error, str) and error:
        return error[:500]
    return text.strip()[:500]


class HttpChatClient:
    """Chat completions over one shared ``aiohttp.ClientSession`` (created on first use,
    inside the running event loop), no retries of its own."""

    def __init__(self, spec: BackendSpec, *, timeout_s: float) -> None:
        url = f"{base_url_for(spec)}/chat/completions"
        self._url = redact_url(url) or url  # the user-info travels as Basic auth instead
        self._headers = request_headers(spec)  # checks the key now
        basic = basic_auth_of(url)
        if basic is not None:  # user-info in the URL: Basic auth in place of the key, as httpx
            self._headers["Authorization"] = basic
        self._model = spec.wire_model
        self._timeout_s = timeout_s
        self._proxy = proxy_for(self._url)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        self._session = aiohttp.ClientSession(
            headers=self._headers,
            # no pool limit: --concurrency (and the rate limiter) bound the requests in flight
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            trust_env=False,  # the environment's proxy is self._proxy (proxy_for)
            raise_for_status=False,
        )
        return self._session

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        response_format: Mapping[str, Any] | None,
        params: SamplingParams,
    ) -> Completion:
        import aiohttp

        session = self._session or self._open()
        data = encode_body(chat_request_body(self._model, messages, response_format, params))
        try:
            async with session.post(self._url, data=data, proxy=self._proxy) as response:
                content = await response.read()
                status, reason, headers = response.status, response.reason, response.headers
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise RetryableCallError(
                f"timed out after {self._timeout_s:g} s (--timeout-s)"
            ) from exc
        except aiohttp.ClientConnectionError as exc:  # refused, reset, closed mid-answer
            raise RetryableCallError(f"Connection failed ({type(exc).__name__}): "
                                     f"{exc or 'no answer'}") from exc  # fmt: skip
        except aiohttp.ClientError as exc:  # a broken answer (payload, headers)
            raise RetryableCallError(f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise classify_status(status, reason or f"HTTP {status}", error_detail(content),
                                  parse_retry_after(headers))  # fmt: skip
        try:
            return completion_from_body(json.loads(content))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RetryableCallError(f"malformed response body: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

