"""The report's charts as PNG bytes (matplotlib's Agg canvas, imported lazily).

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``, so no global backend is touched and nothing opens a window. Every chart has a
fixed pixel size (``figsize`` x ``dpi``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from negforge.reporting.hierarchy import HierarchyResult
from negforge.reporting.plausibility import ArtifactPlausibility, bin_edges
from negforge.reporting.quality import ArtifactQuality, FillCounts, LevelQuality

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
#: Okabe-Ito colours: distinguishable for colour-blind readers.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
TOP_FILLS = 12


@dataclass(frozen=True)
class ChartImage:
    """One rendered chart."""

    key: str
    title: str
    png: bytes
    width: int
    height: int


def new_figure(width_px: int, height_px: int) -> Figure:
    """A figure of exactly ``width_px`` x ``height_px`` pixels with an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, at its own size (no tight bounding box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _percent_axis(ax: Axes, top: float | None = None) -> None:
    """Percent ticks; room above the bars for their labels, but no tick above 100 %."""
    from matplotlib.ticker import PercentFormatter

    if top is not None:
        ax.set_ylim(0, top)
        ax.set_yticks([t for t in ax.get_yticks() if -1e-9 <= t <= 1.0 + 1e-9])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _grouped_bars(
    ax: Axes,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
) -> None:
    """Grouped bars (one group per label, one bar per series) with value labels."""
    n = max(len(series), 1)
    width = 0.8 / n
    values_seen: list[float] = []
    for index, (name, values) in enumerate(series):
        xs = [i + (index - (n - 1) / 2) * width for i in range(len(labels))]
        heights = [v if v is not None else 0.0 for v in values]
        values_seen += heights
        bars = ax.bar(xs, heights, width * 0.95, label=name, color=PALETTE[index % len(PALETTE)])
        ax.bar_label(
            bars,
            labels=[f"{100 * v:.1f}" if v is not None else "–" for v in values],
            fontsize=8,
            padding=2,
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title(title, fontsize=11)
    _percent_axis(ax, top=max(max(values_seen, default=0.0) * 1.15, 0.05))


def _level_series(
    artifacts: Sequence[ArtifactQuality], getter: str
) -> list[tuple[str, list[float | None]]]:
    series: list[tuple[str, list[float | None]]] = []
    for artifact in artifacts:
        values: list[float | None] = []
        for level in [*artifact.levels, artifact.overall]:
            values.append(_level_value(level, getter))
        series.append((artifact.name, values))
    return series


def _level_value(level: LevelQuality, getter: str) -> float | None:
    fills: FillCounts = level.fills
    values: dict[str, float | None] = {
        "valid": level.valid_share,
        "template": level.template_kept_share,
        "copied": fills.equal_original_share,
        "outside": fills.outside_dictionary_share,
        "own": fills.own_type_share,
        "one_word": fills.one_word_share,
    }
    return values[getter]


def levels_chart(artifacts: Sequence[ArtifactQuality]) -> ChartImage:
    """Four panels by level: valid, template kept, fills equal to the original, outside D."""
    figure = new_figure(1200, 760)
    labels = [f"level {lv.level}" for lv in artifacts[0].levels] + ["all"] if artifacts else []
    with_dictionary = any(a.has_dictionary for a in artifacts)
    panels = [
        ("valid", "Valid rows"),
        ("template", "Negatives that keep every unmasked word"),
        ("copied", "Located fills equal to the masked word (lower is better)"),
        ("outside", "Changed fills: single words outside D")
        if with_dictionary
        else ("one_word", "Located fills of one word"),
    ]
    axes = figure.subplots(2, 2)
    for ax, (getter, title) in zip(axes.flat, panels, strict=True):
        _grouped_bars(ax, labels, _level_series(artifacts, getter), title)
    handles, names = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="upper center", ncol=min(len(names), 4), frameon=False)
    figure.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.06, hspace=0.35, wspace=0.15)
    return ChartImage("levels", "By level", figure_png(figure), 1200, 760)


