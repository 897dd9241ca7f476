"""negforge sweep: a 2 x 2 grid x 2 seeds of tiny trials, locally and on a local Ray instance;
the table with mean ± std; resume after a killed sweep; a bad grid key (exit 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from negforge.sweep import load_sweep, run_and_report
from negforge.sweep.results import mean_std
from negforge.trainer.synth import SynthConfig, generate

TINY = {
    "model.hidden": 16,
    "model.heads": 2,
    "model.ff": 32,
    "model.enc_layers": 1,
    "model.dec_layers": 1,
    "model.num_queries": 3,
    "optim.epochs": 2,
    "optim.batch_size": 8,
    "eval_every": 1,
    "progress": False,
    "cpu_threads": 1,
}
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep_bench")
    generate(
        out,
        SynthConfig(
            train_videos=8, val_videos=3, test_videos=3, novel_videos=3, novel_word_videos=3
        ),
    )
    return out


def write_sweep(folder: Path, bench: Path, **changes) -> Path:
    spec = {
        "name": "tiny",
        "config": str(bench / "train_config.yaml"),
        "set": dict(TINY),
        "grid": {
            "loss.shine.alpha": [0.0, 1.0],
            "variant": {"base": {"loss.shine.enabled": False}, "shine": {}},
        },
        "seeds": [1, 2],
        "report": {"splits": ["val", "novel_composition"], "metrics": ["R1@0.5", "mIoU"]},
        "plots": [{"x": "loss.shine.alpha", "metric": ["val/mIoU", "novel_composition/mIoU"]}],
    }
    spec.update(changes)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def negforge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "negforge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


@pytest.fixture(scope="module")
def local_sweep(bench, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("local_sweep")
    path = write_sweep(folder, bench)
    done = negforge("sweep", str(path), "-o", str(folder / "out"), "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return path, folder / "out"


def metric_table(output: Path) -> pd.DataFrame:
    frame = pd.read_parquet(output / "results.parquet")
    return frame.sort_values("trial").reset_index(drop=True)


def test_local_sweep_tabulates_every_trial_with_mean_and_std(local_sweep):
    _, output = local_sweep
    frame = metric_table(output)
    assert len(frame) == 8  # 2 x 2 grid x 2 seeds
    assert set(frame["variant"]) == {"base", "shine"}
    assert set(frame["loss.shine.alpha"]) == {"0.0", "1.0"}
    assert sorted(frame["seed"].unique()) == [1, 2]
    csv = pd.read_csv(output / "results.csv")
    assert len(csv) == 8 and "novel_word/R1@0.7" in csv.columns
    # Every row is its trial's best-on-val metrics.
    for _, row in frame.iterrows():
        result = json.loads((output / "trials" / row["trial"] / "result.json").read_text())
        best = json.loads((output / "trials" / row["trial"] / "metrics.json").read_text())
        assert row["val/mIoU"] == result["metrics"]["val"]["mIoU"]
        assert row["novel_composition/R1@0.5"] == best["novel_composition"]["metrics"]["R1@0.5"]
    # The summary: one line per cell, mean ± std over the two seeds.
    summary = (output / "summary.md").read_text()
    lines = [line for line in summary.splitlines() if line.startswith("| ")]
    header, cells = lines[0], lines[2:]
    assert "val/mIoU" in header and "novel_composition/R1@0.5" in header
    assert len(cells) == 4
    cell = frame[(frame["variant"] == "shine") & (frame["loss.shine.alpha"] == "1.0")]
    mean, std = mean_std(list(cell["val/mIoU"]))
    line = next(c for c in cells if c.startswith("| 1.0 | shine | 2 |"))
    assert f"{mean:.2f} ± {std:.2f}" in line
    assert (output / "plots" / "0_loss.shine.alpha.png").stat().st_size > 1000
    # base ignores alpha: its two alpha cells trained the same model (same seed).
    base = frame[frame["variant"] == "base"].sort_values(["seed", "loss.shine.alpha"])
    first, second, *_ = list(base["val/mIoU"])
    assert first == second


def test_ray_sweep_gives_the_same_table(local_sweep, tmp_path):
    import ray  # the [ray] extra: scripts/setup.sh installs it

    path, local_output = local_sweep
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_and_report(
            load_sweep(path), tmp_path / "ray", engine="ray", echo=lambda _: None
        )
    finally:
        ray.shutdown()
    assert report.run is not None and not report.run.failed and len(report.run.ran) == 8
    ray_frame, local_frame = metric_table(tmp_path / "ray"), metric_table(local_output)
    metrics = [c for c in local_frame.columns if "/" in c]
    pd.testing.assert_frame_equal(ray_frame[metrics], local_frame[metrics])
    assert "±" in report.summary.read_text()


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(bench, tmp_path):
    grid = {"variant": {"base": {"loss.shine.enabled": False}, "shine": {}}}
    path = write_sweep(tmp_path, bench, set={**TINY, "optim.epochs": 5}, grid=grid, plots=[])
    output = tmp_path / "out"
    trials = output / "trials"
    process = subprocess.Popen(
        [sys.executable, "-m", "negforge", "sweep", str(path), "-o", str(output)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    killed_in: str | None = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            finished = list(trials.glob("*/result.json"))
            started = [
                p.parent.parent
                for p in trials.glob("*/checkpoints/last.pt")
                if not (p.parent.parent / "result.json").exists()
            ]
            if finished and started:
                os.killpg(process.pid, signal.SIGKILL)
                killed_in = started[0].name
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert killed_in is not None, "the sweep never had a finished and a running trial at once"
    before = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/result.json")}
    assert killed_in not in before
    done = negforge("sweep", str(path), "-o", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(before)} finished, {4 - len(before)} to run" in done.stdout
    after = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/result.json")}
    assert len(after) == 4
    assert all(after[name] == mtime for name, mtime in before.items())  # not rerun
    resumed = json.loads((trials / killed_in / "result.json").read_text())
    assert resumed["resumed"] is True and resumed["epochs_run"] < 5
    assert len(pd.read_parquet(output / "results.parquet")) == 4
    # A third run has nothing to do.
    again = negforge("sweep", str(path), "-o", str(output))
    assert "4 finished, 0 to run" in again.stdout


def test_a_grid_key_that_does_not_exist_exits_2_naming_it(bench, tmp_path):
    path = write_sweep(tmp_path, bench, grid={"loss.shine.alpah": [0.5, 1.0], "optim.lr": [1e-3]})
    done = negforge("sweep", str(path), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "loss.shine.alpah" in done.stderr and "sweep.yaml:" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_variant_key_and_bad_value_exit_2(bench, tmp_path):
    variant = write_sweep(tmp_path, bench, grid={"variant": {"a": {"loss.shine.nope": 1}}})
    done = negforge("sweep", str(variant), "--dry-run")
    assert done.returncode == 2 and "loss.shine.nope" in done.stderr
    value = write_sweep(tmp_path, bench, grid={"loss.shine.alpha": [-1.0]})
    done = negforge("sweep", str(value), "--dry-run")
    assert done.returncode == 2 and "alpha" in done.stderr and "Traceback" not in done.stderr


def test_sweep_plot_draws_a_heatmap_over_two_axes(local_sweep, tmp_path):
    path, output = local_sweep
    png = tmp_path / "heat.png"
    done = negforge(
        "sweep-plot", str(path), "--sweep-dir", str(output), "--x", "loss.shine.alpha",
        "--y", "variant", "--metric", "val/mIoU", "-o", str(png),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = negforge(
        "sweep-plot", str(path), "--sweep-dir", str(output), "--x", "loss.shine.beta",
        "--metric", "val/mIoU", "-o", str(png),
    )  # fmt: skip
    assert bad.returncode == 2 and "loss.shine.beta" in bad.stderr


def test_data_paths_in_a_sweep_are_relative_to_the_base_config(bench, tmp_path):
    (bench / "copy.jsonl").write_text((bench / "train.jsonl").read_text())
    path = write_sweep(
        tmp_path, bench, grid={"data": {"a": {"data.train": "copy.jsonl"}}}, plots=[]
    )
    sweep = load_sweep(path)
    assert {t.overrides["data.train"] for t in sweep.trials} == {str(bench / "copy.jsonl")}
    assert sweep.build_config(sweep.trials[0]).data.train == bench / "copy.jsonl"
    missing = write_sweep(tmp_path, bench, grid={"data": {"a": {"data.train": "nope.jsonl"}}})
    done = negforge("sweep", str(missing), "--dry-run")
    assert done.returncode == 2 and "nope.jsonl" in done.stderr
