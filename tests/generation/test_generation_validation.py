"""Validation of negatives: every reason code, both the fills path and the string path."""

from __future__ import annotations

import pytest

from negforge.generation import validation as v
from tests.support.masked_levels import make_level, query_levels, toy_dictionary

TOKENS = ["person", "opens", "the", "red", "door", "slowly", "."]
PRIORITY = [1, 4, 3, 5, 0]


@pytest.fixture
def levels():
    return query_levels("AAAAA_train_0", TOKENS, PRIORITY)


def test_render_negative_follows_the_masking_rule(levels):
    assert levels[0].masked_query == "person <mask> the red door slowly."
    assert v.render_negative(levels[0], ["closes"]) == "person closes the red door slowly."
    with pytest.raises(ValueError):
        v.render_negative(levels[1], ["closes"])


def test_valid_fills_pass(levels):
    results = v.validate_query(levels, [["closes"], ["holds", "window"], ["washes", "old", "cup"]])
    assert [r.valid for r in results] == [True, True, True]
    assert all(r.reasons == [] for r in results)
    assert results[2].negative == "person washes the old cup slowly."
    assert results[1].fills == ["holds", "window"]


@pytest.mark.parametrize(
    ("fills", "reason"),
    [
        (["closes", "window"], v.WRONG_FILL_COUNT),
        ([], v.WRONG_FILL_COUNT),
        (["  "], v.EMPTY_FILL),
        (["shuts quickly"], v.PHRASE_FILL),
        (["<mask>"], v.UNMASKED_CHANGED),
        (["opens"], v.COPIED_ORIGINAL),
        (["OPENS"], v.COPIED_ORIGINAL),
        (["open"], v.COPIED_ORIGINAL),  # the lemma of "opens"
    ],
)
def test_fill_reasons(levels, fills, reason):
    result = v.validate_query(levels[:1], [fills])[0]
    assert not result.valid
    assert reason in result.reasons


def test_wrong_count_has_no_negative(levels):
    result = v.validate_query(levels[:1], [["a", "b"]])[0]
    assert result.negative is None and result.reasons == [v.WRONG_FILL_COUNT]


def test_phrases_allowed_on_request(levels):
    result = v.validate_query(levels[:1], [["pushes open"]], allow_phrases=True)[0]
    assert result.valid
    assert result.negative == "person pushes open the red door slowly."


def test_equals_positive_when_every_fill_is_the_original(levels):
    # Capitalisation differences do not make a different query.
    level = make_level("X_train_0", ["person", "opens", "the", "door", "."], [1], 1)
    result = v.validate_query([level], [["Opens"]])[0]
    assert v.EQUALS_POSITIVE in result.reasons and v.COPIED_ORIGINAL in result.reasons


def test_duplicate_levels_flag_the_later_one():
    tokens = ["person", "opens", "the", "door", "."]
    levels = [make_level("X_train_0", tokens, [1], 1), make_level("X_train_0", tokens, [1], 2)]
    results = v.validate_query(levels, [["closes"], ["CLOSES"]])
    assert results[0].valid
    assert not results[1].valid and results[1].reasons == [v.DUPLICATE_LEVEL]


def test_dictionary_reasons_are_informative_unless_required(levels):
    dictionary = toy_dictionary()
    # "zooms" is not in D; "door" is in D but as a noun, not a verb.
    missing = v.validate_query(levels[:1], [["zooms"]], dictionary=dictionary)[0]
    assert missing.valid and missing.reasons == [v.NOT_IN_DICTIONARY]
    wrong = v.validate_query(levels[:1], [["door"]], dictionary=dictionary)[0]
    assert wrong.valid and wrong.reasons == [v.WRONG_TYPE]
    required = v.validate_query(
        levels[:1], [["door"]], dictionary=dictionary, require_dict_words=True
    )[0]
    assert not required.valid and required.reasons == [v.WRONG_TYPE]
    fine = v.validate_query(
        levels[:1], [["Closes"]], dictionary=dictionary, require_dict_words=True
    )[0]
    assert fine.valid and fine.reasons == []


def test_every_reason_code_is_reachable_and_ordered():
    assert set(v.REASON_CODES) == {
        "wrong_fill_count", "empty_fill", "phrase_fill", "unmasked_changed", "copied_original",
        "equals_positive", "duplicate_level", "not_in_dictionary", "wrong_type",
        "implausible",  # set by generate --min-plausibility (negforge.plausibility.gate)
    }  # fmt: skip


def test_string_path(levels):
    negatives = [
        "person closes the red door slowly.",
        "person holds the red window quickly.",  # "slowly" is not masked at level 2
        None,
    ]
    results = v.validate_negative_strings(levels, negatives)
    assert results[0].valid and results[0].fills == ["closes"]
    assert results[1].reasons == [v.UNMASKED_CHANGED] and results[1].fills == []
    assert results[2].reasons == [v.EMPTY_FILL] and results[2].negative is None


def test_string_path_checks_fills_and_levels(levels):
    negatives = [
        "person opens the red door slowly.",  # the original: copied + equals positive
        "person holds the red cup slowly.",
        "person holds the red cup slowly.",  # level 3 masks 3 words but repeats level 2
    ]
    results = v.validate_negative_strings(levels, negatives)
    assert set(results[0].reasons) == {v.COPIED_ORIGINAL, v.EQUALS_POSITIVE}
    assert results[1].valid
    assert v.DUPLICATE_LEVEL in results[2].reasons
    phrase = v.validate_negative_strings(levels[:1], ["person pulls open the red door slowly."])
    assert phrase[0].reasons == [v.PHRASE_FILL]
    allowed = v.validate_negative_strings(
        levels[:1], ["person pulls open the red door slowly."], allow_phrases=True
    )
    assert allowed[0].valid


def test_length_mismatch_is_a_programming_error(levels):
    with pytest.raises(ValueError):
        v.validate_query(levels, [["a"]])
    with pytest.raises(ValueError):
        v.validate_negative_strings(levels, ["a"])
