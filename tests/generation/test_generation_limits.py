"""Token buckets (--rpm/--tpm), the retry policy and the response cache key."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from negforge.generation import retry as retry_module
from negforge.generation.cache import CachedAnswer, ResponseCache, cache_key
from negforge.generation.errors import (
    FatalCallError,
    RetryableCallError,
    classify_exception,
    parse_retry_after,
    scrub_secrets,
)
from negforge.generation.ratelimit import RateLimiter, TokenBucket


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_token_bucket_spends_its_burst_then_waits_for_the_rate():
    fake = FakeTime()
    bucket = TokenBucket(rate_per_s=2.0, capacity=4.0, clock=fake.clock, sleep=fake.sleep)

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    asyncio.run(take(4))
    assert fake.now == 0.0  # the burst is free
    asyncio.run(take(6))
    assert fake.now == pytest.approx(3.0)  # 6 more at 2 per second


def test_token_bucket_caps_big_requests_and_accepts_corrections():
    fake = FakeTime()
    bucket = TokenBucket(rate_per_s=10.0, capacity=100.0, clock=fake.clock, sleep=fake.sleep)
    asyncio.run(bucket.acquire(1000))  # more than the capacity: waits for a full bucket only
    assert fake.now == 0.0 and bucket.level == pytest.approx(0.0)
    bucket.adjust(50)  # the request used 50 more than estimated
    asyncio.run(bucket.acquire(10))
    assert fake.now == pytest.approx(6.0)  # 60 units at 10 per second


def test_token_bucket_concurrent_waiters_are_served_at_the_rate():
    fake = FakeTime()
    bucket = TokenBucket(rate_per_s=1.0, capacity=1.0, clock=fake.clock, sleep=fake.sleep)

    async def many() -> None:
        await asyncio.gather(*(bucket.acquire() for _ in range(5)))

    asyncio.run(many())
    assert fake.now == pytest.approx(4.0)


def test_rate_limiter_per_minute_limits():
    limiter = RateLimiter(rpm=600, tpm=60_000)
    assert limiter.active
    assert limiter.requests is not None and limiter.requests.rate_per_s == pytest.approx(10.0)
    assert limiter.tokens is not None and limiter.tokens.capacity == pytest.approx(10_000.0)
    assert not RateLimiter().active


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    cls = {429: openai.RateLimitError, 401: openai.AuthenticationError,
           400: openai.BadRequestError}.get(status, openai.InternalServerError)  # fmt: skip
    return cls(f"status {status}", response=response, body=None)  # type: ignore[arg-type]


def test_errors_are_classified():
    limited = classify_exception(_status_error(429, {"retry-after": "7"}))
    assert isinstance(limited, RetryableCallError) and limited.retry_after == 7.0
    assert isinstance(classify_exception(_status_error(503)), RetryableCallError)
    assert isinstance(classify_exception(_status_error(401)), FatalCallError)
    assert isinstance(classify_exception(_status_error(400)), FatalCallError)
    request = httpx.Request("POST", "http://127.0.0.1/")
    dropped = openai.APIConnectionError(request=request)  # type: ignore[arg-type]
    assert isinstance(classify_exception(dropped), RetryableCallError)
    timeout = openai.APITimeoutError(request=request)  # type: ignore[arg-type]
    assert isinstance(classify_exception(timeout), RetryableCallError)
    # litellm reports a missing key as a 500: that is not worth retrying
    request500 = httpx.Request("POST", "http://127.0.0.1/")
    missing = openai.InternalServerError(
        "OpenAIException - Missing credentials. Please pass an `api_key`",
        response=httpx.Response(500, request=request500),  # type: ignore[arg-type]
        body=None,
    )
    assert isinstance(classify_exception(missing), FatalCallError)
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({}) is None


def test_secrets_are_scrubbed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefghijklmnop")
    text = scrub_secrets("bad key sk-test-abcdefghijklmnop and AIzaSyA1234567890abcdefghijkl")
    assert "abcdefghijklmnop" not in text and "AIza" not in text
    error = FatalCallError("Incorrect API key provided: sk-test-abcdefghijklmnop")
    assert "sk-test-abcdefghijklmnop" not in str(error)


def test_retries_honour_retry_after_and_are_bounded(monkeypatch):
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise _status_error(429, {"retry-after": "3"})
        return "ok"

    seen: list[float] = []
    result = asyncio.run(retry_module.call_with_retries(
        flaky, max_retries=5, on_retry=lambda _e, s: seen.append(s)))  # fmt: skip
    assert result == "ok" and calls == 3
    assert len(sleeps) == 2 and all(3.0 <= s <= 3.5 for s in sleeps)
    assert seen == sleeps

    calls = 0
    sleeps.clear()

    async def always_500() -> str:
        nonlocal calls
        calls += 1
        raise _status_error(500)

    with pytest.raises(RetryableCallError):
        asyncio.run(retry_module.call_with_retries(always_500, max_retries=3, max_backoff_s=2))
    assert calls == 4  # the first try and 3 retries
    assert len(sleeps) == 3 and all(0.0 <= s <= 2.0 for s in sleeps)


def test_fatal_errors_are_not_retried():
    calls = 0

    async def unauthorised() -> str:
        nonlocal calls
        calls += 1
        raise _status_error(401)

    with pytest.raises(FatalCallError, match="authentication"):
        asyncio.run(retry_module.call_with_retries(unauthorised, max_retries=5))
    assert calls == 1


def test_cache_key_covers_everything_that_is_sent(tmp_path):
    base = {
        "backend": "openai",
        "model": "gpt-3.5-turbo",
        "template": "negative_fill@v1",
        "messages": [{"role": "user", "content": "hi"}],
        "params": {"temperature": 0.7, "seed": 0, "max_tokens": 256, "response_format": None},
    }
    key = cache_key(**base)  # type: ignore[arg-type]
    assert key == cache_key(**base)  # type: ignore[arg-type]
    variants = [
        {"backend": "gemini"},
        {"model": "gpt-4o-mini"},
        {"template": "negative_fill@v2"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"params": {**base["params"], "temperature": 0.2}},  # type: ignore[dict-item]
        {"params": {**base["params"], "seed": 1}},  # type: ignore[dict-item]
    ]
    keys = {cache_key(**{**base, **variant}) for variant in variants}  # type: ignore[arg-type]
    assert key not in keys and len(keys) == len(variants)

    cache = ResponseCache(tmp_path / "cache")
    assert cache.get(key) is None
    cache.set(key, CachedAnswer(text='{"level_1": ["x"]}', input_tokens=10, output_tokens=3))
    cache.close()
    reopened = ResponseCache(tmp_path / "cache")
    assert reopened.get(key) == CachedAnswer(text='{"level_1": ["x"]}', input_tokens=10,
                                             output_tokens=3)  # fmt: skip
    assert len(reopened) == 1
    reopened.close()


def test_batched_cache_answers_misses_from_its_key_snapshot(tmp_path, monkeypatch):
    from negforge.generation import cache as cache_module
    from negforge.generation.cache import BatchedWriteCache

    folder = tmp_path / "cache"
    earlier = ResponseCache(folder)
    earlier.set("a", CachedAnswer(text="A"))
    earlier.close()
    cache = BatchedWriteCache(folder, batch=2)
    reads: list[str] = []
    sql_get = ResponseCache.get
    monkeypatch.setattr(ResponseCache, "get",
                        lambda self, key: reads.append(key) or sql_get(self, key))  # fmt: skip
    assert cache.get("a").text == "A" and reads == ["a"]  # in the snapshot: read from SQLite
    assert cache.get("nope") is None and reads == ["a"]  # not in it: a miss without a read
    later = ResponseCache(folder)  # another process writes after this cache was opened
    later.set("b", CachedAnswer(text="B"))
    later.close()
    assert cache.get("b") is None  # asked again, never a wrong answer
    cache.set("c", CachedAnswer(text="C"))
    assert cache.get("c").text == "C" and reads == ["a"]  # queued: answered from memory
    cache.set("d", CachedAnswer(text="D"))  # the batch is full: committed
    assert cache.get("c").text == "C" and reads == ["a", "c"]  # now read back from SQLite
    cache.close()

    monkeypatch.setattr(cache_module, "SNAPSHOT_LIMIT", 2)  # 4 entries: too many to list
    big = BatchedWriteCache(folder)
    assert big.get("b").text == "B" and reads[-1] == "b"
    assert big.get("nope") is None and reads[-1] == "nope"
    big.close()


def test_the_response_cache_is_culled_to_its_size_limit_on_close(tmp_path, monkeypatch):
    from negforge.generation import cache as cache_module

    monkeypatch.setattr(cache_module, "SIZE_LIMIT", 64 * 1024)
    cache = ResponseCache(tmp_path / "cache")
    for index in range(400):  # ~160 KB of answers: over the limit until closed
        cache.set(f"key-{index}", CachedAnswer(text="x" * 400))
    assert cache._cache.volume() > 64 * 1024 and len(cache) == 400
    cache.close()
    reopened = ResponseCache(tmp_path / "cache")
    assert reopened._cache.volume() <= 64 * 1024 + 32 * 1024  # culled (SQLite pages round up)
    assert reopened.get("key-399") is not None and reopened.get("key-0") is None  # oldest go
    reopened.close()
