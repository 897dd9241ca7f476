"""The sweep's overhead per trial against running the same trainings by hand, one after another.

Both sides train the same tiny trials (a synth benchmark, 2 variants x N seeds, 1 torch thread
each) from a fresh process: "by hand" is one ``negforge train`` command per trial, run one
after another; "sweep" is one ``negforge sweep --workers 1`` over the same grid (which also
writes the table, the summary and a plot). The two alternate, ``--rounds`` times each, into
fresh folders; the script prints every wall time, the medians, the ratio sweep / by hand and
the overhead per trial ((sweep - by hand) / trials).

    .venv/bin/python benchmarks/bench_sweep.py [--seeds 2] [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from negforge.trainer.synth import SynthConfig, generate

TINY = {
    "model.hidden": 32,
    "model.heads": 4,
    "model.ff": 64,
    "optim.batch_size": 16,
    "eval_every": 1,
    "progress": False,
    "cpu_threads": 1,
}
VARIANTS = {"base": {"loss.shine.enabled": False}, "shine": {}}
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}


def flag(key: str, value: object) -> list[str]:
    """A training setting as ``negforge train`` flags (the generated config flags)."""
    names = {
        "model.hidden": "--hidden",
        "model.heads": "--heads",
        "model.ff": "--ff",
        "optim.batch_size": "--batch-size",
        "optim.epochs": "--epochs",
        "eval_every": "--eval-every",
        "cpu_threads": "--cpu-threads",
        "seed": "--seed",
    }
    if key == "progress":
        return ["--no-progress"]
    if key == "loss.shine.enabled":
        return ["--shine" if value else "--no-shine"]
    return [names[key], str(value)]


def by_hand(bench: Path, out: Path, settings: dict, seeds: list[int]) -> float:
    start = time.perf_counter()
    for name, variant in VARIANTS.items():
        for seed in seeds:
            run_dir = out / f"{name}-{seed}"
            config = bench / "train_config.yaml"
            command = [sys.executable, "-m", "negforge", "train", "--config", str(config)]
            command += ["-o", str(run_dir)]
            for key, value in {**settings, **variant, "seed": seed}.items():
                command += flag(key, value)
            subprocess.run(command, check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def swept(sweep_file: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "negforge", "sweep", str(sweep_file), "-o", str(out),
         "--workers", "1"],
        check=True, env=ENV, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))
    settings = {**TINY, "optim.epochs": args.epochs}
    trials = len(VARIANTS) * len(seeds)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench = root / "bench"
        generate(
            bench,
            SynthConfig(
                train_videos=30, val_videos=8, test_videos=10, novel_videos=10, novel_word_videos=10
            ),
        )
        sweep_file = root / "sweep.yaml"
        sweep_file.write_text(
            yaml.safe_dump(
                {
                    "config": str(bench / "train_config.yaml"),
                    "set": settings,
                    "grid": {"variant": VARIANTS},
                    "seeds": seeds,
                }
            )
        )
        hand_times, sweep_times = [], []
        for index in range(args.rounds):
            order = ("hand", "sweep") if index % 2 == 0 else ("sweep", "hand")
            for side in order:
                out = root / f"{side}-{index}"
                if side == "hand":
                    hand_times.append(by_hand(bench, out, settings, seeds))
                else:
                    sweep_times.append(swept(sweep_file, out))
                latest = (hand_times if side == "hand" else sweep_times)[-1]
                print(f"round {index + 1}: {side:5s} {latest:7.1f} s", flush=True)
    hand, sweep = statistics.median(hand_times), statistics.median(sweep_times)
    print(
        f"\n{trials} tiny trials ({args.epochs} epochs each, 1 thread), {args.rounds} rounds "
        f"alternating; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"by hand (one negforge train per trial): {', '.join(f'{t:.1f}' for t in hand_times)} s")
    print(f"negforge sweep --workers 1:             {', '.join(f'{t:.1f}' for t in sweep_times)} s")
    print(
        f"medians: by hand {hand:.1f} s, sweep {sweep:.1f} s; ratio sweep / by hand "
        f"{sweep / hand:.2f}; overhead per trial {(sweep - hand) / trials:+.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
