"""Failed LLM work is loud, killed writes leave nothing behind, credentials are never stored,
and Ctrl-C exits 130 after saving what it can.

* a dead backend (connection refused; 500 on every call, through the loopback fake server)
  exits 3 with the last backend error and the count, writes no artifact, and a pipeline
  rerun retries the failed queries (the generate stage is never "unchanged" while any
  failed);
* a process killed while writing leaves a temp file that the next write of the target
  removes (a live writer's temp file is left alone); a clean exit removes its own;
* the key a hostile server echoes (raw, base64, URL- or hex-encoded) reaches neither the
  cache, nor the journal, nor the artifact; URL user-info reaches neither the provenance nor
  the output;
* an interrupted ``generate`` / ``run`` / ``train`` (SIGINT, a real process) exits 130 with
  one line telling what was kept: the journal, the finished stages, a resumable checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negforge.artifacts import NegativeRow, load_rows, read_provenance
from negforge.atomic import temp_files_of
from negforge.generation.config import GenerateConfig
from negforge.generation.errors import GenerationFailed
from negforge.generation.journal import journal_path_for
from negforge.generation.runner import generate_negatives
from tests.support.fake_openai import FakeOpenAIServer, FaultRule, free_port
from tests.support.generation_inputs import REPO_ROOT, negforge_command, offline_env
from tests.support.hostile import Expected, assert_clean_failure, call_cli, snapshot
from tests.support.masked_levels import TOY_QUERIES, write_toy_artifacts

QUERIES = len(TOY_QUERIES)
API_KEY = "sk-negforge+test/0123456789=SECRET"  # '+', '/', '=' change under URL-encoding


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, Path]:
    return write_toy_artifacts(tmp_path / "in")


def _generate_args(masked: Path, dictionary: Path, out: Path, url: str, cache: Path, *extra: str
                   ) -> list[str]:  # fmt: skip
    return ["generate", str(masked), "--dict", str(dictionary), "-o", str(out), "--llm",
            "openai/fake-gpt", "--api-base", url, "--cache-dir", str(cache), "-q", *extra]


def _query_text(index: int) -> str:
    return " ".join(TOY_QUERIES[index][1][:-1]) + "."


# --- a dead backend --------------------------------------------------------------------------


def test_connection_refused_exits_3_without_an_artifact(toy, tmp_path: Path) -> None:
    masked, dictionary = toy
    out = tmp_path / "out" / "neg.parquet"
    out.parent.mkdir()
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    before = snapshot(out.parent)
    started = time.monotonic()
    result = call_cli(*_generate_args(masked, dictionary, out, url, tmp_path / "cache",
                                      "--max-retries", "1"))  # fmt: skip
    line = assert_clean_failure(result, Expected([], out.parent, "the LLM backend failed", 3))
    assert f"of {QUERIES} queries" in line and "Connection" in line, line
    assert "no artifact was written" in line
    assert snapshot(out.parent) == before  # no artifact, no temp file, no empty journal
    assert time.monotonic() - started < 30


def test_500_on_every_call_exits_3_and_stops_at_once(toy, tmp_path: Path) -> None:
    masked, dictionary = toy
    out = tmp_path / "neg.parquet"
    with FakeOpenAIServer(faults=[FaultRule(kind="server_error")]) as server:
        result = call_cli(*_generate_args(masked, dictionary, out, server.base_url,
                                          tmp_path / "cache", "--max-retries", "2",
                                          "--concurrency", "2"))  # fmt: skip
        requests = server.requests
    line = assert_clean_failure(result, Expected([], journal_path_for(out).parent,
                                                 "HTTP 500", 3))  # fmt: skip
    assert "queries were not attempted" in line and "--on-failed random|drop" in line
    assert not out.exists() and not journal_path_for(out).exists()
    # the queries in flight when the first one failed, no more: 2 x (1 + 2 retries) at most
    assert 3 <= len(requests) <= 6, len(requests)


def test_a_chosen_fallback_is_written_flagged_and_still_exits_3(toy, tmp_path: Path) -> None:
    masked, dictionary = toy
    out = tmp_path / "neg.parquet"
    with FakeOpenAIServer(faults=[FaultRule(kind="server_error")]) as server:
        result = call_cli(*_generate_args(masked, dictionary, out, server.base_url,
                                          tmp_path / "cache", "--max-retries", "0",
                                          "--on-failed", "random"))  # fmt: skip
    assert_clean_failure(result, Expected([], out, "was written with their", 3))
    rows = load_rows(out, NegativeRow)
    assert rows and all(r.fallback == "random_after_error" and r.model == "random"
                        and "backend_error" in r.invalid_reasons for r in rows)  # fmt: skip
    summary = read_provenance(out).summary
    assert summary["failed_queries"] == QUERIES and summary["failed_rows"] == len(rows)
    assert summary["on_failed"] == "random" and "HTTP 500" in summary["last_error"]
    # ...and counted in the report
    report = call_cli("report", out, "-o", tmp_path / "r.html", "--no-hierarchy", "--markdown",
                      tmp_path / "r.md", "--quiet")  # fmt: skip
    assert report.exit_code == 0, report.output
    markdown = (tmp_path / "r.md").read_text()
    assert "fallback: random_after_error" in markdown and "backend_error" in markdown


def test_pipeline_rerun_retries_failed_queries(toy, tmp_path: Path) -> None:
    masked, dictionary = toy
    out = tmp_path / "out"
    victim = _query_text(1)
    spec = tmp_path / "p.yaml"
    with FakeOpenAIServer(faults=[FaultRule(kind="server_error", query=victim)]) as server:
        spec.write_text(
            f"name: dead\ninputs: {{masked: {masked}, dict: {dictionary}}}\nstages:\n"
            "  - {stage: generate, masked: masked, dictionary: dict, llm: openai/fake-gpt, "
            f"api_base: '{server.base_url}', max_retries: 1, max_backoff_s: 0.2, "
            f"concurrency: 1, quiet: true, cache_dir: '{tmp_path / 'cache'}'}}\n"
            "  - {stage: export}\n"
        )
        failed = call_cli("run", spec, "--output-dir", out)
        assert_clean_failure(failed, Expected([], out, "HTTP 500", 3))
        assert not (out / "negatives.parquet").exists() and not (out / "shine.jsonl").exists()
        finished = len({r.query for r in server.requests if r.status == 200})
        server.set_faults([])
        server.reset()
        rerun = call_cli("run", spec, "--output-dir", out)
        assert rerun.exit_code == 0, rerun.output
        assert "[generate] done" in rerun.stdout
        assert len(server.requests) == QUERIES - finished  # only what was not finished
        # tolerated failures (--max-failed) leave the stage not "unchanged": a rerun retries
        tolerant = ["--output-dir", str(tmp_path / "out2"), "--set", "generate.max_failed=0.5",
                    "--set", "generate.on_failed=random",
                    "--set", f"generate.cache_dir={tmp_path / 'cache2'}"]  # fmt: skip
        server.set_faults([FaultRule(kind="server_error", query=victim)])
        server.reset()
        flagged = call_cli("run", spec, *tolerant)
        assert flagged.exit_code == 0, flagged.output
        negatives = tmp_path / "out2" / "negatives.parquet"
        assert read_provenance(negatives).summary["failed_queries"] == 1
        server.set_faults([])
        server.reset()
        retried = call_cli("run", spec, *tolerant)
        assert "[generate] done" in retried.stdout, retried.output
        assert [r.query for r in server.requests] == [victim]
        assert read_provenance(negatives).summary["failed_queries"] == 0
        again = call_cli("run", spec, *tolerant)
        assert "[generate] skipped (unchanged)" in again.stdout


def test_a_full_disk_under_the_journal_mid_run_is_one_line(toy, tmp_path: Path, monkeypatch
                                                           ) -> None:  # fmt: skip
    """ENOSPC on the journal's first append (a fault shim at the os.write level: filling a
    real tmpfs exactly between the header and the first entry is not reproducible)."""
    import errno

    import negforge.generation.journal as journal_module

    masked, dictionary = toy
    out = tmp_path / "neg.parquet"
    real_write = os.write

    def full_disk(fd: int, data) -> int:
        if bytes(data[:20]).startswith(b'{"qid"'):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", full_disk)
    with FakeOpenAIServer() as server:
        result = call_cli(*_generate_args(masked, dictionary, out, server.base_url,
                                          tmp_path / "cache"))  # fmt: skip
    monkeypatch.undo()
    assert_clean_failure(result, Expected([], journal_path_for(out),
                                          "cannot write the run journal (no space left"))
    assert not out.exists() and temp_files_of(out) == []


def test_a_cache_failing_mid_run_is_a_warning_not_a_loss(toy, tmp_path: Path, monkeypatch
                                                         ) -> None:  # fmt: skip
    import sqlite3

    import diskcache

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(diskcache.Cache, "set", full)
    masked, dictionary = toy
    with FakeOpenAIServer() as server:
        summary = generate_negatives(masked, dictionary, tmp_path / "neg.parquet", GenerateConfig(
            llm="openai/fake-gpt", api_base=server.base_url, cache_dir=tmp_path / "cache",
            quiet=True))  # fmt: skip
    assert summary.valid_rows == summary.rows == 3 * QUERIES
    assert summary.cache_failure and str(tmp_path / "cache") in summary.cache_failure
    assert any("the response cache failed" in line for line in summary.lines())


# --- killed writes ---------------------------------------------------------------------------

_SLOW_WRITER = """
import sys, time
from negforge.atomic import atomic_open
with atomic_open(sys.argv[1]) as handle:
    handle.write("half a file")
    handle.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


