"""Training-curve and saliency figures: valid PNGs of the announced size, bad input located."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from negforge.errors import InputError
from negforge.reporting.run_plot import plot_run, read_run_log, write_run_plot
from negforge.reporting.saliency_plot import SaliencyCurves, SaliencyExample, plot_saliency
from tests.test_report_render import assert_valid_png, png_size

SPLITS = ("val", "test_trivial", "novel_composition")


def write_metrics_csv(path: Path, epochs: int = 12, eval_every: int = 2) -> Path:
    """A metrics.csv in the trainer's layout; splits evaluated every ``eval_every`` epochs."""
    rows = []
    for epoch in range(1, epochs + 1):
        row: dict[str, object] = {"epoch": epoch, "lr": 1e-4 if epoch <= 8 else 1e-5}
        row["train/loss"] = 3 * math.exp(-epoch / 4) + 0.4
        row["train/loss_span"] = 0.5 * math.exp(-epoch / 3) + 0.05
        row["train/loss_cr"] = 0.3 * math.exp(-epoch / 5) + 0.02
        row["train/loss_fr"] = 0.2 * math.exp(-epoch / 6) + 0.01
        if epoch % eval_every == 0:
            for offset, split in enumerate(SPLITS):
                gain = 1 - math.exp(-epoch / 4)
                row[f"{split}/R1@0.5"] = 50 * gain - 5 * offset
                row[f"{split}/R1@0.7"] = 30 * gain - 3 * offset
                row[f"{split}/mIoU"] = 45 * gain - 4 * offset
                row[f"{split}/mAP"] = 40 * gain - 4 * offset
        rows.append(row)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_run_log_reads_blank_cells_as_missing(tmp_path: Path) -> None:
    write_metrics_csv(tmp_path / "run" / "metrics.csv", epochs=6, eval_every=3)
    log = read_run_log(tmp_path / "run")
    assert log.epochs == [1, 2, 3, 4, 5, 6]
    assert log.splits == list(SPLITS)
    assert log.loss_columns == ["train/loss", "train/loss_span", "train/loss_cr", "train/loss_fr"]
    r1 = log.columns["val/R1@0.5"]
    assert [math.isnan(v) for v in r1] == [True, True, False, True, True, False]
    assert r1[2] == pytest.approx(50 * (1 - math.exp(-3 / 4)))


def test_run_plot_is_a_png_of_its_size(tmp_path: Path) -> None:
    write_metrics_csv(tmp_path / "run" / "metrics.csv")
    out = write_run_plot(tmp_path / "run", tmp_path / "curves.png")
    assert_valid_png(out.read_bytes(), (1500, 860))


def test_run_plot_reads_the_trainers_own_csv_writer(tmp_path: Path) -> None:
    """The trainer's metrics.csv writer (blank cells, 6 significant digits) plots as well."""
    from negforge.trainer.engine import write_metrics_csv as trainer_write

    rows = [
        {"epoch": 1, "lr": 1e-4, "train/loss": 2.5, "val/R1@0.5": 10.0, "val/mIoU": 12.0},
        {"epoch": 2, "lr": 1e-4, "train/loss": 1.5, "val/R1@0.5": float("nan")},
        {"epoch": 3, "lr": 1e-5, "train/loss": 1.0, "val/R1@0.5": 20.0, "val/mIoU": 22.5},
    ]
    trainer_write(tmp_path / "metrics.csv", rows)
    log = read_run_log(tmp_path)
    assert log.splits == ["val"]
    assert math.isnan(log.columns["val/mIoU"][1])
    assert log.columns["val/mIoU"][2] == 22.5
    assert_valid_png(plot_run(log), (1500, 860))


def test_bad_metrics_csv_names_line_and_column(tmp_path: Path) -> None:
    path = write_metrics_csv(tmp_path / "metrics.csv", epochs=3)
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[2] = "oops"  # column train/loss of data row 2 = file line 3
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as caught:
        read_run_log(path)
    assert (caught.value.line, caught.value.field) == (3, "train/loss")
    with pytest.raises(InputError, match=r"no metrics\.csv"):
        read_run_log(tmp_path / "nowhere")


def test_plot_run_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from negforge.cli import app

    write_metrics_csv(tmp_path / "run" / "metrics.csv")
    out = tmp_path / "figs" / "curves.png"
    result = CliRunner().invoke(app, ["plot-run", str(tmp_path / "run"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert png_size(out.read_bytes()) == (1500, 860)


def _curve(length: int, peak: int, height: float) -> list[float]:
    return [height * math.exp(-(((i - peak) / 4) ** 2)) for i in range(length)]


def _example(qid: str, checkpoints: int) -> SaliencyExample:
    curves = []
    for index in range(checkpoints):
        drop = 0.5 if index == 0 else 0.05
        curves.append(
            SaliencyCurves(
                label=("with SHINE", "without SHINE")[index],
                clip_len=0.5,
                positive=_curve(60, 30, 3.0),
                hard_negatives=[_curve(60, 30, 3.0 * (1 - drop * k)) for k in (1, 2, 3)][::-1],
                inbatch_negative=_curve(60, 10, 0.5),
                predicted_window=(13.0, 17.5),
            )
        )
    return SaliencyExample(
        qid=qid,
        vid="V1",
        query="person puts the coffee cup in a box.",
        duration=30.0,
        gt_windows=[(12.5, 18.0)],
        hard_negative_texts=[
            "person puts the coffee cup under a table.",
            "person puts the plate under a table.",
            "someone throws the plate under a table.",
        ],
        inbatch_negative_text="a person is sitting on the bed.",
        curves=curves,
    )


@pytest.mark.parametrize(("rows", "columns", "size"), [(1, 1, (810, 549)), (2, 2, (1600, 996))])
def test_saliency_plot_size_grows_with_rows_and_checkpoints(rows, columns, size) -> None:
    png, width, height = plot_saliency([_example(f"q{i}", columns) for i in range(rows)])
    assert (width, height) == size
    assert_valid_png(png, size)


def test_saliency_curves_must_share_the_clip_count() -> None:
    with pytest.raises(ValueError, match="clips"):
        SaliencyCurves(label="x", clip_len=1.0, positive=[0.0] * 5, hard_negatives=[[0.0] * 4])
