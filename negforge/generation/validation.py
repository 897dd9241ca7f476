"""Validation of hard negatives: a pure module (no I/O), shared by the generator and importers.

A negative of a masked level is valid when

* every mask got exactly one fill (a multi-word fill only with ``allow_phrases``),
* every unmasked word is kept verbatim (the negative matches the masked query's template),
* no fill repeats the masked word or its lemma (case-insensitive),
* the level differs from the positive query and from the query's other levels,
* optionally (``require_dict_words``) every fill is a dictionary word of the masked word's type.

One more code is set outside this module: ``implausible``, by ``generate --min-plausibility``
(:mod:`negforge.plausibility.gate`), for a negative far less plausible than its query.

Reason codes (:data:`REASON_CODES`) name each failed check. ``not_in_dictionary`` and
``wrong_type`` are reported whenever a dictionary is given, but only make a row invalid with
``require_dict_words``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from negforge.artifacts import MaskedLevel
from negforge.template import MASK, extract_fills, render_filled

WRONG_FILL_COUNT = "wrong_fill_count"
EMPTY_FILL = "empty_fill"
PHRASE_FILL = "phrase_fill"
UNMASKED_CHANGED = "unmasked_changed"
COPIED_ORIGINAL = "copied_original"
EQUALS_POSITIVE = "equals_positive"
DUPLICATE_LEVEL = "duplicate_level"
NOT_IN_DICTIONARY = "not_in_dictionary"
WRONG_TYPE = "wrong_type"
IMPLAUSIBLE = "implausible"

#: Every reason code, in the order checks run.
REASON_CODES: tuple[str, ...] = (
    WRONG_FILL_COUNT,
    EMPTY_FILL,
    PHRASE_FILL,
    UNMASKED_CHANGED,
    COPIED_ORIGINAL,
    EQUALS_POSITIVE,
    DUPLICATE_LEVEL,
    NOT_IN_DICTIONARY,
    WRONG_TYPE,
    IMPLAUSIBLE,
)
#: Reasons that are informative unless ``require_dict_words`` is set.
DICTIONARY_REASONS = frozenset({NOT_IN_DICTIONARY, WRONG_TYPE})


class WordDictionary(Protocol):
    """What validation needs of the POS dictionary D (``negforge.dictionary.DictionaryIndex``)."""

    def contains(self, kind: str, word: str, /) -> bool:
        """Whether ``word`` (lower case) is in D with primitive type ``kind``."""
        ...

    def types_of(self, word: str, /) -> Collection[str]:
        """The primitive types ``word`` (lower case) has in D (empty when absent)."""
        ...


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The verdict on one level's negative (an in-memory verdict, never stored as such:
    a plain dataclass, as the filler makes several per query on the event loop)."""

    valid: bool
    reasons: list[str]
    fills: list[str]
    negative: str | None


def render_negative(level: MaskedLevel, fills: Sequence[str]) -> str:
    """The negative query: the level's tokens with each masked token replaced by its fill."""
    if len(fills) != len(level.masked_positions):
        raise ValueError(
            f"{len(fills)} fills for {len(level.masked_positions)} masks of query {level.qid}"
        )
    return render_filled(level.tokens, level.masked_positions, fills)


def _fill_reasons(
    level: MaskedLevel,
    fills: Sequence[str],
    *,
    allow_phrases: bool,
    dictionary: WordDictionary | None,
) -> list[str]:
    """Reasons that concern the fills themselves (count, shape, originals, dictionary)."""
    if len(fills) != len(level.masked_positions):
        return [WRONG_FILL_COUNT]
    found: set[str] = set()
    for fill, word, lemma, word_type in zip(
        fills, level.original_words, level.original_lemmas, level.types, strict=False
    ):
        lowered = fill.strip().lower()
        if not lowered:
            found.add(EMPTY_FILL)
            continue
        if not allow_phrases and len(lowered.split()) > 1:
            found.add(PHRASE_FILL)
        if MASK in lowered:
            found.add(UNMASKED_CHANGED)
        if lowered == word.lower() or lowered == lemma.lower():
            found.add(COPIED_ORIGINAL)
        if dictionary is not None and not dictionary.contains(word_type, lowered):
            found.add(WRONG_TYPE if dictionary.types_of(lowered) else NOT_IN_DICTIONARY)
    return _ordered(found)


