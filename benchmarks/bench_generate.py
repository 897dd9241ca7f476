"""Benchmark ``negforge generate`` against a loopback OpenAI server that answers after 100 ms.

1. Masks the 8,281 Charades-CG training queries (``../shared``) with ``negforge build-dict``
   and ``negforge mask --preset charades_cg`` (kept in ``--work-dir`` for later runs).
2. Starts the fake OpenAI server (``tests/support/fake_openai.py``) as a separate process.
3. In this process, against that server, over ``--repeat`` rounds (each side starting a round
   in turn), three sides on the very same request bodies (rendered by negforge beforehand),
   ``--concurrency`` workers each:

   * ``bare``: a bare loop on negforge's raw request path without negforge (one aiohttp
     session, the body encoded as negforge encodes it, the answer body and its text
     JSON-decoded): the baseline of the target;
   * ``negforge``: ``generate_negatives`` with an empty cache (reading the masked artifact,
     prompt rendering, cache, validation, journal, accounting, writing the artifact);
   * ``sdk``: a bare ``openai.AsyncOpenAI`` loop (``client.post(..., cast_to=bytes)``), the
     transport negforge used before ``negforge.generation.chat_http``, for reference.

   Prints every wall with the load average, the client's CPU time and the request phase as
   the server saw it (first arrival to last answer), and the ratios of the best walls and of
   the medians (target: negforge >= 0.95 of the bare loop), next to the bound
   ``rows x delay / concurrency``; then the same ratios of the request phases alone.
4. Reruns all queries from the cache as a fresh process (``negforge generate`` to a new
   output, so nothing is resumed from the journal) and prints its wall including start-up
   (target < 10 s); the server must see no request.

    .venv/bin/python benchmarks/bench_generate.py [--limit N] [--concurrency 64] [--repeat 3]

Timings on a shared machine are noisy: run it on an idle one for figures worth quoting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
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


def _load() -> str:
    """The 1/5/15-minute load averages (the machine is shared: quote them with each wall)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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
    from negforge.generation.masked_input import load_jobs, load_word_source
    from negforge.generation.prompts import load_template
    from negforge.generation.ratelimit import RateLimiter

    jobs, _ = load_jobs(masked)
    spec = resolve_backend(config)
    filler = LLMFiller(
        config=config, spec=spec, client=None,  # type: ignore[arg-type] - render only
        template=load_template(config.prompt_template, config.prompt_version),
        dictionary=load_word_source(dictionary), cache=None, limiter=RateLimiter(),
    )  # fmt: skip
    from negforge.generation.client import chat_request_body

    return [chat_request_body(spec.wire_model, *filler.request_for(job), filler.params)
            for job in jobs]  # fmt: skip


async def drive(send: Any, requests: list[dict[str, Any]], concurrency: int) -> float:
    """``concurrency`` workers sending every request with ``send(body) -> bytes``, each
    answer body and its text JSON-decoded as negforge decodes them; the wall."""
    from negforge.generation.client import completion_from_body

    iterator = iter(requests)
    answers: list[Any] = []

    async def worker() -> None:
        for body in iterator:
            content = await send(body)
            answers.append(json.loads(completion_from_body(json.loads(content)).text))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    assert len(answers) == len(requests)
    return wall


async def bare_loop(base_url: str, requests: list[dict[str, Any]], concurrency: int) -> float:
    """negforge's raw request path without negforge: one aiohttp session, each body encoded
    as negforge encodes it; the wall."""
    import aiohttp

    from negforge.generation.chat_http import encode_body

    url = f"{base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        async def send(body: dict[str, Any]) -> bytes:
            async with session.post(url, data=encode_body(body)) as response:
                return await response.read()

        return await drive(send, requests, concurrency)


