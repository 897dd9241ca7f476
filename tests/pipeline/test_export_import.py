"""SHINE jsonl export, import of released negatives, and the import -> export round trip."""

from __future__ import annotations

import json

import pytest

from negforge.artifacts import (
    SCHEMA_VERSIONS,
    MaskedLevel,
    NegativeRow,
    Provenance,
    load_rows,
    read_provenance,
    write_artifact,
)
from negforge.errors import InputError
from negforge.export import (
    align_masked,
    export_shine_jsonl,
    import_negatives,
    token_type,
)


def tok(text, pos, dep="dep", lemma=None):
    return (text, pos, dep, lemma if lemma is not None else text.lower())


OPENS_DOOR = [tok("person", "NOUN", "nsubj"), tok("opens", "VERB", "ROOT", "open"),
              tok("the", "DET"), tok("door", "NOUN", "dobj"), tok(".", "PUNCT")]

# Hand-written rows in the released format (not taken from the dataset).
RELEASED = [
    {"qid": "AAAAA_train_0", "query": "person opens the door.", "duration": 30.5,
     "vid": "AAAAA", "relevant_windows": [[1.5, 9.25]],
     "masked_queries": ["person <mask> the door.", "person <mask> the <mask>.",
                        "<mask> <mask> the <mask>."],
     "recomposed_queries": ["person closes the door.", "person paints the window.",
                            "child kicks the ball."]},
    {"qid": "BBBBB_train_0", "query": "a person is eating a sandwich in the kitchen.",
     "duration": 41.0, "vid": "BBBBB", "relevant_windows": [[0.0, 12.7], [20.1, 30.0]],
     "masked_queries": ["a person is <mask> a sandwich in the kitchen.",
                        "a person is <mask> a <mask> in the kitchen.",
                        "a person is <mask> a <mask> <mask> the kitchen."],
     "recomposed_queries": ["a person is eating a sandwich in the kitchen.",
                            "a person is making a salad in the kitchen.",
                            "a person is holding a cup near the big kitchen."]},
    {"qid": "CCCCC_train_1", "query": "someone throws a pillow \u2013 quickly.",
     "duration": 18.33, "vid": "CCCCC", "relevant_windows": [[3.0, 7.0]],
     "masked_queries": ["someone <mask> a pillow \u2013 quickly.",
                        "someone <mask> a <mask> \u2013 quickly.",
                        "someone <mask> a <mask> \u2013 <mask>."],
     "recomposed_queries": ["someone tosses a pillow \u2013 quickly.",
                            "someone tosses a blanket \u2013 quickly.",
                            "someone tosses a blanket \u2013 slowly."]},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_align_masked_recovers_positions_left_to_right():
    assert align_masked(OPENS_DOOR, "person <mask> the door.") == [1]
    assert align_masked(OPENS_DOOR, "<mask> <mask> the <mask>.") == [0, 1, 3]
    assert align_masked(OPENS_DOOR, "person <mask> a door.") is None
    assert align_masked(OPENS_DOOR, "person <mask> <mask> door.") == [1, 2]  # DET: appended


def test_token_types():
    assert token_type(tok("person", "NOUN", "pobj")) == "noun"
    assert token_type(tok("he", "PRON", "nsubj")) == "noun"
    assert token_type(tok("up", "ADP")) == "preposition"
    assert token_type(tok("is", "AUX")) == "verb"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("import")
    source = write_jsonl(folder / "released.jsonl", RELEASED)
    out = folder / "negatives.parquet"
    result = import_negatives(source, out, cache_dir=folder / "cache")
    return source, out, result


def test_import_fills_reasons_and_provenance(imported):
    _, out, result = imported
    assert result.queries == 3 and result.rows == 9
    rows = load_rows(out, NegativeRow)
    first = [r for r in rows if r.qid == "AAAAA_train_0"]
    assert [r.level for r in first] == [1, 2, 3]
    assert first[0].masked_positions == [1] and first[0].original_words == ["opens"]
    assert first[0].original_lemmas == ["open"] and first[0].types == ["verb"]
    assert first[0].fills == ["closes"] and first[0].valid
    assert first[2].masked_positions == [0, 1, 3]  # left to right (subject included)
    assert first[2].types == ["noun", "verb", "noun"]
    assert first[2].fills == ["child", "kicks", "ball"]
    second = [r for r in rows if r.qid == "BBBBB_train_0"]
    assert not second[0].valid and "equals_positive" in second[0].invalid_reasons
    assert "unmasked_changed" in second[2].invalid_reasons
    assert second[2].negative == RELEASED[1]["recomposed_queries"][2]  # kept as released
    assert all(r.backend == "import" and r.model == "gpt-3.5-turbo (released)" for r in rows)
    provenance = read_provenance(out)
    assert provenance.kind == "negatives" and provenance.ratios == [0.25, 0.5, 0.75]
    assert provenance.summary["valid_rows"] == result.valid_rows


def test_import_then_export_gives_back_the_same_rows(imported, tmp_path):
    source, out, _ = imported
    exported = tmp_path / "back.jsonl"
    export_shine_jsonl(out, exported)
    assert exported.read_bytes() == source.read_bytes()


def _masked_level(qid, level, negative=None, **extra):
    fields = dict(
        qid=qid, query="person opens the door.", vid="V", duration=10.0,
        relevant_windows=[(0.0, 4.0)], level=level, ratio=0.25 * level,
        tokens=["person", "opens", "the", "door", "."], masked_positions=[1],
        original_words=["opens"], original_lemmas=["open"], types=["verb"],
        masked_query="person <mask> the door.",
    )
    fields.update(extra)
    return fields


def test_export_masked_artifact(tmp_path):
    rows = [MaskedLevel(**_masked_level("q1", lv)) for lv in (2, 1)]
    art = tmp_path / "masked.parquet"
    write_artifact(art, rows, Provenance(kind="masked", schema_version=SCHEMA_VERSIONS["masked"]))
    out = tmp_path / "m.jsonl"
    result = export_shine_jsonl(art, out)
    assert result.queries == 1
    item = json.loads(out.read_text())
    assert list(item) == ["qid", "query", "duration", "vid", "relevant_windows",
                          "masked_queries"]
    assert item["relevant_windows"] == [[0.0, 4.0]]
    assert item["masked_queries"] == ["person <mask> the door."] * 2


def test_export_negatives_with_a_missing_level_writes_negative_valid(tmp_path):
    def neg(qid, level, negative, valid):
        return NegativeRow(**_masked_level(qid, level), negative=negative,
                           fills=[] if negative is None else ["shuts"], valid=valid,
                           backend="random", model="random")

    rows = [neg("q1", 1, "person shuts the door.", True), neg("q1", 2, None, False),
            neg("q2", 1, "person paints the door.", True)]
    art = tmp_path / "neg.parquet"
    write_artifact(art, rows, Provenance(kind="negatives", schema_version=1))
    out = tmp_path / "n.jsonl"
    result = export_shine_jsonl(art, out)
    assert result.rows_without_negatives == 1
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert "recomposed_queries" not in first and first["negative_valid"] == [True, False]
    assert second["recomposed_queries"] == ["person paints the door."]


def test_export_refuses_a_dictionary_and_import_needs_negatives(tmp_path):
    art = tmp_path / "d.parquet"
    write_artifact(art, [], Provenance(kind="dictionary", schema_version=1))
    with pytest.raises(InputError, match="cannot export a dictionary"):
        export_shine_jsonl(art, tmp_path / "x.jsonl")
    plain = write_jsonl(tmp_path / "plain.jsonl", [
        {k: v for k, v in RELEASED[0].items() if k != "recomposed_queries"}])
    with pytest.raises(InputError) as info:
        import_negatives(plain, tmp_path / "n.parquet", cache_dir=tmp_path / "c")
    assert "plain.jsonl:1" in str(info.value) and "recomposed_queries" in str(info.value)
