"""Training curves of a run from its ``metrics.csv``: loss parts, learning rate and the
grounding metrics of every evaluated split over epochs.

``metrics.csv`` (written by the trainer) has one row per epoch and the columns ``epoch``,
``lr``, ``train/<loss part>`` and ``<split>/{R1@0.5,R1@0.7,mIoU,mAP}``; a blank cell means
"not measured that epoch" (e.g. evaluation every few epochs).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from negforge.errors import InputError
from negforge.reporting.charts import PALETTE, figure_png, new_figure

METRICS = ("R1@0.5", "R1@0.7", "mIoU", "mAP")
WIDTH, HEIGHT = 1500, 860


@dataclass(frozen=True)
class RunLog:
    """The columns of a metrics.csv as float series (NaN where blank)."""

    path: Path
    epochs: list[float]
    columns: dict[str, list[float]]

    @property
    def loss_columns(self) -> list[str]:
        return [c for c in self.columns if c.startswith("train/")]

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
    path = metrics_csv_path(run)
    with open(path, newline="", encoding="utf-8") as handle:
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


def plot_run(log: RunLog, title: str | None = None) -> bytes:
    """A 2 x 3 grid: losses, learning rate and R1@0.5 / R1@0.7 / mIoU / mAP per split."""
    figure = new_figure(WIDTH, HEIGHT)
    axes = figure.subplots(2, 3)
    losses, rate = axes[0][0], axes[1][0]
    metric_axes = [axes[0][1], axes[0][2], axes[1][1], axes[1][2]]
    for index, column in enumerate(log.loss_columns):
        xs, ys = _points(log.epochs, log.columns[column])
        style = "-" if column == "train/loss" else "--"
        width = 2.2 if column == "train/loss" else 1.4
        losses.plot(
            xs,
            ys,
            style,
            lw=width,
            color=PALETTE[index % len(PALETTE)],
            label=column.removeprefix("train/"),
        )
    positive = [v for c in log.loss_columns for v in log.columns[c] if v > 0 and not math.isnan(v)]
    if positive and max(positive) / min(positive) > 50:
        losses.set_yscale("log")
    losses.set_title("Training losses", fontsize=11)
    if log.loss_columns:
        losses.legend(fontsize=8, frameon=False)
    if "lr" in log.columns:
        xs, ys = _points(log.epochs, log.columns["lr"])
        rate.plot(xs, ys, color=PALETTE[7], lw=1.5)
        if ys and min(ys) > 0:
            rate.set_yscale("log")
    rate.set_title("Learning rate", fontsize=11)
    splits = log.splits
    for ax, metric in zip(metric_axes, METRICS, strict=True):
        drawn = False
        for index, split in enumerate(splits):
            column = f"{split}/{metric}"
            if column not in log.columns:
                continue
            xs, ys = _points(log.epochs, log.columns[column])
            if not xs:
                continue
            drawn = True
            colour = PALETTE[index % len(PALETTE)]
            best = max(range(len(ys)), key=lambda i: ys[i])
            label = f"{split} (best {ys[best]:.2f} @ {xs[best]:g})"
            ax.plot(xs, ys, "-o", ms=3, lw=1.5, color=colour, label=label)
            ax.plot([xs[best]], [ys[best]], "*", ms=12, color=colour, mec="white", mew=0.6)
        ax.set_title(f"{metric} per split (★ best)", fontsize=11)
        if drawn:
            ax.legend(fontsize=8, frameon=False, loc="lower right")
        else:
            ax.text(
                0.5,
                0.5,
                "not logged",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="#888888",
            )
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    figure.suptitle(title or f"Training run: {log.path.parent.name}", fontsize=13)
    figure.subplots_adjust(left=0.05, right=0.98, top=0.91, bottom=0.07, hspace=0.35, wspace=0.2)
    return figure_png(figure)


def write_run_plot(run: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Plot a run's curves into ``output`` (PNG, written atomically)."""
    from negforge.atomic import atomic_path

    png = plot_run(read_run_log(run), title)
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_bytes(png)
    return output
