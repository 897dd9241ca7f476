"""Training curves of a run from its ``metrics.csv``: loss parts, learning rate and the
grounding metrics of every evaluated split over epochs.

``metrics.csv`` (written by the trainer) has one row per epoch and the columns ``epoch``,
``lr``, ``train/<loss part>`` and ``<split>/{R1@0.5,R1@0.7,mIoU,mAP}``; a blank cell means
"not measured that epoch" (e.g. evaluation every few epochs).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from negforge.errors import InputError
from negforge.reporting.charts import PALETTE, figure_png, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

METRICS = ("R1@0.5", "R1@0.7", "mIoU", "mAP")
WIDTH, HEIGHT = 2000, 820
LEGEND_ROW_PX = 20  # the figure grows by this per legend row under a panel
#: The SHINE terms of Eq. 5 and L_cr's two constraints (paper Sec. 3.3).
SHINE_TERMS = frozenset({"cr", "fr", "inter", "intra"})
_SUB_TERM = re.compile(r"^(?P<base>.+)_(?P<index>\d+)$")
_STYLES = ("--", "-.", ":", "-")  # loss terms: colours first, then line styles
TOTAL_COLOUR = "#1d2330"
LR_COLOUR = "#7f7f7f"


@dataclass(frozen=True)
class RunLog:
    """The columns of a metrics.csv as float series (NaN where blank)."""

    path: Path
    epochs: list[float]
    columns: dict[str, list[float]]

    @property
    def loss_columns(self) -> list[str]:
        return [c for c in self.columns if c.startswith("train/")]

    def loss_groups(self) -> dict[str, list[str]]:
        """Loss columns by panel: total + SHINE terms, base terms, numbered sub-terms.

        A name ending in ``_<k>`` is a sub-term (a constraint of L_fr, an auxiliary decoder
        layer); ``loss_cr``/``loss_fr``/``loss_inter``/``loss_intra`` are SHINE's terms.
        """
        groups: dict[str, list[str]] = {"shine": [], "base": [], "sub": []}
        for column in self.loss_columns:
            name = column.removeprefix("train/")
            term = name.removeprefix("loss_")
            if name == "loss" or term in SHINE_TERMS:
                groups["shine"].append(column)
            elif _SUB_TERM.match(name):
                groups["sub"].append(column)
            else:
                groups["base"].append(column)
        return groups

    @property
    def splits(self) -> list[str]:
        """Evaluated splits, in column order (``val`` first when present)."""
        names: list[str] = []
        for column in self.columns:
            split, _, metric = column.rpartition("/")
            if split and split != "train" and metric in METRICS and split not in names:
                names.append(split)
        return sorted(names, key=lambda s: (s != "val", names.index(s)))


def metrics_csv_path(run: str | Path) -> Path:
    """``RUN_DIR/metrics.csv``, or the file itself when given a file."""
    run = Path(run)
    path = run / "metrics.csv" if run.is_dir() else run
    if not path.is_file():
        raise InputError("no metrics.csv (is this a training run folder?)", path=path)
    return path


def read_run_log(run: str | Path) -> RunLog:
    """Parse a metrics.csv; a non-numeric cell raises InputError naming line and column."""
    from negforge.readers import read_text

    path = metrics_csv_path(run)
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "epoch" not in reader.fieldnames:
            raise InputError("metrics.csv needs an 'epoch' column", path=path, line=1)
        names = [n for n in reader.fieldnames if n != "epoch"]
        epochs: list[float] = []
        columns: dict[str, list[float]] = {n: [] for n in names}
        for line, record in enumerate(reader, start=2):
            for name in ["epoch", *names]:
                text = (record.get(name) or "").strip()
                try:
                    value = float(text) if text else math.nan
                except ValueError:
                    raise InputError(
                        f"not a number: {text!r}", path=path, line=line, field=name
                    ) from None
                if name == "epoch":
                    if math.isnan(value):
                        raise InputError("empty epoch", path=path, line=line, field="epoch")
                    epochs.append(value)
                else:
                    columns[name].append(value)
    if not epochs:
        raise InputError("metrics.csv has no rows", path=path)
    return RunLog(path, epochs, columns)


def _points(epochs: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(e, v) for e, v in zip(epochs, values, strict=True) if not math.isnan(v)]
    return [e for e, _ in pairs], [v for _, v in pairs]


def _not_logged(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(
        0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="#888888"
    )


@dataclass(frozen=True)
class Selection:
    """The epoch of a run's ``best.pt`` and what chose it (``select_on`` / ``select_metric``)."""

    epoch: int
    split: str
    metric: str

    def describe(self, log: RunLog) -> str:
        if f"{self.split}/{self.metric}" in log.columns:
            return f"epoch {self.epoch}, selected on {self.split}/{self.metric}"
        return f"epoch {self.epoch} (best.pt: the last evaluated epoch)"


def read_selection(run: str | Path) -> Selection | None:
    """The selection recorded in ``RUN_DIR/checkpoints/best.pt``; None without one."""
    run = Path(run)
    best = (run if run.is_dir() else run.parent) / "checkpoints" / "best.pt"
    if not best.is_file():
        return None
    from negforge.trainer.checkpoints import read_checkpoint

    state = read_checkpoint(best)
    if state.get("best_epoch") is None:
        return None
    return Selection(
        int(state["best_epoch"]),
        str(state.get("select_on", "val")),
        str(state.get("select_metric", "mIoU")),
    )


def _legend_below(ax: Axes, columns: int, **kwargs: object) -> None:
    """A legend under the axes (outside it, so it never covers a curve)."""
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        fontsize=8,
        frameon=False,
        ncol=columns,
        **kwargs,
    )


