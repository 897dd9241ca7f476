"""The random-sample baseline (``--llm random``): valid, never the original, deterministic."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from negforge.artifacts import NegativeRow, load_rows, read_provenance
from negforge.generation.config import GenerateConfig
from negforge.generation.runner import generate_negatives
from negforge.generation.sampling import FrozenDictionary, random_query_fills
from negforge.generation.validation import validate_query
from tests.support.masked_levels import (
    query_levels,
    toy_dictionary,
    toy_levels,
    write_toy_artifacts,
)


def test_random_fills_are_valid_typed_and_never_the_original():
    dictionary = FrozenDictionary(toy_dictionary())
    for seed in range(25):
        for levels in toy_levels():
            fills = random_query_fills(levels, dictionary, seed)
            results = validate_query(
                levels, fills, dictionary=dictionary, require_dict_words=True
            )
            assert all(r.valid for r in results), (levels[0].qid, seed, results)
            for level, level_fills in zip(levels, fills, strict=True):
                for fill, word, lemma, kind in zip(
                    level_fills, level.original_words, level.original_lemmas, level.types,
                    strict=True,
                ):  # fmt: skip
                    assert fill.lower() not in (word.lower(), lemma.lower())
                    assert dictionary.contains(kind, fill)


def test_random_fills_keep_the_capital_of_a_sentence_start():
    levels = query_levels("E_train_0", ["Person", "eats", "a", "sandwich", "."], [0, 1, 3],
                          counts=(1, 2, 3))  # fmt: skip
    fills = random_query_fills(levels, FrozenDictionary(toy_dictionary()), 3)
    assert fills[0][0][0].isupper()


def test_levels_with_the_same_masks_get_different_fills():
    # N = 2 gives mask counts (1, 1, 2): levels 1 and 2 mask the same word.
    levels = query_levels("T_train_0", ["person", "opens", "door", "."], [1, 2], counts=(1, 1, 2))
    dictionary = FrozenDictionary(toy_dictionary())
    for seed in range(30):
        fills = random_query_fills(levels, dictionary, seed)
        assert fills[0] != fills[1]
        assert all(r.valid for r in validate_query(levels, fills))


def test_random_is_deterministic_per_seed_and_qid():
    dictionary = FrozenDictionary(toy_dictionary())
    levels = toy_levels()
    first = [random_query_fills(q, dictionary, 11) for q in levels]
    again = [random_query_fills(q, dictionary, 11) for q in reversed(levels)][::-1]
    assert first == again  # order of processing does not matter
    others = [random_query_fills(q, dictionary, 12) for q in levels]
    assert others != first


def test_random_run_writes_a_valid_artifact(tmp_path):
    masked, dictionary = write_toy_artifacts(tmp_path / "in")
    out = tmp_path / "neg.parquet"
    summary = generate_negatives(masked, dictionary, out, GenerateConfig(llm="random", seed=5,
                                                                         quiet=True))  # fmt: skip
    rows = load_rows(out, NegativeRow)
    assert len(rows) == summary.rows == 18 and summary.valid_rows == 18
    assert summary.calls == 0 and summary.cost_usd == 0.0
    assert all(r.valid and r.fallback is None and r.backend == "random" for r in rows)
    provenance = read_provenance(out)
    assert provenance.summary["rows"] == 18 and provenance.settings["llm"] == "random"
    again = tmp_path / "again.parquet"
    generate_negatives(masked, dictionary, again, GenerateConfig(llm="random", seed=5, quiet=True))
    assert pq.read_table(out).column("negative").to_pylist() == pq.read_table(again).column(
        "negative"
    ).to_pylist()


@pytest.mark.shared
@pytest.mark.slow
def test_random_baseline_on_charades_cg(shared_dir, tmp_path_factory):
    """Mask all 8,281 Charades-CG training queries, fill them at random: every row valid."""
    from negforge.dictionary import build_dictionary
    from negforge.masking import mask_file

    work = tmp_path_factory.mktemp("charades_random")
    source = shared_dir / "data" / "charades_cg" / "charades_cg_gpt_train.jsonl"
    cache = work / "spacy_cache"
    dictionary = work / "dict.parquet"
    masked = work / "masked.parquet"
    build_dictionary([source], dictionary, cache_dir=cache)
    mask_file(source, masked, preset="charades_cg", cache_dir=cache)

    out_a, out_b = work / "neg_a.parquet", work / "neg_b.parquet"
    config = GenerateConfig(llm="random", seed=0, quiet=True, require_dict_words=True)
    summary = generate_negatives(masked, dictionary, out_a, config)
    assert summary.queries == 8281 and summary.rows == 3 * 8281
    assert summary.valid_rows == summary.rows and summary.fallbacks == 0
    table = pq.read_table(out_a)
    names = ("fills", "original_words", "original_lemmas", "valid", "negative", "query")
    columns = {name: table.column(name).to_pylist() for name in names}
    assert all(columns["valid"])
    for fills, words, lemmas in zip(columns["fills"], columns["original_words"],
                                    columns["original_lemmas"], strict=True):  # fmt: skip
        assert len(fills) == len(words)
        for fill, word, lemma in zip(fills, words, lemmas, strict=True):
            assert fill.lower() not in (word.lower(), lemma.lower())
    assert all(n.lower() != q.lower() for n, q in zip(columns["negative"], columns["query"],
                                                       strict=True))  # fmt: skip
    generate_negatives(masked, dictionary, out_b, config)
    assert pq.read_table(out_b).column("negative").to_pylist() == columns["negative"]


def test_journal_rows_without_exactly_the_querys_levels_are_redone(tmp_path):
    """A damaged journal (a level missing, one too many) costs a redo, never the run."""
    import json

    from negforge.generation.journal import journal_path_for

    masked, dictionary = write_toy_artifacts(tmp_path / "in")
    config = GenerateConfig(llm="random", seed=5, quiet=True)
    clean = tmp_path / "clean.parquet"
    generate_negatives(masked, dictionary, clean, config)
    expected = pq.read_table(clean).to_pylist()
    first = expected[0]["qid"]
    second = next(r["qid"] for r in expected if r["qid"] != first)
    row = {key: expected[0][key] for key in ("level", "negative", "fills", "valid", "backend",
                                             "model")}  # fmt: skip
    out = tmp_path / "neg.parquet"
    header = {"negforge_journal": 1, "run_key": read_provenance(clean).model_extra["run_key"]}
    entries = [{"qid": first, "rows": [row]},  # its other levels are missing
               {"qid": second, "rows": [{**row, "level": level} for level in (1, 2, 3, 9)]}]
    journal_path_for(out).write_text("".join(json.dumps(line) + "\n"
                                             for line in [header, *entries]))  # fmt: skip
    summary = generate_negatives(masked, dictionary, out, config)
    assert summary.resumed_queries == 0 and summary.rows == len(expected)
    assert pq.read_table(out).to_pylist() == expected
