"""The progress bar of a generation run (rich, on stderr): rate, ETA, cache hits, errors.

Shown under the same rule as every other progress display (:mod:`negforge.progress`): not
under ``--quiet``, not when stderr is not a terminal.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from negforge.progress import shows_progress, stderr_note


class RunProgress:
    """A progress bar over queries; a no-op when ``quiet``."""

    def __init__(self, total: int, *, quiet: bool, description: str = "generate",
                 unit: str = "q") -> None:  # fmt: skip
        self.total = total
        self.unit = unit
        self.cache_hits = 0
        self.errors = 0
        self._progress: Any = None
        self._task: Any = None
        self.quiet = quiet
        if not shows_progress(quiet) or total == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("cache hits {task.fields[cache_hits]}  errors {task.fields[errors]}"),
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=False,
        )
        self._task = self._progress.add_task(
            description, total=total, rate="", cache_hits=0, errors=0
        )

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, *, cache_hits: int = 0, errors: int = 0, steps: int = 1) -> None:
        """``steps`` more items (queries) finished."""
        self.cache_hits += cache_hits
        self.errors += errors
        if self._progress is None:
            return
        task = self._progress.tasks[0]
        speed = task.speed
        self._progress.update(
            self._task,
            advance=steps,
            rate=f"{speed:.1f} {self.unit}/s" if speed else "",
            cache_hits=self.cache_hits,
            errors=self.errors,
        )

    def note(self, text: str) -> None:
        """A status line (e.g. the Batch API's poll), printed above the bar; none when quiet."""
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            stderr_note(text)
