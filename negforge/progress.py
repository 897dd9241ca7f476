"""Progress displays of long steps (rich, on stderr) and silencing other libraries' bars.

Every command whose step can take more than a few seconds shows one :class:`StepProgress`:
a bar when the amount of work is known, a spinner otherwise. It shows nothing under
``-q``/``--quiet`` or when stderr is not a terminal (logs and pipes stay clean), so callers
need no checks of their own. :func:`silence_third_party` turns off the progress bars of
transformers, huggingface_hub, datasets and tqdm (the CLI calls it once per command).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

#: Environment settings read by the libraries at import time (kept if the user set them).
QUIET_LIBRARIES_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub, and transformers' "Loading weights"
    "TQDM_DISABLE": "1",  # any other tqdm bar (tqdm >= 4.66)
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def silence_third_party() -> None:
    """Turn off third-party progress bars and chatter (before or after their import)."""
    for key, value in QUIET_LIBRARIES_ENV.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def shows_progress(quiet: bool) -> bool:
    """Whether a progress display would be shown: not quiet and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def stderr_note(text: str) -> None:
    """One line on stderr (a notice the user should see even without a terminal)."""
    print(text, file=sys.stderr, flush=True)


class StepProgress:
    """A bar (``total`` given) or a spinner (``total`` None) over one step on stderr.

    A no-op when :func:`shows_progress` says no. ``advance`` after each item,
    ``update(description=..., total=...)`` when the step moves to its next phase.
    """

    def __init__(self, description: str, total: int | None = None, *, quiet: bool = False,
                 unit: str = "") -> None:  # fmt: skip
        self.unit = unit
        self._progress: Any = None
        self._task: Any = None
        if not shows_progress(quiet):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            refresh_per_second=8,
            transient=True,
        )
        self._task = self._progress.add_task(description, total=total, unit=unit)

    @property
    def active(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> StepProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if self._progress is not None:
            self._progress.stop()

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def update(self, *, description: str | None = None, total: int | None = None,
               completed: int | None = None) -> None:  # fmt: skip
        """Start the next phase (new description and total) or set the position."""
        if self._progress is None:
            return
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = description
        if total is not None:
            changes["total"] = total
            changes["completed"] = 0
        if completed is not None:
            changes["completed"] = completed
        self._progress.update(self._task, **changes)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, advancing once per item."""
        for item in items:
            yield item
            self.advance()

    def note(self, text: str) -> None:
        """A line printed above the bar (plain stderr when the bar is off)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            stderr_note(text)
