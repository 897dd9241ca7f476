"""The response cache (diskcache): a hit makes no backend call.

The key is a sha256 over the backend, the model, the prompt template id and version, the
rendered messages, the sampling parameters and the seed, so any change to what would be
sent is a miss. Only answers and token counts are stored, never keys or headers.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

#: Bump to invalidate every cached answer (e.g. if the stored value changes shape).
CACHE_FORMAT = 1


class CachedAnswer(BaseModel):
    """What a backend answered to one request."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0


def cache_key(
    *,
    backend: str,
    model: str,
    template: str,
    messages: Sequence[Mapping[str, str]],
    params: Mapping[str, Any],
) -> str:
    """A stable hex key for one request (``params``: sampling parameters, seed, format)."""
    digest = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "backend": backend, "model": model, "template": template,
              "params": dict(params)}  # fmt: skip
    digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for message in messages:  # hashed field by field: cheaper than serialising the prompt
        for name in sorted(message):
            digest.update(b"\x1e" + name.encode() + b"\x1f" + str(message[name]).encode())
        digest.update(b"\x1d")
    return digest.hexdigest()


class ResponseCache:
    """A diskcache-backed map from request keys to :class:`CachedAnswer` (safe across processes)."""

    def __init__(self, directory: str | Path) -> None:
        import diskcache

        self.directory = Path(directory)
        self._cache = diskcache.Cache(str(self.directory), size_limit=2**32)

    def get(self, key: str) -> CachedAnswer | None:
        raw = self._cache.get(key)
        if not isinstance(raw, str):
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValueError:
            return None  # a corrupt entry is a miss

    def set(self, key: str, answer: CachedAnswer) -> None:
        self._cache.set(key, answer.model_dump_json())

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()

    def set_many(self, items: Sequence[tuple[str, CachedAnswer]]) -> None:
        """Store several answers in one SQLite transaction (one commit for all)."""
        with self._cache.transact():
            for key, answer in items:
                ResponseCache.set(self, key, answer)  # the direct write, also in subclasses


class WriteBehindCache(ResponseCache):
    """A :class:`ResponseCache` whose writes leave the caller at once.

    A diskcache ``set`` costs ~0.2 ms of wall time (a SQLite commit), on the event loop of a
    generation run that is 10 % of a 2 ms request. Here ``set`` only queues the answer; a
    writer thread commits whatever has queued in one transaction (it waits
    ``batch_wait_s`` after waking, so each wake-up writes a batch). ``get`` sees queued
    answers. ``close`` (and ``flush``) commit everything. A SIGKILL can lose what was queued
    in the last few milliseconds; finished queries are in the run journal regardless.
    """

    def __init__(self, directory: str | Path, *, batch_wait_s: float = 0.005) -> None:
        super().__init__(directory)
        self._pending: dict[str, CachedAnswer] = {}
        self._queue: queue.SimpleQueue[tuple[str, CachedAnswer] | None] = queue.SimpleQueue()
        self._batch_wait_s = batch_wait_s
        self._writer = threading.Thread(target=self._write_loop, name="negforge-cache-writer",
                                        daemon=True)  # fmt: skip
        self._writer.start()

    def get(self, key: str) -> CachedAnswer | None:
        queued = self._pending.get(key)
        return queued if queued is not None else super().get(key)

    def set(self, key: str, answer: CachedAnswer) -> None:
        if not self._writer.is_alive():  # flushed: write through
            super().set(key, answer)
            return
        self._pending[key] = answer
        self._queue.put((key, answer))

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            time.sleep(self._batch_wait_s)  # let a batch gather
            items = [] if first is None else [first]
            stopping = first is None
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    items.append(item)
            if items:
                ResponseCache.set_many(self, items)
                for key, answer in items:
                    if self._pending.get(key) is answer:
                        del self._pending[key]

    def flush(self) -> None:
        """Commit every queued answer (the writer thread stops; later sets write through)."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()

    def close(self) -> None:
        self.flush()
        super().close()
