"""``generate`` against a loopback OpenAI server that injects every kind of fault.

Through the real client paths (the ``openai`` SDK and ``litellm``): every row ends valid or
flagged as ``--on-invalid`` says, nothing is lost (each qid x level exactly once), retries
and re-asks are bounded (the server counts the requests), Retry-After is honoured, a rerun
makes zero calls (journal / finished artifact, and the response cache for a fresh output),
and a 401 / 400 stops the run at once with a clear message that never shows the API key.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from negforge.generation.config import GenerateConfig
from negforge.generation.runner import generate_negatives
from negforge.template import render_filled
from tests.support.fake_openai import FakeOpenAIServer, FaultRule, RecordedRequest
from tests.support.generation_inputs import (  # noqa: F401 - fixture
    REPO_ROOT,
    GenerationInputs,
    negforge_command,
    offline_env,
    sample_generation_inputs,
)

API_KEY = "sk-negforge-test-0123456789abcdefSECRET"
MAX_ATTEMPTS = 3
MAX_RETRIES = 2
TIMEOUT_S = 2.0
RETRY_AFTER_S = 0.6

# What each of the first nine queries of the sample suffers, and how many requests it must
# then cost: retries of transient failures count, so do re-asks of invalid answers.
SCENARIO: list[tuple[str, list[dict[str, Any]], int]] = [
    ("429 twice", [{"kind": "rate_limit", "query_attempts": [1, 2],
                    "retry_after_s": RETRY_AFTER_S}], 3),
    ("500 once", [{"kind": "server_error", "query_attempts": [1]}], 2),
    ("stall past the timeout", [{"kind": "stall", "query_attempts": [1], "stall_s": 60}], 2),
    ("dropped connection", [{"kind": "drop", "query_attempts": [1]}], 2),
    ("malformed JSON once", [{"kind": "malformed", "query_attempts": [1]}], 2),
    ("wrong fill count always", [{"kind": "wrong_count"}], MAX_ATTEMPTS),
    ("copied original always", [{"kind": "copy_original"}], MAX_ATTEMPTS),
    ("copied original once", [{"kind": "copy_original", "query_attempts": [1]}], 2),
    ("500 past every retry", [{"kind": "server_error"}], MAX_RETRIES + 1),
]  # fmt: skip
ALWAYS_WRONG_COUNT, ALWAYS_COPIED, ALWAYS_500 = 5, 6, 8
#: Reasons reported without making a row invalid (fills outside the dictionary sample).
INFORMATIVE_REASONS = {"not_in_dictionary", "wrong_type"}


def _fault_plan(queries: list[str]) -> list[FaultRule]:
    return [
        FaultRule.model_validate({**fault, "query": queries[index]})
        for index, (_, faults, _) in enumerate(SCENARIO)
        for fault in faults
    ]


def _config(tmp_path: Path, base_url: str, **overrides: Any) -> GenerateConfig:
    settings: dict[str, Any] = {
        "llm": "openai/fake-gpt",
        "api_base": base_url,
        "concurrency": 8,
        "max_attempts": MAX_ATTEMPTS,
        "max_retries": MAX_RETRIES,
        "timeout_s": TIMEOUT_S,
        "max_backoff_s": 5.0,
        "cache_dir": tmp_path / "cache",
        "quiet": True,
    }
    settings.update(overrides)
    return GenerateConfig.model_validate(settings)


def _rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def _assert_valid_row(row: dict[str, Any]) -> None:
    """An independent check of a row flagged valid."""
    assert row["negative"] is not None, row
    assert len(row["fills"]) == len(row["masked_positions"]), row
    for fill, word, lemma in zip(row["fills"], row["original_words"], row["original_lemmas"],
                                 strict=True):  # fmt: skip
        assert fill.strip() and len(fill.split()) == 1, row
        assert fill.lower() not in {word.lower(), lemma.lower()}, row
    assert row["negative"] == render_filled(row["tokens"], row["masked_positions"], row["fills"])
    assert row["negative"].lower() != row["query"].lower()


def _assert_every_row_once(rows: list[dict[str, Any]], inputs: GenerationInputs) -> None:
    masked = pq.read_table(inputs.masked, columns=["qid", "level"]).to_pylist()
    keys = Counter((row["qid"], row["level"]) for row in rows)
    assert set(keys) == {(m["qid"], m["level"]) for m in masked}
    assert set(keys.values()) == {1}


def _requests_per_query(requests: list[RecordedRequest]) -> Counter[str | None]:
    return Counter(r.query for r in requests)


@pytest.mark.parametrize(
    ("client", "on_invalid"), [("openai", "random"), ("litellm", "keep"), ("openai", "drop")]
)
def test_every_fault_ends_valid_or_flagged_and_reruns_cost_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
    client: str,
    on_invalid: str,
) -> None:
    inputs = sample_generation_inputs
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    qids = list(inputs.queries)
    queries = [inputs.queries[qid] for qid in qids]
    assert len(set(queries)) == len(queries), "fault targeting needs distinct query texts"
    output = tmp_path / "negatives.parquet"

    with FakeOpenAIServer(faults=_fault_plan(queries)) as server:
        # one query fails past every retry: tolerated here (--max-failed), flagged per
        # --on-failed (the loud default, exit code 3, is tested in test_reliability.py)
        on_failed = "random" if on_invalid == "random" else "drop"
        config = _config(tmp_path, server.base_url, client=client, on_invalid=on_invalid,
                         on_failed=on_failed, max_failed=0.1)  # fmt: skip
        summary = generate_negatives(inputs.masked, inputs.dictionary, output, config)
        first = server.requests

        # -- retries and re-asks are bounded: exactly the planned number of requests
        per_query = _requests_per_query(first)
        for index, (label, _, expected) in enumerate(SCENARIO):
            assert per_query[queries[index]] == expected, label
        for query in queries[len(SCENARIO) :]:
            assert per_query[query] == 1, query
        assert None not in per_query  # every request carried its query
        assert summary.calls + summary.retries == len(first)
        # Retry-After was honoured: the retry came no sooner than the server asked
        limited = [r for r in first if r.query == queries[0]]
        assert limited[0].status == 429 and limited[0].answered_at is not None
        assert limited[1].received_at - limited[0].answered_at >= RETRY_AFTER_S * 0.95
        # the stalled request was given up after the client's timeout, then retried
        stalled = [r for r in first if r.query == queries[2]]
        assert stalled[0].fault == "stall" and stalled[1].status == 200
        assert stalled[1].received_at - stalled[0].received_at >= TIMEOUT_S * 0.95

        # -- nothing lost; every row valid or flagged as configured
        rows = _rows(output)
        _assert_every_row_once(rows, inputs)
        by_query: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_query.setdefault(row["query"], []).append(row)
        for row in rows:
            if row["valid"]:
                _assert_valid_row(row)
            else:
                assert row["invalid_reasons"], row
            if row["fallback"] == "random_after_error":  # made by the random baseline
                assert row["backend"] == "random" and row["model"] == "random"
            else:
                assert row["backend"] == "openai-compatible"
                assert row["model"] == "openai/fake-gpt"
        for query in [*queries[:ALWAYS_WRONG_COUNT], queries[7], *queries[len(SCENARIO) :]]:
            for row in by_query[query]:
                assert row["valid"] and row["fallback"] is None
                assert set(row["invalid_reasons"]) <= INFORMATIVE_REASONS, row
            negatives = [row["negative"] for row in by_query[query]]
            assert len(set(negatives)) == len(negatives)
        broken = {
            ALWAYS_WRONG_COUNT: "wrong_fill_count",
            ALWAYS_COPIED: "copied_original",
            ALWAYS_500: "backend_error",
        }
        for index, reason in broken.items():
            flagged = [row for row in by_query[queries[index]] if reason in row["invalid_reasons"]]
            # the content faults hit level 1 only; a failed call hits every level
            assert len(flagged) == (len(by_query[queries[index]]) if index == ALWAYS_500 else 1)
            for row in flagged:
                if index == ALWAYS_500 and on_failed == "random":
                    assert row["fallback"] == "random_after_error" and row["negative"] is not None
                elif index == ALWAYS_500 or on_invalid == "drop":
                    assert row["fallback"] is None and not row["valid"]
                    assert row["negative"] is None
                elif on_invalid == "random":
                    assert row["fallback"] == "random" and row["negative"] is not None
                else:
                    assert row["fallback"] == "keep" and not row["valid"]
        assert summary.rows == len(rows)
        assert summary.failed_queries == 1
        assert summary.reasks == 1 + 2 * (MAX_ATTEMPTS - 1) + 1

        # -- rerun with the faults gone: only the query whose calls failed is asked again
        server.set_faults([])
        server.reset()
        generate_negatives(inputs.masked, inputs.dictionary, output, config)
        assert [r.query for r in server.requests] == [queries[ALWAYS_500]]
        rerun_rows = _rows(output)
        _assert_every_row_once(rerun_rows, inputs)
        assert all(row["valid"] or row["invalid_reasons"] for row in rerun_rows)
        assert not any("backend_error" in row["invalid_reasons"] for row in rerun_rows)

        # -- a third run makes zero calls, and so does a fresh output from the cache alone
        server.reset()
        again = generate_negatives(inputs.masked, inputs.dictionary, output, config)
        assert server.requests == [] and again.calls == 0
        assert _rows(output) == rerun_rows
        fresh = tmp_path / "fresh.parquet"
        cached = generate_negatives(inputs.masked, inputs.dictionary, fresh, config)
        assert server.requests == [], "a cache hit must make no call"
        assert cached.calls == 0 and cached.cache_hits > 0
        fresh_rows = _rows(fresh)
        assert [(r["qid"], r["level"], r["negative"]) for r in fresh_rows] == [
            (r["qid"], r["level"], r["negative"]) for r in rerun_rows
        ]
        assert all(row["cache_hit"] for row in fresh_rows)

    # the key is in no file negforge wrote (artifacts, journal, cache)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("fault", "client", "status"), [("auth", "openai", "401"), ("bad_request", "litellm", "400")]
)
def test_auth_or_bad_request_stops_at_once_without_showing_the_key(
    tmp_path: Path,
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
    fault: str,
    client: str,
    status: str,
) -> None:
    inputs = sample_generation_inputs
    concurrency = 4
    # auth: the server wants another key and echoes the one it got, as hostile servers do
    server = FakeOpenAIServer(
        api_key="sk-the-right-key-000000000000" if fault == "auth" else None,
        faults=[] if fault == "auth" else [FaultRule(kind="bad_request")],
    )
    output = tmp_path / "negatives.parquet"
    with server:
        result = subprocess.run(
            negforge_command(
                "generate", inputs.masked, "--dict", inputs.dictionary, "-o", output,
                "--llm", "openai/fake-gpt", "--api-base", server.base_url, "--client", client,
                "--concurrency", concurrency, "--cache-dir", tmp_path / "cache", "--quiet",
            ),
            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
            env=offline_env(OPENAI_API_KEY=API_KEY),
        )  # fmt: skip
        requests = server.requests
    assert result.returncode == 2, result.stderr
    message = result.stdout + result.stderr
    assert status in message and "Traceback" not in message, message
    assert API_KEY not in message and API_KEY[3:] not in message and "SECRET" not in message
    # stopped at once: no request retried, at most the ones already in flight
    assert 1 <= len(requests) <= concurrency
    assert max(_requests_per_query(requests).values()) == 1
    assert all(r.status == int(status) for r in requests)
    assert not output.exists()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path
