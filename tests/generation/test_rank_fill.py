"""The rank fill of ``generate --llm local`` and the ``--min-plausibility`` gate.

Unit tests of the pieces (inflection classes, candidate forms, the level cut at its masks,
top-k sampling), then the real SmolLM2 model (marker ``llama``) on a few sample queries.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negforge.artifacts import DictionaryEntry, MaskedLevel, read_provenance
from negforge.generation.rank_fill import (
    FUNCTION_LEMMAS,
    RANK_VERSION,
    content_entries,
    level_text,
    sample_top_k,
)
from negforge.generation.validation import render_negative
from negforge.inflection import FormIndex, inflection_class
from negforge.template import render
from tests.support.generation_inputs import REPO_ROOT, run_negforge
from tests.support.llama_model import require_llama


@pytest.mark.parametrize(
    ("kind", "word", "lemma", "expected"),
    [
        ("verb", "opens", "open", "s"),
        ("verb", "open", "open", "base"),
        ("verb", "sitting", "sit", "ing"),
        ("verb", "took", "take", "past"),
        ("verb", "opened", "open", "past"),
        ("verb", "passes", "pass", "s"),
        ("noun", "doors", "door", "plural"),
        ("noun", "glass", "glass", "singular"),
        ("adjective", "bigger", "big", "comparative"),
        ("adjective", "red", "red", "base"),
        ("preposition", "into", "into", "base"),
    ],
)
def test_inflection_class(kind: str, word: str, lemma: str, expected: str) -> None:
    assert inflection_class(kind, word, lemma) == expected


def entry(kind: str, word: str, lemma: str, count: int = 1) -> DictionaryEntry:
    return DictionaryEntry(type=kind, word=word, lemma=lemma, count=count)  # type: ignore[arg-type]


def test_candidates_take_the_masked_words_form_where_the_dictionary_has_it() -> None:
    forms = FormIndex([
        entry("verb", "opens", "open", 5), entry("verb", "open", "open", 2),
        entry("verb", "closes", "close", 3), entry("verb", "close", "close", 9),
        entry("verb", "closing", "close", 1), entry("verb", "holding", "hold", 4),
        entry("verb", "walks", "walk", 2), entry("verb", "walked", "walk", 7),
    ])  # fmt: skip
    assert [f.word for f in forms.candidates("verb", "opens", "open")] == ["closes", "walks"]
    assert [f.word for f in forms.candidates("verb", "sitting", "sit")] == ["closing", "holding"]
    assert [f.word for f in forms.candidates("verb", "open", "open")] == ["close"]
    assert forms.candidates("verb", "takes", "take")[0].word == "closes"  # own lemma absent


def test_candidates_are_content_words_only() -> None:
    """No auxiliary, pronoun-like noun, determiner-like adjective, one-letter token or tagging
    slip is proposed; D keeps them (the random baseline's D is the paper's)."""
    entries = [
        entry("verb", "is", "be", 12), entry("verb", "has", "have", 3),
        entry("verb", "does", "do", 2), entry("verb", "can", "can", 2),
        entry("verb", "closes", "close", 30), entry("verb", "holds", "hold", 9),
        entry("verb", "x", "x", 1), entry("verb", "person", "person", 1),
        entry("noun", "person", "person", 800), entry("noun", "one", "one", 3),
        entry("noun", "something", "something", 4), entry("noun", "door", "door", 50),
        entry("noun", "s", "s", 1), entry("noun", "eating", "eating", 3),
        entry("verb", "eating", "eat", 572),
        entry("adjective", "other", "other", 21), entry("adjective", "few", "few", 10),
        entry("adjective", "red", "red", 6), entry("adjective", "open", "open", 47),
        entry("verb", "open", "open", 208),
        entry("adverb", "there", "there", 2), entry("adverb", "in", "in", 9),
        entry("preposition", "in", "in", 851), entry("adverb", "quickly", "quickly", 4),
    ]  # fmt: skip
    kept = {(e.type, e.word) for e in content_entries(entries)}
    assert kept == {
        ("verb", "closes"), ("verb", "holds"), ("verb", "eating"), ("verb", "open"),
        ("noun", "person"), ("noun", "door"), ("adjective", "red"), ("adjective", "open"),
        ("adverb", "quickly"), ("preposition", "in"),
    }  # fmt: skip
    forms = FormIndex(content_entries(entries))
    assert [f.word for f in forms.candidates("verb", "opens", "open")] == ["closes", "holds"]
    assert [f.word for f in forms.candidates("noun", "window", "window")] == ["person", "door"]
    assert FormIndex(entries).candidates("verb", "opens", "open")[1].word == "is"  # unfiltered


def test_the_fill_method_version_is_part_of_the_run_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import negforge.generation.rank_fill as rank_fill
    from negforge.generation.config import GenerateConfig
    from negforge.generation.runner import _run_key

    config = GenerateConfig(llm="local")
    spec = rank_fill.rank_backend_spec(config)
    before = _run_key(config, spec, None, ["a", "b"])
    monkeypatch.setattr(rank_fill, "RANK_VERSION", "rank@test")
    assert _run_key(config, spec, None, ["a", "b"]) != before
    free = GenerateConfig(llm="local", local_fill="generate")
    assert _run_key(free, spec, None, ["a", "b"]) == _run_key(free, spec, None, ["a", "b"])


def level(tokens: list[str], masked: list[int]) -> MaskedLevel:
    return MaskedLevel(
        qid="q", query=" ".join(tokens), vid="v", duration=10.0, relevant_windows=[(0.0, 1.0)],
        level=1, ratio=0.5, tokens=tokens, masked_positions=masked,
        original_words=[tokens[i] for i in masked], original_lemmas=[tokens[i] for i in masked],
        types=["noun"] * len(masked),
        masked_query=render(tokens, masked),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("tokens", "masked"),
    [
        (["person", "opens", "the", "door", "."], [1, 3]),
        (["person", "opens", "the", "door", "."], [0, 1]),
        (["a", "man", "eats", ",", "then", "sleeps", "."], [1, 2, 5]),
        (["person", "runs"], [1]),
    ],
)
def test_level_text_pieces_render_the_negative(tokens: list[str], masked: list[int]) -> None:
    masked_level = level(tokens, masked)
    pieces = level_text(masked_level)
    fills = [f"w{i}" for i in range(len(masked))]
    text = pieces.prefix + "".join(
        sep + fill + segment
        for sep, fill, segment in zip(pieces.separators, fills, pieces.segments, strict=True)
    )
    assert text == render_negative(masked_level, fills)


def test_sample_top_k_draws_among_the_k_best_only() -> None:
    scores = [-5.0, -1.0, -2.0, -9.0, -1.5]
    assert sample_top_k(scores, 3, 0.0, random.Random(0)) == 1  # temperature 0: the best
    drawn = {sample_top_k(scores, 2, 1.0, random.Random(seed)) for seed in range(200)}
    assert drawn == {1, 4}
    assert sample_top_k(scores, 3, 0.7, random.Random(5)) == sample_top_k(
        scores, 3, 0.7, random.Random(5)
    )


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Six sample queries, masked, with D built from all 51 sample queries."""
    folder = tmp_path_factory.mktemp("rank")
    source = REPO_ROOT / "negforge/sample_data/sample_queries.jsonl"
    queries = folder / "queries.jsonl"
    queries.write_text("\n".join(source.read_text().splitlines()[:6]) + "\n")
    run_negforge("build-dict", source, "-o", folder / "dict.parquet", "--cache-dir", folder)
    run_negforge("mask", queries, "-o", folder / "masked.parquet", "--cache-dir", folder)
    return folder / "masked.parquet", folder / "dict.parquet", folder


