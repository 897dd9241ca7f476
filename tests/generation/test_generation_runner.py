"""The generation runner against the loopback fake OpenAI server (tests/support/fake_openai.py).

The fault-injection, SIGKILL and real-model tests live in their own modules; these cover the
runner's own contract: rows, summary, cache, resume, ``--on-invalid``, dry-run, fatal stops.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from negforge.artifacts import NegativeRow, load_rows, read_provenance
from negforge.cli import app
from negforge.generation.config import GenerateConfig
from negforge.generation.errors import FatalCallError, GenerationFailed
from negforge.generation.estimate import estimate_generation
from negforge.generation.journal import journal_path_for
from negforge.generation.runner import generate_negatives
from tests.support.fake_openai import FakeOpenAIServer, FaultRule
from tests.support.masked_levels import TOY_QUERIES, write_toy_artifacts

QUERIES = len(TOY_QUERIES)


@pytest.fixture
def inputs(tmp_path):
    return write_toy_artifacts(tmp_path / "in")


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def _config(server, tmp_path: Path, **overrides) -> GenerateConfig:
    settings = {
        "llm": "openai/fake-gpt",
        "api_base": server.base_url,
        "cache_dir": tmp_path / "cache",
        "concurrency": 4,
        "quiet": True,
        "max_backoff_s": 0.5,
        **overrides,
    }
    return GenerateConfig.model_validate(settings)


def test_llm_run_fills_every_level_and_a_rerun_is_free(inputs, server, tmp_path):
    masked, dictionary = inputs
    out = tmp_path / "neg.parquet"
    summary = generate_negatives(masked, dictionary, out, _config(server, tmp_path))
    assert summary.queries == QUERIES and summary.rows == 3 * QUERIES
    assert summary.calls == QUERIES and summary.cache_hits == 0  # one call per query
    assert summary.valid_rows == summary.rows and summary.invalid_rows == 0
    assert summary.input_tokens > 0 and summary.output_tokens > 0
    assert len(server.requests) == QUERIES
    body = server.requests[0].body
    assert body["model"] == "fake-gpt" and body["response_format"]["type"] == "json_schema"
    rows = load_rows(out, NegativeRow)
    assert all(r.valid and r.negative and r.attempts == 1 and not r.cache_hit for r in rows)
    assert {r.prompt_version for r in rows} == {"negative_fill@v1"}
    assert sum(r.input_tokens for r in rows) == summary.input_tokens
    assert read_provenance(out).summary["calls"] == QUERIES
    assert not journal_path_for(out).exists()  # removed once the artifact is written

    # Another output, same requests: every answer comes from the cache.
    again = generate_negatives(masked, dictionary, tmp_path / "again.parquet",
                               _config(server, tmp_path))  # fmt: skip
    assert again.calls == 0 and again.cache_hits == QUERIES
    assert len(server.requests) == QUERIES
    assert pq.read_table(tmp_path / "again.parquet").column("negative").to_pylist() == [
        r.negative for r in rows
    ]
    assert all(r.cache_hit for r in load_rows(tmp_path / "again.parquet", NegativeRow))


def test_litellm_path_against_the_same_server(inputs, server, tmp_path, monkeypatch):
    """``client=litellm`` sends the same request shape through litellm.acompletion."""
    masked, dictionary = inputs
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    server.set_faults([FaultRule(kind="rate_limit", limit=1, retry_after_s=0.1),
                       FaultRule(kind="malformed", limit=1)])  # fmt: skip
    config = _config(server, tmp_path, client="litellm", no_cache=True)
    summary = generate_negatives(masked, dictionary, tmp_path / "lite.parquet", config)
    assert summary.valid_rows == summary.rows and summary.failed_queries == 0
    assert summary.retries == 1 and summary.reasks == 1 and summary.calls == QUERIES + 1
    body = server.requests[-1].body
    assert body["response_format"]["type"] == "json_schema" and body["model"] == "fake-gpt"


def test_gemini_goes_through_litellm(inputs, tmp_path, monkeypatch):
    """A non-OpenAI provider: litellm.acompletion gets the JSON schema (answers mocked by
    litellm's own ``mock_response``, built like the fake server's; no network)."""
    from negforge.generation.accounting import import_litellm
    from tests.support.fake_openai import build_answer

    litellm = import_litellm()
    real = litellm.acompletion
    seen: list[dict] = []

    async def mocked(**kwargs):
        seen.append(kwargs)
        body = {"messages": kwargs["messages"], "response_format": kwargs["response_format"]}
        return await real(**kwargs, mock_response=build_answer(body, None))

    monkeypatch.setattr(litellm, "acompletion", mocked)
    monkeypatch.setenv("GEMINI_API_KEY", "a-placeholder-key-litellm-is-mocked")  # checked first
    masked, dictionary = inputs
    config = GenerateConfig(llm="gemini/gemini-1.5-flash", cache_dir=tmp_path / "c", quiet=True)
    summary = generate_negatives(masked, dictionary, tmp_path / "gem.parquet", config)
    assert summary.valid_rows == summary.rows == 3 * QUERIES and summary.calls == QUERIES
    assert summary.backend == "gemini" and summary.cost_usd is None  # not in litellm's map
    assert {call["model"] for call in seen} == {"gemini/gemini-1.5-flash"}
    assert all(call["response_format"]["type"] == "json_schema" for call in seen)
    assert all(call["num_retries"] == 0 and call["drop_params"] for call in seen)


def test_finished_artifact_is_not_paid_again_even_without_cache(inputs, server, tmp_path):
    masked, dictionary = inputs
    out = tmp_path / "neg.parquet"
    generate_negatives(masked, dictionary, out, _config(server, tmp_path, no_cache=True))
    summary = generate_negatives(masked, dictionary, out, _config(server, tmp_path, no_cache=True))
    assert summary.calls == 0 and summary.resumed_queries == QUERIES
    assert len(server.requests) == QUERIES
    # A changed setting is a different run: it asks again.
    changed = generate_negatives(masked, dictionary, out,
                                 _config(server, tmp_path, no_cache=True, seed=9))  # fmt: skip
    assert changed.calls == QUERIES


def test_invalid_answers_are_reasked_with_reasons(inputs, server, tmp_path):
    masked, dictionary = inputs
    server.set_faults([FaultRule(kind="copy_original", query_attempts=[1])])
    summary = generate_negatives(masked, dictionary, tmp_path / "n.parquet",
                                 _config(server, tmp_path))  # fmt: skip
    assert summary.reasks == QUERIES and summary.calls == 2 * QUERIES
    assert summary.valid_rows == summary.rows and summary.fallbacks == 0
    second = [r for r in server.requests if r.query_attempt == 2]
    last = second[0].body["messages"]
    assert [m["role"] for m in last[-2:]] == ["assistant", "user"]
    assert "hidden original word" in last[-1]["content"]
    assert "```json" in last[-1]["content"]
    assert {r.attempts for r in load_rows(tmp_path / "n.parquet", NegativeRow)} == {2}


@pytest.mark.parametrize("mode", ["drop", "keep", "random"])
def test_on_invalid_modes(inputs, server, tmp_path, mode):
    masked, dictionary = inputs
    server.set_faults([FaultRule(kind="copy_original")])  # every answer copies a word
    out = tmp_path / f"{mode}.parquet"
    config = _config(server, tmp_path, on_invalid=mode, max_attempts=2)
    summary = generate_negatives(masked, dictionary, out, config)
    rows = load_rows(out, NegativeRow)
    level1 = [r for r in rows if r.level == 1]
    assert summary.calls == 2 * QUERIES and summary.reasks == QUERIES
    assert summary.invalid_rows == QUERIES
    assert all("copied_original" in r.invalid_reasons for r in level1)
    assert all(r.valid for r in rows if r.level > 1)
    if mode == "drop":
        assert all(r.negative is None and not r.valid for r in level1)
        assert summary.dropped == QUERIES
    elif mode == "keep":
        assert all(r.negative and not r.valid and r.fallback == "keep" for r in level1)
    else:
        assert all(r.valid and r.fallback == "random" for r in level1)
        assert summary.fallbacks == QUERIES and summary.valid_rows == summary.rows
        for row in level1:
            assert row.fills[0].lower() not in (row.original_words[0].lower(),
                                                row.original_lemmas[0].lower())  # fmt: skip


def test_fatal_error_stops_and_the_rerun_finishes_only_the_rest(inputs, server, tmp_path):
    masked, dictionary = inputs
    out = tmp_path / "neg.parquet"
    server.set_faults([FaultRule(kind="bad_request", request_numbers=[4])])
    config = _config(server, tmp_path, concurrency=1, no_cache=True)
    with pytest.raises(FatalCallError, match="rerun"):
        generate_negatives(masked, dictionary, out, config)
    assert not out.exists()
    journal = journal_path_for(out)
    assert journal.exists()
    assert len(journal.read_text().splitlines()) == 1 + 3  # header + the 3 finished queries
    server.set_faults([])
    summary = generate_negatives(masked, dictionary, out, config)
    assert summary.resumed_queries == 3 and summary.calls == QUERIES - 3
    asked = [r.query for r in server.requests]
    assert len(asked) == QUERIES + 1  # 3 answered, 1 refused, then the 3 missing ones
    answered_twice = [q for q in set(asked) if asked.count(q) > 1]
    assert len(answered_twice) == 1  # only the refused query was asked again
    assert len(load_rows(out, NegativeRow)) == 3 * QUERIES


def test_failed_queries_fail_the_run_loudly_and_a_rerun_retries_them(inputs, server, tmp_path):
    masked, dictionary = inputs
    victim = TOY_QUERIES[2]
    query_text = " ".join(victim[1][:-1]) + "."
    server.set_faults([FaultRule(kind="server_error", query=query_text)])
    out = tmp_path / "neg.parquet"
    config = _config(server, tmp_path, max_retries=2, concurrency=1)
    # default --max-failed 0 --on-failed error: exit code 3, the last error, no artifact
    with pytest.raises(GenerationFailed) as caught:
        generate_negatives(masked, dictionary, out, config)
    assert caught.value.exit_code == 3
    assert f"1 of {QUERIES} queries" in str(caught.value) and "HTTP 500" in str(caught.value)
    assert "3 queries were not attempted" in str(caught.value)  # stopped at once
    assert not out.exists() and journal_path_for(out).exists()
    assert len([r for r in server.requests if r.query == query_text]) == 3  # bounded
    finished = len(server.requests) - 3
    # the rerun pays only for the failed query (and the ones never started)
    server.set_faults([])
    server.reset()
    rerun = generate_negatives(masked, dictionary, out, config)
    assert rerun.calls == QUERIES - finished and rerun.resumed_queries == finished
    assert rerun.failed_queries == 0 and rerun.valid_rows == rerun.rows


@pytest.mark.parametrize("on_failed", ["random", "drop"])
def test_a_chosen_fallback_writes_flagged_rows_and_still_exits_3(inputs, server, tmp_path,
                                                                   on_failed):
    masked, dictionary = inputs
    victim = TOY_QUERIES[2]
    query_text = " ".join(victim[1][:-1]) + "."
    server.set_faults([FaultRule(kind="server_error", query=query_text)])
    out = tmp_path / "neg.parquet"
    config = _config(server, tmp_path, max_retries=1, on_failed=on_failed)
    with pytest.raises(GenerationFailed, match="was written with their 3 rows"):
        generate_negatives(masked, dictionary, out, config)
    rows = [r for r in load_rows(out, NegativeRow) if r.qid == victim[0]]
    assert rows and all("backend_error" in r.invalid_reasons for r in rows)
    if on_failed == "random":  # flagged, and made by the random baseline, not the LLM
        assert all(r.fallback == "random_after_error" and r.model == "random" for r in rows)
        assert all(r.negative for r in rows)
    else:
        assert all(r.negative is None and not r.valid for r in rows)
    summary = read_provenance(out).summary
    assert summary["failed_queries"] == 1 and summary["failed_rows"] == 3
    assert "HTTP 500" in summary["last_error"]
    # within --max-failed the run succeeds (the rows stay flagged), and a rerun retries
    tolerant = _config(server, tmp_path, max_retries=1, on_failed=on_failed, max_failed=0.5)
    assert generate_negatives(masked, dictionary, out, tolerant).failed_queries == 1
    server.set_faults([])
    server.reset()
    assert generate_negatives(masked, dictionary, out, tolerant).calls == 1


def test_api_keys_never_reach_errors_caches_or_artifacts(inputs, tmp_path, monkeypatch):
    masked, dictionary = inputs
    secret = "sk-negforge-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # The server echoes the key it got in its 401 message.
    with FakeOpenAIServer(api_key="the-right-key") as hostile, pytest.raises(
        FatalCallError
    ) as caught:
        generate_negatives(masked, dictionary, tmp_path / "n.parquet", _config(hostile, tmp_path))
    assert secret not in str(caught.value) and "authentication" in str(caught.value)
    with FakeOpenAIServer(api_key=secret) as server:
        out = tmp_path / "ok.parquet"
        generate_negatives(masked, dictionary, out, _config(server, tmp_path))
    for path in [out, *(tmp_path / "cache").rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_dry_run_spends_nothing(inputs, server, tmp_path):
    masked, dictionary = inputs
    config = _config(server, tmp_path)
    estimate = estimate_generation(masked, dictionary, config)
    assert estimate.calls == QUERIES and estimate.rows == 3 * QUERIES
    assert estimate.input_tokens > 100 * QUERIES and estimate.output_tokens > 0
    assert estimate.cached_calls == 0 and server.requests == []
    generate_negatives(masked, dictionary, tmp_path / "n.parquet", config)
    assert estimate_generation(masked, dictionary, config).cached_calls == QUERIES
    priced = estimate_generation(masked, dictionary, GenerateConfig(llm="gpt-3.5-turbo"))
    assert priced.cost_usd is not None and priced.cost_usd > 0


def test_cli_generate_and_dry_run(inputs, tmp_path, server):
    masked, dictionary = inputs
    runner = CliRunner()
    out = tmp_path / "cli.parquet"
    args = ["generate", str(masked), "--dict", str(dictionary), "-o", str(out), "--quiet",
            "--llm", "openai/fake-gpt", "--api-base", server.base_url,
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"calls {QUERIES}" in dry.output and "estimated tokens in" in dry.output
    assert not out.exists() and server.requests == []
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert f"calls {QUERIES}" in done.output and "valid rows 18/18" in done.output
    assert out.exists()
    bad = runner.invoke(app, [*args, "--on-invalid", "ignore"])
    assert bad.exit_code != 0