async def sdk_loop(base_url: str, requests: list[dict[str, Any]], concurrency: int) -> float:
    """A bare ``openai.AsyncOpenAI`` client's raw path (``client.post(..., cast_to=bytes)``),
    negforge's transport before ``chat_http``, for reference; the wall."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=60)

    async def send(body: dict[str, Any]) -> bytes:
        return await client.post("/chat/completions", body=body, cast_to=bytes)

    try:
        return await drive(send, requests, concurrency)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--limit", type=int, default=None, help="only the first N queries")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay-s", type=float, default=0.1)
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "outputs" / "bench_generate")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of both sides")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile of negforge's last run to this file")  # fmt: skip
    args = parser.parse_args()
    os.environ.update(_env())

    from negforge.generation.config import GenerateConfig
    from negforge.generation.runner import generate_negatives

    dictionary, masked = prepare_inputs(args.source, args.work_dir, args.limit)
    run_dir = args.work_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    with FakeOpenAIProcess(delay_s=args.delay_s, record_bodies=False) as server:
        def config_for(cache_dir: Path) -> GenerateConfig:
            return GenerateConfig(
                llm=MODEL, api_base=server.base_url, concurrency=args.concurrency,
                cache_dir=cache_dir, quiet=True,
            )  # fmt: skip

        requests = render_requests(masked, dictionary, config_for(run_dir / "cache"))
        n = len(requests)
        bound = n * args.delay_s / args.concurrency
        print(f"{n} queries, concurrency {args.concurrency}, server delay "
              f"{args.delay_s * 1000:.0f} ms: bound {bound:.1f} s", flush=True)  # fmt: skip

        spans: dict[str, list[float]] = {"bare": [], "negforge": [], "sdk": []}

        def record_span(side: str) -> None:
            """The request phase as the server saw it: first arrival to last answer."""
            seen = server.requests()
            answered = [r.answered_at for r in seen if r.answered_at is not None]
            spans[side].append(max(answered) - min(r.received_at for r in seen))

        def run_loop(loop: Any) -> float:
            server.reset()
            wall = asyncio.run(loop(server.base_url, requests, args.concurrency))
            assert len(server.requests()) == n
            return float(wall)

        def run_negforge(round_: int) -> float:
            server.reset()
            cache_dir = run_dir / f"cache_{round_}"
            output = run_dir / f"negatives_{round_}.parquet"
            config = config_for(cache_dir)
            started = time.perf_counter()
            if args.profile and round_ == args.repeat - 1:
                import cProfile

                profiler = cProfile.Profile()
                summary = profiler.runcall(generate_negatives, masked, dictionary, output,
                                           config)  # fmt: skip
                profiler.dump_stats(args.profile)
            else:
                summary = generate_negatives(masked, dictionary, output, config)
            wall = time.perf_counter() - started
            seen = len(server.requests())
            assert summary.calls == n and seen == n, (summary.calls, seen)
            assert summary.valid_rows == summary.rows, summary.lines()
            return wall

        sides = ["bare", "negforge", "sdk"]
        walls: dict[str, list[float]] = {side: [] for side in sides}
        cpus: dict[str, list[float]] = {side: [] for side in sides}
        for round_ in range(args.repeat):
            order = sides[round_ % 3:] + sides[:round_ % 3]  # each side starts a round in turn
            for side in order:
                before, cpu = _load(), time.process_time()
                if side == "negforge":
                    wall = run_negforge(round_)
                else:
                    wall = run_loop(bare_loop if side == "bare" else sdk_loop)
                cpu = time.process_time() - cpu  # this process only (the server is another)
                walls[side].append(wall)
                cpus[side].append(cpu)
                record_span(side)
                print(f"round {round_ + 1} {side:8s}: {wall:6.1f} s ({wall / bound:.2f}x the "
                      f"bound), requests {spans[side][-1]:5.1f} s, client CPU {cpu:5.1f} s = "
                      f"{cpu / n * 1000:.2f} ms/query  load {before} -> {_load()}",
                      flush=True)  # fmt: skip

        def ratios(baseline: str) -> tuple[float, float, float]:
            best = min(walls[baseline]) / min(walls["negforge"])
            median = statistics.median(walls[baseline]) / statistics.median(walls["negforge"])
            cpu = statistics.median(cpus[baseline]) / statistics.median(cpus["negforge"])
            return best, median, cpu

        best, median, cpu_ratio = ratios("bare")
        verdict = ("OK" if min(best, median) >= 0.95 else
                   "OK on the best walls only" if best >= 0.95 else "BELOW TARGET")  # fmt: skip
        print(f"negforge / bare loop throughput over {args.repeat} rounds: best {best:.2f}, "
              f"median {median:.2f} (target >= 0.95) {verdict}; "
              f"client CPU per query, bare / negforge (medians): {cpu_ratio:.2f}",
              flush=True)  # fmt: skip
        span_best = min(spans["bare"]) / min(spans["negforge"])
        span_median = statistics.median(spans["bare"]) / statistics.median(spans["negforge"])
        print(f"request phase only (first request to last answer, as the server saw it; "
              f"negforge's reading and writing of artifacts left out): best {span_best:.2f}, "
              f"median {span_median:.2f}", flush=True)  # fmt: skip
        best, median, cpu_ratio = ratios("sdk")
        print(f"negforge / bare AsyncOpenAI loop throughput: best {best:.2f}, median "
              f"{median:.2f}; client CPU per query, AsyncOpenAI / negforge: {cpu_ratio:.2f}",
              flush=True)  # fmt: skip
        cache_dir = run_dir / f"cache_{args.repeat - 1}"

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
