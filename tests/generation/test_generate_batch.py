"""``generate --batch`` against the fake server's Files and Batches endpoints, with faults.

* the fake speaks the protocol as the ``openai`` SDK expects it (upload, list, create,
  retrieve, cancel, output and error files, status transitions, expiry);
* a run where one batch fails, one expires half-done, a result line is an error and answers
  are invalid ends with every query valid or flagged, nothing lost, the answers an expired
  batch did give never asked again, re-asks in follow-up batches (or online with
  ``--batch-retry online``), and its cache shared with online mode;
* SIGKILL while polling, then the same command: it polls the same batches, uploads nothing;
* ``--dry-run --batch`` prices the run at half the online price.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import openai
import pyarrow.parquet as pq
import pytest

from negforge.artifacts import NegativeRow, load_rows, read_provenance
from negforge.generation.config import GenerateConfig
from negforge.generation.estimate import estimate_generation
from negforge.generation.journal import journal_path_for
from negforge.generation.runner import generate_negatives
from tests.support.fake_openai import FakeOpenAIProcess, FakeOpenAIServer, FaultRule
from tests.support.generation_inputs import (  # noqa: F401 - fixture
    REPO_ROOT,
    GenerationInputs,
    negforge_command,
    offline_env,
    sample_generation_inputs,
)

KEY = "sk-negforge-batch-test-000000000"
MODEL = "openai/fake-gpt"
PER_FILE = 12  # requests per batch file: the 51 sample queries make 5 first-round batches


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _line(custom_id: str) -> bytes:
    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]}
    return (json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                        "body": body}) + "\n").encode()  # fmt: skip


def test_fake_server_speaks_the_files_and_batches_protocol() -> None:
    async def scenario(base_url: str) -> None:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        data = b"".join(_line(f"q{i}#1") for i in range(4))
        uploaded = await client.files.create(file=("in.jsonl", data, "application/jsonl"),
                                             purpose="batch")  # fmt: skip
        assert uploaded.bytes == len(data) and uploaded.filename == "in.jsonl"
        assert [f.id async for f in client.files.list(purpose="batch")] == [uploaded.id]
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions",
            completion_window="24h", metadata={"k": "v"},
        )  # fmt: skip
        assert batch.status == "validating"
        seen = [batch.status]
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            await asyncio.sleep(0.01)
            batch = await client.batches.retrieve(batch.id)
            seen.append(batch.status)
        assert batch.status == "completed" and "in_progress" in seen
        assert batch.request_counts is not None and batch.request_counts.completed == 4
        output = (await client.files.content(batch.output_file_id or "")).content
        assert sorted(json.loads(x)["custom_id"] for x in output.splitlines()) == [
            f"q{i}#1" for i in range(4)]  # fmt: skip
        assert batch.error_file_id is None
        assert [b.metadata async for b in client.batches.list()] == [{"k": "v"}]
        # the second batch expires half-done: its unrun requests land in the error file
        expired = await client.batches.create(input_file_id=uploaded.id,
                                              endpoint="/v1/chat/completions",
                                              completion_window="24h")  # fmt: skip
        while expired.status not in ("completed", "failed", "expired", "cancelled"):
            await asyncio.sleep(0.01)
            expired = await client.batches.retrieve(expired.id)
        assert expired.status == "expired"
        errors = (await client.files.content(expired.error_file_id or "")).content.splitlines()
        assert [json.loads(x)["error"]["code"] for x in errors] == ["batch_expired"] * 2
        # a bad input file fails at validation; a held batch can be cancelled
        bad = await client.files.create(file=("bad.jsonl", b"{}\n", "application/jsonl"),
                                        purpose="batch")  # fmt: skip
        failed = await client.batches.create(input_file_id=bad.id,
                                             endpoint="/v1/chat/completions",
                                             completion_window="24h")  # fmt: skip
        await asyncio.sleep(0.2)
        failed = await client.batches.retrieve(failed.id)
        assert failed.status == "failed" and failed.errors and failed.errors.data
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve("batch_missing")
        await client.close()

    settings = {"faults": [{"kind": "expire_half", "batch_numbers": [2]}], "request_delay_s": 0.02}
    with FakeOpenAIServer(batch=settings) as s:
        asyncio.run(scenario(s.base_url))
        assert s.batch_log()["uploads"] == 2


def _config(server: FakeOpenAIServer, tmp_path: Path, **extra: object) -> GenerateConfig:
    settings: dict[str, object] = {
        "llm": MODEL, "api_base": server.base_url, "batch": True, "batch_poll_s": 0.05,
        "batch_max_poll_s": 0.2, "batch_max_requests": PER_FILE, "max_backoff_s": 0.1,
        "cache_dir": tmp_path / "cache", "quiet": True, "max_attempts": 3, "max_retries": 3,
    }  # fmt: skip
    settings.update(extra)
    return GenerateConfig.model_validate(settings)


@pytest.mark.parametrize("retry", ["batch", "online"])
def test_batch_faults_end_every_query_valid_or_flagged(
    tmp_path: Path,
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
    retry: str,
) -> None:
    inputs = sample_generation_inputs
    queries = list(inputs.queries.values())
    always_wrong, wrong_once, error_line = queries[0], queries[1], queries[30]
    request_faults = [
        FaultRule(kind="wrong_count", query=always_wrong),  # stays invalid: flagged
        FaultRule(kind="copy_original", query=wrong_once, query_attempts=[1]),  # re-asked once
        FaultRule(kind="server_error", query=error_line, query_attempts=[1]),  # an error line
    ]
    batch_faults = [{"kind": "fail", "batch_numbers": [2]},
                    {"kind": "expire_half", "batch_numbers": [3]}]  # fmt: skip
    output = tmp_path / "neg.parquet"
    with FakeOpenAIServer(faults=request_faults, batch={"faults": batch_faults}) as server:
        summary = generate_negatives(inputs.masked, inputs.dictionary, output,
                                     _config(server, tmp_path, batch_retry=retry))  # fmt: skip
        requests = server.requests
        log = server.batch_log()

    rows = load_rows(output, NegativeRow)
    assert Counter((r.qid, r.level) for r in rows) == Counter(
        {(qid, level): 1 for qid in inputs.queries for level in range(1, inputs.levels + 1)})
    for row in rows:  # valid, or flagged with the reason and the --on-invalid fallback
        assert row.valid or (row.invalid_reasons and row.fallback == "random"), row
    flagged = {r.qid for r in rows if r.invalid_reasons and "wrong_fill_count" in r.invalid_reasons}
    assert {inputs.queries[q] for q in flagged} == {always_wrong}
    assert summary.failed_queries == 0 and summary.queries == len(queries)
    # every query's first request was answered exactly once (the half an expired batch ran
    # is kept; the failed batch's and the unrun half's requests were sent again)
    first_answers = Counter(r.query for r in requests if r.status == 200 and r.body
                            and not any(m["role"] == "assistant" for m in r.body["messages"]))
    assert set(first_answers) == set(queries) and set(first_answers.values()) == {1}
    statuses = Counter(b["status"] for b in log["batches"])
    assert statuses["failed"] == 1 and statuses["expired"] == 1
    assert log["uploads"] == log["creations"] == len(log["batches"])
    # 5 first-round files; follow-up batches for what failed and the re-asks, unless online
    assert len(log["batches"]) >= 7 if retry == "batch" else len(log["batches"]) == 5
    # re-asks and the retried error line went where --batch-retry says
    reasks = [r for r in requests if any(m["role"] == "assistant" for m in r.body["messages"])]
    assert {r.query for r in reasks} == {always_wrong, wrong_once}
    error_retry = [r for r in requests if r.query == error_line]
    assert [r.status for r in error_retry] == [500, 200]
    online = [r for r in [*reasks, error_retry[1]] if r.batch_id is None]
    assert len(online) == (len(reasks) + 1 if retry == "online" else 0)
    # each request a batch (or the online fallback) did not answer was sent once more
    online_errors = sum(1 for r in requests if r.batch_id is None and r.status != 200)
    assert summary.batch is not None
    assert summary.retries == summary.batch["batch_request_errors"] + online_errors
    assert summary.retries >= 3  # the failed batch, the expired batch's unrun half, the 500
    assert not journal_path_for(output).exists()

    # the cache is shared with online mode: an online rerun to a new output asks nothing
    with FakeOpenAIServer() as online_server:
        config = _config(online_server, tmp_path, batch=False)
        again = generate_negatives(inputs.masked, inputs.dictionary, tmp_path / "b.parquet",
                                   config)  # fmt: skip
        assert online_server.requests == [] and again.cache_hits >= len(queries)
    assert pq.read_table(tmp_path / "b.parquet").column("negative").to_pylist() == \
        pq.read_table(output).column("negative").to_pylist()


def test_sigkill_while_polling_resumes_the_same_batches_without_uploading(
    tmp_path: Path,
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
) -> None:
    inputs = sample_generation_inputs
    output = tmp_path / "neg.parquet"
    with FakeOpenAIProcess(batch={"hold": True}) as server:
        command = negforge_command(
            "generate", inputs.masked, "--dict", inputs.dictionary, "-o", output,
            "--llm", MODEL, "--api-base", server.base_url, "--batch", "--batch-poll-s", 0.1,
            "--batch-max-requests", 20, "--no-cache",
        )  # fmt: skip
        env = offline_env(OPENAI_API_KEY=KEY)
        first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert first.poll() is None, first.communicate()
                log = server.batch_log()
                polled = {e["batch_id"] for e in log["log"] if e["call"] == "retrieve"}
                if log["creations"] == 3 and len(polled) == 3:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the first run never polled its three batches")
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=60)
        assert first.returncode == -signal.SIGKILL and not output.exists()
        before = server.batch_log()
        server.set_batch_hold(False)
        rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, text=True, capture_output=True,
                               timeout=300)  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr
        after = server.batch_log()
        requests = server.requests()

    assert before["uploads"] == before["creations"] == 3
    assert after["uploads"] == 3 and after["creations"] == 3, "the rerun uploaded or created"
    rerun_polled = {e["batch_id"] for e in after["log"][len(before["log"]):]
                    if e["call"] == "retrieve"}  # fmt: skip
    assert rerun_polled == {b["id"] for b in before["batches"]}
    assert Counter(r.query for r in requests) == Counter(set(inputs.queries.values()))
    table = pq.read_table(output, columns=["valid"])
    assert table.num_rows == len(inputs.queries) * inputs.levels
    assert all(table.column("valid").to_pylist())
    summary = read_provenance(output).summary
    assert summary["batch"]["batches_resumed"] == 3 and summary["batch"]["uploads"] == 0
    assert "3 resumed" in rerun.stdout


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo"])
def test_dry_run_batch_price_is_half_the_online_price(
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
    model: str,
) -> None:
    """gpt-4o-mini has batch prices in litellm's map, gpt-3.5-turbo only the 50 % rule."""
    inputs = sample_generation_inputs
    online = estimate_generation(inputs.masked, inputs.dictionary, GenerateConfig(llm=model))
    batch = estimate_generation(inputs.masked, inputs.dictionary,
                                GenerateConfig(llm=model, batch=True))  # fmt: skip
    assert online.cost_usd is not None and online.cost_usd > 0
    assert batch.cost_usd == pytest.approx(online.cost_usd / 2, rel=1e-9)
    assert batch.online_cost_usd == online.cost_usd and batch.batch_files == 1
    assert batch.input_tokens == online.input_tokens
    if model == "gpt-4o-mini":  # the CLI prints both prices
        args = ["generate", inputs.masked, "--dict", inputs.dictionary, "--llm", model,
                "--dry-run", "--batch"]  # fmt: skip
        done = subprocess.run(negforge_command(*args), cwd=REPO_ROOT, capture_output=True,
                              env=offline_env(OPENAI_API_KEY=KEY), text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"estimated cost ${batch.cost_usd:.4f} at the Batch API price (1 batch files; " \
               f"online ${online.cost_usd:.4f})" in done.stdout


@pytest.mark.llama
def test_min_plausibility_reasks_through_the_batch_api(
    tmp_path: Path,
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
) -> None:
    """The --min-plausibility gate sees batch answers too: an impossible threshold makes
    every answer implausible, re-asked in follow-up batches, then flagged."""
    from negforge.generation.filling import REASK_TEXT
    from tests.support.llama_model import require_llama

    require_llama()
    inputs = sample_generation_inputs
    output = tmp_path / "gated.parquet"
    with FakeOpenAIServer() as server:
        summary = generate_negatives(inputs.masked, inputs.dictionary, output, _config(
            server, tmp_path, limit=2, max_attempts=2, on_invalid="keep",
            min_plausibility=50.0,  # no negative is 50 nats/token likelier than its query
        ))  # fmt: skip
        requests = server.requests
        log = server.batch_log()
    rows = load_rows(output, NegativeRow)
    assert len(rows) == 2 * inputs.levels
    assert all(not r.valid and "implausible" in r.invalid_reasons for r in rows)
    assert summary.reasons["implausible"] == len(rows)
    reasks = [r for r in requests if any(m["role"] == "assistant" for m in r.body["messages"])]
    assert len(reasks) == 2 and all(r.batch_id is not None for r in reasks)
    assert all(REASK_TEXT["implausible"] in r.body["messages"][-1]["content"] for r in reasks)
    assert len(log["batches"]) == 2  # the first round and one follow-up