@pytest.mark.llama
def test_rank_fill_valid_own_type_inflected_and_independent_of_its_neighbours(
    sample_inputs: tuple[Path, Path, Path],
) -> None:
    require_llama()
    masked, dictionary, folder = sample_inputs
    first, second = folder / "rank16.parquet", folder / "rank1.parquet"
    run_negforge("generate", masked, "--dict", dictionary, "--llm", "local", "-o", first,
                 "--on-invalid", "drop", "--quiet")  # fmt: skip
    run_negforge("generate", masked, "--dict", dictionary, "--llm", "local", "-o", second,
                 "--on-invalid", "drop", "--concurrency", 1, "--quiet")  # fmt: skip
    rows = pq.read_table(first).to_pylist()
    assert len(rows) == 18 and all(row["valid"] for row in rows)
    assert [r["negative"] for r in rows] == pq.read_table(second).column("negative").to_pylist()
    from negforge.dictionary import load_dictionary

    index = load_dictionary(dictionary)
    lemma_of = {(e.type, e.word): e.lemma for kind in ("verb", "noun", "adjective",
                "preposition", "adverb") for e in index.entries(kind)}  # fmt: skip
    for row in rows:
        assert row["backend"] == "local" and row["prompt_version"] == RANK_VERSION
        assert row["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
        for fill, word, lemma, kind in zip(row["fills"], row["original_words"],
                                           row["original_lemmas"], row["types"], strict=True):
            assert index.contains(kind, fill), (fill, kind)  # a word of D with the mask's type
            assert fill.lower() not in {word.lower(), lemma.lower()}
            fill_lemma = lemma_of.get((kind, fill.lower()))
            assert fill_lemma not in FUNCTION_LEMMAS[kind], (row["negative"], fill)
            assert fill.lower() not in FUNCTION_LEMMAS[kind] and len(fill) > 1
            if kind == "verb" and fill_lemma is not None:
                assert inflection_class(kind, fill, fill_lemma) == inflection_class(
                    kind, word, lemma
                ), (row["negative"], word, fill)
    provenance = read_provenance(first)
    summary = provenance.summary
    assert summary["calls"] > 0 and summary["input_tokens"] > 0 and summary["cost_usd"] == 0
    assert summary["prompt_version"] == provenance.settings["prompt"] == RANK_VERSION


@pytest.mark.llama
def test_min_plausibility_flags_implausible_negatives(
    sample_inputs: tuple[Path, Path, Path],
) -> None:
    require_llama()
    masked, dictionary, folder = sample_inputs
    output = folder / "gated.parquet"
    threshold = -0.5  # random fills are mostly more than 0.5 nats/token less likely
    run_negforge("generate", masked, "--dict", dictionary, "--llm", "random", "-o", output,
                 "--min-plausibility", threshold, "--on-invalid", "keep", "--quiet",
                 NEGFORGE_CACHE_DIR=str(folder / "cache"))  # fmt: skip
    rows = pq.read_table(output).to_pylist()
    flagged = [row for row in rows if "implausible" in row["invalid_reasons"]]
    assert flagged and len(flagged) < len(rows)
    assert all(not row["valid"] and row["fallback"] == "keep" for row in flagged)
    assert read_provenance(output).summary["reasons"]["implausible"] == len(flagged)
    from negforge.plausibility.scorer import SentenceScorer

    with SentenceScorer() as scorer:
        for row in rows:
            query, negative = scorer.score([row["query"], row["negative"]])
            implausible = query.nll - negative.nll < threshold
            assert implausible == ("implausible" in row["invalid_reasons"]), row["negative"]