def _ordered(codes: Collection[str]) -> list[str]:
    """``codes`` without repeats, in :data:`REASON_CODES` order."""
    if not codes:
        return []
    return [code for code in REASON_CODES if code in codes]


def _comparable(text: str) -> str:
    """A negative or query reduced for equality checks: case and spacing ignored."""
    return " ".join(text.split()).lower()


def _equals_positive(level: MaskedLevel, key: str, fills: Sequence[str]) -> bool:
    """Whether a negative equals the query: as written, or re-rendered (every fill original).

    ``fills`` are the negative's fills when it matches the level's template, else empty.
    """
    if key == _comparable(level.query):
        return True
    words = level.original_words
    return bool(fills) and len(fills) == len(words) and all(
        fill.lower() == word.lower() for fill, word in zip(fills, words, strict=True)
    )


def _finish(
    levels: Sequence[MaskedLevel],
    partial: list[tuple[list[str], list[str], str | None]],
    require_dict_words: bool,
) -> list[ValidationResult]:
    """Add the cross-level checks (positive, duplicates) and decide validity."""
    results: list[ValidationResult] = []
    seen: set[str] = set()
    for level, (reasons, fills, negative) in zip(levels, partial, strict=True):
        if negative is not None:
            key = _comparable(negative)
            if _equals_positive(level, key, fills):
                reasons.append(EQUALS_POSITIVE)
            if key in seen:
                reasons.append(DUPLICATE_LEVEL)
            seen.add(key)
        ordered = _ordered(reasons)
        valid = not any(
            require_dict_words or code not in DICTIONARY_REASONS for code in ordered
        )
        results.append(
            ValidationResult(valid=valid, reasons=ordered, fills=fills, negative=negative)
        )
    return results


def validate_query(
    levels: Sequence[MaskedLevel],
    fills_per_level: Sequence[Sequence[str]],
    *,
    allow_phrases: bool = False,
    dictionary: WordDictionary | None = None,
    require_dict_words: bool = False,
) -> list[ValidationResult]:
    """Validate one query's levels given the fills a backend chose for each mask."""
    if len(levels) != len(fills_per_level):
        raise ValueError(f"{len(fills_per_level)} fill lists for {len(levels)} levels")
    partial: list[tuple[list[str], list[str], str | None]] = []
    for level, fills in zip(levels, fills_per_level, strict=True):
        fills = [str(fill) for fill in fills]
        reasons = _fill_reasons(
            level, fills, allow_phrases=allow_phrases, dictionary=dictionary
        )
        stripped = [fill.strip() for fill in fills]
        negative = None
        if WRONG_FILL_COUNT not in reasons:
            negative = render_negative(level, stripped)
        partial.append((reasons, stripped, negative))
    return _finish(levels, partial, require_dict_words)


def validate_negative_strings(
    levels: Sequence[MaskedLevel],
    negatives: Sequence[str | None],
    *,
    allow_phrases: bool = False,
    dictionary: WordDictionary | None = None,
    require_dict_words: bool = False,
) -> list[ValidationResult]:
    """Validate finished negative strings (e.g. an imported released file) against the levels.

    A negative that does not match its masked query's template is ``unmasked_changed``;
    a missing (None or blank) negative is ``empty_fill``.
    """
    if len(levels) != len(negatives):
        raise ValueError(f"{len(negatives)} negatives for {len(levels)} levels")
    partial: list[tuple[list[str], list[str], str | None]] = []
    for level, negative in zip(levels, negatives, strict=True):
        if negative is None or not negative.strip():
            partial.append(([EMPTY_FILL], [], None))
            continue
        fills = extract_fills(level.masked_query, negative)
        if fills is None:
            partial.append(([UNMASKED_CHANGED], [], negative))
            continue
        reasons = _fill_reasons(
            level, fills, allow_phrases=allow_phrases, dictionary=dictionary
        )
        partial.append((reasons, fills, negative))
    return _finish(levels, partial, require_dict_words)
