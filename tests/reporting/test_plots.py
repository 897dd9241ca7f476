"""Training-curve and saliency figures: valid PNGs of the announced size, bad input located."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from negforge.errors import InputError
from negforge.reporting.run_plot import (
    Selection,
    plot_run,
    read_run_log,
    read_selection,
    run_figure,
    write_run_plot,
)
from negforge.reporting.saliency_plot import SaliencyCurves, SaliencyExample, plot_saliency
from tests.support.png import assert_valid_png, png_size

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
    assert log.loss_groups() == {
        "shine": ["train/loss", "train/loss_cr", "train/loss_fr"],
        "base": ["train/loss_span"],
        "sub": [],
    }
    r1 = log.columns["val/R1@0.5"]
    assert [math.isnan(v) for v in r1] == [True, True, False, True, True, False]
    assert r1[2] == pytest.approx(50 * (1 - math.exp(-3 / 4)))


def test_run_plot_is_a_png_of_its_size(tmp_path: Path) -> None:
    write_metrics_csv(tmp_path / "run" / "metrics.csv")
    out = write_run_plot(tmp_path / "run", tmp_path / "curves.png")
    # 820 px + 20 px per legend row: 2 under the loss panels (cr, fr), 2 under the metric
    # panels (three splits in two columns).
    assert_valid_png(out.read_bytes(), (2000, 900))


def test_run_plot_reads_the_trainers_own_csv_writer(tmp_path: Path) -> None:
    """The trainer's metrics.csv writer (blank cells, 6 significant digits) plots as well."""
    from negforge.trainer.run_log import write_metrics_csv as trainer_write

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
    assert_valid_png(plot_run(log), (2000, 860))  # one legend row in each panel row


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
    assert png_size(out.read_bytes()) == (2000, 900)


def test_best_epoch_is_read_from_the_runs_best_checkpoint(tmp_path: Path) -> None:
    from negforge.trainer.checkpoints import save_checkpoint

    write_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert read_selection(tmp_path / "run") is None  # no best.pt: nothing is starred
    state = {"format": "negforge-checkpoint/2", "best_epoch": 6, "select_on": "val",
             "select_metric": "R1@0.7"}  # fmt: skip
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", state)
    assert read_selection(tmp_path / "run") == Selection(6, "val", "R1@0.7")
    assert read_selection(tmp_path / "run" / "metrics.csv") == Selection(6, "val", "R1@0.7")


def test_every_split_is_starred_at_the_val_selected_epoch(tmp_path: Path) -> None:
    """Not at each test split's own best: the test splits here keep improving after the
    selected epoch 6 (their own best is epoch 12)."""
    log = read_run_log(write_metrics_csv(tmp_path / "metrics.csv"))
    figure = run_figure(log, selection=Selection(6, "val", "mIoU"))
    metric_axes = [ax for ax in figure.axes if "per split" in ax.get_title()]
    assert len(metric_axes) == 4
    for ax in metric_axes:
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert len(stars) == len(SPLITS)
        assert all(list(star.get_xdata()) == [6] for star in stars)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0].startswith("val: ") and len(labels) == len(SPLITS)
        assert "epoch 6" in ax.get_title()
    assert "selected on val/mIoU" in figure._suptitle.get_text()  # type: ignore[union-attr]


def test_legends_are_outside_every_panel(tmp_path: Path) -> None:
    """A legend never overlaps the data area of any panel (its own or a neighbour's)."""
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path)
    # Many loss parts (aux layers, L_fr terms) make tall legends.
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        for layer in range(3):
            for term in ("span", "giou", "label", "saliency"):
                row[f"train/loss_{term}_{layer}"] = "0.5"
        for term in ("loss_fr_0", "loss_fr_1", "loss_fr_2", "loss_fr_3", "loss_giou"):
            row[f"train/{term}"] = "0.3"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure = run_figure(read_run_log(path), selection=Selection(6, "val", "mIoU"))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    panels = [ax for ax in figure.axes if ax.get_legend() is not None]
    assert len(panels) == 8
    boxes = [ax.get_window_extent(renderer) for ax in figure.axes]
    for ax in panels:
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y0 >= 0 and legend.y1 <= figure.bbox.height  # inside the figure
        for box in boxes:
            assert not legend.overlaps(box), (ax.get_title(), legend, box)


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


# --- plot-saliency over real checkpoints of the synthetic benchmark -------------------------

