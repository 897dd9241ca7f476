"""Fig. 5 style plots of a sweep: metrics against one swept key (lines with mean ± std over
seeds), or a heatmap of the mean over two swept keys (one panel per metric).

Axes other than ``x`` (and ``y``) must be fixed with ``where`` (``{axis: label}``) or have
one value; in a line plot, an axis left free draws one line per value instead.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negforge.atomic import atomic_path
from negforge.errors import ConfigError
from negforge.reporting.charts import PALETTE, figure_png, new_figure
from negforge.sweep.results import mean_std
from negforge.sweep.spec import Sweep

if TYPE_CHECKING:
    import pandas as pd


def _ordered_labels(sweep: Sweep, axis: str) -> list[str]:
    """The axis' labels in grid order; numeric axes sorted by value."""
    labels = next(a.labels for a in sweep.axes if a.name == axis)
    try:
        return sorted(labels, key=float)
    except ValueError:
        return list(labels)


def _numeric(labels: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in labels]
    except ValueError:
        return None


def _filtered(sweep: Sweep, frame: pd.DataFrame, where: dict[str, Any]) -> pd.DataFrame:
    for axis, label in where.items():
        if axis not in sweep.axis_names:
            raise ConfigError(f"--where {axis}: not an axis of the sweep")
        frame = frame[frame[axis] == str(label)]
    return frame


def plot_sweep(
    sweep: Sweep,
    frame: pd.DataFrame,
    output: str | Path,
    *,
    x: str,
    y: str | None = None,
    metrics: Sequence[str],
    where: dict[str, Any] | None = None,
) -> Path:
    """Write the plot as PNG to ``output`` and return its path."""
    where = {k: str(v) for k, v in (where or {}).items()}
    for axis in (x, y):
        if axis is not None and axis not in sweep.axis_names:
            raise ConfigError(
                f"'{axis}' is not an axis of sweep {sweep.name} ({', '.join(sweep.axis_names)})"
            )
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise ConfigError(f"no trial reported {', '.join(missing)} (columns: SPLIT/METRIC)")
    frame = _filtered(sweep, frame, where)
    free = [a for a in sweep.axis_names if a not in (x, y) and a not in where]
    if y is not None:
        crowded = [a for a in free if frame[a].nunique() > 1]
        if crowded:
            raise ConfigError(
                f"a heatmap needs every other axis fixed: add --where for {', '.join(crowded)}"
            )
        figure = _heatmap(sweep, frame, x, y, metrics)
    else:
        figure = _lines(sweep, frame, x, metrics, free)
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_bytes(figure_png(figure))
    return output


def _lines(
    sweep: Sweep, frame: pd.DataFrame, x: str, metrics: Sequence[str], free: Sequence[str]
) -> Any:
    labels = _ordered_labels(sweep, x)
    numeric = _numeric(labels)
    positions = numeric if numeric is not None else list(range(len(labels)))
    figure = new_figure(900, 560)
    ax = figure.add_subplot(1, 1, 1)
    groups = [
        dict(zip(free, combo, strict=True))
        for combo in itertools.product(*[_ordered_labels(sweep, a) for a in free])
    ]
    styles = ("-", "--", "-.", ":")
    for (g_index, group), (m_index, metric) in itertools.product(
        enumerate(groups), enumerate(metrics)
    ):
        rows = frame
        for axis, label in group.items():
            rows = rows[rows[axis] == label]
        xs, means, stds = [], [], []
        for position, label in zip(positions, labels, strict=True):
            values = [float(v) for v in rows[rows[x] == label][metric].dropna()]
            if values:
                mean, std = mean_std(values)
                xs.append(position)
                means.append(mean)
                stds.append(std)
        if not xs:
            continue
        name = metric + "".join(f", {a}={v}" for a, v in group.items())
        ax.errorbar(
            xs,
            means,
            yerr=stds,
            label=name,
            color=PALETTE[m_index % len(PALETTE)],
            linestyle=styles[g_index % len(styles)],
            marker="o",
            capsize=4,
        )
    if numeric is not None and min(numeric) > 0 and max(numeric) / min(numeric) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(positions)
    ax.set_xticklabels(labels)
    ax.set_xlabel(x)
    ax.set_ylabel("metric (mean ± std over seeds)")
    title = f"{sweep.name}: {', '.join(metrics)} against {x}"
    ax.set_title(textwrap.fill(title, width=80), fontsize=10)  # a long title stays in the figure
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _heatmap(sweep: Sweep, frame: pd.DataFrame, x: str, y: str, metrics: Sequence[str]) -> Any:
    x_labels, y_labels = _ordered_labels(sweep, x), _ordered_labels(sweep, y)
    figure = new_figure(560 * len(metrics), 520)
    for index, metric in enumerate(metrics):
        ax = figure.add_subplot(1, len(metrics), index + 1)
        grid: list[list[float]] = []
        notes: list[list[str]] = []
        for y_label in y_labels:
            row, note = [], []
            for x_label in x_labels:
                values = frame[(frame[x] == x_label) & (frame[y] == y_label)][metric].dropna()
                if len(values):
                    mean, std = mean_std([float(v) for v in values])
                    row.append(mean)
                    note.append(f"{mean:.1f}\n±{std:.1f}")
                else:
                    row.append(float("nan"))
                    note.append("")
            grid.append(row)
            notes.append(note)
        image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        for row_index, col_index in itertools.product(range(len(y_labels)), range(len(x_labels))):
            ax.text(
                col_index,
                row_index,
                notes[row_index][col_index],
                ha="center",
                va="center",
                color="white",
                fontsize=8,
            )
        ax.set_xticks(range(len(x_labels)))
        ax.set_xticklabels(x_labels)
        ax.set_yticks(range(len(y_labels)))
        ax.set_yticklabels(y_labels)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(metric)
        figure.colorbar(image, ax=ax, fraction=0.046)
    figure.suptitle(f"{sweep.name}: mean over seeds")
    figure.tight_layout()
    return figure
