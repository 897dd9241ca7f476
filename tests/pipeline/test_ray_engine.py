"""``negforge run --engine ray`` on a local Ray instance (2 CPUs).

* Charades-CG (``../shared``): ``pipelines/charades_cg.yaml`` gives the same dictionary,
  masks and random-baseline negatives as the local engine (row for row after sorting by qid
  and level), the same read/build-dict/mask fingerprints, and partitioned artifacts that
  negforge, pyarrow, pandas, DuckDB and Hugging Face ``datasets`` all read;
* the bundled sample with an LLM generate stage on two loopback servers (shards spread over
  both): a Ray worker SIGKILLed mid-generate, then the driver SIGKILLed; the rerun skips the
  finished stages and shards, asks no finished query again, and ends equal to a clean run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from negforge.artifacts import read_artifact, read_provenance
from negforge.datasets import is_dataset, read_manifest
from negforge.pipeline_fingerprints import recorded_fingerprint
from tests.support.fake_openai import FakeOpenAIProcess
from tests.support.generation_inputs import REPO_ROOT, negforge_command, offline_env

KEY = "sk-negforge-ray-test-0000000000"
SORT = ["qid", "level"]


def _run(*args: str | Path, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(negforge_command("run", *args), cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=timeout_s,
                          env=offline_env(OPENAI_API_KEY=KEY))  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done


def _frame(path: Path) -> pd.DataFrame:
    table, _ = read_artifact(path)
    frame = table.to_pandas()
    if "level" in frame:
        frame = frame.sort_values(SORT, kind="stable").reset_index(drop=True)
    return frame.map(lambda v: v.tolist() if hasattr(v, "tolist") else v)


@pytest.mark.shared
@pytest.mark.slow
def test_charades_cg_on_ray_equals_the_local_engine(shared_dir: Path, tmp_path: Path) -> None:
    data = f"data_dir={shared_dir / 'data'}"
    local, ray = tmp_path / "local", tmp_path / "ray"
    _run("pipelines/charades_cg.yaml", "--set", data, "--output-dir", local)
    done = _run("pipelines/charades_cg.yaml", "--set", data, "--output-dir", ray,
                "--engine", "ray", "--workers", "2")  # fmt: skip
    assert "Ray workers" in done.stdout

    for name in ("dictionary.parquet", "masked.parquet", "negatives.parquet"):
        pd.testing.assert_frame_equal(_frame(local / name), _frame(ray / name), obj=name)
    assert (local / "shine.jsonl").read_bytes() == (ray / "shine.jsonl").read_bytes()
    # Dictionary hygiene on both engines: the same non-words dropped and counted.
    dropped = read_provenance(local / "dictionary.parquet").summary["dropped_non_words"]
    assert dropped == read_provenance(ray / "dictionary.parquet").summary["dropped_non_words"]
    assert dropped["occurrences"] > 0
    summary = "dictionary.parquet.summary.txt"
    assert (local / summary).read_text() == (ray / summary).read_text()
    for name in ("queries.jsonl", "dictionary.parquet", "masked.parquet"):
        assert recorded_fingerprint(local / name) == recorded_fingerprint(ray / name), name
    masked = ray / "masked.parquet"
    assert is_dataset(masked) and len(read_manifest(masked).parts) == 5  # 8,281 / 2,000

    # Every reader sees the partitioned artifact as one table.
    rows = len(_frame(local / "masked.parquet"))
    assert pq.read_table(masked).num_rows == rows
    assert len(pd.read_parquet(masked)) == rows
    import datasets
    import duckdb

    query = f"select count(*), count(distinct qid) from read_parquet('{masked}/*.parquet')"
    assert duckdb.connect().execute(query).fetchall() == [(rows, 8281)]
    hf = datasets.load_dataset("parquet", data_files=f"{masked}/*.parquet", split="train",
                               cache_dir=str(tmp_path / "hf"))  # fmt: skip
    assert hf.num_rows == rows and hf.column_names[:2] == ["qid", "query"]

    # A rerun with either engine skips every stage (same fingerprints, either layout).
    again = _run("pipelines/charades_cg.yaml", "--set", data, "--output-dir", ray,
                 "--engine", "ray", "--workers", "2")  # fmt: skip
    assert "5 skipped" in again.stdout


PIPELINE = """\
name: ray_resume
inputs:
  train: ${sample_data}/sample_queries.jsonl