TINY_MODEL = {
    "model.hidden": 32,
    "model.heads": 4,
    "model.ff": 64,
    "model.enc_layers": 1,
    "model.dec_layers": 1,
    "model.t2v_layers": 1,
    "model.num_queries": 4,
    "progress": False,
    "cpu_threads": 1,
    "data.val_fraction": 0.25,
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two untrained tiny QD-DETR checkpoints (with / without SHINE) on a tiny synth set."""
    import torch

    from negforge.trainer.backbones import build_model
    from negforge.trainer.checkpoints import CHECKPOINT_FORMAT, save_checkpoint
    from negforge.trainer.config import ModelSettings, build_config
    from negforge.trainer.run_data import load_run_data
    from negforge.trainer.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("saliency")
    synth = root / "synth"
    generate(
        synth,
        SynthConfig(
            train_videos=12,
            val_videos=0,
            test_videos=4,
            novel_videos=4,
            novel_word_videos=4,
            seed=5,
        ),
    )
    paths = {}
    for name, shine in (("shine", True), ("baseline", False)):
        cfg = build_config(
            yaml_path=synth / "train_config.yaml",
            overrides={**TINY_MODEL, "loss.shine.enabled": shine},
        )
        data = load_run_data(cfg)
        resolved = cfg.model.resolve(data.v_dim, data.t_dim)
        cfg = cfg.model_copy(update={"model": ModelSettings(**resolved.model_dump())})
        torch.manual_seed(1 if shine else 2)
        model = build_model(resolved)
        path = root / name / "checkpoints" / "best.pt"
        save_checkpoint(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "config": cfg.model_dump(mode="json"),
                "epoch": 0,
            },
        )
        paths[name] = path
    return paths


def test_collected_curves_are_the_models_predictions(checkpoints: dict[str, Path]) -> None:
    from negforge.reporting.saliency_data import Checkpoint, collect_saliency, split_samples
    from negforge.trainer.checkpoints import load_model_from_checkpoint
    from negforge.trainer.prediction import predict
    from negforge.trainer.run_data import feature_stores, make_dataset

    shine = checkpoints["shine"]
    examples = collect_saliency(
        [Checkpoint(shine), Checkpoint(checkpoints["baseline"], "baseline")], "train", n=2, seed=4
    )
    assert len(examples) == 2
    model, cfg = load_model_from_checkpoint(shine)
    samples, _ = split_samples(cfg, "train")
    dataset = make_dataset(samples, cfg, feature_stores(cfg), with_negatives=True)
    qids = [e.qid for e in examples]
    direct = predict(model, dataset, qids=qids, negatives=True, seed=4)
    for example, expected in zip(examples, direct, strict=True):
        sample = samples[dataset.index_of(example.qid)]
        assert example.query == sample.query and example.gt_windows == list(sample.windows)
        assert len(example.hard_negative_texts) == 3  # synth train rows carry negatives
        mine, other = example.curves
        assert mine.label == "shine · qd_detr · SHINE" and other.label == "baseline"
        assert mine.positive == pytest.approx(expected.saliency.tolist())
        assert expected.hard_neg_saliency is not None
        np.testing.assert_allclose(mine.hard_negatives, expected.hard_neg_saliency, rtol=1e-6)
        assert expected.inbatch_neg_saliency is not None
        assert mine.inbatch_negative == pytest.approx(expected.inbatch_neg_saliency.tolist())
        top = expected.prediction.pred_relevant_windows[0]
        assert mine.predicted_window == pytest.approx((top[0], top[1]))
        assert (
            example.inbatch_negative_text
            == samples[dataset.index_of(expected.inbatch_neg_qid or "")].query
        )
        assert mine.positive != pytest.approx(other.positive)  # two different models


def test_plot_saliency_command(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from negforge.cli import app
    from negforge.reporting.saliency_data import split_samples
    from negforge.trainer.checkpoints import load_model_from_checkpoint

    _, cfg = load_model_from_checkpoint(checkpoints["shine"])
    test_qid = split_samples(cfg, "test_trivial")[0][0].qid
    runner = CliRunner()
    single = tmp_path / "one.png"
    result = runner.invoke(
        app,
        [
            "plot-saliency",
            str(checkpoints["shine"]),
            "--split",
            "test_trivial",
            "--qid",
            test_qid,
            "-o",
            str(single),
        ],
    )
    assert result.exit_code == 0, result.output
    # A test split has no hard negatives: positive + other video (4 legend entries): 1 panel.
    assert_valid_png(single.read_bytes(), (810, 52 + 300 + 48 + 17 * 4 + 12 + 18))
    double = tmp_path / "two.png"
    result = runner.invoke(
        app,
        [
            "plot-saliency",
            str(checkpoints["shine"]),
            "--split",
            "val",
            "--n",
            "2",
            "--compare",
            str(checkpoints["baseline"]),
            "-o",
            str(double),
        ],
    )
    assert result.exit_code == 0, result.output
    assert_valid_png(double.read_bytes(), (1600, 2 * (52 + 300 + 48 + 17 * 4 + 12 + 18)))
    bad = runner.invoke(
        app,
        [
            "plot-saliency",
            str(checkpoints["shine"]),
            "--split",
            "nope",
            "--n",
            "1",
            "-o",
            str(tmp_path / "x.png"),
        ],
    )
    assert bad.exit_code == 2 and "unknown split 'nope'" in bad.stderr  # one clean line
    # A query file works as a split too (here the training file: negatives drawn).
    from_file = tmp_path / "file.png"
    result = runner.invoke(
        app,
        [
            "plot-saliency",
            str(checkpoints["shine"]),
            "--split",
            str(cfg.data.train),
            "--n",
            "1",
            "-o",
            str(from_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert_valid_png(from_file.read_bytes(), (810, 52 + 300 + 48 + 17 * 7 + 12 + 18))
