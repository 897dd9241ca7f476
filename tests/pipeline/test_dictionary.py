"""POS dictionary D: counting rules, deterministic order, artifact round trip, DictionaryIndex."""

from __future__ import annotations

import random

import pytest

from negforge.artifacts import DictionaryEntry, Provenance, read_provenance, write_artifact
from negforge.dictionary import (
    DictionaryIndex,
    count_words,
    load_dictionary,
    summary_text,
)
from negforge.errors import ConfigError


def tok(text, pos, dep="dep", lemma=None):
    return (text, pos, dep, lemma if lemma is not None else text.lower())


CORPUS = [
    [tok("Person", "NOUN", "nsubj"), tok("opens", "VERB", "ROOT", "open"), tok("the", "DET"),
     tok("door", "NOUN", "dobj"), tok("quickly", "ADV"), tok(".", "PUNCT")],
    [tok("person", "NOUN", "nsubj"), tok("open", "VERB", "ROOT"), tok("a", "DET"),
     tok("red", "ADJ"), tok("door", "NOUN"), tok("in", "ADP"), tok("Paris", "PROPN"),
     tok(".", "PUNCT")],
    [tok("he", "PRON", "nsubj"), tok("opens", "VERB", "ROOT", "open"), tok("up", "ADP", "prt"),
     tok("-", "NOUN"), tok("2", "NOUN"), tok("opens", "NOUN", "dobj", "opens")],
]


def test_count_words_types_counts_lemmas_and_subjects():
    entries = count_words(CORPUS)
    table = {(e.type, e.word): (e.lemma, e.count) for e in entries}
    assert table[("noun", "person")] == ("person", 2)  # subjects counted by their own POS
    assert ("noun", "he") not in table and ("verb", "he") not in table  # PRON: not a type
    assert table[("verb", "opens")] == ("open", 2)
    assert table[("verb", "open")] == ("open", 1)
    assert table[("noun", "opens")] == ("opens", 1)  # same word, other type: its own entry
    assert table[("noun", "paris")] == ("paris", 1)  # PROPN -> noun, lower-cased
    assert table[("preposition", "up")] == ("up", 1)  # particle -> preposition
    assert table[("adjective", "red")] == ("red", 1)
    assert table[("adverb", "quickly")] == ("quickly", 1)
    assert ("noun", "-") not in table and ("noun", "2") not in table  # no letter: left out
    assert table[("noun", "door")] == ("door", 2)


def test_order_is_type_then_count_then_word_and_deterministic():
    entries = count_words(CORPUS)
    assert entries == count_words(list(reversed(CORPUS)))
    types = [e.type for e in entries]
    assert types == sorted(types, key=["verb", "noun", "adjective", "preposition",
                                       "adverb"].index)
    nouns = [(e.word, e.count) for e in entries if e.type == "noun"]
    assert nouns == [("door", 2), ("person", 2), ("opens", 1), ("paris", 1)]


def test_most_frequent_lemma_wins_ties_alphabetical():
    corpus = [[tok("saw", "VERB", lemma="see")], [tok("saw", "VERB", lemma="see")],
              [tok("saw", "VERB", lemma="saw")], [tok("left", "VERB", lemma="leave")],
              [tok("left", "VERB", lemma="left")]]
    lemmas = {e.word: e.lemma for e in count_words(corpus)}
    assert lemmas == {"saw": "see", "left": "leave"}


def test_artifact_round_trip_and_index(tmp_path):
    entries = count_words(CORPUS)
    path = tmp_path / "dict.parquet"
    write_artifact(path, entries, Provenance(kind="dictionary", schema_version=1))
    assert read_provenance(path).kind == "dictionary"
    index = load_dictionary(path)
    assert len(index) == len(entries)
    assert index.words("verb") == ["opens", "open"]
    assert index.contains("verb", "OPEN") and index.contains("verb", "opens")
    assert not index.contains("adjective", "door")
    assert index.types_of("opens") == {"verb", "noun"}
    assert index.types_of("open") == {"verb"}  # lemma of 'opens' as a verb
    assert index.count("noun", "Door") == 2
    assert index.entries("adverb")[0] == DictionaryEntry(type="adverb", word="quickly",
                                                          lemma="quickly", count=1)
    with pytest.raises(ConfigError):
        index.words("pronoun")


