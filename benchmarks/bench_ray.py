"""Benchmark ``negforge run --engine ray`` against the local engine: build-dict + mask.

On ActivityNet-CG train (``../shared``, 36,724 sentences; 4 bad rows skipped), each
configuration runs ``read -> build-dict -> mask`` in a fresh subprocess with an empty parse
cache (its own output folder): the local engine, Ray with 1 worker and Ray with 2 workers
(a local Ray instance with that many CPUs). The configurations alternate over ``--repeat``
rounds; each prints Ray's start-up, the build-dict and mask stage walls (stage walls exclude
the start-up) and the throughput of the two stages, and the end prints each Ray setting's
ratio to the local engine (best round of each).

    .venv/bin/python benchmarks/bench_ray.py [--limit N] [--repeat 1] [--shard-size 2000]

The machine's load average (``uptime``) is printed with every figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT.parent / "shared" / "data" / "visa" / "activitynet_cg" / "train.json"
PIPELINE = """\
name: bench_ray
inputs: {{train: "{source}"}}
stages:
  - {{stage: read, input: train, on_error: skip}}
  - {{stage: build-dict, on_error: skip}}
  - {{stage: mask, preset: anet_cg, on_error: skip}}
"""


def load() -> str:
    """The 1/5/15-minute load averages (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def one_run(pipeline: Path, out: Path, engine: str, workers: int, shard_size: int) -> dict:
    """Run the pipeline in this (fresh) process; stage walls and Ray's start-up."""
    from negforge.pipeline import run_pipeline

    stage_engine = None
    startup = 0.0
    if engine == "ray":
        from negforge.ray_engine import RayEngine, RayOptions

        stage_engine = RayEngine(RayOptions(workers=workers, shard_size=shard_size))
        started = time.perf_counter()
        stage_engine.ray()  # start the local instance before the clock of the stages
        startup = time.perf_counter() - started
    try:
        outcomes = run_pipeline(pipeline, output_dir=out, engine=stage_engine)
    finally:
        if stage_engine is not None:
            stage_engine.close()
    walls = {o.stage: o.seconds for o in outcomes}
    return {"startup_s": startup, "build_dict_s": walls["build-dict"], "mask_s": walls["mask"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        result = one_run(Path(spec["pipeline"]), Path(spec["out"]), spec["engine"],
                         spec["workers"], spec["shard_size"])  # fmt: skip
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    source = args.source
    if args.limit:
        data = json.loads(source.read_text())
        source = work / "train.json"
        source.write_text(json.dumps(dict(list(data.items())[: args.limit])))
    pipeline = work / "pipeline.yaml"
    pipeline.write_text(PIPELINE.format(source=source))
    from negforge.readers import read_queries

    queries = len(read_queries(source, on_error="skip").records)
    print(f"{queries} queries from {source}; load {load()}", flush=True)
    settings = [("local", 0), ("ray", 1), ("ray", 2)]
    best: dict[str, float] = {}
    for round_ in range(args.repeat):
        for engine, workers in settings:
            label = engine if engine == "local" else f"ray x{workers}"
            out = work / f"out_{engine}_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            child = json.dumps({"pipeline": str(pipeline), "out": str(out), "engine": engine,
                                "workers": workers, "shard_size": args.shard_size})
            before = load()
            done = subprocess.run([sys.executable, __file__, "--child", child], cwd=REPO_ROOT,
                                  capture_output=True, text=True,
                                  env={**os.environ, "NEGFORGE_CACHE_DIR": str(work / "c")})
            if done.returncode != 0:
                sys.exit(f"{label} failed:\n{done.stdout}\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            stages = result["build_dict_s"] + result["mask_s"]
            best[label] = min(best.get(label, float("inf")), stages)
            print(f"round {round_ + 1} {label:8s}: start-up {result['startup_s']:5.1f} s, "
                  f"build-dict {result['build_dict_s']:5.1f} s, mask {result['mask_s']:5.1f} s"
                  f" -> {queries / stages:6.0f} q/s (load before {before}, after {load()})",
                  flush=True)  # fmt: skip
            shutil.rmtree(out, ignore_errors=True)
    local = best["local"]
    for label, wall in best.items():
        print(f"{label:8s}: build-dict + mask {wall:6.1f} s = {local / wall:.2f}x the local "
              "engine's throughput (start-up excluded)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