def types_chart(artifacts: Sequence[ArtifactQuality]) -> ChartImage:
    """By primitive type: fills equal to the original and, with D, changed fills of own type."""
    figure = new_figure(1200, 420)
    kinds: list[str] = []
    for artifact in artifacts:
        kinds += [t.type for t in artifact.types if t.type not in kinds]
    with_dictionary = any(a.has_dictionary for a in artifacts)
    panels = [("copied", "Located fills equal to the masked word")]
    if with_dictionary:
        panels.append(("own", "Changed fills in D with the masked word's type"))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (getter, title) in zip(axes, panels, strict=True):
        series: list[tuple[str, list[float | None]]] = []
        for artifact in artifacts:
            by_type = {t.type: t.fills for t in artifact.types}
            values: list[float | None] = []
            for kind in kinds:
                fills = by_type.get(kind)
                if fills is None:
                    values.append(None)
                elif getter == "copied":
                    values.append(fills.equal_original_share)
                else:
                    values.append(fills.own_type_share)
            series.append((artifact.name, values))
        _grouped_bars(ax, kinds, series, title)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="upper center", ncol=min(len(names), 4), frameon=False)
    figure.subplots_adjust(left=0.06, right=0.98, top=0.8, bottom=0.1, wspace=0.15)
    return ChartImage("types", "By primitive type", figure_png(figure), 1200, 420)


def fill_distribution_chart(artifact: ArtifactQuality, top: int = TOP_FILLS) -> ChartImage:
    """The most frequent changed fills of each type, plus the words-per-fill histogram."""
    figure = new_figure(1500, 900)
    axes = figure.subplots(2, 3)
    panels = list(axes.flat)
    kinds = list(artifact.fill_words)[:5]
    for ax, kind in zip(panels, kinds, strict=False):
        counts = artifact.fill_words[kind]
        total = sum(counts.values())
        items = list(counts.items())[:top]
        words = [w for w, _ in items][::-1]
        values = [n for _, n in items][::-1]
        bars = ax.barh(range(len(words)), values, color=PALETTE[0])
        ax.set_yticks(range(len(words)), words, fontsize=9)
        ax.bar_label(
            bars, labels=[f"{n:,} ({100 * n / total:.1f}%)" for n in values], fontsize=8, padding=2
        )
        ax.set_xlim(0, max(values, default=1) * 1.35)
        ax.set_title(
            f"{kind}: top {len(items)} of {len(counts):,} fills ({total:,} changed)", fontsize=10
        )
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in panels[len(kinds) : 5]:
        ax.set_axis_off()
    histogram = panels[5]
    words_per_fill = artifact.overall.fills.words_per_fill
    located = max(artifact.overall.fills.located, 1)
    buckets = ["1", "2", "3", "4+"]
    counts_by_bucket = [
        words_per_fill.get(1, 0),
        words_per_fill.get(2, 0),
        words_per_fill.get(3, 0),
        sum(n for w, n in words_per_fill.items() if w >= 4),
    ]
    bars = histogram.bar(buckets, [c / located for c in counts_by_bucket], color=PALETTE[2])
    histogram.bar_label(bars, labels=[f"{c:,}" for c in counts_by_bucket], fontsize=8, padding=2)
    histogram.set_title("Words per located fill", fontsize=10)
    histogram.set_xlabel("words")
    _percent_axis(histogram, top=1.12)
    figure.suptitle(f"{artifact.name}: most frequent changed fills per type", fontsize=13)
    figure.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.07, hspace=0.3, wspace=0.35)
    return ChartImage(
        f"fills-{artifact.name}", f"Fill words: {artifact.name}", figure_png(figure), 1500, 900
    )


