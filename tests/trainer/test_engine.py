"""The run: checkpoint round trip, exact resume, checkpoint selection, an end-to-end
synthetic run, DDP on CPU (the CLI under torchrun; gradients synchronised)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from negforge.errors import ConfigError, InputError
from negforge.trainer.checkpoints import (
    CHECKPOINT_FORMAT,
    load_model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from negforge.trainer.config import build_config
from negforge.trainer.data import load_eval_samples, load_train_samples
from negforge.trainer.evaluation import evaluate, fixed_window_predictions
from negforge.trainer.prediction import predict
from negforge.trainer.run import train
from negforge.trainer.run_data import load_run_data
from negforge.trainer.synth import SynthConfig, generate

TINY_MODEL = {
    "model.hidden": 32,
    "model.heads": 4,
    "model.ff": 64,
    "model.enc_layers": 1,
    "model.dec_layers": 2,
    "model.t2v_layers": 1,
    "model.num_queries": 4,
}


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_synth")
    generate(
        out,
        SynthConfig(
            train_videos=24,
            val_videos=0,
            test_videos=6,
            novel_videos=6,
            novel_word_videos=6,
            seed=3,
        ),
    )
    return out


def tiny_config(synth: Path, **overrides):
    settings = {
        **TINY_MODEL,
        "progress": False,
        "cpu_threads": 1,
        "optim.batch_size": 8,
        "optim.epochs": 2,
        "data.val_fraction": 0.2,
        "eval_every": 1,
        **overrides,
    }
    return build_config(yaml_path=synth / "train_config.yaml", overrides=settings)


def test_checkpoint_round_trip_gives_the_same_predictions(tiny_synth, tmp_path):
    from negforge.trainer.backbones import build_model
    from negforge.trainer.config import ModelSettings

    for backbone in ("qd_detr", "moment_detr"):
        cfg = tiny_config(tiny_synth, **{"model.backbone": backbone})
        data = load_run_data(cfg)
        model_cfg = cfg.model.resolve(data.v_dim, data.t_dim)
        cfg = cfg.model_copy(update={"model": ModelSettings(**model_cfg.model_dump())})
        torch.manual_seed(0)
        model = build_model(model_cfg)
        with torch.no_grad():  # move away from the initialisation
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        test = data.evals["test_trivial"]
        before = predict(model, test, batch_size=4)
        path = tmp_path / f"{backbone}.pt"
        save_checkpoint(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "config": cfg.model_dump(mode="json"),
                "epoch": 0,
            },
        )
        loaded, loaded_cfg = load_model_from_checkpoint(path, "cpu")
        assert loaded_cfg.model.backbone == backbone
        old = tmp_path / "old.pt"
        save_checkpoint(old, {"format": "negforge-checkpoint/1", "model": {}, "config": {}})
        with pytest.raises(InputError, match="earlier negforge"):
            load_model_from_checkpoint(old, "cpu")
        after = predict(loaded, test, batch_size=4)
        for a, b in zip(before, after, strict=True):
            assert a.prediction == b.prediction
            torch.testing.assert_close(torch.from_numpy(a.saliency), torch.from_numpy(b.saliency))


def test_predict_returns_the_query_set_saliency(tiny_synth, tmp_path):
    cfg = tiny_config(tiny_synth)
    from negforge.trainer.backbones import build_model
    from negforge.trainer.run_data import dataset_for

    data = load_run_data(cfg)
    model = build_model(cfg.model.resolve(data.v_dim, data.t_dim))
    train_set = dataset_for(cfg, cfg.data.train, negatives=True)
    qid = train_set.samples[0].qid
    (one,) = predict(model, train_set, qids=[qid], negatives=True)
    length = one.saliency.shape[0]
    assert one.hard_neg_saliency is not None and one.hard_neg_saliency.shape == (3, length)
    assert one.inbatch_neg_saliency is not None and one.inbatch_neg_saliency.shape == (length,)
    other = train_set.samples[train_set.index_of(one.inbatch_neg_qid)]
    assert other.vid != train_set.samples[0].vid
    assert one.prediction.qid == qid and len(one.prediction.pred_relevant_windows) == 4


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_resume_continues_a_stopped_run_exactly(tiny_synth, tmp_path):
    straight = train(tiny_config(tiny_synth), tmp_path / "straight")
    assert straight.epochs_run == 2
    first = train(tiny_config(tiny_synth, **{"optim.epochs": 1}), tmp_path / "stopped")
    assert first.epochs_run == 1
    with pytest.raises(Exception, match="--resume"):
        train(tiny_config(tiny_synth), tmp_path / "stopped")
    resumed = train(tiny_config(tiny_synth), tmp_path / "stopped", resume=True)
    assert resumed.epochs_run == 1
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 1
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], rtol=0, atol=0, msg=name)
    rows_a = read_csv(tmp_path / "straight" / "metrics.csv")
    rows_b = read_csv(tmp_path / "stopped" / "metrics.csv")
    assert rows_a == rows_b and len(rows_a) == 2
    # The CSV contract of the metrics log.
    columns = rows_a[0].keys()
    for needed in ("epoch", "lr", "train/loss", "train/loss_span", "train/loss_cr"):
        assert needed in columns, needed
    for split in ("val", "test_trivial", "novel_composition"):
        for metric in ("R1@0.5", "R1@0.7", "mIoU", "mAP"):
            assert f"{split}/{metric}" in columns
    assert (tmp_path / "straight" / "config.yaml").is_file()
    assert (tmp_path / "straight" / "predictions" / "novel_composition.jsonl").is_file()


def test_best_checkpoint_is_chosen_on_validation_not_test(tiny_synth, tmp_path):
    result = train(tiny_config(tiny_synth), tmp_path / "run")
    best = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["select_on"] == "val"
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    val = [float(r["val/mIoU"]) for r in rows]
    assert result.best_epoch == 1 + max(range(len(val)), key=lambda i: (val[i], -i))
    data_train = {s.vid for s in load_train_samples(tiny_synth / "train.jsonl")}
    run = load_run_data(tiny_config(tiny_synth))
    val_vids = {s.vid for s in run.evals["val"].samples}
    train_vids = {s.vid for s in run.train.samples}
    assert val_vids and not val_vids & train_vids and val_vids <= data_train
    # Selected on a named split: best.pt holds the epoch with that split's best mIoU (the
    # first on a tie), and its evaluation at the end reproduces that epoch's row.
    chosen = train(tiny_config(tiny_synth, select_on="test_trivial"), tmp_path / "t")
    rows = read_csv(tmp_path / "t" / "metrics.csv")
    test = [float(r["test_trivial/mIoU"]) for r in rows]
    assert len(test) == 2
    assert chosen.best_epoch == 1 + max(range(len(test)), key=lambda i: (test[i], -i))
    best = read_checkpoint(tmp_path / "t" / "checkpoints" / "best.pt")
    assert best["select_on"] == "test_trivial" and best["epoch"] + 1 == chosen.best_epoch
    final = chosen.final_metrics["test_trivial"].metrics["mIoU"]
    assert final == pytest.approx(test[chosen.best_epoch - 1], rel=1e-5)


def test_level_count_is_taken_from_the_data(tiny_synth, tmp_path, capsys):
    """Two-level negatives train L_fr with three hinge terms; the few queries with three
    levels are named in a warning and train without L_fr; margins must fit the count."""
    data = tmp_path / "two_levels"
    shutil.copytree(tiny_synth, data)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    for row in rows[2:]:
        row["recomposed_queries"] = row["recomposed_queries"][:2]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train(tiny_config(data, **{"optim.epochs": 1}), tmp_path / "run")
    printed = capsys.readouterr().out
    assert "queries have 3 hard-negative levels, not 2 like" in printed
    assert "they train without L_fr" in printed
    columns = read_csv(tmp_path / "run" / "metrics.csv")[0]
    assert [c for c in columns if c.startswith("train/loss_fr_")] == [
        "train/loss_fr_0", "train/loss_fr_1", "train/loss_fr_2"
    ]
    assert float(columns["train/loss_fr"]) > 0
    saved = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["config"]
    assert saved["loss"]["shine"]["levels"] == 2 and result.epochs_run == 1
    with pytest.raises(ConfigError, match="margins has 4 values but 2 hard-negative levels"):
        train(tiny_config(data, **{"loss.shine.margins": [0.25] * 4}), tmp_path / "other")


@pytest.mark.slow
def test_end_to_end_synth_run_learns(tmp_path):
    """The quick start: negforge synth + negforge train (CLI) on CPU."""
    from typer.testing import CliRunner

    from negforge.cli import app

    runner = CliRunner()
    data = tmp_path / "synth"
    result = runner.invoke(app, ["synth", "-o", str(data)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--backbone",
            "qd_detr",
            "--config",
            str(data / "train_config.yaml"),
            "-o",
            str(run),
            "--epochs",
            "14",
            "--no-progress",
            "--cpu-threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(run / "metrics.csv")
    losses = [float(r["train/loss"]) for r in rows]
    assert losses[-1] < 0.7 * losses[0]
    test = load_eval_samples(data / "test_trivial.jsonl")
    baseline = evaluate(
        fixed_window_predictions(load_train_samples(data / "train.jsonl"), test), test
    ).metrics["R1@0.5"]
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    learned = metrics["test_trivial"]["metrics"]["R1@0.5"]
    assert learned > baseline + 20, (learned, baseline)
    assert metrics["novel_composition"]["by_type"]["v-n"]["count"] > 0
    # negforge eval on the best checkpoint reproduces the run's numbers.
    result = runner.invoke(
        app,
        [
            "eval",
            str(run / "checkpoints" / "best.pt"),
            "--eval",
            f"test_trivial={data / 'test_trivial.jsonl'}",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    again = json.loads((run / "eval" / "metrics.json").read_text())
    assert again["test_trivial"]["metrics"] == metrics["test_trivial"]["metrics"]
    assert "R1@0.5" in result.output


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tiny_synth, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "negforge",
        "train",
        "--config",
        str(tiny_synth / "train_config.yaml"),
        "-o",
        str(tmp_path / "ddp"),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--no-progress",
        "--batch-size",
        "8",
        "--hidden",
        "32",
        "--heads",
        "4",
        "--ff",
        "64",
        "--enc-layers",
        "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "DistributedDataParallel: 2 processes (gloo)" in done.stdout
    rows = read_csv(tmp_path / "ddp" / "metrics.csv")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train/loss"]))
    assert (tmp_path / "ddp" / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_ddp_step_synchronises_gradients(tiny_synth, tmp_path):
    """2 gloo processes, different batches: different local gradients, equal weights after
    one step of train_one_epoch (DDP averaged the gradients)."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    script = Path(__file__).resolve().parents[1] / "support" / "ddp_step.py"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(script),
               str(tiny_synth / "train_config.yaml"), str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    assert not set(ranks[0]["qids"]) & set(ranks[1]["qids"])  # each rank its own batch
    grads = [rank["local_grads"] for rank in ranks]
    assert any(not torch.allclose(grads[0][n], grads[1][n]) for n in grads[0])
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the epoch's mean over both processes
    initial, after = ranks[0]["initial"], ranks[0]["weights"]
    assert any(not torch.equal(initial[n], after[n]) for n in after)  # a step was taken
    for name, tensor in after.items():
        torch.testing.assert_close(tensor, ranks[1]["weights"][name], rtol=0, atol=0, msg=name)
