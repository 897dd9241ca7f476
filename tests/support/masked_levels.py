"""Hand-built masked levels, dictionaries and artifacts for the generation tests.

Masking levels are written the way ``negforge mask`` writes them (SPEC-masking.md), but
from explicit tokens and positions, so generation tests need no spaCy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from negforge.artifacts import (
    SCHEMA_VERSIONS,
    DictionaryEntry,
    MaskedLevel,
    Provenance,
    write_artifact,
)
from negforge.dictionary import DictionaryIndex
from negforge.template import render

#: word -> (type, lemma) of the toy vocabulary below.
VOCAB: dict[str, tuple[str, str]] = {
    "opens": ("verb", "open"),
    "closes": ("verb", "close"),
    "holds": ("verb", "hold"),
    "washes": ("verb", "wash"),
    "throws": ("verb", "throw"),
    "eats": ("verb", "eat"),
    "door": ("noun", "door"),
    "window": ("noun", "window"),
    "cup": ("noun", "cup"),
    "book": ("noun", "book"),
    "towel": ("noun", "towel"),
    "sandwich": ("noun", "sandwich"),
    "person": ("noun", "person"),
    "red": ("adjective", "red"),
    "small": ("adjective", "small"),
    "old": ("adjective", "old"),
    "in": ("preposition", "in"),
    "on": ("preposition", "on"),
    "under": ("preposition", "under"),
    "slowly": ("adverb", "slowly"),
    "quickly": ("adverb", "quickly"),
    "quietly": ("adverb", "quietly"),
}


def toy_dictionary() -> DictionaryIndex:
    """A small D over :data:`VOCAB` (counts fall with the word's position)."""
    entries = [
        DictionaryEntry(type=kind, word=word, lemma=lemma, count=100 - index)  # type: ignore[arg-type]
        for index, (word, (kind, lemma)) in enumerate(VOCAB.items())
    ]
    return DictionaryIndex(entries)


def _lemma(word: str) -> str:
    return VOCAB.get(word.lower(), ("noun", word.lower()))[1]


def make_level(
    qid: str,
    tokens: Sequence[str],
    positions: Sequence[int],
    level: int,
    *,
    ratio: float = 0.25,
) -> MaskedLevel:
    """One masked level of a query given as tokens, masking ``positions``.

    The masks are listed left to right, as the mask stage writes them.
    """
    positions = sorted(positions)
    text = render(tokens)
    return MaskedLevel(
        qid=qid,
        query=text,
        vid=qid.split("_")[0],
        duration=30.0,
        relevant_windows=[(1.0, 5.0)],
        level=level,
        ratio=ratio,
        tokens=list(tokens),
        masked_positions=list(positions),
        original_words=[tokens[p] for p in positions],
        original_lemmas=[_lemma(tokens[p]) for p in positions],
        types=[VOCAB.get(tokens[p].lower(), ("noun", ""))[0] for p in positions],
        masked_query=render(tokens, positions),
    )


def query_levels(qid: str, tokens: Sequence[str], priority: Sequence[int],
                 counts: Sequence[int] = (1, 2, 3)) -> list[MaskedLevel]:  # fmt: skip
    """Nested levels: level j masks the first ``counts[j-1]`` positions of ``priority``
    (listed left to right)."""
    return [
        make_level(qid, tokens, list(priority[:k]), j, ratio=0.25 * j)
        for j, k in enumerate(counts, start=1)
    ]


#: Toy queries: (qid, tokens, priority order of maskable positions).
TOY_QUERIES: list[tuple[str, list[str], list[int]]] = [
    ("AAAAA_train_0", ["person", "opens", "the", "red", "door", "slowly", "."], [1, 4, 3, 5, 0]),
    ("BBBBB_train_0", ["person", "holds", "a", "cup", "in", "the", "kitchen", "."], [1, 3, 6, 4]),
    ("CCCCC_train_0", ["a", "person", "washes", "a", "small", "towel", "."], [2, 5, 4, 1]),
    ("DDDDD_train_0", ["person", "throws", "a", "book", "on", "the", "window", "."],
     [1, 3, 6, 4, 0]),
    ("EEEEE_train_0", ["Person", "eats", "a", "sandwich", "quickly", "."], [1, 3, 4, 0]),
    ("FFFFF_train_0", ["person", "closes", "the", "old", "window", "."], [1, 4, 3, 0]),
]


def toy_levels() -> list[list[MaskedLevel]]:
    """Three nested levels for every toy query."""
    return [query_levels(qid, tokens, priority) for qid, tokens, priority in TOY_QUERIES]


def write_toy_artifacts(folder: Path) -> tuple[Path, Path]:
    """A masked artifact of the toy queries and the toy dictionary; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    masked = folder / "masked.parquet"
    dictionary = folder / "dict.parquet"
    rows = [level for levels in toy_levels() for level in levels]
    write_artifact(
        masked,
        rows,
        Provenance(
            kind="masked", schema_version=SCHEMA_VERSIONS["masked"], ratios=[0.25, 0.5, 0.75]
        ),
    )
    entries = [
        DictionaryEntry(type=kind, word=word, lemma=lemma, count=100 - index)  # type: ignore[arg-type]
        for index, (word, (kind, lemma)) in enumerate(VOCAB.items())
    ]
    write_artifact(
        dictionary,
        entries,
        Provenance(kind="dictionary", schema_version=SCHEMA_VERSIONS["dictionary"]),
    )
    return masked, dictionary