stages:
  - {stage: read, input: train}
  - {stage: build-dict}
  - {stage: mask, preset: charades_cg}
  - {stage: generate, llm: openai/fake-gpt, concurrency: 1,
     no_cache: true, timeout_s: 60}
"""


def _descendants(root: int) -> list[int]:
    """Processes below ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _generate_worker(root: int) -> int | None:
    """A Ray worker process that runs a generate shard right now."""
    for pid in _descendants(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if title.startswith(b"ray::") and b"generate_shard" in title:
            return pid
    return None


def _parts(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("part-*.parquet")}


def _wait(condition: object, process: subprocess.Popen[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail("timed out")


@pytest.mark.slow
def test_ray_generate_survives_a_killed_worker_and_resumes_after_a_killed_driver(
    tmp_path: Path,
) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE)
    out = tmp_path / "out"
    negatives = out / "negatives.parquet"
    with FakeOpenAIProcess(delay_s=0.3) as one, FakeOpenAIProcess(delay_s=0.3) as two:
        args = ["run", pipeline, "--output-dir", out, "--engine", "ray", "--workers", "2",
                "--shard-size", "5", "--api-base", one.base_url, "--api-base", two.base_url]
        first = subprocess.Popen(negforge_command(*args), cwd=REPO_ROOT, text=True,
                                 env=offline_env(OPENAI_API_KEY=KEY), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)  # fmt: skip
        ray_processes: list[int] = []
        try:
            _wait(lambda: len(_parts(negatives)) >= 2 and _generate_worker(first.pid), first)
            victim = _generate_worker(first.pid)
            assert victim is not None
            before_worker_kill = _parts(negatives)
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: len(_parts(negatives)) >= len(before_worker_kill) + 3, first)
            before_driver_kill = _parts(negatives)
        finally:
            ray_processes = _descendants(first.pid)
            first.send_signal(signal.SIGKILL)
            output, _ = first.communicate(timeout=60)
            for pid in ray_processes:  # Ray's own processes outlive a SIGKILLed driver
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        assert first.returncode == -signal.SIGKILL
        assert not is_dataset(negatives), "the stage must not look finished"
        assert len(before_driver_kill) < 11, "every shard finished before the kill"
        asked_before = [server.requests() for server in (one, two)]
        asked = [r for requests in asked_before for r in requests]

        rerun = subprocess.run(negforge_command(*args), cwd=REPO_ROOT, text=True,
                               env=offline_env(OPENAI_API_KEY=KEY), capture_output=True,
                               timeout=900)  # fmt: skip
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        asked_again = [r for server, before in zip((one, two), asked_before, strict=True)
                       for r in server.requests()[len(before):]]  # fmt: skip
        per_server = [len(server.requests()) for server in (one, two)]

    for stage in ("read", "build-dict", "mask"):
        assert f"[{stage}] skipped (unchanged)" in rerun.stdout
    after = _parts(negatives)
    for name, mtime in before_driver_kill.items():  # finished shards are never redone
        assert after[name] == mtime, name
    assert len(after) == 11 and all(per_server)  # 51 queries in shards of 5, both servers
    table = read_artifact(negatives)[0]
    sample = pd.read_json(REPO_ROOT / "negforge" / "sample_data" / "sample_queries.jsonl",
                          lines=True)  # fmt: skip
    assert Counter(table.column("qid").to_pylist()) == {q: 3 for q in sample["qid"]}
    assert all(table.column("valid").to_pylist())
    # No query of a finished shard was asked again; a query is asked twice at most (the one
    # in flight in the killed worker, and per killed driver the one in flight per shard).
    done_queries = {q for part in before_driver_kill
                    for q in pq.read_table(negatives / part, columns=["query"])
                    .column("query").to_pylist()}  # fmt: skip
    assert not done_queries & {r.query for r in asked_again}
    counts = Counter(r.query for r in [*asked, *asked_again] if r.status == 200)
    assert set(counts) == set(sample["query"]) and max(counts.values()) <= 2
    assert sum(counts.values()) - len(counts) <= 1 + 2
    assert "a Ray worker" in output or "worker died" in output  # Ray (or we) retried it
