"""Plausibility under the real SmolLM2-135M GGUF (llama.cpp in process), marker ``llama``.

A handful of sentences each: grammatical beats shuffled, a score does not depend on its
batch, the cache answers a rerun without loading the model, ``score-plausibility`` writes
the scored artifact, and the report shows the plausibility section.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negforge.artifacts import read_provenance
from negforge.plausibility.cache import ScoreCache
from negforge.plausibility.llama import LlamaLM, LlamaSettings
from negforge.plausibility.scorer import SentenceScorer
from tests.support.generation_inputs import REPO_ROOT, run_negforge
from tests.support.llama_model import require_llama

pytestmark = pytest.mark.llama

SENTENCES = [
    "a person is sitting on a couch reading a magazine.",
    "person opens the front door slowly.",
    "a woman is washing dishes in the sink.",
    "the person closes the laptop.",
]


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaLM]:
    require_llama()
    with LlamaLM(LlamaSettings(threads=2)) as loaded:
        yield loaded


def shuffled(sentence: str, seed: int) -> str:
    words = sentence.rstrip(".").split()
    rng = random.Random(seed)
    while True:
        rng.shuffle(words)
        text = " ".join(words) + "."
        if text != sentence:
            return text


def test_a_grammatical_sentence_scores_better_than_its_words_shuffled(model: LlamaLM) -> None:
    scorer = SentenceScorer(model=model)
    texts = [*SENTENCES, *(shuffled(s, seed) for seed, s in enumerate(SENTENCES))]
    scores = scorer.score(texts)
    for index, sentence in enumerate(SENTENCES):
        ordered, mixed = scores[index], scores[index + len(SENTENCES)]
        assert ordered.tokens == mixed.tokens > 0
        assert ordered.nll + 1.0 < mixed.nll, (sentence, ordered.nll, texts[index + 4], mixed.nll)


def test_a_score_does_not_depend_on_its_batch(model: LlamaLM) -> None:
    scorer = SentenceScorer(model=model)
    together = [s.nll for s in scorer.score(SENTENCES)]
    alone = [scorer.score([s])[0].nll for s in SENTENCES]
    reordered = scorer.score([*reversed(SENTENCES), "person runs.", *SENTENCES[:1]])
    assert alone == together  # bit-identical, not merely close
    assert [s.nll for s in reversed(reordered[:4])] == together
    assert reordered[5].nll == together[0]


def test_scores_are_cached_and_a_rerun_loads_no_model(tmp_path: Path) -> None:
    require_llama()
    with ScoreCache(tmp_path / "cache") as cache:
        first = SentenceScorer(LlamaSettings(threads=2), cache=cache)
        scores = first.score(SENTENCES)
        assert first.texts_scored == len(SENTENCES) and first.decode_calls >= 1
        first.close()
        again = SentenceScorer(LlamaSettings(threads=2), cache=cache)
        assert again.score(SENTENCES) == scores
        assert again.cache_hits == len(SENTENCES) and again.texts_scored == 0
        assert not again.model_loaded and again.decode_calls == 0


@pytest.fixture(scope="module")
def scored_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Random-baseline negatives of 4 sample queries, scored by the CLI (cache in tmp)."""
    require_llama()
    folder = tmp_path_factory.mktemp("scored")
    queries = folder / "queries.jsonl"
    lines = (REPO_ROOT / "negforge/sample_data/sample_queries.jsonl").read_text().splitlines()
    queries.write_text("\n".join(lines[:4]) + "\n")
    run_negforge("build-dict", queries, "-o", folder / "dict.parquet",
                 "--cache-dir", folder / "docs")  # fmt: skip
    run_negforge("mask", queries, "-o", folder / "masked.parquet", "--cache-dir", folder / "docs")
    negatives = folder / "negatives.parquet"
    run_negforge("generate", folder / "masked.parquet", "--dict", folder / "dict.parquet",
                 "--llm", "random", "-o", negatives, "--quiet")  # fmt: skip
    scored = folder / "scored.parquet"
    out = run_negforge("score-plausibility", negatives, "-o", scored, "--cache-dir",
                       folder / "cache", "--threads", 2, "--quiet")  # fmt: skip
    assert "0 from the cache" in out and "median Delta NLL" in out
    return negatives, scored, folder


