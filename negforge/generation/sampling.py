"""Seeded per-query randomness: the prompt's dictionary sample and random fills.

Every random choice is drawn from a generator seeded by (run seed, qid, purpose), so a rerun
renders the same prompts (cache hits) and the random baseline is reproducible query by query,
whatever the order or concurrency of the run.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from negforge.artifacts import PRIMITIVE_TYPES, MaskedLevel
from negforge.generation.validation import render_negative

#: Draws before giving up on a level whose fills keep repeating another level.
_DISTINCT_TRIES = 50


class WordList(Protocol):
    """What sampling needs of the POS dictionary D (``negforge.dictionary.DictionaryIndex``)."""

    def words(self, kind: str, /) -> Sequence[str]:
        """The words of D with primitive type ``kind``, by descending count."""
        ...


class FrozenDictionary:
    """A read-only view of D with its word lists and word/lemma sets built once.

    ``DictionaryIndex.words`` copies its list on every call and ``contains`` re-checks the
    type; sampling and validation call them per mask, so the view answers from plain sets.
    A word "is in D with type t" when it is a word or a lemma of type t (as in the index).
    """

    def __init__(self, index: Any) -> None:
        self._words: dict[str, tuple[str, ...]] = {}
        self._forms: dict[str, frozenset[str]] = {}
        for kind in PRIMITIVE_TYPES:
            entries = index.entries(kind) if hasattr(index, "entries") else None
            words = tuple(index.words(kind))
            self._words[kind] = words
            lemmas = {entry.lemma for entry in entries} if entries is not None else set()
            self._forms[kind] = frozenset(words) | frozenset(lemmas)

    def words(self, kind: str, /) -> Sequence[str]:
        return self._words.get(kind, ())

    def contains(self, kind: str, word: str, /) -> bool:
        forms = self._forms.get(kind)
        return forms is not None and word.strip().lower() in forms

    def types_of(self, word: str, /) -> Collection[str]:
        needle = word.strip().lower()
        return {kind for kind, forms in self._forms.items() if needle in forms}


def query_rng(seed: int, qid: str, purpose: str) -> random.Random:
    """A generator that depends only on the run seed, the query id and the purpose."""
    material = f"{seed}\x1f{qid}\x1f{purpose}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))


def sample_indices(rng: random.Random, n: int, k: int) -> list[int]:
    """``min(k, n)`` distinct indices below ``n`` in random order (partial Fisher-Yates).

    Uses one ``getrandbits`` call (stable across Python versions, unlike
    ``Random.sample``'s algorithm), read as ``k`` 64-bit words, lowest first, and is several
    times cheaper than ``Random.sample``.
    """
    k = min(k, n)
    if not k:
        return []
    words = struct.unpack(f"<{k}Q", rng.getrandbits(64 * k).to_bytes(8 * k, "little"))
    # The shuffle of list(range(n)), with only the touched slots stored: O(k), not O(n)
    # (a noun list has thousands of words, a prompt shows 40).
    swapped: dict[int, int] = {}
    chosen = []
    for i, word in enumerate(words):
        j = i + word % (n - i)
        at_j = swapped.get(j, j)
        swapped[j] = swapped.get(i, i)
        chosen.append(at_j)
    return chosen


def _originals(levels: Sequence[MaskedLevel]) -> set[str]:
    hidden: set[str] = set()
    for level in levels:
        hidden.update(word.lower() for word in level.original_words)
        hidden.update(lemma.lower() for lemma in level.original_lemmas)
    return hidden


def sample_dictionary(
    dictionary: WordList, levels: Sequence[MaskedLevel], per_type: int, seed: int
) -> dict[str, list[str]]:
    """Up to ``per_type`` random words of each type the query's masks need.

    The hidden original words (and lemmas) are left out, so the prompt never suggests them.
    """
    needed = {word_type for level in levels for word_type in level.types}
    hidden = _originals(levels)
    rng = query_rng(seed, levels[0].qid, "dictionary")
    subset: dict[str, list[str]] = {}
    for word_type in PRIMITIVE_TYPES:
        if word_type not in needed:
            continue
        words = dictionary.words(word_type)
        # Draw a few spare indices so that dropping the hidden words still leaves enough.
        draw = sample_indices(rng, len(words), per_type + len(hidden))
        subset[word_type] = [words[i] for i in draw if words[i] not in hidden][:per_type]
    return subset


def match_case(fill: str, original: str) -> str:
    """``fill`` capitalised like ``original`` (first letter)."""
    return fill[:1].upper() + fill[1:] if original[:1].isupper() else fill


def _draw(
    dictionary: WordList, word_type: str, excluded: Collection[str], rng: random.Random
) -> str:
    """A random word of ``word_type`` that is not excluded (any type as a last resort)."""
    words = dictionary.words(word_type)
    for _ in range(64):  # rejection sampling: cheap when exclusions are few
        if not words:
            break
        word = words[rng.randrange(len(words))]
        if word not in excluded:
            return word
    pool = [word for word in words if word not in excluded]
    if not pool:
        pool = sorted(
            {w for kind in PRIMITIVE_TYPES for w in dictionary.words(kind) if w not in excluded}
        )
    if not pool:
        raise ValueError(f"the dictionary has no word to fill a {word_type} mask")
    return rng.choice(pool)


def random_level_fills(
    level: MaskedLevel,
    dictionary: WordList,
    rng: random.Random,
    avoid: Collection[str] = (),
) -> list[str]:
    """Random fills for one level: each mask gets a dictionary word of its type.

    Never the mask's original word or lemma; the rendered negative (lower-cased) avoids the
    strings in ``avoid`` (the positive query, other levels) when the dictionary allows it.
    """
    fills: list[str] = []
    for _ in range(_DISTINCT_TRIES):
        fills = [
            match_case(_draw(dictionary, word_type, {word.lower(), lemma.lower()}, rng), word)
            for word_type, word, lemma in zip(
                level.types, level.original_words, level.original_lemmas, strict=True
            )
        ]
        if render_negative(level, fills).lower() not in avoid:
            break
    return fills


def random_query_fills(
    levels: Sequence[MaskedLevel], dictionary: WordList, seed: int
) -> list[list[str]]:
    """The random baseline for one query: fills for every level, levels kept distinct."""
    rng = query_rng(seed, levels[0].qid, "random")
    seen = {levels[0].query.lower()}
    result: list[list[str]] = []
    for level in levels:
        fills = random_level_fills(level, dictionary, rng, seen)
        seen.add(render_negative(level, fills).lower())
        result.append(fills)
    return result
