"""Benchmark: build-dict + mask against raw spaCy ``nlp.pipe`` over the same texts.

    .venv/bin/python benchmarks/bench_pipeline.py [--shared ../shared] [--datasets charades,anet]

For Charades-CG train (8,281 queries) and ActivityNet-CG train (36,724 sentences; the 4 with a
zero-length window are left out by the reader's ``on_error="skip"``) it runs, each in a fresh
subprocess so that peak memory (``ru_maxrss``) is that run's alone:

* ``raw``: ``nlp.pipe(texts, batch_size=256)`` with tok2vec + tagger + parser only;
* ``raw+rules``: the same plus attribute_ruler + lemmatizer (the components negforge needs);
* ``stages``: :func:`negforge.dictionary.build_dictionary` then
  :func:`negforge.masking.mask_file` on the same file with an empty parse cache, sharing one
  :class:`negforge.corpus.CorpusStore` as ``negforge run`` does (one read, one spaCy pass),
  both artifacts written;
* ``stages-nomemo``: the same with the post-parse memo (:mod:`negforge.post_parse`) switched
  off, so attribute_ruler + lemmatizer run on every Doc.

Every variant runs with the cyclic garbage collector paused (the stages pause it), and with
the spaCy model loaded (and pyarrow's lazy pandas import done) before the clock starts (that
start-up time is printed apart). Every variant runs ``--repeat`` times, in rounds that
alternate the variants, and the fastest run of each counts (the machine's other load only
ever slows a run down). Ratios are printed for wall-clock time and for the process's CPU time
(``time.process_time``), which other processes on a shared machine disturb much less.
It prints queries/s for each, the ratio stages / raw (target >= 0.85), what the memo saves
(stages-nomemo / stages time) and the peak RSS of the stage pair (target < 1.5 GB on
ActivityNet-CG). Timings are wall-clock on whatever else the machine is doing: the load
average is printed; run it on a quiet machine for figures worth quoting.
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


MODES = ("raw", "raw+rules", "stages", "stages-nomemo")


def worker(mode: str, source: Path, preset: str, model: str | None) -> dict[str, float]:
    """One measured run (in its own process)."""
    from negforge.nlp import NEEDED_COMPONENTS, load_pipeline
    from negforge.readers import read_queries

    started = time.perf_counter()
    pipeline = load_pipeline(model)
    # pyarrow imports pandas lazily on its first conversion (~0.5 s): a start-up cost like
    # loading the model, not per-query work, so it is paid here, before the clock starts
    import pyarrow as pa

    pa.array([0])
    load_s = time.perf_counter() - started
    gc.disable()  # as negforge's stages do (negforge.gc_settings.gc_paused)
    if mode in ("raw", "raw+rules"):
        texts = [r.query for r in read_queries(source, on_error="skip").records]
        nlp = pipeline.nlp
        keep = NEEDED_COMPONENTS if mode == "raw+rules" else ("tok2vec", "tagger", "parser")
        disabled = [name for name in nlp.pipe_names if name not in keep]
        with nlp.select_pipes(disable=disabled):
            started, cpu = time.perf_counter(), time.process_time()
            for _doc in nlp.pipe(texts, batch_size=256):
                pass
            seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        return {"queries": len(texts), "seconds": seconds, "cpu_s": cpu_s, "load_s": load_s,
                "peak_mb": _peak_rss_mb()}
    from negforge.corpus import CorpusStore
    from negforge.dictionary import build_dictionary
    from negforge.masking import mask_file

    if mode == "stages-nomemo":
        pipeline.post.enabled = False  # every rule component runs on every Doc
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        started, cpu = time.perf_counter(), time.process_time()
        corpora = CorpusStore()
        built = build_dictionary([source], out / "dictionary.parquet", spacy_model=model,
                                 on_error="skip", cache_dir=out / "cache", corpora=corpora)
        middle = time.perf_counter()
        masked = mask_file(source, out / "masked.parquet", preset=preset, spacy_model=model,
                           on_error="skip", cache_dir=out / "cache", corpora=corpora)
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
    parser.add_argument("--worker", choices=MODES)
    parser.add_argument("--source", type=Path)
    parser.add_argument("--preset", default="charades_cg")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of every variant (in alternating rounds); the fastest counts")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.source, args.preset, args.spacy_model)))
        return
    print(f"negforge bench_pipeline  (cpus: {os.cpu_count()}, python {sys.version.split()[0]}, "
          f"load average at start {os.getloadavg()[0]:.1f})")
    for name in args.datasets.split(","):
        relative, preset = DATASETS[name]
        source = args.shared / "data" / relative
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(max(1, args.repeat)):
            for mode in MODES:
                runs[mode].append(run_worker(mode, source, preset, args.spacy_model))
        best = {mode: min(found, key=lambda r: r["seconds"]) for mode, found in runs.items()}
        cpu = {mode: min(r["cpu_s"] for r in found) for mode, found in runs.items()}
        qps = {mode: r["queries"] / r["seconds"] for mode, r in best.items()}
        stages = best["stages"]
        peak = max(r["peak_mb"] for r in runs["stages"])

        print(f"\n{name}: {int(stages['queries'])} queries ({source}); every variant "
              f"{len(runs['raw'])} runs, alternated, GC paused; load average now "
              f"{os.getloadavg()[0]:.1f}")
        for mode in MODES:
            times = ", ".join(f"{r['seconds']:.1f}" for r in runs[mode])
            print(f"  {mode:14s} {qps[mode]:7.0f} q/s  (fastest {best[mode]['seconds']:.1f} s "
                  f"of {times} s; CPU {cpu[mode]:.1f} s)")
        print(f"  stages: build-dict {stages['build_dict_s']:.1f} s + mask {stages['mask_s']:.1f}"
              f" s; {int(stages['rows'])} masked rows, {int(stages['entries'])} dictionary words")
        print(f"  ratio stages / raw (target >= 0.85): {qps['stages'] / qps['raw']:.2f} wall, "
              f"{cpu['raw'] / cpu['stages']:.2f} CPU time")
        print(f"  ratio stages / raw+rules: {qps['stages'] / qps['raw+rules']:.2f} wall, "
              f"{cpu['raw+rules'] / cpu['stages']:.2f} CPU time")
        print(f"  post-parse memo: stages-nomemo takes "
              f"{best['stages-nomemo']['seconds'] / stages['seconds']:.2f}x the wall time of "
              f"stages, {cpu['stages-nomemo'] / cpu['stages']:.2f}x the CPU time")
        print(f"  peak RSS of the stage pair: {peak:.0f} MB (target < 1536 MB); "
              f"start-up (model load, imports) {stages['load_s']:.1f} s (not timed)")


if __name__ == "__main__":
    main()
