"""Saliency over time for a query and its negatives, in the spirit of SHINE's Fig. 1 / Fig. 6.

For one video: the predicted saliency of the positive query, of its three hierarchical hard
negatives and of a query of another video, with the ground-truth window shaded and the
predicted window marked. With a second checkpoint (e.g. trained without SHINE) its panel
sits beside the first, on the same query and the same y range.

The plotting here works on plain arrays (:class:`SaliencyCurves`); collecting them from a
checkpoint is :mod:`negforge.reporting.saliency_data`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, model_validator

from negforge.reporting.charts import figure_png, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

POSITIVE_COLOUR = "#1d2330"
#: Hard negatives from closest (level 1) to farthest (level 3): warm to cool.
HARD_NEGATIVE_COLOURS = ("#D55E00", "#E69F00", "#0072B2")
INBATCH_COLOUR = "#7f7f7f"
GT_COLOUR = "#009E73"
PRED_COLOUR = "#CC79A7"
# Layout in pixels: every row is a header, the panels, their x labels and a legend.
PANEL_WIDTH, PANEL_HEIGHT = 720, 300
LEFT, RIGHT, GAP_X = 70, 20, 70
HEADER, XLABEL, ROW_GAP = 52, 48, 18
LEGEND_ENTRY = 17


class SaliencyCurves(BaseModel):
    """One checkpoint's saliency on one query set (scores per clip of ``clip_len`` seconds)."""

    label: str  # the checkpoint's name in the figure
    clip_len: float = Field(gt=0)
    positive: list[float]
    hard_negatives: list[list[float]] = Field(default_factory=list)  # level 1..3
    inbatch_negative: list[float] | None = None
    predicted_window: tuple[float, float] | None = None  # seconds

    @model_validator(mode="after")
    def _same_length(self) -> SaliencyCurves:
        length = len(self.positive)
        for curve in [*self.hard_negatives, self.inbatch_negative or []]:
            if curve and len(curve) != length:
                raise ValueError(f"a negative's curve has {len(curve)} clips, positive {length}")
        return self


class SaliencyExample(BaseModel):
    """One query of one video with the curves of one or more checkpoints."""

    qid: str
    vid: str
    query: str
    duration: float
    gt_windows: list[tuple[float, float]]
    hard_negative_texts: list[str] = Field(default_factory=list)
    inbatch_negative_text: str | None = None
    curves: list[SaliencyCurves]


def _times(curves: SaliencyCurves) -> list[float]:
    """Clip centres in seconds."""
    return [(i + 0.5) * curves.clip_len for i in range(len(curves.positive))]


def _draw_panel(ax: Axes, example: SaliencyExample, curves: SaliencyCurves) -> None:
    times = _times(curves)
    for start, end in example.gt_windows:
        ax.axvspan(start, end, color=GT_COLOUR, alpha=0.16, lw=0)
    if curves.inbatch_negative:
        ax.plot(times, curves.inbatch_negative, ":", lw=1.6, color=INBATCH_COLOUR)
    for level, curve in enumerate(curves.hard_negatives):
        colour = HARD_NEGATIVE_COLOURS[level % len(HARD_NEGATIVE_COLOURS)]
        ax.plot(times, curve, "--", lw=1.5, color=colour)
    ax.plot(times, curves.positive, "-", lw=2.4, color=POSITIVE_COLOUR)
    if curves.predicted_window is not None:
        start, end = curves.predicted_window
        for x in (start, end):
            ax.axvline(x, color=PRED_COLOUR, lw=1.6, ls="-.")
        ax.annotate(
            "",
            xy=(end, 1.0),
            xytext=(start, 1.0),
            xycoords=("data", "axes fraction"),
            arrowprops={"arrowstyle": "<->", "color": PRED_COLOUR, "lw": 1.6},
        )
    ax.set_xlim(0, max(example.duration, times[-1] + curves.clip_len / 2 if times else 0))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("saliency score")
    ax.grid(alpha=0.25)
    ax.set_title(curves.label, fontsize=11, loc="left")


def _legend_entries(example: SaliencyExample) -> list[tuple[str, str, str, float]]:
    """(line style, colour, text, line width) for every drawn element."""
    wrap = 95

    def short(text: str) -> str:
        return textwrap.shorten(text, wrap, placeholder=" …")

    entries = [("-", POSITIVE_COLOUR, f"positive: {short(example.query)}", 2.4)]
    for level, text in enumerate(example.hard_negative_texts):
        colour = HARD_NEGATIVE_COLOURS[level % len(HARD_NEGATIVE_COLOURS)]
        entries.append(("--", colour, f"hard negative L{level + 1}: {short(text)}", 1.5))
    if example.inbatch_negative_text is not None:
        entries.append(
            (":", INBATCH_COLOUR, f"other video: {short(example.inbatch_negative_text)}", 1.6)
        )
    return entries


def plot_saliency(examples: Sequence[SaliencyExample]) -> tuple[bytes, int, int]:
    """The figure (PNG bytes, width, height): one row per example, one column per checkpoint."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not examples:
        raise ValueError("no example to plot")
    columns = max(len(e.curves) for e in examples)
    legend_columns = 2 if columns > 1 else 1
    most_entries = max(len(_legend_entries(e)) for e in examples) + 2
    legend_height = LEGEND_ENTRY * -(-most_entries // legend_columns) + 12
    row_height = HEADER + PANEL_HEIGHT + XLABEL + legend_height + ROW_GAP
    width = LEFT + columns * PANEL_WIDTH + (columns - 1) * GAP_X + RIGHT
    height = row_height * len(examples)
    figure = new_figure(width, height)

    def box(x: float, y_top: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Pixels (from the top left) to figure fractions (from the bottom left)."""
        return (x / width, 1 - (y_top + h) / height, w / width, h / height)

    for row, example in enumerate(examples):
        top = row * row_height
        axes = [
            figure.add_axes(
                box(LEFT + c * (PANEL_WIDTH + GAP_X), top + HEADER, PANEL_WIDTH, PANEL_HEIGHT)
            )
            for c in range(len(example.curves))
        ]
        for ax, curves in zip(axes, example.curves, strict=True):
            _draw_panel(ax, example, curves)
        # The checkpoints of one query share a y range, so their curves compare directly.
        low = min(ax.get_ylim()[0] for ax in axes)
        high = max(ax.get_ylim()[1] for ax in axes)
        for ax in axes:
            ax.set_ylim(low, high)
        figure.text(
            LEFT / width,
            1 - (top + 18) / height,
            f"{example.qid} · video {example.vid} · {example.duration:.1f} s",
            fontsize=10,
            fontweight="bold",
            va="center",
        )
        legend_ax = figure.add_axes(
            box(LEFT, top + HEADER + PANEL_HEIGHT + XLABEL, width - LEFT - RIGHT, legend_height)
        )
        legend_ax.set_axis_off()
        entries = _legend_entries(example)
        handles: list[Line2D | Patch] = [
            Line2D([], [], ls=style, color=colour, lw=lw) for style, colour, _, lw in entries
        ]
        labels = [text for _, _, text, _ in entries]
        handles += [
            Patch(color=GT_COLOUR, alpha=0.3),
            Line2D([], [], ls="-.", color=PRED_COLOUR, lw=1.6),
        ]
        labels += ["ground-truth window", "predicted window (top-1)"]
        legend_ax.legend(
            handles,
            labels,
            loc="upper left",
            ncol=legend_columns,
            fontsize=8.5,
            frameon=False,
            handlelength=3,
            borderaxespad=0,
            labelspacing=0.35,
        )
    return figure_png(figure), width, height
