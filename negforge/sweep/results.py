"""A sweep's results: one table row per finished trial, and mean +- std over seeds per cell.

``OUT/results.parquet`` and ``OUT/results.csv`` hold one row per finished trial: ``trial``,
one column per grid axis (the value's label), ``seed``, ``best_epoch``, ``epochs_run``,
``wall_s``, ``resumed`` and ``<split>/<metric>`` for every evaluated split (``val``
included) of the checkpoint chosen on val. ``OUT/summary.md`` groups the rows by cell (the
axis values) and shows ``mean ± std`` (sample std over seeds, n - 1) of the report's splits
and metrics, with the number of seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negforge.atomic import atomic_path, atomic_write_text
from negforge.sweep.spec import METRICS, Sweep
from negforge.sweep.trial import TrialResult, read_result

if TYPE_CHECKING:
    import pandas as pd

FIXED_COLUMNS = ("trial", "seed", "best_epoch", "epochs_run", "wall_s", "resumed")


def collect(sweep: Sweep, trial_dirs: dict[str, Path]) -> list[TrialResult]:
    """The finished trials' results, in the sweep's order."""
    results = []
    for trial in sweep.trials:
        result = read_result(trial_dirs[trial.id])
        if result is not None and result.status == "done":
            results.append(result)
    return results


def results_frame(sweep: Sweep, results: Sequence[TrialResult]) -> pd.DataFrame:
    """One row per trial (see the module docstring)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for result in results:
        row: dict[str, Any] = {"trial": result.id}
        row.update({axis: result.cell.get(axis) for axis in sweep.axis_names})
        row.update(
            seed=result.seed,
            best_epoch=result.best_epoch,
            epochs_run=result.epochs_run,
            wall_s=round(result.wall_s, 2),
            resumed=result.resumed,
        )
        for split, metrics in result.metrics.items():
            for name in METRICS:
                if name in metrics:
                    value = metrics[name]
                    row[f"{split}/{name}"] = float("nan") if value is None else value
        rows.append(row)
    columns = ["trial", *sweep.axis_names, *FIXED_COLUMNS[1:]]
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame:
            frame[column] = pd.Series(dtype="object")
    metric_columns = [c for c in frame.columns if c not in columns]
    return frame[columns + metric_columns]


def write_tables(frame: pd.DataFrame, output: Path) -> tuple[Path, Path]:
    """``results.parquet`` and ``results.csv`` (written atomically)."""
    parquet, csv = output / "results.parquet", output / "results.csv"
    with atomic_path(parquet) as tmp:
        frame.to_parquet(tmp, index=False)
    atomic_write_text(csv, frame.to_csv(index=False))
    return parquet, csv


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def cell_statistics(
    sweep: Sweep, frame: pd.DataFrame, columns: Sequence[str]
) -> list[dict[str, Any]]:
    """Per cell (in the grid's order): its axis labels, ``n`` and ``(mean, std)`` per column."""
    cells: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    for trial in sweep.trials:
        key = tuple(trial.cell[a] for a in sweep.axis_names)
        if key in seen:
            continue
        seen.add(key)
        rows = frame
        for axis, label in zip(sweep.axis_names, key, strict=True):
            rows = rows[rows[axis] == label]
        stats: dict[str, Any] = {"cell": dict(zip(sweep.axis_names, key, strict=True))}
        stats["n"] = len(rows)
        for column in columns:
            values = [float(v) for v in rows[column].dropna()] if column in rows else []
            stats[column] = mean_std(values) if values else None
        cells.append(stats)
    return cells


def summary_markdown(sweep: Sweep, frame: pd.DataFrame, *, expected_seeds: int) -> str:
    """The Markdown summary: mean ± std over seeds per cell."""
    splits = sweep.report.splits or _splits_in(frame)
    columns = [f"{s}/{m}" for s in splits for m in sweep.report.metrics]
    cells = cell_statistics(sweep, frame, columns)
    title = f"# Sweep `{sweep.name}`"
    lines = [title, ""]
    if sweep.path:
        lines.append(f"Sweep file: `{sweep.path.name}`. ")
    lines.append(
        f"{len(frame)} finished trials of {len(sweep.trials)}; seeds {sweep.seeds}. "
        "Each trial's metrics come from its checkpoint chosen on `val`; cells show "
        "mean ± sample std over seeds (n = seeds finished)."
    )
    lines.append("")
    header = [*sweep.axis_names, "n", *columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    for cell in cells:
        values = []
        for column in columns:
            stat = cell[column]
            if stat is None:
                values.append("")
            elif cell["n"] < 2:
                values.append(f"{stat[0]:.2f}")
            else:
                values.append(f"{stat[0]:.2f} ± {stat[1]:.2f}")
        n = f"{cell['n']}" if cell["n"] == expected_seeds else f"{cell['n']}/{expected_seeds}"
        labels = [cell["cell"][a] for a in sweep.axis_names]
        lines.append("| " + " | ".join([*labels, n, *values]) + " |")
    return "\n".join(lines) + "\n"


def _splits_in(frame: pd.DataFrame) -> list[str]:
    splits: list[str] = []
    for column in frame.columns:
        if "/" in column:
            split = column.split("/", 1)[0]
            if split not in splits:
                splits.append(split)
    return splits


def write_summary(sweep: Sweep, frame: pd.DataFrame, output: Path) -> Path:
    path = output / "summary.md"
    atomic_write_text(path, summary_markdown(sweep, frame, expected_seeds=len(sweep.seeds)))
    return path
