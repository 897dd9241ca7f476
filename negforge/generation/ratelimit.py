"""Async token buckets for ``--rpm`` (requests per minute) and ``--tpm`` (tokens per minute).

A bucket holds at most ``burst_s`` seconds' worth of its rate and starts full; waiters are
served first come, first served. The token bucket is charged an estimate before a call and
corrected with the real usage afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """``rate_per_s`` units per second, at most ``capacity`` stored."""

    def __init__(
        self,
        rate_per_s: float,
        capacity: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._level = capacity
        self._stamp = clock()
        self._lock = asyncio.Lock()

    @classmethod
    def per_minute(cls, per_minute: float, burst_s: float = 10.0) -> TokenBucket:
        """A bucket for a per-minute limit holding ``burst_s`` seconds' worth (at least 1)."""
        rate = per_minute / 60.0
        return cls(rate, max(1.0, rate * burst_s))

    @property
    def level(self) -> float:
        """Units available now (negative while a correction is being paid back)."""
        self._refill()
        return self._level

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` units (capped at the capacity), waiting as needed; returns the wait."""
        amount = min(amount, self.capacity)
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self._level >= amount:
                    self._level -= amount
                    return waited
                delay = (amount - self._level) / self.rate_per_s
                waited += delay
                await self._sleep(delay)

    def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) ``delta`` units without waiting."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)


class RateLimiter:
    """The ``--rpm`` and ``--tpm`` limits of one run (either may be absent)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.requests = TokenBucket.per_minute(rpm) if rpm else None
        self.tokens = TokenBucket.per_minute(tpm) if tpm else None
        self.waited_s = 0.0

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    async def acquire(self, estimated_tokens: int) -> None:
        """Wait until one request of about ``estimated_tokens`` tokens may start."""
        if self.requests is not None:
            self.waited_s += await self.requests.acquire(1.0)
        if self.tokens is not None:
            self.waited_s += await self.tokens.acquire(float(estimated_tokens))

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket once the real usage of a request is known."""
        if self.tokens is not None:
            self.tokens.adjust(float(actual_tokens - estimated_tokens))
