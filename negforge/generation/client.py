"""One client layer for every chat backend.

OpenAI-compatible backends (``gpt-*`` and other OpenAI models, ``openai/<name>``, ``local``,
anything with ``api_base``) go through negforge's own chat-completions client over one
aiohttp session (:mod:`negforge.generation.chat_http`): per request it costs a fraction of
the OpenAI SDK's client CPU, and far less than litellm's wrapper, which decides throughput
at high concurrency. All other providers (``gemini/``, ``ollama/``, ...) go through
``litellm.acompletion``, imported only then. Both sit behind :class:`ChatClient`;
``client="litellm"`` forces litellm for all.

Keys come from the provider's usual environment variable (``OPENAI_API_KEY``,
``GEMINI_API_KEY``, ...) and are never stored: errors are scrubbed
(:func:`negforge.generation.errors.scrub_secrets`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from negforge.errors import ConfigError
from negforge.generation.accounting import import_litellm, model_info
from negforge.generation.config import (
    DEFAULT_LOCAL_MODEL,
    DEFAULT_LOCAL_URL,
    LOCAL_BACKEND,
    LOCAL_MODEL_ENV,
    LOCAL_URL_ENV,
    GenerateConfig,
)
from negforge.generation.errors import redact_url

Transport = Literal["openai", "litellm"]
WireFormat = Literal["json_schema", "json_object", "json_object_schema", "none"]
#: Name of the structured-output schema sent to OpenAI-style backends.
SCHEMA_NAME = "negative_fills"
#: Bare model-name prefixes that litellm routes to OpenAI.
_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")


@dataclass(frozen=True)
class BackendSpec:
    """How a ``--llm`` value is reached."""

    llm: str  # as the user wrote it
    provider: str  # cache identity: openai, openai-compatible, local, gemini, ollama, ...
    model: str  # litellm model string
    wire_model: str  # model name in the HTTP request (OpenAI transport)
    api_base: str | None
    transport: Transport
    wire_format: WireFormat


def resolve_backend(config: GenerateConfig) -> BackendSpec:
    """Decide provider, transport and structured-output mode for ``config.llm``.

    ``api_base`` keeps any user-info for the connection; store or print
    :func:`~negforge.generation.errors.redact_url` of it (which also registers the
    user-info as a secret to scrub).
    """
    llm = config.llm
    api_base = config.api_base
    redact_url(api_base)
    if llm == LOCAL_BACKEND:
        name = os.environ.get(LOCAL_MODEL_ENV) or DEFAULT_LOCAL_MODEL
        provider = "local"
        model, wire_model = f"openai/{name}", name
        api_base = api_base or os.environ.get(LOCAL_URL_ENV) or DEFAULT_LOCAL_URL
        openai_compatible = True
    elif "/" in llm:
        provider, wire_model = llm.split("/", 1)
        model = llm
        openai_compatible = provider == "openai"
        if openai_compatible and api_base:
            provider = "openai-compatible"
    else:
        model = wire_model = llm
        info = model_info(llm)
        listed = info.provider if info else None
        openai_compatible = bool(api_base) or listed == "openai" or llm.startswith(_OPENAI_PREFIXES)
        provider = (
            "openai-compatible" if api_base else ("openai" if openai_compatible else listed or "")
        )
        if not provider:
            raise ConfigError(
                f"--llm {llm!r}: unknown model; use a litellm model string such as "
                "gpt-3.5-turbo, gemini/gemini-1.5-flash, ollama/llama3 or openai/<name> "
                "with --api-base"
            )
    if config.client == "openai" and not openai_compatible:
        raise ConfigError(f"--llm {llm!r} is not OpenAI-compatible; use client auto or litellm")
    transport: Transport = (
        "openai" if openai_compatible and config.client != "litellm" else "litellm"
    )
    return BackendSpec(
        llm=llm,
        provider=provider,
        model=model,
        wire_model=wire_model,
        api_base=api_base,
        transport=transport,
        wire_format=_wire_format(config, provider, model),
    )


def _wire_format(config: GenerateConfig, provider: str, model: str) -> WireFormat:
    if config.response_format == "none":
        return "none"
    if config.response_format == "json_object":
        return "json_object"
    if config.response_format == "json_schema":
        return "json_object_schema" if provider == "local" else "json_schema"
    # auto
    if provider == "local":
        return "json_object_schema"  # llama-cpp-python turns the schema into a grammar
    if provider == "openai":
        info = model_info(model)
        supports = info.supports_response_schema if info else None
        return "json_schema" if supports else "json_object"
    return "json_schema"


def response_format_for(
    wire_format: WireFormat, schema: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The ``response_format`` request field for a structured-output mode."""
    if wire_format == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": dict(schema), "strict": True},
        }
    if wire_format == "json_object_schema":
        return {"type": "json_object", "schema": dict(schema)}
    if wire_format == "json_object":
        return {"type": "json_object"}
    return None


