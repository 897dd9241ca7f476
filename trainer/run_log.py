"""What a run reports: ``metrics.csv`` (one row per epoch) and the console.

A metrics row holds ``epoch``, ``lr``, ``train/<loss part>`` and
``<split>/{R1@0.5,R1@0.7,mIoU,mAP}`` of every split evaluated that epoch. The console shows
one line per epoch and a progress bar (rich) on rank 0 only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from negforge.atomic import atomic_write_text
from negforge.trainer.config import TrainConfig


def write_metrics_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """All rows, columns in first-seen order (``epoch`` first); blank where not measured."""
    columns: list[str] = ["epoch", "lr"]
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def loss_columns(losses: dict[str, float]) -> dict[str, float]:
    """``train/<part>`` columns: the total first, then the parts, then per-layer parts."""

    def order(name: str) -> tuple[int, str]:
        return (0 if name == "loss" else 1 if not name[-1].isdigit() else 2, name)

    return {f"train/{name}": losses[name] for name in sorted(losses, key=order)}


#: Progress-line order: the total, SHINE's terms, the span and class terms; then the rest.
_SUMMARY_FIRST = ("loss", "loss_cr", "loss_fr", "loss_span", "loss_giou", "loss_label")


def loss_summary(losses: dict[str, float], width: int | None = None) -> str:
    """The total, then the main parts (no per-layer or per-term parts), as ``name value``
    pairs (``loss_`` dropped): as many whole pairs as fit in ``width`` characters (all of
    them when ``width`` is None), never a cut one."""
    main = [k for k in _SUMMARY_FIRST if k in losses] + [
        k for k in losses if k not in _SUMMARY_FIRST and not k[-1].isdigit()
    ]
    text = ""
    for key in main:
        pair = f"{key.removeprefix('loss_') or 'loss'} {losses[key]:.3f}"
        candidate = f"{text} {pair}" if text else pair
        if width is not None and len(candidate) > width:
            break
        text = candidate
    return text


def epoch_line(row: dict[str, Any], cfg: TrainConfig, improved: bool) -> str:
    """The console line of a finished epoch (``*`` when best.pt was written)."""
    parts = [f"epoch {row['epoch']}/{cfg.optim.epochs}", f"loss {row.get('train/loss', 0.0):.4f}"]
    for key, value in row.items():
        if "/" in key and not key.startswith("train/") and key.split("/")[1] in ("R1@0.5", "mIoU"):
            parts.append(f"{key} {value:.2f}")
    if improved:
        selected = f"{cfg.select_on}/{cfg.select_metric}" in row
        parts.append(f"* best {cfg.select_on}/{cfg.select_metric}" if selected else "* saved")
    return "  ".join(parts)


class RunPrinter:
    """Rank-0 console output (rich) and the progress bar."""

    def __init__(self, enabled: bool = True, progress: bool = False) -> None:
        from rich.console import Console

        self.enabled = enabled
        self.progress_enabled = enabled and progress
        self.console = Console(highlight=False)

    def print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False, soft_wrap=True)

    def progress(self) -> Progress:
        """A rich ``Progress`` (hidden unless enabled) with a ``losses`` dict per task.

        The line fits the terminal: below 100 columns the bar is short and the elapsed time
        is left out; the losses show as many whole ``name value`` pairs as the width left.
        """
        narrow = self.console.width < 100
        bar_width = 10 if narrow else 30
        times: list[ProgressColumn] = [] if narrow else [TimeElapsedColumn()]
        times.append(TimeRemainingColumn())

        def used(task: Task) -> int:
            """Characters the other columns and the gaps between all columns take."""
            count = f"{int(task.total or 0)}"
            fixed = len(task.description) + bar_width + 2 * len(count) + 1 + 8 * len(times)
            return fixed + (3 + len(times))  # one space between columns

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=bar_width),
            MofNCompleteColumn(),
            *times,
            LossColumn(lambda task: self.console.width - used(task)),
            console=self.console,
            disable=not self.progress_enabled,
            transient=True,
        )


class LossColumn(ProgressColumn):
    """``loss 1.234 span 0.123 ...`` from the task's ``losses`` field: the whole pairs that
    fit in ``width(task)`` characters."""

    def __init__(self, width: Callable[[Task], int]) -> None:
        super().__init__()
        self.width = width

    def render(self, task: Task) -> Text:
        return Text(loss_summary(task.fields.get("losses", {}), max(0, self.width(task))))
