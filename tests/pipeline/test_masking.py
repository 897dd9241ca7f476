"""The masking rule of SPEC-masking.md, one test per clause, on hand-written token tuples."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from negforge.errors import ConfigError
from negforge.masking import (
    PRESETS,
    LevelMask,
    is_subject,
    mask_columns,
    mask_count,
    mask_levels,
    parse_exclude_types,
    parse_ratios,
    primitive_type,
    priority_list,
    resolve_ratios,
)
from negforge.records import QueryRecord
from negforge.template import render

CG = PRESETS["charades_cg"]


def tok(text: str, pos: str, dep: str = "dep", lemma: str | None = None):
    return (text, pos, dep, lemma if lemma is not None else text.lower())


# "person starts watching television." as en_core_web_sm parses it
STARTS_WATCHING = [
    tok("person", "NOUN", "nsubj"),
    tok("starts", "VERB", "ROOT", "start"),
    tok("watching", "VERB", "xcomp", "watch"),
    tok("television", "NOUN", "dobj"),
    tok(".", "PUNCT", "punct"),
]
# "a person is playing with their camera."
PLAYING_WITH = [
    tok("a", "DET", "det"),
    tok("person", "NOUN", "nsubj"),
    tok("is", "AUX", "aux", "be"),
    tok("playing", "VERB", "ROOT", "play"),
    tok("with", "ADP", "prep"),
    tok("their", "PRON", "poss"),
    tok("camera", "NOUN", "pobj"),
    tok(".", "PUNCT", "punct"),
]
# "person put a notebook in a bag."
PUT_NOTEBOOK = [
    tok("person", "NOUN", "nsubj"),
    tok("put", "VERB", "ROOT"),
    tok("a", "DET", "det"),
    tok("notebook", "NOUN", "dobj"),
    tok("in", "ADP", "prep"),
    tok("a", "DET", "det"),
    tok("bag", "NOUN", "pobj"),
    tok(".", "PUNCT", "punct"),
]


def masked_strings(tokens, ratios=CG, exclude=frozenset()):
    texts = [t[0] for t in tokens]
    return [render(texts, level.positions) for level in mask_levels(tokens, ratios, exclude)]


# Clause 1 (parse the whole query) lives in negforge.nlp and is exercised by the shared-data
# test (tests/pipeline/test_released_masks.py); everything below starts from the parsed tokens.


def test_clause2_person_is_a_subject_anywhere_and_nsubj_unless_adjective():
    assert is_subject(tok("Person", "NOUN", "pobj"))  # lower-case text 'person', any dep
    assert is_subject(tok("he", "PRON", "nsubj"))  # pronoun subjects too
    assert is_subject(tok("door", "NOUN", "nsubjpass"))
    assert not is_subject(tok("other", "ADJ", "nsubj"))  # ADJ subject: not a subject
    assert not is_subject(tok("man", "NOUN", "dobj"))
    # An ADJ 'subject' is typed as an adjective instead.
    plan = priority_list([tok("other", "ADJ", "nsubj"), tok("sleeps", "VERB", "ROOT")])
    assert plan == [(1, "verb"), (0, "adjective")]


def test_clause3_coarse_pos_mapping_and_never_masked_tags():
    assert primitive_type(tok("runs", "VERB")) == "verb"
    assert primitive_type(tok("cup", "NOUN")) == "noun"
    assert primitive_type(tok("Paris", "PROPN")) == "noun"
    assert primitive_type(tok("red", "ADJ")) == "adjective"
    assert primitive_type(tok("up", "ADP", "prt")) == "preposition"  # particles count
    assert primitive_type(tok("slowly", "ADV")) == "adverb"
    for pos in ("AUX", "DET", "PRON", "PART", "NUM", "SCONJ", "CCONJ", "PUNCT", "SPACE",
                "SYM", "X"):
        assert primitive_type(tok("w", pos)) is None
    # tag_ is not used: only pos_ matters (an AUX 'is' stays unmasked)
    assert priority_list([tok("is", "AUX", "ROOT")]) == []


def test_clause4_priority_order_types_then_left_to_right_then_subjects():
    tokens = [
        tok("person", "NOUN", "nsubj"),  # 0 subject
        tok("quickly", "ADV", "advmod"),  # 1 adverb
        tok("puts", "VERB", "ROOT"),  # 2 verb
        tok("the", "DET", "det"),  # 3
        tok("red", "ADJ", "amod"),  # 4 adjective
        tok("cup", "NOUN", "dobj"),  # 5 noun
        tok("on", "ADP", "prep"),  # 6 preposition
        tok("the", "DET", "det"),  # 7
        tok("table", "NOUN", "pobj"),  # 8 noun
        tok("and", "CCONJ", "cc"),  # 9
        tok("smiles", "VERB", "conj"),  # 10 verb
        tok(".", "PUNCT", "punct"),
    ]
    assert priority_list(tokens) == [
        (2, "verb"), (10, "verb"), (5, "noun"), (8, "noun"), (4, "adjective"),
        (6, "preposition"), (1, "adverb"), (0, "noun"),
    ]


def test_clause5_rounding_up_below_four_down_from_four_at_least_one():
    expected = {
        1: (1, 1, 1), 2: (1, 1, 2), 3: (1, 2, 3), 4: (1, 2, 3), 5: (1, 2, 3), 6: (1, 3, 4),
        7: (1, 3, 5), 8: (2, 4, 6), 9: (2, 4, 6), 10: (2, 5, 7),
    }
    for n, counts in expected.items():
        assert tuple(mask_count(r, n) for r in CG) == counts, n
    # exact arithmetic: in floats 0.29 * 100 is 28.999999999999996 (floor would give 28)
    assert 0.29 * 100 < 29
    assert mask_count(parse_ratios("0.29")[0], 100) == 29
    assert mask_count(Fraction(1, 10), 3) == 1  # ceil(0.3)
    assert mask_count(Fraction(1, 2), 0) == 0


def test_clause5_subjects_count_in_n():
    # 'he' (pronoun subject) makes N = 4 here, so rounding goes down: 25% -> 1
    tokens = [tok("he", "PRON", "nsubj"), tok("opens", "VERB", "ROOT"), tok("the", "DET"),
              tok("big", "ADJ", "amod"), tok("door", "NOUN", "dobj")]
    levels = mask_levels(tokens, CG)
    assert [len(level.positions) for level in levels] == [1, 2, 3]
    assert levels[2].positions == (1, 3, 4)  # subject 'he' counts in N; listed left to right


def test_clause6_levels_are_nested_prefixes_of_the_priority_list():
    levels = mask_levels(PLAYING_WITH, CG)
    assert levels == [
        LevelMask(1, CG[0], (3,), ("verb",)),
        LevelMask(2, CG[1], (3, 6), ("verb", "noun")),
        LevelMask(3, CG[2], (3, 4, 6), ("verb", "preposition", "noun")),
    ]  # priority picks which tokens; within a level they are listed left to right
    for a, b in itertools.pairwise(levels):
        assert set(a.positions) <= set(b.positions)


def test_clause7_rendering_spaces_and_no_space_before_period_or_comma():
    texts = ["person", "sits", ",", "then", "eats", "."]
    assert render(texts) == "person sits, then eats."
    assert render(texts, [1, 4]) == "person <mask>, then <mask>."
    # a double space in the query is a SPACE token, rendered like any other token
    assert render(["the", "cabinet", " ", "below", "."], [1]) == "the <mask>   below."


def test_worked_examples_of_the_spec():
    assert masked_strings(STARTS_WATCHING) == [
        "person <mask> watching television.",
        "person <mask> <mask> television.",
        "person <mask> <mask> <mask>.",
    ]
    assert masked_strings(PUT_NOTEBOOK) == [
        "person <mask> a notebook in a bag.",
        "person <mask> a <mask> in a bag.",
        "person <mask> a <mask> in a <mask>.",
    ]
    assert masked_strings(PLAYING_WITH) == [
        "a person is <mask> with their camera.",
        "a person is <mask> with their <mask>.",
        "a person is <mask> <mask> their <mask>.",
    ]


def test_subjects_are_masked_last_when_primitives_run_out():
    tokens = [tok("person", "NOUN", "nsubj"), tok("sneezes", "VERB", "ROOT"), tok(".", "PUNCT")]
    assert masked_strings(tokens) == ["person <mask>.", "person <mask>.", "<mask> <mask>."]


def test_anet_preset_ratios():
    assert PRESETS["anet_cg"] == (Fraction(1, 10), Fraction(3, 10), Fraction(1, 2))
    tokens = [tok(f"w{i}", "NOUN", "dobj") for i in range(10)]
    assert [len(level.positions) for level in mask_levels(tokens, PRESETS["anet_cg"])] == [1, 3, 5]


def test_exclude_types_removes_them_from_p_before_counting():
    excluded = parse_exclude_types("preposition,adverb")
    assert excluded == frozenset({"preposition", "adverb"})
    levels = mask_levels(PLAYING_WITH, CG, excluded)
    # P = [playing, camera, person]: N = 3 -> (1, 2, 3); 'with' never masked
    assert [level.positions for level in levels] == [(3,), (3, 6), (1, 3, 6)]
    assert all(4 not in level.positions for level in levels)
    # excluding nouns also keeps the (noun-typed) subjects unmasked
    assert all(1 not in lv.positions for lv in mask_levels(PLAYING_WITH, CG, frozenset({"noun"})))
    with pytest.raises(ConfigError):
        parse_exclude_types("pronoun")


def test_nothing_to_mask_gives_no_levels():
    assert mask_levels([tok("it", "PRON", "dobj"), tok(".", "PUNCT")], CG) == []


def test_ratio_parsing_and_presets():
    assert parse_ratios("0.25, 0.5,0.75") == CG
    assert resolve_ratios("anet_cg") == PRESETS["anet_cg"]
    assert resolve_ratios("anet_cg", "0.2,0.4") == (Fraction(1, 5), Fraction(2, 5))
    for bad in ("0,0.5", "0.5,0.25", "1.5", "a,b", ""):
        with pytest.raises(ConfigError):
            parse_ratios(bad)
    with pytest.raises(ConfigError):
        resolve_ratios("imagenet")


def test_mask_columns_fill_every_masked_level_field():
    record = QueryRecord(qid="V1_train_0", query="person put a notebook in a bag.", vid="V1",
                         duration=30.0, relevant_windows=[(1.0, 5.0)])
    columns, unmaskable = mask_columns([record], [PUT_NOTEBOOK], CG)
    assert unmaskable == []
    assert columns["level"] == [1, 2, 3]
    assert columns["ratio"] == [0.25, 0.5, 0.75]
    assert columns["masked_positions"][2] == [1, 3, 6]
    assert columns["original_words"][2] == ["put", "notebook", "bag"]
    assert columns["original_lemmas"][2] == ["put", "notebook", "bag"]
    assert columns["types"][2] == ["verb", "noun", "noun"]
    assert columns["masked_query"][0] == "person <mask> a notebook in a bag."
    assert columns["relevant_windows"][0] == [[1.0, 5.0]]


def test_mask_columns_agree_with_mask_levels_and_render_on_random_queries():
    import random

    rng = random.Random(11)
    vocabulary = [("person", "NOUN", "nsubj"), ("he", "PRON", "nsubj"), ("runs", "VERB", "ROOT"),
                  ("up", "ADP", "prt"), ("red", "ADJ", "amod"), ("ball", "NOUN", "dobj"),
                  ("the", "DET", "det"), (",", "PUNCT", "punct"), (".", "PUNCT", "punct"),
                  ("slowly", "ADV", "advmod"), (" ", "SPACE", "dep"), ("other", "ADJ", "nsubj"),
                  ("Paris", "PROPN", "pobj"), ("is", "AUX", "aux")]
    records, parsed = [], []
    for i in range(300):
        tokens = [tok(*rng.choice(vocabulary)) for _ in range(rng.randint(1, 14))]
        parsed.append(tokens)
        records.append(QueryRecord(qid=f"q{i}", query="x", vid="v", duration=5.0,
                                   relevant_windows=[(0.0, 1.0)]))
    for ratios in (CG, PRESETS["anet_cg"]):
        for exclude in (frozenset(), frozenset({"preposition", "adverb"})):
            columns, unmaskable = mask_columns(records, parsed, ratios, exclude)
            expected_rows = []
            for record, tokens in zip(records, parsed, strict=True):
                texts = [t[0] for t in tokens]
                for level in mask_levels(tokens, ratios, exclude):
                    expected_rows.append((record.qid, level.level, list(level.positions),
                                          list(level.types), render(texts, level.positions)))
            got = list(zip(columns["qid"], columns["level"], columns["masked_positions"],
                           columns["types"], columns["masked_query"], strict=True))
            assert got == expected_rows
            assert len(unmaskable) == sum(1 for t in parsed if not mask_levels(t, ratios, exclude))
