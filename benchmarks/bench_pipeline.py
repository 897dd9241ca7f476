"""Benchmark: build-dict + mask against raw spaCy ``nlp.pipe`` over the same texts.

    .venv/bin/python benchmarks/bench_pipeline.py [--shared ../shared] [--datasets charades,anet]

For Charades-CG train (8,281 queries) and ActivityNet-CG train (36,724 sentences; the 4 with a
zero-length window are left out by the reader's ``on_error="skip"``) it runs, each in a fresh
subprocess so that peak memory (``ru_maxrss``) is that run's alone:

* ``raw``: ``nlp.pipe(texts, batch_size=256)`` with tok2vec + tagger + parser only;
* ``raw-nogc``: the same with the cyclic garbage collector paused, as negforge's stages run;
* ``raw+lemma``: the same plus attribute_ruler + lemmatizer (the components negforge loads);
* ``stages``: :func:`negforge.dictionary.build_dictionary` then
  :func:`negforge.masking.mask_file` on the same file with an empty parse cache (one spaCy
  pass, shared through the cache), both artifacts written.

The spaCy model is loaded (and pyarrow's lazy pandas import done) before the clock starts in
every run (that start-up time is printed apart).
raw and stages run ``--repeat`` times each, interleaved; the fastest run of each is compared
(the machine's other load only ever slows a run down). The ratio is printed for wall-clock
time and for the process's CPU time (``time.process_time``), which other processes on a
shared machine disturb much less.
It prints queries/s for each, the ratio stages / raw (target >= 0.85) and the peak RSS of the
stage pair (target < 1.5 GB on ActivityNet-CG). Timings are wall-clock on whatever else the
machine is doing: run it on a quiet machine for figures worth quoting.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = {
    "charades": ("visa/charades_cg/train.json", "charades_cg"),
    "anet": ("visa/activitynet_cg/train.json", "anet_cg"),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker(mode: str, source: Path, preset: str, model: str | None) -> dict[str, float]:
    """One measured run (in its own process)."""
    from negforge.nlp import NEEDED_COMPONENTS, load_pipeline
    from negforge.readers import read_queries

    started = time.perf_counter()
    nlp, _ = load_pipeline(model)
    # pyarrow imports pandas lazily on its first conversion (~0.5 s): a start-up cost like
    # loading the model, not per-query work, so it is paid here, before the clock starts
    import pyarrow as pa

    pa.array([0])
    load_s = time.perf_counter() - started
    if mode in ("raw", "raw-nogc", "raw+lemma"):
        texts = [r.query for r in read_queries(source, on_error="skip").records]
        keep = NEEDED_COMPONENTS if mode == "raw+lemma" else ("tok2vec", "tagger", "parser")
        disabled = [name for name in nlp.pipe_names if name not in keep]
        if mode == "raw-nogc":
            gc.disable()  # as negforge's stages do
        with nlp.select_pipes(disable=disabled):
            started, cpu = time.perf_counter(), time.process_time()
            for _doc in nlp.pipe(texts, batch_size=256):
                pass
            seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        return {"queries": len(texts), "seconds": seconds, "cpu_s": cpu_s, "load_s": load_s,
                "peak_mb": _peak_rss_mb()}
    from negforge.dictionary import build_dictionary
    from negforge.masking import mask_file

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        started, cpu = time.perf_counter(), time.process_time()
        built = build_dictionary([source], out / "dictionary.parquet", spacy_model=model,
                                 on_error="skip", cache_dir=out / "cache")
        middle = time.perf_counter()
        masked = mask_file(source, out / "masked.parquet", preset=preset, spacy_model=model,
                           on_error="skip", cache_dir=out / "cache")
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    assert masked.cache_hit, "mask should reuse build-dict's parse"
    return {"queries": masked.queries, "seconds": seconds, "cpu_s": cpu_s,
            "build_dict_s": middle - started,
            "mask_s": seconds - (middle - started), "load_s": load_s,
            "rows": masked.rows, "entries": built.entries, "peak_mb": _peak_rss_mb()}


def run_worker(mode: str, source: Path, preset: str, model: str | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", mode, "--source", str(source),
               "--preset", preset]
    if model:
        command += ["--spacy-model", model]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} worker failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--datasets", default="charades,anet")
    parser.add_argument("--spacy-model", default=None)
    parser.add_argument("--worker", choices=("raw", "raw-nogc", "raw+lemma", "stages"))
    parser.add_argument("--source", type=Path)
    parser.add_argument("--preset", default="charades_cg")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of raw and of stages (interleaved); the fastest of each counts")
    parser.add_argument("--no-lemma-baseline", action="store_true",
                        help="skip the raw tagger+parser+attribute_ruler+lemmatizer run")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.source, args.preset, args.spacy_model)))
        return
    print(f"negforge bench_pipeline  (cpus: {os.cpu_count()}, python {sys.version.split()[0]})")
    for name in args.datasets.split(","):
        relative, preset = DATASETS[name]
        source = args.shared / "data" / relative
        raws, nogcs, stage_runs = [], [], []
        for _ in range(max(1, args.repeat)):
            raws.append(run_worker("raw", source, preset, args.spacy_model))
            stage_runs.append(run_worker("stages", source, preset, args.spacy_model))
            nogcs.append(run_worker("raw-nogc", source, preset, args.spacy_model))
        raw = min(raws, key=lambda r: r["seconds"])
        nogc = min(nogcs, key=lambda r: r["seconds"])
        stages = min(stage_runs, key=lambda r: r["seconds"])
        raw_cpu = min(r["cpu_s"] for r in raws)
        nogc_cpu = min(r["cpu_s"] for r in nogcs)
        stages_cpu = min(r["cpu_s"] for r in stage_runs)
        stages["peak_mb"] = max(r["peak_mb"] for r in stage_runs)
        lemma = (raw if args.no_lemma_baseline
                 else run_worker("raw+lemma", source, preset, args.spacy_model))
        qps = {key: r["queries"] / r["seconds"] for key, r in
               (("raw", raw), ("raw-nogc", nogc), ("raw+lemma", lemma), ("stages", stages))}
        def times(runs: list[dict[str, float]]) -> str:
            return ", ".join(f"{r['seconds']:.1f}" for r in runs)

        print(f"\n{name}: {int(stages['queries'])} queries ({source}); fastest of "
              f"{len(raws)} runs: raw {times(raws)} s, raw (GC paused) {times(nogcs)} s, "
              f"stages {times(stage_runs)} s")
        print(f"  raw nlp.pipe (tok2vec+tagger+parser, batch 256): {qps['raw']:8.0f} q/s "
              f"({raw['seconds']:.1f} s, peak {raw['peak_mb']:.0f} MB)")
        print(f"  the same with the GC paused (as the stages run): {qps['raw-nogc']:8.0f} q/s "
              f"({nogc['seconds']:.1f} s)")
        if not args.no_lemma_baseline:
            print(f"  raw nlp.pipe (+attribute_ruler+lemmatizer):      {qps['raw+lemma']:8.0f} "
                  f"q/s ({lemma['seconds']:.1f} s, peak {lemma['peak_mb']:.0f} MB)")
        print(f"  build-dict + mask (one parse, both artifacts):   {qps['stages']:8.0f} q/s "
              f"({stages['seconds']:.1f} s = build-dict {stages['build_dict_s']:.1f} s + mask "
              f"{stages['mask_s']:.1f} s; {int(stages['rows'])} masked rows, "
              f"{int(stages['entries'])} dictionary words)")
        print(f"  ratio stages / raw (target >= 0.85): {qps['stages'] / qps['raw']:.2f} wall, "
              f"{raw_cpu / stages_cpu:.2f} CPU time ({stages_cpu:.1f} s vs {raw_cpu:.1f} s); "
              f"vs raw with the GC paused: {qps['stages'] / qps['raw-nogc']:.2f} wall, "
              f"{nogc_cpu / stages_cpu:.2f} CPU time")
        if not args.no_lemma_baseline:
            print(f"  stages / raw+lemma: {qps['stages'] / qps['raw+lemma']:.2f}")
        print(f"  peak RSS of the stage pair: {stages['peak_mb']:.0f} MB (target < 1536 MB); "
              f"start-up (model load, imports) {stages['load_s']:.1f} s (not timed)")


if __name__ == "__main__":
    main()
