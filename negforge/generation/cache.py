"""The response cache (diskcache): a hit makes no backend call.

The key is a sha256 over the backend, the model, the prompt template id and version, the
rendered messages, the sampling parameters and the seed, so any change to what would be
sent is a miss. Only answers (scrubbed of credentials) and token counts are stored, never
keys or headers.

A cache that cannot be opened (a read-only or full disk, a file in the way, a corrupt
database) stops the run before any call with an error naming its folder. A cache that
fails later, while the run is paying for calls, is a warning: the run goes on without it
(the journal still keeps every finished query).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from negforge.errors import OutputError, describe_os_error

#: Bump to invalidate every cached answer (e.g. if the stored value changes shape).
CACHE_FORMAT = 1
#: Bytes the response cache keeps (the oldest answers beyond it are dropped on close).
SIZE_LIMIT = 2**32


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
        self.failure: str | None = None  # set when the cache broke down mid-run
        if self.directory.exists() and not self.directory.is_dir():
            raise OutputError("the response cache folder is a file (--cache-dir)",
                              path=self.directory)  # fmt: skip
        existed = self.directory.exists()
        try:
            # Culling to the size limit is done once, on close, not on every set (which
            # costs a third of a set: 48 vs 31 us); between closes the cache may run over.
            self._cache: Any = diskcache.Cache(str(self.directory), size_limit=SIZE_LIMIT,
                                               cull_limit=0)  # fmt: skip
        except (OSError, sqlite3.Error) as exc:
            if not existed:  # leave nothing half-made behind
                shutil.rmtree(self.directory, ignore_errors=True)
            raise OutputError(f"cannot open the response cache ({_reason(exc)}); choose "
                              "another --cache-dir or pass --no-cache",
                              path=self.directory) from exc  # fmt: skip

    def _broken(self, exc: BaseException) -> None:
        if self.failure is None:  # reported in the run summary
            self.failure = f"{self.directory}: {_reason(exc)}"

    def get(self, key: str) -> CachedAnswer | None:
        if self.failure is not None:
            return None
        try:
            raw = self._cache.get(key)
        except (OSError, sqlite3.Error) as exc:
            self._broken(exc)
            return None
        if not isinstance(raw, str):
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValueError:
            return None  # a corrupt entry is a miss

    def set(self, key: str, answer: CachedAnswer) -> None:
        if self.failure is not None:
            return
        try:
            self._cache.set(key, answer.model_dump_json())
        except (OSError, sqlite3.Error) as exc:
            self._broken(exc)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        with contextlib.suppress(OSError, sqlite3.Error):
            self._cache.cull()  # the oldest entries beyond SIZE_LIMIT go
            self._cache.close()

    def flush(self) -> None:
        """Commit queued writes (every write is committed at once here)."""

    def set_many(self, items: Sequence[tuple[str, CachedAnswer]]) -> None:
        """Store several answers in one SQLite transaction (one commit for all)."""
        if self.failure is not None:
            return
        try:
            with self._cache.transact():
                for key, answer in items:
                    ResponseCache.set(self, key, answer)  # the direct write, also in subclasses
        except (OSError, sqlite3.Error) as exc:
            self._broken(exc)


#: A :class:`BatchedWriteCache` with at most this many entries reads its keys when opened.
SNAPSHOT_LIMIT = 200_000


class BatchedWriteCache(ResponseCache):
    """A :class:`ResponseCache` that commits its writes in batches, on the caller's thread.

    A diskcache ``set`` is a SQLite transaction: ~0.2 ms of wall time, 10 % of a request's
    CPU budget on a generation run's event loop. Here answers gather in memory (``get``
    sees them) and ``batch`` of them are committed in one transaction (a third of the CPU,
    one commit). No thread: a writer thread would take the GIL from the event loop in the
    middle of its work (the convoy effect) and cost more wall time than it saves.

    Durability: the filler calls :meth:`flush` before it re-asks a query, and a finished
    query is journaled the moment it finishes, so a kill loses only cached answers that no
    resume needs (those of finished queries; a rerun to a fresh output pays for them again).
    """

    def __init__(self, directory: str | Path, *, batch: int = 64) -> None:
        super().__init__(directory)
        self._pending: dict[str, CachedAnswer] = {}
        self._batch = batch
        self._known = self._key_snapshot()

    def _key_snapshot(self) -> set[str] | None:
        """The keys of a cache of at most :data:`SNAPSHOT_LIMIT` entries (one scan), so a
        key it lacks is a miss without an SQLite read (~60 us on a run's event loop while
        batches are committed). Entries another process writes later are not seen: that
        process's answers are asked again, never a wrong answer used."""
        try:
            if len(self._cache) > SNAPSHOT_LIMIT:
                return None
            return {key for key in self._cache if isinstance(key, str)}
        except (OSError, sqlite3.Error):
            return None  # reads go to SQLite, which reports a broken cache itself

    def get(self, key: str) -> CachedAnswer | None:
        queued = self._pending.get(key)
        if queued is not None:
            return queued
        if self._known is not None and key not in self._known:
            return None
        return super().get(key)

    def set(self, key: str, answer: CachedAnswer) -> None:
        self._pending[key] = answer
        if len(self._pending) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            items, self._pending = list(self._pending.items()), {}
            ResponseCache.set_many(self, items)
            if self._known is not None:
                self._known.update(key for key, _ in items)

    def close(self) -> None:
        self.flush()
        super().close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    text = str(exc)
    return "no space left on the device (disk full)" if "full" in text else text
