"""Experiment trackers (``--log``): TensorBoard event files read back with TensorBoard's own
reader hold every loss part, the lr and every metric of every evaluated split; a missing
tracker package stops the run before anything is written (exit 2)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from negforge.errors import ConfigError
from negforge.trainer.loggers import NullLogger, open_logger, scalars
from negforge.trainer.run import train
from tests.trainer.test_engine import tiny_config, tiny_synth  # noqa: F401  (fixture)

SPLITS = ("val", "test_trivial", "novel_composition", "novel_word")
METRICS = ("R1@0.5", "R1@0.7", "mIoU", "mAP")


def read_events(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in ``log_dir``: [(step, value), ...]."""
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_tensorboard_holds_every_loss_part_lr_and_metric(tiny_synth, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(tiny_config(tiny_synth, eval_every=1), run)
    events = read_events(run / "tb")
    rows = read_csv_rows(run / "metrics.csv")
    loss_parts = [c for c in rows[0] if c.startswith("train/")]
    # The criterion's terms, SHINE's included (L_cr and its two constraints, L_fr and its
    # hinge terms), the base terms and the auxiliary layers' copies.
    for part in ("loss", "loss_cr", "loss_intra", "loss_inter", "loss_fr", "loss_fr_0",
                 "loss_span", "loss_giou", "loss_label", "loss_span_0"):  # fmt: skip
        assert f"train/{part}" in loss_parts
    expected = {"lr", *loss_parts} | {f"{s}/{m}" for s in SPLITS for m in METRICS}
    assert set(events) == expected
    # Every epoch's value equals metrics.csv's (6 significant digits there).
    for row in rows:
        step = int(row["epoch"])
        for tag in expected:
            logged = dict(events[tag])
            assert logged[step] == pytest.approx(float(row[tag]), rel=1e-5, abs=1e-6), tag


def test_resumed_run_logs_each_epoch_once(tiny_synth, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(tiny_config(tiny_synth, **{"optim.epochs": 1}), run)
    train(tiny_config(tiny_synth, **{"optim.epochs": 2}), run, resume=True)
    events = read_events(run / "tb")
    assert [step for step, _ in events["train/loss"]] == [1, 2]
    assert [step for step, _ in events["val/mIoU"]] == [1, 2]


def test_log_none_writes_no_tracker_files(tiny_synth, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(tiny_config(tiny_synth, log="none", **{"optim.epochs": 1}), run)
    assert (run / "metrics.csv").is_file()
    assert not (run / "tb").exists()


@pytest.mark.parametrize(
    ("backend", "module"),
    [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")],
)
def test_missing_tracker_stops_before_training(
    tiny_synth, tmp_path, monkeypatch, backend, module  # noqa: F811
):
    monkeypatch.setitem(sys.modules, module, None)  # "import X" raises ImportError
    with pytest.raises(ConfigError, match=rf"--log {backend} needs the '{backend}' package"):
        train(tiny_config(tiny_synth, log=backend), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_tracker_is_exit_2_on_the_command_line(
    tiny_synth, tmp_path, monkeypatch  # noqa: F811
):
    from typer.testing import CliRunner

    from negforge.cli import app

    monkeypatch.setitem(sys.modules, "wandb", None)
    config = tiny_synth / "train_config.yaml"
    result = CliRunner().invoke(
        app, ["train", "--config", str(config), "-o", str(tmp_path / "run"), "--log", "wandb"]
    )
    assert result.exit_code == 2, result.output
    assert "--log wandb needs the 'wandb' package" in result.output
    assert "Traceback" not in result.output


def test_unknown_tracker_is_refused(tiny_synth, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="log"):
        tiny_config(tiny_synth, log="comet")


def test_other_ranks_and_none_log_nothing(tmp_path):
    assert isinstance(open_logger("tensorboard", tmp_path, config={}, is_main=False), NullLogger)
    assert isinstance(open_logger("none", tmp_path, config={}), NullLogger)
    assert not list(tmp_path.iterdir())


def test_scalars_skip_the_step_and_unmeasured_cells():
    row = {"epoch": 3, "lr": 1e-4, "train/loss": 1.5, "val/mIoU": math.nan, "note": "x"}
    assert scalars(row) == {"lr": 1e-4, "train/loss": 1.5}


class Recorder:
    """A stand-in module (wandb / mlflow are not installed in CI) recording the calls the
    logger makes, to check which mode / store it picks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return record

    def named(self, name: str) -> list[tuple[tuple, dict]]:
        return [(a, k) for n, a, k in self.calls if n == name]


@pytest.mark.parametrize(("env", "mode"), [(None, "offline"), ("online", "online")])
def test_wandb_is_offline_unless_the_user_says(tmp_path, monkeypatch, env, mode):
    wandb = Recorder()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    logger = open_logger("wandb", tmp_path / "run", config={"seed": 1})
    logger.log({"epoch": 2, "lr": 0.1, "val/mIoU": math.nan}, step=2)
    logger.close()
    [(_, init)] = wandb.named("init")
    assert init["mode"] == mode and init["dir"] == str(tmp_path / "run")
    assert init["config"] == {"seed": 1} and init["resume"] is None
    assert wandb.named("log") == [(({"lr": 0.1},), {"step": 2})]
    assert wandb.named("finish") == [((), {})]


@pytest.mark.parametrize("env", [None, "http://tracking.example:5000"])
def test_mlflow_uses_a_file_store_in_the_run_unless_told(tmp_path, monkeypatch, env):
    mlflow = Recorder()
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    logger = open_logger("mlflow", tmp_path / "run", config={"optim": {"lr": 0.1}})
    logger.log({"epoch": 1, "val/R1@0.5": 20.0}, step=1)
    logger.close()
    uris = [args[0] for args, _ in mlflow.named("set_tracking_uri")]
    assert uris == ([(tmp_path / "run" / "mlruns").resolve().as_uri()] if env is None else [])
    assert mlflow.named("log_params") == [(({"optim.lr": "0.1"},), {})]
    assert mlflow.named("log_metrics") == [(({"val/R1_at_0.5": 20.0},), {"step": 1})]
    assert len(mlflow.named("end_run")) == 1
