"""Backend call errors: retryable (429, 5xx, timeouts, dropped connections) or fatal.

Messages are scrubbed of API keys before they reach any exception, log or artifact.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import time

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


def scrub_secrets(text: str) -> str:
    """``text`` with API keys (from the environment or key-shaped strings) masked."""
    for name in KEY_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


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
        detail = _status_detail(exc)
        if _CREDENTIALS_PROBLEM.search(detail):  # litellm reports a missing key as a 500
            return FatalCallError(
                f"HTTP {status} ({name}), authentication failed: check the API key "
                f"environment variable: {detail}",
                status=status,
            )
        if status in _RETRYABLE_STATUS or status >= 500:
            return RetryableCallError(
                f"HTTP {status} ({name}): {detail}",
                status=status,
                retry_after=_retry_after_of(exc),
            )
        hint = {
            401: "authentication failed: check the API key environment variable",
            403: "permission denied: the key may not have access to this model",
            404: "not found: check the model name and --api-base",
            400: "the backend rejected the request",
        }.get(status, "the backend rejected the request")
        return FatalCallError(f"HTTP {status} ({name}), {hint}: {detail}", status=status)
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
