"""The run journal: an append-only JSON-lines file of finished queries, for resuming.

Each finished query is one line, written with a single ``write`` to an ``O_APPEND`` file
descriptor, so it survives the process being killed (SIGKILL included) the moment the call
returns; a background thread ``fsync``\\s soon after (group commit), so a power loss costs at
most the last few lines without the event loop ever blocking on the disk. The first line
records the run key: a journal left by a run with other inputs or settings is discarded.
A torn last line (a kill mid-write) is cut off on open. A journal that cannot be written
(a read-only or full disk) raises :class:`~negforge.errors.OutputError` naming its path.

Besides finished queries (lines with a ``qid``), a run may record events (lines with an
``event`` key, e.g. the Batch API's planned, uploaded and created batches): they are kept in
:attr:`RunJournal.events`, in order, with the same durability.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic_core

from negforge.errors import OutputError, describe_os_error

JOURNAL_FORMAT = 1


def _journal_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write the run journal ({describe_os_error(exc)})", path=path)


def journal_path_for(output_path: Path) -> Path:
    """The journal that belongs to an output artifact (a hidden sibling file)."""
    return output_path.with_name(f".{output_path.name}.journal.jsonl")


class _Syncer(threading.Thread):
    """fsyncs a file descriptor whenever asked, coalescing requests (group commit).

    At most one fsync per ``pause_s``: each wake-up of this thread takes the GIL from the
    event loop, so it must not happen per finished query. :meth:`stop` cuts the pause short
    and leaves the last fsync to the caller.
    """

    pause_s = 0.2

    def __init__(self, fd: int) -> None:
        super().__init__(name="negforge-journal-fsync", daemon=True)
        self._fd = fd
        self._wanted = threading.Event()
        self._halt = threading.Event()  # set by stop(): ends the pause at once
        self.error: OSError | None = None  # an fsync failure, raised by the next append

    def request(self) -> None:
        if not self._wanted.is_set():  # already asked: nothing to wake
            self._wanted.set()

    def run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._halt.is_set():
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.error = exc
                return
            if self._halt.wait(self.pause_s):
                return

    def stop(self) -> None:
        """Stop without a last fsync (at most one in progress is waited for)."""
        self._halt.set()
        self._wanted.set()
        self.join()


class RunJournal:
    """Finished queries of one run, durable line by line: those read when it was opened
    (:attr:`entries`, keyed by qid) and those appended since (written, counted, not kept)."""

    def __init__(self, path: Path, run_key: str) -> None:
        self.path = path
        self.run_key = run_key
        #: The finished queries read when the journal was opened (what a rerun resumes).
        self.entries: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.appended = 0  # finished queries appended since it was opened (not kept in memory)
        self._fd: int | None = None
        self._syncer: _Syncer | None = None

    @classmethod
    def open(cls, path: Path, run_key: str, *, resume: bool = True) -> RunJournal:
        """Open (and read) the journal; start a new one if it belongs to another run."""
        journal = cls(path, run_key)
        fresh = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if resume and path.exists() and journal._load():
                flags = os.O_WRONLY | os.O_APPEND
                journal._fd = os.open(path, flags)
            else:
                fresh = True
                journal._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                header = {"negforge_journal": JOURNAL_FORMAT, "run_key": run_key}
                os.write(journal._fd, (json.dumps(header) + "\n").encode())
                os.fsync(journal._fd)
        except OSError as exc:
            if journal._fd is not None:
                os.close(journal._fd)
                journal._fd = None
            if fresh:  # a journal without its header is of no use to anyone
                path.unlink(missing_ok=True)
            raise _journal_error(path, exc) from exc
        journal._syncer = _Syncer(journal._fd)
        journal._syncer.start()
        return journal

    def _load(self) -> bool:
        """Read the entries; False when the journal is not this run's (or unreadable)."""
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):  # a torn final line: cut it off
            os.truncate(self.path, len(complete))
        lines = complete.splitlines()
        if not lines:
            return False
        try:
            header = json.loads(lines[0])
        except ValueError:
            return False
        expected = {"negforge_journal": JOURNAL_FORMAT, "run_key": self.run_key}
        if {key: header.get(key) for key in expected} != expected:
            return False
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("qid"), str):
                self.entries[entry["qid"]] = entry
            elif isinstance(entry, dict) and isinstance(entry.get("event"), str):
                self.events.append(entry)
        return True

    def append(self, entry: Mapping[str, Any]) -> None:
        """Record one finished query (must carry ``qid``): durable against kills at return."""
        if self._fd is None:
            raise RuntimeError("the journal is closed")
        if self._syncer is not None and self._syncer.error is not None:
            raise _journal_error(self.path, self._syncer.error)
        data = memoryview(pydantic_core.to_json(entry) + b"\n")  # compact UTF-8 JSON
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            raise _journal_error(self.path, exc) from exc
        self.appended += 1
        if self._syncer is not None:
            self._syncer.request()

    def append_event(self, event: Mapping[str, Any]) -> None:
        """Record an event (an ``event`` key, no ``qid``): written and fsynced before return
        (events are rare, and losing one could mean paying for a batch twice)."""
        if "event" not in event or "qid" in event:
            raise ValueError("a journal event has an 'event' key and no 'qid'")
        if self._fd is None:
            raise RuntimeError("the journal is closed")
        data = memoryview((json.dumps(event, separators=(",", ":")) + "\n").encode())
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError as exc:
            raise _journal_error(self.path, exc) from exc
        self.events.append(dict(event))

    def close(self, *, sync: bool = True) -> None:
        """Flush to disk (unless ``sync`` is False) and close (idempotent)."""
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if sync:
                    os.fsync(fd)
            except OSError:
                pass  # what was written is in the file; only durability against power loss
            finally:
                os.close(fd)

    def keep(self) -> None:
        """Close after a failed or interrupted run: kept when it holds finished queries or
        events (the rerun takes them; events name batches still running), else deleted."""
        self.close()
        if not self.entries and not self.events and not self.appended:
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Close and delete the journal (once the final artifact is safely written)."""
        self.close(sync=False)  # about to be deleted: nothing to make durable
        self.path.unlink(missing_ok=True)
