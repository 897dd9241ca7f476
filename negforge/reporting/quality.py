"""Quality metrics of a negatives artifact, per masking level and per primitive type.

A pure library: rows in, pydantic models out (no I/O, no plotting). Definitions:

* **located fill** -- the words a negative put in place of a mask, where they can be read
  off without guessing (:mod:`negforge.reporting.alignment`): the negative keeps every
  unmasked word verbatim, and the mask stands alone or its run of adjacent masks got one
  word per mask. A row without a negative (dropped as invalid) uses its recorded ``fills``
  under the same rule. Every fill figure counts located fills only.
* **template kept** -- the negative keeps every unmasked word verbatim.
* **fill equals the original** -- a located fill equal (case-insensitive) to the masked word.
* **changed fill** -- a located fill that is not equal to the masked word. Every changed
  fill is exactly one of: a *phrase* (several words; D holds single words), or, with a
  dictionary D, a single word in D with the masked word's type (*own type*), in D with
  only other types (*other type*), or not in D at all (*outside D*).
* **equals the query** -- the negative equals the positive query (case and spacing ignored;
  also against the query re-rendered from its tokens).
* **duplicated level** -- the negative equals a lower level's negative of the same query.
* **words per fill** -- whitespace words of a located fill.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from typing import Protocol

from pydantic import BaseModel, Field

from negforge.artifacts import PRIMITIVE_TYPES, NegativeRow
from negforge.generation.validation import render_negative
from negforge.query_view import by_query
from negforge.reporting.alignment import locate_fills, located_fills
from negforge.template import MASK

#: How many most frequent fills / replacements are kept per type.
TOP_K = 15
_SPACES = re.compile(r"\s+")


class DictionaryLookup(Protocol):
    """What the metrics need of the POS dictionary D (``negforge.dictionary.DictionaryIndex``)."""

    def contains(self, kind: str, word: str, /) -> bool:
        """Whether ``word`` (lower case) is in D with primitive type ``kind``."""
        ...

    def types_of(self, word: str, /) -> Collection[str]:
        """The primitive types ``word`` (lower case) has in D (empty when absent)."""
        ...


def share(count: int, total: int) -> float | None:
    """``count / total``, or None when there is nothing to divide by."""
    return count / total if total else None


class FillCounts(BaseModel):
    """Counts over the located fills of a group of masks (one level, one type, or all)."""

    masks: int = 0
    located: int = 0
    equal_original: int = 0
    changed: int = 0
    changed_phrase: int = 0  # changed fills of several words
    #: Single-word changed fills by dictionary class; only with a dictionary (else None).
    changed_own_type: int | None = None
    changed_other_type: int | None = None
    changed_outside_dictionary: int | None = None
    words_per_fill: dict[int, int] = Field(default_factory=dict)  # word count -> fills

    @property
    def equal_original_share(self) -> float | None:
        return share(self.equal_original, self.located)

    @property
    def own_type_share(self) -> float | None:
        return None if self.changed_own_type is None else share(self.changed_own_type, self.changed)

    @property
    def other_type_share(self) -> float | None:
        if self.changed_other_type is None:
            return None
        return share(self.changed_other_type, self.changed)

    @property
    def outside_dictionary_share(self) -> float | None:
        if self.changed_outside_dictionary is None:
            return None
        return share(self.changed_outside_dictionary, self.changed)

    @property
    def phrase_share(self) -> float | None:
        return share(self.changed_phrase, self.changed)

    @property
    def mean_words_per_fill(self) -> float | None:
        total_words = sum(words * n for words, n in self.words_per_fill.items())
        return share(total_words, self.located)

    @property
    def one_word_share(self) -> float | None:
        return share(self.words_per_fill.get(1, 0), self.located)


class LevelQuality(BaseModel):
    """Row-level and fill-level figures of one masking level (``level`` None: all levels)."""

    level: int | None
    rows: int = 0
    valid: int = 0
    with_negative: int = 0
    template_kept: int = 0
    equals_query: int = 0
    duplicate_level: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)  # reason code -> rows
    fallbacks: dict[str, int] = Field(default_factory=dict)  # fallback kind -> rows
    fills: FillCounts = Field(default_factory=FillCounts)

    @property
    def valid_share(self) -> float | None:
        return share(self.valid, self.rows)

    @property
    def template_kept_share(self) -> float | None:
        return share(self.template_kept, self.rows)

    def reason_share(self, reason: str) -> float | None:
        return share(self.reasons.get(reason, 0), self.rows)


class TypeQuality(BaseModel):
    """Fill figures of the masks of one primitive type, with the most frequent fills."""

    type: str
    fills: FillCounts = Field(default_factory=FillCounts)
    #: Most frequent changed fills (lower case), most frequent first.
    top_fills: list[tuple[str, int]] = Field(default_factory=list)
    #: Most frequent (masked word -> changed fill) replacements.
    top_replacements: list[tuple[str, str, int]] = Field(default_factory=list)
    distinct_fills: int = 0


class QueryQuality(BaseModel):
    """Figures over whole queries (all levels of one qid together)."""

    queries: int = 0
    all_levels_template_kept: int = 0
    all_levels_valid: int = 0
    with_duplicate_levels: int = 0
    with_negative_equal_to_query: int = 0

    @property
    def all_levels_template_kept_share(self) -> float | None:
        return share(self.all_levels_template_kept, self.queries)

    @property
    def all_levels_valid_share(self) -> float | None:
        return share(self.all_levels_valid, self.queries)


class ArtifactQuality(BaseModel):
    """Every figure the report shows about one negatives artifact."""

    name: str
    backends: dict[str, int] = Field(default_factory=dict)
    models: dict[str, int] = Field(default_factory=dict)
    has_dictionary: bool = False
    overall: LevelQuality
    levels: list[LevelQuality]
    types: list[TypeQuality]
    queries: QueryQuality
    #: Every changed fill's count per type (lower case), for the distribution charts.
    fill_words: dict[str, dict[str, int]] = Field(default_factory=dict)


def _comparable(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def _positive_forms(row: NegativeRow) -> set[str]:
    forms = {_comparable(row.query)}
    if len(row.original_words) == len(row.masked_positions):
        forms.add(_comparable(render_negative(row, row.original_words)))
    return forms


def row_fills(row: NegativeRow) -> tuple[list[str | None], bool]:
    """A row's located fills, one per mask left to right, and whether it kept the template.

    The negative is the evidence: its fills are read off it. A row without a negative
    (dropped as invalid) falls back on its recorded ``fills``, under the same unambiguity rule.
    """
    n = len(row.masked_positions)
    if row.negative is None or not row.negative.strip():
        if len(row.fills) != n or row.masked_query.count(MASK) != n:
            return [None] * n, False
        return located_fills(row.masked_query, row.fills), False
    located = locate_fills(row.masked_query, row.negative)
    if located is None or len(located) != n:
        return [None] * n, False
    return located, True


class _FillTally:
    """Mutable accumulator behind one :class:`FillCounts`."""

    def __init__(self, with_dictionary: bool) -> None:
        self.counts = FillCounts()
        if with_dictionary:
            self.counts.changed_own_type = 0
            self.counts.changed_other_type = 0
            self.counts.changed_outside_dictionary = 0
        self.words: Counter[int] = Counter()

    def add_mask(
        self,
        fill: str | None,
        original: str,
        word_type: str,
        dictionary: DictionaryLookup | None,
    ) -> None:
        c = self.counts
        c.masks += 1
        if fill is None:
            return
        c.located += 1
        n_words = len(fill.split())
        self.words[n_words] += 1
        lowered = fill.lower()
        if lowered == original.lower():
            c.equal_original += 1
            return
        c.changed += 1
        if n_words > 1:
            c.changed_phrase += 1
        elif dictionary is not None:
            assert c.changed_own_type is not None
            assert c.changed_other_type is not None
            assert c.changed_outside_dictionary is not None
            if dictionary.contains(word_type, lowered):
                c.changed_own_type += 1
            elif dictionary.types_of(lowered):
                c.changed_other_type += 1
            else:
                c.changed_outside_dictionary += 1

    def finish(self) -> FillCounts:
        self.counts.words_per_fill = dict(sorted(self.words.items()))
        return self.counts


class _LevelTally:
    def __init__(self, level: int | None, with_dictionary: bool) -> None:
        self.quality = LevelQuality(level=level)
        self.reasons: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.fills = _FillTally(with_dictionary)

    def add_row(
        self, row: NegativeRow, template_kept: bool, equals_query: bool, duplicate: bool
    ) -> None:
        q = self.quality
        q.rows += 1
        q.valid += row.valid
        q.with_negative += row.negative is not None and bool(row.negative.strip())
        q.template_kept += template_kept
        q.equals_query += equals_query
        q.duplicate_level += duplicate
        self.reasons.update(dict.fromkeys(row.invalid_reasons, 1))
        if row.fallback:
            self.fallbacks[row.fallback] += 1

    def finish(self) -> LevelQuality:
        self.quality.reasons = dict(self.reasons.most_common())
        self.quality.fallbacks = dict(self.fallbacks.most_common())
        self.quality.fills = self.fills.finish()
        return self.quality


def compute_quality(
    name: str,
    rows: Sequence[NegativeRow],
    dictionary: DictionaryLookup | None = None,
    *,
    top_k: int = TOP_K,
) -> ArtifactQuality:
    """All figures of one negatives artifact (see the module docstring for definitions)."""
    with_dictionary = dictionary is not None
    overall = _LevelTally(None, with_dictionary)
    per_level: dict[int, _LevelTally] = {}
    per_type: dict[str, _FillTally] = {}
    fill_words: dict[str, Counter[str]] = defaultdict(Counter)
    replacements: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    queries = QueryQuality()
    for query in by_query(rows):
        levels = query.rows
        queries.queries += 1
        seen_negatives: set[str] = set()
        all_kept = all_valid = True
        any_duplicate = any_equal = False
        for row in levels:
            fills, kept = row_fills(row)
            key = _comparable(row.negative) if row.negative and row.negative.strip() else None
            equals_query = key is not None and key in _positive_forms(row)
            duplicate = key is not None and key in seen_negatives
            if key is not None:
                seen_negatives.add(key)
            all_kept &= kept
            all_valid &= row.valid
            any_duplicate |= duplicate
            any_equal |= equals_query
            level_tally = per_level.get(row.level)
            if level_tally is None:
                level_tally = per_level[row.level] = _LevelTally(row.level, with_dictionary)
            for row_tally in (overall, level_tally):
                row_tally.add_row(row, kept, equals_query, duplicate)
            for fill, original, word_type in zip(
                fills, row.original_words, row.types, strict=False
            ):
                type_tally = per_type.get(word_type)
                if type_tally is None:
                    type_tally = per_type[word_type] = _FillTally(with_dictionary)
                for fill_tally in (overall.fills, level_tally.fills, type_tally):
                    fill_tally.add_mask(fill, original, word_type, dictionary)
                if fill is not None and fill.lower() != original.lower():
                    fill_words[word_type][fill.lower()] += 1
                    replacements[word_type][(original.lower(), fill.lower())] += 1
        queries.all_levels_template_kept += all_kept
        queries.all_levels_valid += all_valid
        queries.with_duplicate_levels += any_duplicate
        queries.with_negative_equal_to_query += any_equal
    type_order = [t for t in PRIMITIVE_TYPES if t in per_type] + sorted(
        t for t in per_type if t not in PRIMITIVE_TYPES
    )
    types = [
        TypeQuality(
            type=t,
            fills=per_type[t].finish(),
            top_fills=fill_words[t].most_common(top_k),
            top_replacements=[
                (orig, fill, n) for (orig, fill), n in replacements[t].most_common(top_k)
            ],
            distinct_fills=len(fill_words[t]),
        )
        for t in type_order
    ]
    return ArtifactQuality(
        name=name,
        backends=dict(Counter(row.backend for row in rows).most_common()),
        models=dict(Counter(row.model for row in rows).most_common()),
        has_dictionary=with_dictionary,
        overall=overall.finish(),
        levels=[per_level[level].finish() for level in sorted(per_level)],
        types=types,
        queries=queries,
        fill_words={t: dict(fill_words[t].most_common()) for t in type_order},
    )