def test_score_plausibility_writes_scores_and_a_rerun_makes_no_model_call(
    scored_sample: tuple[Path, Path, Path],
) -> None:
    negatives, scored, folder = scored_sample
    rows = pq.read_table(scored).to_pylist()
    base = pq.read_table(negatives).to_pylist()
    assert len(rows) == len(base) == 12
    for row, original in zip(rows, base, strict=True):
        assert {k: row[k] for k in original} == original  # the rows unchanged
        assert row["plausibility_delta"] == pytest.approx(
            row["plausibility_nll"] - row["plausibility_query_nll"], abs=1e-12
        )
        assert row["plausibility_tokens"] > 0
    provenance = read_provenance(scored)
    assert provenance.kind == "scored_negatives"
    assert provenance.settings["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    again = folder / "again.parquet"
    out = run_negforge("score-plausibility", negatives, "-o", again, "--cache-dir",
                       folder / "cache", "--quiet")  # fmt: skip
    summary = read_provenance(again).summary
    assert summary["computed"] == 0 and summary["decode_calls"] == 0, out
    assert summary["cache_hits"] == summary["distinct_texts"] == 16  # 12 negatives + 4 queries
    assert pq.read_table(again).column("plausibility_nll").to_pylist() == [
        row["plausibility_nll"] for row in rows
    ]
    queries = folder / "queries.scored.parquet"
    run_negforge("score-plausibility", folder / "queries.jsonl", "-o", queries, "--cache-dir",
                 folder / "cache", "--quiet")  # fmt: skip
    assert read_provenance(queries).kind == "scored_queries"
    by_query = {row["query"]: row["plausibility_query_nll"] for row in rows}
    for row in pq.read_table(queries).to_pylist():
        assert row["plausibility_nll"] == by_query[row["query"]]


def test_the_report_shows_the_plausibility_section(
    scored_sample: tuple[Path, Path, Path],
) -> None:
    negatives, scored, folder = scored_sample
    html = folder / "report.html"
    markdown = folder / "report.md"
    run_negforge("report", scored, negatives, "--name", "scored", "--name", "plain",
                 "--no-hierarchy", "-o", html, "--markdown", markdown, "--quiet")  # fmt: skip
    text = markdown.read_text()
    assert "## Plausibility: Delta NLL of negatives against their query" in text
    assert "## Least plausible negatives" in text
    assert "not scored: plain" in text
    page = html.read_text()
    assert 'id="plausibility"' in page and 'alt="Plausibility"' in page
    assert 'id="least-plausible"' in page
    rows = pq.read_table(scored).to_pylist()
    worst = max(rows, key=lambda row: row["plausibility_delta"])
    assert f"{worst['plausibility_delta']:+.2f}" in text and worst["negative"] in text


def test_a_partitioned_negatives_artifact_scores_like_its_single_file(
    scored_sample: tuple[Path, Path, Path],
) -> None:
    """``--engine ray`` writes negatives as a dataset folder: score-plausibility and report
    read it (cache hits), with the same scores as the single file."""
    from negforge.artifacts import Provenance, artifact_sha256, write_artifact
    from negforge.datasets import DatasetPart, part_name, write_manifest

    negatives, scored, folder = scored_sample
    table = pq.read_table(negatives)
    provenance = read_provenance(negatives)
    dataset = folder / "negatives_parts"
    dataset.mkdir()
    parts = []
    for index, (start, stop) in enumerate([(0, 6), (6, table.num_rows)]):
        path = write_artifact(dataset / part_name(index), table.slice(start, stop - start),
                              Provenance.model_validate(provenance.model_dump()))  # fmt: skip
        parts.append(DatasetPart(name=path.name, rows=stop - start, sha256=artifact_sha256(path)))
    write_manifest(dataset, provenance, parts)
    out = folder / "parts.scored.parquet"
    run_negforge("score-plausibility", dataset, "-o", out, "--cache-dir", folder / "cache",
                 "--quiet")  # fmt: skip
    summary = read_provenance(out).summary
    assert summary["computed"] == 0 and summary["rows"] == table.num_rows
    assert read_provenance(out).input_sha256 == [artifact_sha256(dataset)]
    assert pq.read_table(out).column("plausibility_delta").to_pylist() == pq.read_table(
        scored).column("plausibility_delta").to_pylist()  # fmt: skip
    markdown = folder / "parts.md"
    run_negforge("report", dataset, "--no-hierarchy", "-o", folder / "parts.html",
                 "--markdown", markdown, "--quiet")  # fmt: skip
    assert "| negatives_parts | all | 12 |" in markdown.read_text()