def _start_writer(target: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)],
                               stdout=subprocess.PIPE, text=True, env=offline_env())  # fmt: skip
    assert process.stdout is not None and process.stdout.readline().strip() == "writing"
    return process


def test_the_next_write_removes_the_temp_file_of_a_killed_one(tmp_path: Path) -> None:
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"qid": "a", "query": "person sits.", "vid": "v",
                                  "duration": 5.0, "relevant_windows": [[0, 1]]}) + "\n")
    target = tmp_path / "out.jsonl"
    killed = _start_writer(target)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    orphans = temp_files_of(target)
    assert len(orphans) == 1 and f".p{killed.pid}." in orphans[0].name
    legacy = tmp_path / ".out.jsonl.abc123xy.tmp"  # negforge <= 0.1 named them like this
    legacy.write_text("old half file")
    live = _start_writer(target)  # another process writing the same target right now
    try:
        result = call_cli("read", source, "-o", target)
        assert result.exit_code == 0, result.output
        left = temp_files_of(target)
        assert left == [p for p in left if f".p{live.pid}." in p.name] and len(left) == 1
        assert target.read_text().count("\n") == 1
    finally:
        live.kill()
        live.wait(10)
    assert call_cli("read", source, "-o", target).exit_code == 0
    assert temp_files_of(target) == []


