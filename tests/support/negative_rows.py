"""Small hand-made negatives artifacts for the report and plot tests.

Artifact ``x`` (9 rows) and ``y`` (6 rows) cover: phrase fills, copies of the masked word,
fills in D / of another type / outside D, a last level whose extra mask lies left of the
earlier ones (masks are listed left to right, as the pipeline writes them), a negative equal
to the query, a repeated negative, a broken template, an ambiguous
run of adjacent masks, and a dropped row with no negative. Every figure the report should
show for them is worked out by hand in tests/reporting/test_report_quality.py.
"""

from __future__ import annotations

from pathlib import Path

from negforge.artifacts import DictionaryEntry, NegativeRow, Provenance, write_artifact
from negforge.dictionary import DictionaryIndex
from negforge.template import render, render_filled

# (type, word) pairs of the test dictionary D.
DICTIONARY_WORDS: tuple[tuple[str, str], ...] = (
    ("verb", "closes"),
    ("verb", "opens"),
    ("verb", "walks"),
    ("verb", "picks"),
    ("noun", "door"),
    ("noun", "window"),
    ("noun", "person"),
    ("noun", "child"),
    ("noun", "table"),
    ("noun", "chair"),
    ("noun", "kitchen"),
    ("preposition", "on"),
    ("preposition", "into"),
    ("adverb", "quickly"),
)

# qid -> (query, tokens, {level: masked positions, left to right}, {position: type})
QUERIES: dict[str, tuple[str, list[str], dict[int, list[int]], dict[int, str]]] = {
    "A": (
        "person opens the door.",
        ["person", "opens", "the", "door", "."],
        {1: [1], 2: [1, 3], 3: [0, 1, 3]},
        {1: "verb", 3: "noun", 0: "noun"},
    ),
    "B": (
        "a person sits on the chair quickly.",
        ["a", "person", "sits", "on", "the", "chair", "quickly", "."],
        {1: [2], 2: [2, 5], 3: [2, 3, 5]},
        {2: "verb", 5: "noun", 3: "preposition"},
    ),
    "C": (
        "person walks into the kitchen.",
        ["person", "walks", "into", "the", "kitchen", "."],
        {1: [1], 2: [1, 4], 3: [1, 2, 4]},
        {1: "verb", 4: "noun", 2: "preposition"},
    ),
}


def make_row(
    qid: str,
    level: int,
    fills: list[str],
    *,
    negative: str | bool | None = True,
    valid: bool = True,
    reasons: list[str] | None = None,
    backend: str = "test",
    fallback: str | None = None,
) -> NegativeRow:
    """A negatives row of query ``qid``; ``negative=True`` renders it from ``fills``.

    ``fills`` are in the order of the level's masks, left to right.
    """
    query, tokens, levels, types = QUERIES[qid]
    positions = levels[level]
    if negative is True:
        negative = render_filled(tokens, positions, fills)
    return NegativeRow(
        qid=qid,
        query=query,
        vid=f"V{qid}",
        duration=30.0,
        relevant_windows=[(2.0, 9.5)],
        level=level,
        ratio=(0.25, 0.5, 0.75)[level - 1],
        tokens=tokens,
        masked_positions=positions,
        original_words=[tokens[p] for p in positions],
        original_lemmas=[tokens[p] for p in positions],
        types=[types[p] for p in positions],  # type: ignore[misc]
        masked_query=render(tokens, positions),
        negative=negative if isinstance(negative, str) else None,
        fills=fills,
        valid=valid,
        invalid_reasons=reasons or [],
        fallback=fallback,
        backend=backend,
        model=f"{backend}-model",
    )


def rows_x() -> list[NegativeRow]:
    """Artifact x: 9 rows over queries A, B, C."""
    return [
        make_row("A", 1, ["slowly closes"], valid=False, reasons=["phrase_fill"]),
        make_row("A", 2, ["opens", "window"], valid=False, reasons=["copied_original"]),
        make_row("A", 3, ["child", "pushes", "gate"]),
        make_row("B", 1, ["table"], reasons=["wrong_type"]),
        make_row("B", 2, ["stands", "table"]),
        make_row(
            "B",
            3,
            ["stands", "on", "table"],
            valid=False,
            reasons=["copied_original", "duplicate_level"],
        ),
        make_row("C", 1, ["walks"], valid=False, reasons=["copied_original", "equals_positive"]),
        make_row(
            "C",
            2,
            [],
            negative="a person runs into the garage.",
            valid=False,
            reasons=["unmasked_changed"],
        ),
        make_row(
            "C",
            3,
            ["runs", "out of", "garage"],
            negative="person runs out of the garage.",
            valid=False,
            reasons=["phrase_fill"],
        ),
    ]


def rows_y() -> list[NegativeRow]:
    """Artifact y: 6 rows over queries A and B, one dropped without a negative."""
    return [
        make_row("A", 1, ["walks"], backend="random"),
        make_row(
            "A",
            2,
            ["picks", "table"],
            negative=None,
            valid=False,
            reasons=["duplicate_level"],
            backend="random",
        ),
        make_row("A", 3, ["table", "picks", "window"], backend="random"),
        make_row("B", 1, ["opens"], backend="random"),
        make_row("B", 2, ["opens", "door"], backend="random"),
        make_row("B", 3, ["closes", "into", "window"], backend="random", fallback="random"),
    ]


def dictionary_entries() -> list[DictionaryEntry]:
    return [
        DictionaryEntry(type=kind, word=word, lemma=word, count=1)  # type: ignore[arg-type]
        for kind, word in DICTIONARY_WORDS
    ]


def dictionary_index() -> DictionaryIndex:
    return DictionaryIndex(dictionary_entries())


def write_negatives(path: Path, rows: list[NegativeRow]) -> Path:
    return write_artifact(path, rows, Provenance(kind="negatives", schema_version=1))


def write_dictionary(path: Path) -> Path:
    return write_artifact(
        path, dictionary_entries(), Provenance(kind="dictionary", schema_version=1)
    )