def spread_labels(positions: Sequence[float], gap: float) -> list[float]:
    """Label positions (pixels, any order) moved apart to at least ``gap`` from each other:
    pushed up in order, then shifted back so that their mean stays where it was."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed: list[float] = []
    for index in order:
        placed.append(positions[index] if not placed else max(positions[index],
                                                               placed[-1] + gap))  # fmt: skip
    shift = (sum(placed) - sum(positions)) / max(len(placed), 1)
    result = [0.0] * len(positions)
    for rank, index in enumerate(order):
        result[index] = placed[rank] - shift
    return result


def hierarchy_figure(results: Sequence[HierarchyResult]) -> Figure:
    """The hierarchy chart's figure: one line per artifact, value labels that never overlap
    (at each level the labels are spread apart vertically, right of the points)."""
    import math

    figure = new_figure(800, 480)
    ax = figure.subplots()
    for index, result in enumerate(results):
        levels = [lv.level for lv in result.levels]
        means = [lv.mean for lv in result.levels]
        errors = [1.96 * lv.std / math.sqrt(lv.pairs) if lv.pairs else 0.0 for lv in result.levels]
        ax.errorbar(
            levels,
            means,
            yerr=errors,
            marker="o",
            capsize=4,
            color=PALETTE[index % len(PALETTE)],
            label=result.artifact,
        )
    all_levels = sorted({lv.level for r in results for lv in r.levels})
    ax.set_xticks(all_levels, [f"level {lv}" for lv in all_levels])
    if all_levels:
        ax.set_xlim(all_levels[0] - 0.25, all_levels[-1] + 0.45)
    ax.set_ylabel("mean cosine similarity to the positive")
    encoder = results[0].encoder if results else ""
    ax.set_title(f"Hierarchy check ({encoder}): should fall from level to level", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="lower left")
    figure.subplots_adjust(left=0.11, right=0.97, top=0.9, bottom=0.1)
    ax.get_ylim()  # settle the autoscaled limits before reading the data -> pixel transform
    to_pixels = ax.transData
    for level in all_levels:
        points = [(index, lv.mean) for index, r in enumerate(results)
                  for lv in r.levels if lv.level == level]  # fmt: skip
        ys = [float(to_pixels.transform((level, mean))[1]) for _, mean in points]
        for (index, mean), y in zip(points, spread_labels(ys, gap=12.0), strict=True):
            ax.annotate(
                f"{mean:.3f}",
                (level, mean),
                textcoords="offset pixels",
                xytext=(12, y - to_pixels.transform((level, mean))[1] - 4),
                fontsize=8,
                color=PALETTE[index % len(PALETTE)],
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none",
                      "alpha": 0.85},
            )
    return figure


def hierarchy_chart(results: Sequence[HierarchyResult]) -> ChartImage:
    """Mean similarity to the positive by level, one line per artifact (95 % intervals)."""
    return ChartImage("hierarchy", "Hierarchy check", figure_png(hierarchy_figure(results)),
                      800, 480)  # fmt: skip


def plausibility_chart(results: Sequence[ArtifactPlausibility]) -> ChartImage:
    """Delta NLL distributions per level, one step histogram per artifact, medians marked."""
    levels = sorted({lv.level for r in results for lv in r.levels if lv.level is not None})
    panels = [*levels, None]
    width = 360 * len(panels) + 80
    figure = new_figure(width, 440)
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    edges = bin_edges()
    threshold = results[0].threshold if results else 0.0
    for ax, wanted in zip(axes, panels, strict=True):
        for index, result in enumerate(results):
            figures = result.overall if wanted is None else next(
                (lv for lv in result.levels if lv.level == wanted), None
            )  # fmt: skip
            if figures is None or not figures.negatives:
                continue
            colour = PALETTE[index % len(PALETTE)]
            densities = [count / figures.negatives for count in figures.histogram]
            ax.stairs(densities, edges, color=colour, linewidth=1.6,
                      label=f"{result.artifact} (median {figures.median_delta:+.2f})")  # fmt: skip
            if figures.median_delta is not None:
                ax.axvline(figures.median_delta, color=colour, linestyle="--", linewidth=1)
        ax.axvline(0.0, color="#5b6476", linewidth=0.8)
        ax.axvline(threshold, color="#b42318", linewidth=0.8, linestyle=":")
        ax.set_title("all levels" if wanted is None else f"level {wanted}", fontsize=11)
        ax.set_xlabel("Delta NLL (nats/token)")
        ax.set_xlim(edges[0], edges[-1])
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8, loc="upper right")
    axes[0].set_ylabel("share of negatives per 0.25 bin")
    figure.suptitle(
        f"Plausibility: Delta NLL = NLL(negative) - NLL(query); dotted red: threshold "
        f"{threshold:g}, dashed: medians (outer bins hold the tails)", fontsize=11
    )
    figure.subplots_adjust(left=0.06, right=0.99, top=0.86, bottom=0.13, wspace=0.08)
    return ChartImage("plausibility", "Plausibility", figure_png(figure), width, 440)
