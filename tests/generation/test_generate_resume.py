"""SIGKILL ``negforge generate`` in the middle of a run, rerun it: nothing lost, nothing paid twice.

The fake server runs as a separate process and answers the first ``FINISHED`` requests, then
holds every later one. Once every worker of the client is held, each answered query has been
recorded by the client (a worker records its query before it takes the next), and the test
kills the client with SIGKILL. The rerun must produce every row exactly once and must not
send a single request for a query the first run had finished, with or without the cache.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negforge.artifacts import read_provenance
from tests.support.fake_openai import FakeOpenAIProcess, FaultRule, RecordedRequest
from tests.support.generation_inputs import (  # noqa: F401 - fixture
    REPO_ROOT,
    GenerationInputs,
    negforge_command,
    offline_env,
    sample_generation_inputs,
)

CONCURRENCY = 4
FINISHED = 20  # requests answered before the server starts holding them


def _wait_for(server: FakeOpenAIProcess, process: subprocess.Popen[str],
              timeout_s: float = 180.0) -> list[RecordedRequest]:  # fmt: skip
    """Block until FINISHED requests were answered and every worker is held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"generate ended early: {process.communicate()}"
        requests = server.requests()
        answered = [r for r in requests if r.status == 200]
        held = [r for r in requests if r.fault == "stall"]
        if len(answered) == FINISHED and len(held) == CONCURRENCY:
            return requests
        assert len(answered) <= FINISHED and len(held) <= CONCURRENCY
        time.sleep(0.1)
    pytest.fail("the first run never reached the held state")


@pytest.mark.parametrize("cache", ["cache", "no-cache"])
def test_sigkill_mid_run_then_rerun_finishes_only_the_missing_rows(
    tmp_path: Path,
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
    cache: str,
) -> None:
    inputs = sample_generation_inputs
    assert len(inputs.queries) > FINISHED + CONCURRENCY
    output = tmp_path / "negatives.parquet"
    hold_the_rest = FaultRule(kind="stall", request_numbers=list(range(FINISHED + 1, 10_000)))
    with FakeOpenAIProcess(delay_s=0.1, faults=[hold_the_rest]) as server:
        command = negforge_command(
            "generate", inputs.masked, "--dict", inputs.dictionary, "-o", output,
            "--llm", "openai/fake-gpt", "--api-base", server.base_url,
            "--concurrency", CONCURRENCY, "--timeout", 600, "--quiet",
            *(["--cache-dir", tmp_path / "cache"] if cache == "cache" else ["--no-cache"]),
        )  # fmt: skip
        env = offline_env(OPENAI_API_KEY="sk-test-resume-0000000000")
        first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            before = _wait_for(server, first)
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=60)
        assert first.returncode == -signal.SIGKILL
        assert not output.exists(), "no artifact may exist before the run finished"
        finished = {r.query for r in before if r.status == 200}
        assert len(finished) == FINISHED

        server.set_faults([])
        server.reset()
        rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, text=True, capture_output=True,
                               timeout=600)  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr
        after = server.requests()

    asked_again = finished & {r.query for r in after}
    assert not asked_again, f"finished queries were requested again: {sorted(asked_again)}"
    # every query was answered exactly once over both runs
    answered = Counter(r.query for r in [*before, *after] if r.status == 200)
    assert set(answered) == set(inputs.queries.values())
    assert set(answered.values()) == {1}

    table = pq.read_table(output, columns=["qid", "level", "valid", "negative"])
    keys = Counter(zip(table.column("qid").to_pylist(), table.column("level").to_pylist(),
                       strict=True))  # fmt: skip
    masked = pq.read_table(inputs.masked, columns=["qid", "level"])
    expected = set(zip(masked.column("qid").to_pylist(), masked.column("level").to_pylist(),
                       strict=True))  # fmt: skip
    assert set(keys) == expected and set(keys.values()) == {1}
    assert all(table.column("valid").to_pylist())
    summary = read_provenance(output).summary
    assert summary["resumed_queries"] == FINISHED
    assert summary["generated_queries"] == len(inputs.queries) - FINISHED
