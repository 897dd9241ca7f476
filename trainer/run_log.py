"""What a run reports: ``metrics.csv`` (one row per epoch) and the console.

A metrics row holds ``epoch``, ``lr``, ``train/<loss part>`` and
``<split>/{R1@0.5,R1@0.7,mIoU,mAP}`` of every split evaluated that epoch. The console shows
one line per epoch and a progress bar (rich) on rank 0 only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def loss_summary(losses: dict[str, float], limit: int = 6) -> str:
    """The total and the first parts (no per-layer or per-term parts), for the progress bar."""
    main = [k for k in losses if k == "loss"] + [
        k for k in losses if k != "loss" and not k[-1].isdigit()
    ]
    return " ".join(f"{k.removeprefix('loss_') or 'loss'} {losses[k]:.3f}" for k in main[:limit])


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

    def progress(self) -> Any:
        """A rich ``Progress`` (hidden unless enabled) with a ``losses`` field per task."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console,
            disable=not self.progress_enabled,
            transient=True,
        )
