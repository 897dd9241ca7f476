"""Benchmark ``negforge generate`` against a loopback OpenAI server that answers after 100 ms.

1. Masks the 8,281 Charades-CG training queries (``../shared``) with ``negforge build-dict``
   and ``negforge mask --preset charades_cg`` (kept in ``--work-dir`` for later runs).
2. Starts the fake OpenAI server (``tests/support/fake_openai.py``) as a separate process.
3. In this process, against that server: a bare ``openai.AsyncOpenAI`` loop over the very same
   requests (messages and response_format rendered by negforge beforehand, ``--concurrency``
   workers, JSON-decoding each answer), then negforge's ``generate_negatives`` with an empty
   cache (rendering, cache writes, validation, journal and accounting included).
   Prints both walls and negforge's throughput as a fraction of the bare loop's
   (target >= 0.9), next to the bound ``rows x delay / concurrency``.
4. Reruns all queries from the cache as a fresh process (``negforge generate`` to a new
   output, so nothing is resumed from the journal) and prints its wall including start-up
   (target < 10 s); the server must see no request.

    .venv/bin/python benchmarks/bench_generate.py [--limit N] [--concurrency 64]

Timings on a shared machine are noisy: run it on an idle one for figures worth quoting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.fake_openai import FakeOpenAIProcess  # noqa: E402

SOURCE = REPO_ROOT.parent / "shared" / "data" / "charades_cg" / "charades_cg_gpt_train.jsonl"
MODEL = "openai/fake-gpt"
API_KEY = "sk-bench-not-a-real-key-000000"


def _env() -> dict[str, str]:
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
            "OPENAI_API_KEY": API_KEY}  # fmt: skip


def _negforge(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "negforge", *(str(a) for a in args)]


def prepare_inputs(source: Path, work: Path, limit: int | None) -> tuple[Path, Path]:
    """The dictionary and masked artifacts of ``source`` (built once, then reused)."""
    work.mkdir(parents=True, exist_ok=True)
    if limit is not None:
        lines = source.read_text().splitlines(keepends=True)[:limit]
        subset = work / f"queries_{limit}.jsonl"
        if not subset.exists() or subset.read_text() != "".join(lines):
            subset.write_text("".join(lines))
        source = subset
    tag = source.stem
    dictionary, masked = work / f"{tag}.dict.parquet", work / f"{tag}.masked.parquet"
    stamp = work / f"{tag}.source-mtime"
    fresh = stamp.exists() and stamp.read_text() == str(source.stat().st_mtime_ns)
    if not (fresh and dictionary.exists() and masked.exists()):
        print(f"masking {source} (once) ...", flush=True)
        started = time.perf_counter()
        quiet: dict[str, Any] = {"check": True, "env": _env(), "cwd": REPO_ROOT,
                                 "stdout": subprocess.DEVNULL}  # fmt: skip
        subprocess.run(_negforge("build-dict", source, "-o", dictionary), **quiet)
        subprocess.run(_negforge("mask", source, "--preset", "charades_cg", "-o", masked), **quiet)
        stamp.write_text(str(source.stat().st_mtime_ns))
        print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return dictionary, masked


def render_requests(masked: Path, dictionary: Path, config: Any) -> list[dict[str, Any]]:
    """The first request of every query, exactly as negforge renders it."""
    from negforge.generation.client import resolve_backend
    from negforge.generation.filling import LLMFiller
    from negforge.generation.prompts import load_template
    from negforge.generation.ratelimit import RateLimiter
    from negforge.generation.runner import load_jobs, load_word_source

    jobs, _ = load_jobs(masked)
    spec = resolve_backend(config)
    filler = LLMFiller(
        config=config, spec=spec, client=None,  # type: ignore[arg-type] - render only
        template=load_template(config.prompt_template, config.prompt_version),
        dictionary=load_word_source(dictionary), cache=None, limiter=RateLimiter(),
    )  # fmt: skip
    requests = []
    for job in jobs:
        messages, response_format = filler.request_for(job)
        body: dict[str, Any] = {
            "model": spec.wire_model, "messages": messages,
            "temperature": config.temperature, "seed": config.seed,
            "max_tokens": config.max_tokens,
        }  # fmt: skip
        if response_format is not None:
            body["response_format"] = response_format
        requests.append(body)
    return requests


async def bare_loop(base_url: str, requests: list[dict[str, Any]], concurrency: int) -> float:
    """Send every request with a bare AsyncOpenAI client; the wall in seconds."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=60)
    iterator = iter(requests)
    answers: list[Any] = []

    async def worker() -> None:
        for body in iterator:
            reply = await client.chat.completions.create(**body)
            answers.append(json.loads(reply.choices[0].message.content or "{}"))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await client.close()
    assert len(answers) == len(requests)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--limit", type=int, default=None, help="only the first N queries")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay-s", type=float, default=0.1)
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "outputs" / "bench_generate")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile of negforge's run to this file")  # fmt: skip
    args = parser.parse_args()
    os.environ.update(_env())

    from negforge.generation.config import GenerateConfig
    from negforge.generation.runner import generate_negatives

    dictionary, masked = prepare_inputs(args.source, args.work_dir, args.limit)
    run_dir = args.work_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cache_dir = run_dir / "cache"

    with FakeOpenAIProcess(delay_s=args.delay_s, record_bodies=False) as server:
        config = GenerateConfig(
            llm=MODEL, api_base=server.base_url, concurrency=args.concurrency,
            cache_dir=cache_dir, quiet=True,
        )  # fmt: skip
        requests = render_requests(masked, dictionary, config)
        n = len(requests)
        bound = n * args.delay_s / args.concurrency
        print(f"{n} queries, concurrency {args.concurrency}, server delay "
              f"{args.delay_s * 1000:.0f} ms: bound {bound:.1f} s", flush=True)  # fmt: skip

        bare = asyncio.run(bare_loop(server.base_url, requests, args.concurrency))
        print(f"bare AsyncOpenAI loop : {bare:6.1f} s  ({bare / bound:.2f}x the bound, "
              f"{bound / bare:.2f} of its throughput)", flush=True)  # fmt: skip
        server.reset()

        output = run_dir / "negatives.parquet"
        started = time.perf_counter()
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            summary = profiler.runcall(generate_negatives, masked, dictionary, output, config)
            profiler.dump_stats(args.profile)
        else:
            summary = generate_negatives(masked, dictionary, output, config)
        ours = time.perf_counter() - started
        seen = len(server.requests())
        assert summary.calls == n and seen == n, (summary.calls, seen)
        print(f"negforge generate     : {ours:6.1f} s  ({ours / bound:.2f}x the bound); "
              f"{summary.valid_rows}/{summary.rows} rows valid", flush=True)  # fmt: skip
        ratio = bare / ours
        print(f"negforge / bare throughput: {ratio:.2f} (target >= 0.90) "
              f"{'OK' if ratio >= 0.9 else 'BELOW TARGET'}", flush=True)  # fmt: skip

        server.reset()
        rerun = run_dir / "from_cache.parquet"
        command = _negforge(
            "generate", masked, "--dict", dictionary, "-o", rerun, "--llm", MODEL,
            "--api-base", server.base_url, "--concurrency", args.concurrency,
            "--cache-dir", cache_dir, "--quiet",
        )  # fmt: skip
        started = time.perf_counter()
        result = subprocess.run(command, env=_env(), cwd=REPO_ROOT, capture_output=True,
                                text=True)  # fmt: skip
        cached = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"cache rerun failed:\n{result.stderr}")
        calls = len(server.requests())
        print(f"rerun from cache (fresh process, incl. start-up): {cached:.1f} s "
              f"(target < 10 s) {'OK' if cached < 10 else 'ABOVE TARGET'}; "
              f"requests to the server: {calls}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