def test_a_clean_exit_removes_the_temp_files_it_holds(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    code = ("import sys\nfrom negforge.atomic import AtomicFiles\n"
            "AtomicFiles().path(sys.argv[1]).write_text('x')\nsys.exit(0)\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(target)], env=offline_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


# --- credentials ----------------------------------------------------------------------------

ENCODINGS = ("raw", "base64", "url", "hex")


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{12,}={0,2}")


def _text_of(file: Path) -> bytes:
    """What a file holds, readable: Parquet is compressed, so its rows and metadata."""
    if file.suffix == ".parquet":
        table = pq.read_table(file)
        metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return json.dumps([table.to_pylist(), metadata], default=str).encode()
    return file.read_bytes()


def _decoded_base64(data: bytes) -> list[bytes]:
    """Every base64 run of ``data`` decoded, at each of its 4 alignments."""
    decoded = []
    for run in _BASE64_RUN.findall(data):
        run = run.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
        for start in range(4):
            piece = run[start:]
            piece = piece[: len(piece) // 4 * 4]
            with contextlib.suppress(ValueError):
                decoded.append(base64.b64decode(piece))
    return decoded


def _assert_nowhere(secret: str, paths: list[Path]) -> None:
    """``secret`` is in no file under ``paths``: raw, URL-encoded, hex or inside base64."""
    raw = secret.encode()
    forms = [raw, urllib.parse.quote(secret, safe="").encode(), raw.hex().encode(),
             raw.hex().upper().encode()]  # fmt: skip
    for path in paths:
        for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
            text = _text_of(file)
            for form in forms:
                assert form not in text, (file, form)
            assert not any(raw in blob for blob in _decoded_base64(text)), (file, "base64")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_echoed_key_reaches_no_cache_journal_or_artifact(toy, tmp_path: Path, monkeypatch,
                                                            encoding: str) -> None:  # fmt: skip
    masked, dictionary = toy
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    out = tmp_path / "neg.parquet"
    cache = tmp_path / "cache"
    leaks = [FaultRule(kind="leak_key", leak_encoding=encoding, query_attempts=[1])]
    failing = FaultRule(kind="server_error", query=_query_text(QUERIES - 1))
    with FakeOpenAIServer(faults=[failing, *leaks]) as server:
        config = GenerateConfig(llm="openai/fake-gpt", api_base=server.base_url, cache_dir=cache,
                                concurrency=1, max_retries=0, quiet=True)  # fmt: skip
        # route 1 and 2: the last query fails -> exit 3, the journal keeps the finished ones
        with pytest.raises(GenerationFailed):
            generate_negatives(masked, dictionary, out, config)
        journal = journal_path_for(out)
        assert journal.exists() and journal.read_text().count("\n") >= 2
        _assert_nowhere(API_KEY, [journal, cache])
        leaked = [r.query for r in server.requests if r.fault == "leak_key"]
        assert len(leaked) == QUERIES - 1  # the server echoed the key to every other query
        # route 3: the artifact (fills, negatives, provenance)
        server.set_faults(leaks)
        generate_negatives(masked, dictionary, out, config)
    _assert_nowhere(API_KEY, [out, cache, tmp_path])
    rows = load_rows(out, NegativeRow)
    assert len(rows) == 3 * QUERIES and all(r.negative for r in rows)


def test_url_user_info_is_stored_nowhere_and_printed_nowhere(toy, tmp_path: Path) -> None:
    masked, dictionary = toy
    password = "pw-0123456789abcdef"
    out = tmp_path / "neg.parquet"
    with FakeOpenAIServer(faults=[FaultRule(kind="leak_key", leak_encoding="raw",
                                            query_attempts=[1])]) as server:  # fmt: skip
        url = server.base_url.replace("http://", f"http://user:{password}@")
        result = call_cli(*_generate_args(masked, dictionary, out, url, tmp_path / "cache"))
        assert result.exit_code == 0, result.output
    provenance = read_provenance(out)
    assert provenance.settings["api_base"] == server.base_url  # host kept, user-info gone
    assert password not in result.output
    _assert_nowhere(password, [tmp_path])
    failed = call_cli(*_generate_args(masked, dictionary, tmp_path / "n2.parquet",
                                      url.replace(str(server.port), str(free_port())),
                                      tmp_path / "cache2", "--max-retries", "0"))  # fmt: skip
    assert failed.exit_code == 3 and password not in failed.output


# --- Ctrl-C: real processes ------------------------------------------------------------------


def _interrupt_when(process: subprocess.Popen[str], ready, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)


def _journal_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _assert_interrupted(process: subprocess.Popen[str], kept: str) -> str:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("negforge: error: interrupted") and kept in last, stderr
    return last


def test_ctrl_c_in_generate_exits_130_and_keeps_the_journal(toy, tmp_path: Path) -> None:
    masked, dictionary = toy
    out = tmp_path / "neg.parquet"
    journal = journal_path_for(out)
    with FakeOpenAIServer(delay_s=0.5) as server:
        process = subprocess.Popen(
            negforge_command(*_generate_args(masked, dictionary, out, server.base_url,
                                             tmp_path / "cache", "--concurrency", "1")),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
            env=offline_env(),
        )  # fmt: skip
        _interrupt_when(process, lambda: _journal_lines(journal) >= 3)  # header + 2 queries
        _assert_interrupted(process, str(journal))
        kept = _journal_lines(journal) - 1
        assert kept >= 2 and not out.exists() and temp_files_of(out) == []
        server.reset()
        summary = generate_negatives(masked, dictionary, out, GenerateConfig(
            llm="openai/fake-gpt", api_base=server.base_url, cache_dir=tmp_path / "cache",
            quiet=True))  # fmt: skip
        assert summary.resumed_queries >= kept
        assert summary.calls == QUERIES - summary.resumed_queries


def test_ctrl_c_in_run_exits_130_and_a_rerun_goes_on(toy, tmp_path: Path) -> None:
    masked, dictionary = toy
    out = tmp_path / "out"
    spec = tmp_path / "p.yaml"
    with FakeOpenAIServer(delay_s=0.5) as server:
        spec.write_text(
            f"name: slow\ninputs: {{masked: {masked}, dict: {dictionary}}}\nstages:\n"
            "  - {stage: generate, masked: masked, dictionary: dict, llm: openai/fake-gpt, "
            f"api_base: '{server.base_url}', concurrency: 1, quiet: true, "
            f"cache_dir: '{tmp_path / 'cache'}'}}\n  - {{stage: export}}\n"
        )
        journal = journal_path_for(out / "negatives.parquet")
        process = subprocess.Popen(negforge_command("run", spec, "--output-dir", out),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=REPO_ROOT, env=offline_env())  # fmt: skip
        _interrupt_when(process, lambda: _journal_lines(journal) >= 3)
        _assert_interrupted(process, "finished stages are kept")
        assert journal.exists() and not (out / "negatives.parquet").exists()
        server.reset()
        rerun = call_cli("run", spec, "--output-dir", out)
        assert rerun.exit_code == 0, rerun.output
        assert len(server.requests) <= QUERIES - 2, [(r.number, r.query) for r in server.requests]
        assert pq.read_metadata(out / "negatives.parquet").num_rows == 3 * QUERIES


def test_ctrl_c_in_train_exits_130_with_a_resumable_checkpoint(tmp_path: Path) -> None:
    from negforge.trainer.checkpoints import read_checkpoint
    from negforge.trainer.synth import SynthConfig, generate

    synth = tmp_path / "synth"
    generate(synth, SynthConfig(train_videos=16, test_videos=4, novel_videos=4, seed=1))
    run = tmp_path / "run"
    tiny = ["--hidden", "16", "--heads", "2", "--ff", "32", "--enc-layers", "1",
            "--dec-layers", "1", "--t2v-layers", "1", "--num-queries", "4", "--batch-size", "8",
            "--epochs", "10000", "--eval-every", "10000", "--no-progress", "--cpu-threads", "1"]
    process = subprocess.Popen(
        negforge_command("train", "--config", synth / "train_config.yaml", "-o", run, *tiny),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env=offline_env(),
    )  # fmt: skip
    last = run / "checkpoints" / "last.pt"
    _interrupt_when(process, last.is_file, timeout_s=240)
    line = _assert_interrupted(process, f"{last} holds epoch")
    state = read_checkpoint(last)  # whole, loadable: --resume continues from it
    assert f"holds epoch {state['epoch'] + 1}" in line and "--resume" in line
    assert temp_files_of(last) == []
    assert os.path.getsize(last) > 0
