"""Retrying backend calls (tenacity): exponential backoff with jitter, honouring Retry-After.

Retryable failures (429, 5xx, timeouts, dropped connections, garbled bodies) are retried up
to ``max_retries`` times; fatal ones (authentication, 400, 404) propagate at once. The first
attempt runs without tenacity, so the common, successful path costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from negforge.generation.errors import RetryableCallError, classify_exception

T = TypeVar("T")


class BackoffWait:
    """Wait ``Retry-After`` (plus a little jitter) when the server gave one, else exp. jitter."""

    def __init__(self, max_backoff_s: float, multiplier: float = 0.5) -> None:
        self.max_backoff_s = max_backoff_s
        self._exponential = wait_random_exponential(multiplier=multiplier, max=max_backoff_s)

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RetryableCallError) and exc.retry_after is not None:
            jitter = self._exponential(state) * 0.05
            return min(exc.retry_after + jitter, self.max_backoff_s)
        return float(self._exponential(state))


async def _classified(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except Exception as exc:
        raise classify_exception(exc) from exc


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    max_backoff_s: float = 60.0,
    on_retry: Callable[[RetryableCallError, float], None] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> T:
    """Run ``call``; retry transient failures with backoff. Raises the classified error.

    ``call`` runs at most ``1 + max_retries`` times; ``on_retry(error, sleep_s)`` is told
    about every retry before its sleep. Once ``stopping()`` is true (the run has already
    failed) no further retry is made.
    """
    try:
        return await _classified(call)
    except RetryableCallError as first:
        if max_retries <= 0:
            raise
        replay = [first]

    async def attempt_call() -> T:
        # tenacity's first attempt replays the failure above, so it owns every wait.
        if replay:
            raise replay.pop()
        return await _classified(call)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is None or state.outcome is None:
            return
        exc = state.outcome.exception()
        if isinstance(exc, RetryableCallError):
            sleep = state.next_action.sleep if state.next_action else 0.0
            on_retry(exc, float(sleep))

    attempts = stop_after_attempt(max_retries + 1)

    def stop(state: RetryCallState) -> bool:
        return attempts(state) or (stopping is not None and stopping())

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RetryableCallError),
        stop=stop,
        wait=BackoffWait(max_backoff_s),
        reraise=True,
        before_sleep=before_sleep,
    )
    async for attempt in retrying:
        with attempt:
            return await attempt_call()
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