def test_sample_is_reproducible_distinct_and_respects_exclude():
    entries = [DictionaryEntry(type="noun", word=f"w{i}", lemma=f"w{i}", count=i + 1)
               for i in range(30)]
    index = DictionaryIndex(entries)
    first = index.sample("noun", 10, random.Random(3))
    assert first == index.sample("noun", 10, random.Random(3))
    assert len(set(first)) == 10
    assert first != index.sample("noun", 10, random.Random(4))
    assert len(index.sample("noun", 100, random.Random(0))) == 30
    assert index.sample("verb", 5, random.Random(0)) == []
    drawn = index.sample("noun", 29, random.Random(1), exclude=["W0"])
    assert "w0" not in drawn and len(drawn) == 29
    weighted = index.sample("noun", 5, random.Random(2), weighted=True)
    assert len(set(weighted)) == 5


def test_summary_lists_sizes_and_top_words():
    text = summary_text(count_words(CORPUS))
    assert "verb: 2 words, 3 occurrences" in text
    assert "opens/open (2)" in text
    assert "noun: 4 words" in text


def test_only_words_enter_the_dictionary_and_the_rest_is_counted():
    from negforge.dictionary import count_dictionary, is_word

    corpus = [
        [tok("doorway.the", "NOUN"), tok("t-shirt", "NOUN"), tok("o'clock", "ADV"),
         tok("blanket/pillow", "NOUN"), tok("a.", "NOUN"), tok(".the", "ADP"), tok("2nd", "ADJ"),
         tok("café", "NOUN"), tok("-", "NOUN"), tok("opens", "VERB", lemma="open")],
        [tok(".the", "ADP"), tok("door", "NOUN")],
    ]  # fmt: skip
    counted = count_dictionary(corpus)
    words = {e.word for e in counted.entries}
    assert words == {"t-shirt", "o'clock", "café", "opens", "door"}
    assert counted.dropped == {"doorway.the": 1, "blanket/pillow": 1, "a.": 1, ".the": 2,
                               "2nd": 1, "-": 1}  # fmt: skip
    assert counted.dropped_summary()["occurrences"] == 7
    text = summary_text(counted.entries, dropped=counted.dropped)
    assert "dropped (not words: letters, inner hyphen or apostrophe): 7 occurrences of 6" in text
    assert "'.the' (2)" in text
    assert not is_word("-door") and not is_word("door-") and is_word("o'clock")


def test_build_dict_normalises_glued_stops_and_reports_what_it_dropped(tmp_path):
    import json

    from negforge.dictionary import build_dictionary

    rows = [
        {"qid": "a", "query": "closes the door.the person stops.", "vid": "v", "duration": 9.0,
         "relevant_windows": [[0, 1]]},
        {"qid": "b", "query": "sits in a chair .the person takes a bottle.", "vid": "v",
         "duration": 9.0, "relevant_windows": [[0, 1]]},
        {"qid": "c", "query": "a person is doing work on a laptop,after a.", "vid": "v",
         "duration": 9.0, "relevant_windows": [[0, 1]]},
    ]  # fmt: skip
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = build_dictionary([source], tmp_path / "d.parquet", cache_dir=tmp_path / "cache")
    index = load_dictionary(tmp_path / "d.parquet")
    words = {w for kind in ("verb", "noun", "adjective", "preposition", "adverb")
             for w in index.words(kind)}  # fmt: skip
    assert "door" in words and "chair" in words and "stops" in words
    assert not any(ch in word for word in words for ch in "./,")
    dropped = read_provenance(tmp_path / "d.parquet").summary["dropped_non_words"]
    assert dropped["occurrences"] == result.dropped_tokens == 1  # spaCy's "a." at the end
    assert dropped["top"] == [["a.", 1]]