def _legend_columns(entries: int) -> int:
    return 1 if entries <= 2 else 2 if entries <= 6 else 3


def _plot_losses(ax: Axes, log: RunLog, columns: list[str], title: str) -> None:
    """One line per loss column; log scale when the values span over 50x."""
    for index, column in enumerate(columns):
        xs, ys = _points(log.epochs, log.columns[column])
        ax.plot(
            xs,
            ys,
            _STYLES[(index // len(PALETTE)) % len(_STYLES)],
            lw=1.6,
            color=PALETTE[index % len(PALETTE)],
            label=column.removeprefix("train/"),
        )
    values = [v for c in columns for v in log.columns[c] if v > 0 and not math.isnan(v)]
    if values and max(values) / min(values) > 50:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    if columns:
        _legend_below(ax, _legend_columns(len(columns)))
    else:
        _not_logged(ax)


def _plot_total(ax: Axes, log: RunLog) -> None:
    """The total loss, with the learning rate on a second (log) axis."""
    if "train/loss" in log.columns:
        xs, ys = _points(log.epochs, log.columns["train/loss"])
        ax.plot(xs, ys, "-", lw=2.4, color=TOTAL_COLOUR, label="loss (left)")
    else:
        _not_logged(ax)
    ax.set_title("Total loss and learning rate", fontsize=11)
    if "lr" not in log.columns:
        return
    xs, ys = _points(log.epochs, log.columns["lr"])
    rate = ax.twinx()
    rate.plot(xs, ys, ":", lw=1.8, color=LR_COLOUR, label="lr (right)")
    if ys and min(ys) > 0:
        rate.set_yscale("log")
    rate.tick_params(axis="y", colors=LR_COLOUR)
    lines = ax.get_lines() + rate.get_lines()
    _legend_below(ax, 2, handles=lines, labels=[str(line.get_label()) for line in lines])


def _plot_metric(ax: Axes, log: RunLog, metric: str, selection: Selection | None) -> None:
    """Every split's curve; with a selection, a vertical line at its epoch and a star on each
    split's value there (the numbers of best.pt)."""
    drawn = 0
    for index, split in enumerate(log.splits):
        column = f"{split}/{metric}"
        if column not in log.columns:
            continue
        xs, ys = _points(log.epochs, log.columns[column])
        if not xs:
            continue
        drawn += 1
        colour = PALETTE[index % len(PALETTE)]
        label = split
        if selection is not None and selection.epoch in xs:
            value = ys[xs.index(selection.epoch)]
            label = f"{split}: {value:.2f}"
            ax.plot([selection.epoch], [value], "*", ms=12, color=colour, mec="white", mew=0.6)
        ax.plot(xs, ys, "-o", ms=3, lw=1.5, color=colour, label=label)
    if not drawn:
        ax.set_title(f"{metric} per split", fontsize=11)
        _not_logged(ax)
        return
    if selection is not None:
        ax.axvline(selection.epoch, color="#555555", lw=1.0, ls="--", zorder=0)
        ax.set_title(f"{metric} per split (★ best.pt, epoch {selection.epoch})", fontsize=11)
    else:
        ax.set_title(f"{metric} per split", fontsize=11)
    _legend_below(ax, _legend_columns(drawn))


def plot_run(log: RunLog, title: str | None = None, selection: Selection | None = None) -> bytes:
    """The figure of :func:`run_figure` as PNG bytes."""
    return figure_png(run_figure(log, title, selection))


def run_figure(log: RunLog, title: str | None = None, selection: Selection | None = None) -> Figure:
    """A 2 x 4 grid: total loss + lr, SHINE / base / sub loss terms, and R1@0.5 / R1@0.7 /
    mIoU / mAP per split, each split starred at the ``selection`` epoch (best.pt's, chosen on
    val) -- not at its own best. Legends sit under their panels; the figure grows with them."""
    from matplotlib.ticker import MaxNLocator

    groups = log.loss_groups()
    shine = [c for c in groups["shine"] if c != "train/loss"]
    loss_panels = [shine, groups["base"], groups["sub"]]
    loss_rows = max(math.ceil(len(c) / _legend_columns(len(c))) for c in loss_panels)
    split_rows = math.ceil(len(log.splits) / _legend_columns(len(log.splits)))
    figure = new_figure(WIDTH, HEIGHT + LEGEND_ROW_PX * (max(loss_rows, 1) + max(split_rows, 1)))
    figure.set_layout_engine("constrained")
    axes = figure.subplots(2, 4)
    _plot_total(axes[0][0], log)
    _plot_losses(axes[0][1], log, shine, "SHINE terms (L_cr, L_fr)")
    _plot_losses(axes[0][2], log, groups["base"], "Base terms (L_base)")
    _plot_losses(axes[0][3], log, groups["sub"], "Sub-terms (L_fr constraints, aux. layers)")
    for ax, metric in zip(axes[1], METRICS, strict=True):
        _plot_metric(ax, log, metric, selection)
    for ax in axes.flat:
        if not ax.lines:
            continue  # a "not logged" panel
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    heading = title or f"Training run: {log.path.parent.name}"
    if selection is not None:
        heading += f"  (★ best.pt: {selection.describe(log)})"
    figure.suptitle(heading, fontsize=13)
    return figure


def write_run_plot(run: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Plot a run's curves into ``output`` (PNG, written atomically), best.pt's epoch starred
    when the run folder has one."""
    from negforge.atomic import atomic_path

    png = plot_run(read_run_log(run), title, read_selection(run))
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_bytes(png)
    return output