@dataclass(frozen=True)
class Completion:
    """A backend's answer text and its token usage."""

    text: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters sent with every request (part of the cache key)."""

    temperature: float
    max_tokens: int | None
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}


class ChatClient(Protocol):
    """One chat-completions request; raises openai/litellm/httpx errors as they come."""

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        response_format: Mapping[str, Any] | None,
        params: SamplingParams,
    ) -> Completion: ...

    async def aclose(self) -> None: ...


def openai_api_key(spec: BackendSpec) -> str:
    """The key the OpenAI client presents (placeholders for servers that need none)."""
    if spec.provider == "local":
        return "EMPTY"  # the local server needs none; never hand it a real key
    key = os.environ.get("OPENAI_API_KEY") or ("EMPTY" if spec.api_base else "")
    if not key:
        raise ConfigError(f"--llm {spec.llm}: set OPENAI_API_KEY (or pass --api-base)")
    return key


def chat_request_body(
    model: str,
    messages: Sequence[Mapping[str, str]],
    response_format: Mapping[str, Any] | None,
    params: SamplingParams,
) -> dict[str, Any]:
    """The ``/chat/completions`` body of one request (online and in Batch API files)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [dict(message) for message in messages],
        "temperature": params.temperature,
        "seed": params.seed,
    }
    if response_format is not None:
        body["response_format"] = dict(response_format)
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    return body


def completion_from_body(body: Any) -> Completion:
    """Text and usage of a chat-completions response body (raises on a malformed one)."""
    try:
        message = body["choices"][0]["message"]
        text = message.get("content") or ""
        usage = body.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise json.JSONDecodeError(f"not a chat completion ({exc!r})", str(body)[:200], 0) from exc
    return Completion(
        text=str(text),
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


class LiteLLMChatClient:
    """``litellm.acompletion`` for every other provider (Gemini, Ollama, ...)."""

    def __init__(self, spec: BackendSpec, *, timeout_s: float) -> None:
        self._litellm = import_litellm()
        self._spec = spec
        self._timeout_s = timeout_s

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        response_format: Mapping[str, Any] | None,
        params: SamplingParams,
    ) -> Completion:
        extra: dict[str, Any] = {}
        if response_format is not None:
            extra["response_format"] = dict(response_format)
        if self._spec.api_base:
            extra["api_base"] = self._spec.api_base
        if self._spec.provider in ("local", "openai-compatible", "openai"):
            extra["api_key"] = openai_api_key(self._spec)
        if params.max_tokens is not None:
            extra["max_tokens"] = params.max_tokens
        response = await self._litellm.acompletion(
            model=self._spec.model,
            messages=[dict(message) for message in messages],
            temperature=params.temperature,
            seed=params.seed,
            timeout=self._timeout_s,
            num_retries=0,
            max_retries=0,
            drop_params=True,
            **extra,
        )
        usage = getattr(response, "usage", None)
        return Completion(
            text=str(response.choices[0].message.content or ""),
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    async def aclose(self) -> None:
        return None


class LazyChatClient:
    """Creates the real client on the first request: a run answered entirely from the cache
    never pays for importing the SDK."""

    def __init__(self, factory: Callable[[], ChatClient]) -> None:
        self._factory = factory
        self._client: ChatClient | None = None

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        response_format: Mapping[str, Any] | None,
        params: SamplingParams,
    ) -> Completion:
        if self._client is None:
            self._client = self._factory()
        return await self._client.complete(messages, response_format, params)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def check_credentials(spec: BackendSpec) -> None:
    """Fail before any work when the backend's key is not set (ConfigError naming it)."""
    if spec.transport == "openai" or spec.provider in ("local", "openai-compatible", "openai"):
        openai_api_key(spec)
        return
    litellm = import_litellm()
    try:
        found = litellm.validate_environment(model=spec.model)
    except Exception:  # an unknown provider: let the first call tell
        return
    missing = [str(k) for k in (found or {}).get("missing_keys") or []]
    keys = [k for k in missing if k.endswith(("_KEY", "_TOKEN"))]  # not e.g. OLLAMA_API_BASE
    if keys and not (found or {}).get("keys_in_environment", True):
        raise ConfigError(f"--llm {spec.llm}: set {' or '.join(keys)} (the API key of "
                          f"{spec.provider})")  # fmt: skip


def check_backend(config: GenerateConfig) -> BackendSpec | None:
    """Resolve ``config.llm`` and check its key (None for the random baseline)."""
    if config.is_random:
        return None
    spec = resolve_backend(config)
    check_credentials(spec)
    return spec


def make_client(spec: BackendSpec, config: GenerateConfig) -> ChatClient:
    """The client for a resolved backend (created lazily; the key is checked now)."""
    check_credentials(spec)  # fail before any work when the key is missing
    if spec.transport == "openai":
        from negforge.generation.chat_http import HttpChatClient

        return LazyChatClient(lambda: HttpChatClient(spec, timeout_s=config.timeout_s))
    return LazyChatClient(lambda: LiteLLMChatClient(spec, timeout_s=config.timeout_s))
