"""Quality figures of negatives artifacts: hand-worked expectations on small artifacts.

The artifacts come from tests/support/negative_rows.py; every expected number below is
worked out by hand from those rows (see the comments), or computed directly from the
Parquet table in the test.
"""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from negforge.reporting.alignment import (
    changed_word_flags,
    locate_fills,
    located_fills,
    mask_runs,
)
from negforge.reporting.quality import compute_quality, row_fills
from tests.support.negative_rows import dictionary_index, make_row, rows_x, rows_y


def test_mask_runs_group_adjacent_masks() -> None:
    assert mask_runs("a <mask> <mask> the <mask>.") == [[0, 1], [2]]
    assert mask_runs("<mask> x <mask> <mask> <mask>") == [[0], [1, 2, 3]]


def test_located_fills_drop_ambiguous_runs_only() -> None:
    masked = "person <mask> <mask> the <mask>."
    # One word per mask in the run: all located.
    assert located_fills(masked, ["runs", "into", "garage"]) == ["runs", "into", "garage"]
    # A run with a phrase is ambiguous; the lone mask keeps its phrase.
    assert located_fills(masked, ["runs", "out of", "big garage"]) == [None, None, "big garage"]


def test_locate_fills_needs_the_template() -> None:
    masked = "person <mask> into the <mask>."
    assert locate_fills(masked, "person runs into the garage.") == ["runs", "garage"]
    assert locate_fills(masked, "a person runs into the garage.") is None
    assert locate_fills(masked, None) is None
    # A negative that kept a literal mask did not fill it (the released file has one).
    assert locate_fills(masked, "person <mask> runs into the garage.") is None


def test_row_fills_follow_the_masks_left_to_right() -> None:
    # masked_positions [0, 1, 3] (subject, verb, noun), as the pipeline writes them.
    row = make_row("A", 3, ["child", "pushes", "gate"])
    assert row.masked_query == "<mask> <mask> the <mask>."
    assert row.negative == "child pushes the gate."
    fills, kept = row_fills(row)
    assert fills == ["child", "pushes", "gate"] and kept
    assert row.types == ["noun", "verb", "noun"]
    dropped = make_row("A", 2, ["picks", "table"], negative=None, valid=False)
    assert row_fills(dropped) == (["picks", "table"], False)


def test_changed_words_are_marked_against_the_query() -> None:
    flags = changed_word_flags("person opens the door.", "a person closes the door.")
    assert flags == [
        ("a", True),
        ("person", False),
        ("closes", True),
        ("the", False),
        ("door.", False),
    ]


def test_artifact_x_figures_by_hand() -> None:
    q = compute_quality("x", rows_x(), dictionary_index())
    o = q.overall
    assert (o.rows, o.valid, o.template_kept) == (9, 3, 8)  # valid: A3, B1, B2; C2 broken
    assert (o.duplicate_level, o.equals_query) == (1, 1)  # B3 repeats B2; C1 is the query
    assert o.reasons == {
        "copied_original": 3,
        "phrase_fill": 2,
        "duplicate_level": 1,
        "equals_positive": 1,
        "unmasked_changed": 1,
        "wrong_type": 1,
    }
    f = o.fills
    # 18 masks; C2 (1 mask) has no template, C3's run "runs out of" is ambiguous (2 masks).
    assert (f.masks, f.located) == (18, 14)
    assert f.equal_original == 3  # opens (A2), on (B3), walks (C1)
    assert f.changed == 11
    # own type: window, child, table (B2), table (B3); other type: table for a verb (B1);
    # outside D: pushes, gate, stands, stands, garage; phrase: "slowly closes".
    assert (f.changed_own_type, f.changed_other_type, f.changed_outside_dictionary) == (4, 1, 5)
    assert f.changed_phrase == 1
    assert f.words_per_fill == {1: 13, 2: 1}
    assert f.mean_words_per_fill == pytest.approx(15 / 14)
    assert f.one_word_share == pytest.approx(13 / 14)
    levels = {lv.level: lv for lv in q.levels}
    assert [levels[i].valid for i in (1, 2, 3)] == [1, 1, 1]
    assert [levels[i].fills.equal_original for i in (1, 2, 3)] == [1, 1, 1]
    assert [levels[i].fills.located for i in (1, 2, 3)] == [3, 4, 7]
    assert levels[3].duplicate_level == 1 and levels[1].equals_query == 1
    assert q.queries.queries == 3
    assert q.queries.all_levels_template_kept == 2  # C has a broken level
    assert q.queries.all_levels_valid == 0
    assert q.queries.with_duplicate_levels == 1
    assert q.queries.with_negative_equal_to_query == 1
    types = {t.type: t for t in q.types}
    assert list(types) == ["verb", "noun", "preposition"]
    verb, noun, prep = types["verb"].fills, types["noun"].fills, types["preposition"].fills
    assert (verb.masks, verb.located, verb.equal_original, verb.changed) == (9, 7, 2, 5)
    verb_classes = (
        verb.changed_own_type,
        verb.changed_other_type,
        verb.changed_outside_dictionary,
        verb.changed_phrase,
    )
    assert verb_classes == (0, 1, 3, 1)
    assert (noun.masks, noun.located, noun.equal_original, noun.changed) == (7, 6, 0, 6)
    assert (noun.changed_own_type, noun.changed_outside_dictionary) == (4, 2)
    assert (prep.masks, prep.located, prep.equal_original) == (2, 1, 1)
    assert types["verb"].top_fills[0] == ("stands", 2)
    assert types["noun"].top_replacements[0] == ("chair", "table", 2)
    assert q.fill_words["noun"]["table"] == 2


def test_artifact_y_uses_recorded_fills_of_dropped_rows() -> None:
    q = compute_quality("y", rows_y(), dictionary_index())
    o = q.overall
    assert (o.rows, o.valid, o.template_kept, o.with_negative) == (6, 5, 5, 5)
    assert o.fallbacks == {"random": 1}
    assert (o.fills.masks, o.fills.located, o.fills.changed_own_type) == (12, 12, 12)
    assert o.fills.equal_original == 0


def test_without_dictionary_the_dictionary_figures_stay_empty() -> None:
    f = compute_quality("x", rows_x()).overall.fills
    assert f.changed_own_type is None and f.outside_dictionary_share is None
    assert f.equal_original == 3
    assert f.changed_phrase == 1  # phrases need no dictionary


def test_row_figures_match_the_parquet_table(tmp_path) -> None:
    """Row-level figures recomputed straight from the artifact file with pyarrow."""
    from tests.support.negative_rows import write_negatives

    path = write_negatives(tmp_path / "x.parquet", rows_x())
    table = pq.read_table(path).to_pylist()
    q = compute_quality("x", rows_x())
    for level in q.levels:
        of_level = [r for r in table if r["level"] == level.level]
        assert level.rows == len(of_level)
        assert level.valid == sum(r["valid"] for r in of_level)
        reasons = Counter(code for r in of_level for code in set(r["invalid_reasons"]))
        assert level.reasons == dict(reasons)
