"""Backend call errors: retryable (429, 5xx, timeouts, dropped connections) or fatal.

Messages and answers are scrubbed of credentials before they reach any exception, log,
cache, journal or artifact (:func:`scrub_secrets`): the values of the key environment
variables and of URL user-info (also base64-, URL- and hex-encoded), key-shaped strings and
the user-info of any URL.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import json
import os
import re
import time
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from negforge.errors import NegforgeError

#: Environment variables whose values are secrets (scrubbed from every message).
KEY_ENV_VARS = (
    "OPENAI_API_KEY",
    "AZURE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "ANTHROPIC_API_KEY",
    "GROQ_API_KEY",
    "TOGETHERAI_API_KEY",
    "MISTRAL_API_KEY",
    "OPENROUTER_API_KEY",
    "HF_TOKEN",
    "HUGGINGFACE_API_KEY",
)
_KEY_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys
    re.compile(r"AIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)(key=)[A-Za-z0-9._\-]{8,}"),
)


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
#: Secrets shorter than this are not scrubbed in encoded form (too many false matches).
_MIN_ENCODED = 8
#: Secrets met at run time (the user-info of ``--api-base``), scrubbed like the keys.
_EXTRA_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Scrub ``value`` (and its encodings) from every message and answer from now on."""
    if value and len(value) >= 4:
        _EXTRA_SECRETS.add(value)


def redact_url(url: str | None) -> str | None:
    """``url`` without user-info (``http://user:key@host/v1`` -> ``http://host/v1``); the
    user-info is registered as a secret. Store and print only redacted URLs."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_USERINFO.sub(r"\1", url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    register_secret(password)
    register_secret(user if len(user) >= _MIN_ENCODED else None)
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _base64_fragments(secret: bytes) -> set[str]:
    """Pieces of base64 text that hold ``secret`` at any byte alignment in a longer blob
    (``Basic base64(user:key)``, a key inside base64-encoded JSON...)."""
    fragments = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            text = encode(b"\0" * offset + secret).decode("ascii")
            start = (offset * 8 + 5) // 6  # characters that hold bits of the padding
            end = (offset + len(secret)) * 8 // 6  # characters made of the secret only
            if end - start >= _MIN_ENCODED:
                fragments.add(text[start:end])
    return fragments


@functools.lru_cache(maxsize=8)
def _variants(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form a secret is scrubbed in, longest first."""
    found: set[str] = set()
    for secret in secrets:
        found.add(secret)
        if len(secret) < _MIN_ENCODED:
            continue
        raw = secret.encode("utf-8")
        found.update({quote(secret, safe=""), quote_plus(secret), quote(secret)})
        hexed = binascii.hexlify(raw).decode("ascii")
        found.update({hexed, hexed.upper()})
        found.update(_base64_fragments(raw))
    return tuple(sorted(found, key=len, reverse=True))


def _current_secrets() -> tuple[str, ...]:
    values = {os.environ.get(name) or "" for name in KEY_ENV_VARS} | _EXTRA_SECRETS
    return tuple(sorted(value for value in values if len(value) >= 4))


def scrub_secrets(text: str) -> str:
    """``text`` with credentials masked: the keys of the environment and of URLs in any
    common encoding (raw, URL-encoded, base64 at any alignment, hex), key-shaped strings and
    the user-info of URLs."""
    for variant in _variants(_current_secrets()):
        if variant in text:
            text = text.replace(variant, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return _URL_USERINFO.sub(r"\1***@", text)


class BackendCallError(Exception):
    """A failed backend call (message already scrubbed)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(scrub_secrets(message))


class RetryableCallError(BackendCallError):
    """A transient failure: retried with backoff (``retry_after`` seconds when the server said)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class FatalCallError(BackendCallError, NegforgeError):
    """A failure that retrying cannot fix (authentication, bad request): the run stops."""


class GenerationFailed(NegforgeError):
    """More queries failed (after every retry) than ``--max-failed`` allows: exit code 3."""

    exit_code = 3


def parse_retry_after(headers: object) -> float | None:
    """Seconds to wait from ``Retry-After`` / ``retry-after-ms`` headers, if present."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    millis = get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_CREDENTIALS_PROBLEM = re.compile(
    r"missing credentials|(incorrect|invalid|no) api[ _]key|api[ _]key (is )?(missing|not set)",
    re.IGNORECASE,
)


def classify_status(
    status: int, name: str, detail: str, retry_after: float | None = None
) -> BackendCallError:
    """An HTTP error answer (``status`` >= 400) as a retryable or fatal call error: 408, 409,
    425, 429 and 5xx are retried (after ``retry_after`` seconds when the server said), a
    missing or wrong key and every other 4xx stop the run. ``name`` names the error kind in
    the message (the SDK's exception class, or the HTTP reason)."""
    if _CREDENTIALS_PROBLEM.search(detail):  # litellm reports a missing key as a 500
        return FatalCallError(
            f"HTTP {status} ({name}), authentication failed: check the API key "
            f"environment variable: {detail}",
            status=status,
        )
    if status in _RETRYABLE_STATUS or status >= 500:
        return RetryableCallError(
            f"HTTP {status} ({name}): {detail}", status=status, retry_after=retry_after
        )
    hint = {
        401: "authentication failed: check the API key environment variable",
        403: "permission denied: the key may not have access to this model",
        404: "not found: check the model name and --api-base",
        400: "the backend rejected the request",
    }.get(status, "the backend rejected the request")
    return FatalCallError(f"HTTP {status} ({name}), {hint}: {detail}", status=status)


def classify_exception(exc: BaseException) -> BackendCallError:
    """Map an openai / litellm / httpx exception onto a retryable or fatal call error."""
    import openai

    transport_errors: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
    for module_name in ("httpx", "httpx2"):  # litellm uses httpx; openai>=3 uses httpx2
        try:
            module = __import__(module_name)
            transport_errors += (module.TransportError,)
        except ImportError:
            pass

    if isinstance(exc, BackendCallError):
        return exc
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    if isinstance(exc, openai.APIStatusError) or (
        isinstance(status, int) and isinstance(exc, openai.APIError) and status >= 400
    ):
        status = int(status) if isinstance(status, int) else 500
        return classify_status(status, name, _status_detail(exc), _retry_after_of(exc))
    if isinstance(exc, (openai.APIConnectionError, *transport_errors)):
        return RetryableCallError(f"{name}: {exc or 'connection failed or timed out'}")
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        return RetryableCallError(f"malformed response body ({name}): {exc}")
    if isinstance(exc, openai.OpenAIError):
        return FatalCallError(f"{name}: {exc}")
    return FatalCallError(f"unexpected backend error {name}: {exc}")


def _retry_after_of(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    for headers in (
        getattr(response, "headers", None),
        getattr(exc, "litellm_response_headers", None),
    ):
        if headers is not None:
            try:
                seconds = parse_retry_after(headers)
            except (TypeError, ValueError, OverflowError):
                seconds = None
            if seconds is not None:
                return seconds
    return None


def _status_detail(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message)[:500]
