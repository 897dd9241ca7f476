"""Progressive masking (SHINE, ECCV 2024, Sec. 3.2), as pure functions over parsed tokens.

A parsed token is a tuple ``(text, pos_, dep_, lemma_)`` taken from spaCy, so everything in
this module runs (and is unit-tested) without spaCy. The rule, clause by clause:

1. the query is parsed whole (done by :mod:`negforge.nlp`);
2. subjects: every token whose lower-case text is ``person``, plus every token whose
   ``dep_`` is ``nsubj``/``nsubjpass`` and whose ``pos_`` is not ``ADJ`` (left to right);
3. primitive type of every other token from the coarse ``pos_``: VERB -> verb,
   NOUN/PROPN -> noun, ADJ -> adjective, ADP -> preposition, ADV -> adverb; nothing else is
   ever masked;
4. priority list P: verbs, nouns, adjectives, prepositions, adverbs (each left to right),
   then the subjects;
5. ``N = len(P)``; for ratio ``r``: ``k = ceil(r*N)`` if ``N < 4`` else ``floor(r*N)``, at
   least 1 (exact rational arithmetic: ratios are :class:`fractions.Fraction`);
6. level ``j`` masks the first ``k_j`` items of P (levels are nested);
7. rendering: :func:`negforge.template.render` (tokens joined by one space, none before a
   ``.`` or ``,`` token, masked tokens replaced by the mask token).

``exclude_types`` (the Table 6 ablation) removes those types from P before N is counted, so
they are never masked. Subjects are masked as nouns, so excluding ``noun`` drops them too.
Whitespace-only tokens (spaCy's SPACE, e.g. from a double space or a leading space in an
ActivityNet query) are never masked and are rendered like any other token, as the released
Charades-CG masks do (``cabinet  below`` -> ``cabinet   below``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from negforge.artifacts import (
    ARROW_SCHEMAS,
    PRIMITIVE_TYPES,
    SCHEMA_VERSIONS,
    PrimitiveType,
    Provenance,
    sha256_file,
    write_artifact,
)
from negforge.errors import ConfigError
from negforge.nlp import Token as Token  # the parsed token tuple masking works on
from negforge.records import QueryRecord
from negforge.template import MASK, separator, spaced

if TYPE_CHECKING:
    from negforge.corpus import CorpusStore

#: Masking ratios of the paper, per dataset (Sec. 4.1), as exact fractions.
PRESETS: dict[str, tuple[Fraction, ...]] = {
    "charades_cg": (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)),
    "anet_cg": (Fraction(1, 10), Fraction(3, 10), Fraction(1, 2)),
}

#: Clause 3: coarse POS -> primitive type.
POS_TO_TYPE: dict[str, PrimitiveType] = {
    "VERB": "verb",
    "NOUN": "noun",
    "PROPN": "noun",
    "ADJ": "adjective",
    "ADP": "preposition",
    "ADV": "adverb",
}
SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass"})
SUBJECT_WORD = "person"
_TYPE_RANK: dict[str, int] = {t: i for i, t in enumerate(PRIMITIVE_TYPES)}
_RANKED_TYPES: dict[str, tuple[int, PrimitiveType]] = {
    pos: (_TYPE_RANK[kind], kind) for pos, kind in POS_TO_TYPE.items()
}


@dataclass(frozen=True)
class LevelMask:
    """The masked positions of one level, left to right (text order), with their types.

    The priority order decides *which* tokens a level masks; within a level the masks are
    listed in the order they appear in the query, the order in which a reader (or an LLM)
    fills them, so ``fills[i]`` always belongs to ``positions[i]``.
    """

    level: int
    ratio: Fraction
    positions: tuple[int, ...]
    types: tuple[PrimitiveType, ...]


def parse_ratios(text: str | Sequence[float | str | Fraction]) -> tuple[Fraction, ...]:
    """Parse ``"0.25,0.5,0.75"`` (or a sequence) into exact, increasing fractions in (0, 1]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        ratios = tuple(
            Fraction(str(item).strip()) if not isinstance(item, Fraction) else item
            for item in items
        )
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"ratios must be numbers such as 0.25,0.5,0.75 ({exc})") from exc
    if not ratios:
        raise ConfigError("at least one masking ratio is needed")
    if any(not 0 < r <= 1 for r in ratios):
        raise ConfigError(f"every ratio must lie in (0, 1], got {[float(r) for r in ratios]}")
    if any(b < a for a, b in itertools.pairwise(ratios)):
        raise ConfigError("ratios must not decrease (levels are nested)")
    return ratios


def resolve_ratios(
    preset: str | None = None, ratios: str | Sequence[float | str | Fraction] | None = None
) -> tuple[Fraction, ...]:
    """Ratios from ``--ratios`` if given, else from ``--preset`` (default ``charades_cg``)."""
    if ratios is not None and (not isinstance(ratios, str) or ratios.strip()):
        return parse_ratios(ratios)
    name = preset or "charades_cg"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def parse_exclude_types(text: str | Iterable[str] | None) -> frozenset[PrimitiveType]:
    """Parse ``"preposition,adverb"`` into a set of primitive types."""
    if text is None:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [item.strip().lower() for item in items if item.strip()]
    unknown = [n for n in names if n not in _TYPE_RANK]
    if unknown:
        raise ConfigError(f"unknown primitive type(s) {unknown}; types are {PRIMITIVE_TYPES}")
    return frozenset(n for n in PRIMITIVE_TYPES if n in names)


def is_subject(token: Token) -> bool:
    """Clause 2: ``person`` anywhere, or a non-adjective nominal subject."""
    text, pos, dep, _ = token
    return text.lower() == SUBJECT_WORD or (dep in SUBJECT_DEPS and pos != "ADJ")


def primitive_type(token: Token) -> PrimitiveType | None:
    """Clause 3: the primitive type of a non-subject token, or None (never masked)."""
    if not token[0].strip():
        return None
    return POS_TO_TYPE.get(token[1])


def priority_list(
    tokens: Sequence[Token], exclude_types: frozenset[str] = frozenset()
) -> list[tuple[int, PrimitiveType]]:
    """Clause 4: (position, type) of every maskable token, in masking order."""
    buckets: tuple[list[tuple[int, PrimitiveType]], ...] = ([], [], [], [], [])
    subjects: list[tuple[int, PrimitiveType]] = []
    ranked = _RANKED_TYPES
    for index, token in enumerate(tokens):
        text, pos, dep = token[0], token[1], token[2]
        if (dep in SUBJECT_DEPS and pos != "ADJ") or text.lower() == SUBJECT_WORD:
            if text.strip():  # a whitespace token is never masked
                subjects.append((index, "noun"))
            continue
        entry = ranked.get(pos)
        if entry is not None and entry[1] not in exclude_types and text.strip():
            buckets[entry[0]].append((index, entry[1]))
    ordered = [*buckets[0], *buckets[1], *buckets[2], *buckets[3], *buckets[4]]
    if "noun" not in exclude_types:
        ordered.extend(subjects)
    return ordered


@functools.lru_cache(maxsize=4096)
def mask_count(ratio: Fraction, n: int) -> int:
    """Clause 5: how many items of P a level with this ratio masks (0 when P is empty)."""
    if n <= 0:
        return 0
    product = ratio * n
    k = math.ceil(product) if n < 4 else math.floor(product)
    return min(max(k, 1), n)


def mask_levels(
    tokens: Sequence[Token],
    ratios: Sequence[Fraction],
    exclude_types: frozenset[str] = frozenset(),
) -> list[LevelMask]:
    """Clauses 4-6: the nested levels of one query ([] when nothing can be masked)."""
    plan = priority_list(tokens, exclude_types)
    if not plan:
        return []
    levels = []
    for number, ratio in enumerate(ratios, start=1):
        chosen = sorted(plan[: mask_count(ratio, len(plan))])  # text order within the level
        levels.append(
            LevelMask(
                level=number,
                ratio=ratio,
                positions=tuple(p for p, _ in chosen),
                types=tuple(t for _, t in chosen),
            )
        )
    return levels


# --- the mask stage --------------------------------------------------------------------------


@dataclass
class MaskResult:
    """What the mask stage did: rows written, queries left out and why."""

    output: Path
    queries: int
    rows: int
    unmaskable: list[str]
    bad_rows: int
    report: Path | None
    cache_hit: bool


_QUERY_COLUMNS = ("qid", "query", "vid", "duration", "relevant_windows", "tokens")


def mask_table(
    records: Sequence[QueryRecord],
    parsed: Sequence[Sequence[Token]],
    ratios: Sequence[Fraction],
    exclude_types: frozenset[str] = frozenset(),
) -> tuple[pa.Table, list[str]]:
    """The masked artifact's table (one row per query and level) and the unmaskable qids.

    The same rule as :func:`mask_levels` + :func:`negforge.template.render`, unrolled for
    speed (each token's separated text computed once per query); the per-query columns are
    converted to Arrow once and repeated per level by ``take``.
    """
    level_names = ("level", "ratio", "masked_positions", "original_words", "original_lemmas",
                   "types", "masked_query")
    level_cols: dict[str, list[Any]] = {name: [] for name in level_names}
    (level_col, ratio_col, positions_col, words_col, lemmas_col, types_col,
     masked_col) = (level_cols[n] for n in level_names)
    kept: list[int] = []  # index of each maskable query in records
    rows: list[int] = []  # for each output row, its position in kept
    unmaskable: list[str] = []
    levels = list(enumerate(ratios, start=1))
    ratio_floats = [float(r) for r in ratios]
    counts_by_n: dict[int, list[int]] = {}
    for index, (record, tokens) in enumerate(zip(records, parsed, strict=True)):
        plan = priority_list(tokens, exclude_types)
        if not plan:
            unmaskable.append(record.qid)
            continue
        row_of_query = len(kept)
        kept.append(index)
        texts = [t[0] for t in tokens]
        pieces = spaced(texts)
        n = len(plan)
        counts = counts_by_n.get(n)
        if counts is None:
            counts = counts_by_n[n] = [mask_count(ratio, n) for _, ratio in levels]
        for (number, _ratio), k in zip(levels, counts, strict=True):
            chosen = sorted(plan[:k])  # text order within the level (see LevelMask)
            positions = [p for p, _ in chosen]
            shown = pieces.copy()
            for p in positions:
                shown[p] = separator(p, texts[p]) + MASK
            rows.append(row_of_query)
            level_col.append(number)
            ratio_col.append(ratio_floats[number - 1])
            positions_col.append(positions)
            words_col.append([texts[p] for p in positions])
            lemmas_col.append([tokens[p][3].lower() for p in positions])
            types_col.append([t for _, t in chosen])
            masked_col.append("".join(shown))
    schema = ARROW_SCHEMAS["masked"]
    per_query: dict[str, list[Any]] = {
        "qid": [records[i].qid for i in kept],
        "query": [records[i].query for i in kept],
        "vid": [records[i].vid for i in kept],
        "duration": [records[i].duration for i in kept],
        "relevant_windows": [records[i].relevant_windows for i in kept],
        "tokens": [[t[0] for t in parsed[i]] for i in kept],
    }
    take = pa.array(rows, type=pa.int64())
    arrays = []
    for field in schema:
        if field.name in per_query:
            arrays.append(pa.array(per_query[field.name], type=field.type).take(take))
        else:
            arrays.append(pa.array(level_cols[field.name], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema), unmaskable


def mask_columns(
    records: Sequence[QueryRecord],
    parsed: Sequence[Sequence[Token]],
    ratios: Sequence[Fraction],
    exclude_types: frozenset[str] = frozenset(),
) -> tuple[dict[str, list[Any]], list[str]]:
    """:func:`mask_table` as plain Python columns (for inspection and tests)."""
    table, unmaskable = mask_table(records, parsed, ratios, exclude_types)
    return table.to_pydict(), unmaskable


def masked_provenance(
    input_path: str | Path,
    *,
    spacy_model: str | None,
    spacy_version: str | None,
    chosen: Sequence[Fraction],
    preset: str | None,
    excluded: frozenset[str],
    on_error: str,
    fmt: str,
    split: str | None,
    fingerprint: str | None,
    queries: int,
    rows: int,
    levels: int,
    unmaskable: list[str],
    bad_rows: int,
) -> Provenance:
    """The provenance of a masked artifact (whichever engine masked it)."""
    return Provenance(
        kind="masked",
        schema_version=SCHEMA_VERSIONS["masked"],
        input_files=[str(input_path)],
        input_sha256=[sha256_file(input_path)],
        spacy_model=spacy_model,
        spacy_version=spacy_version,
        ratios=[float(r) for r in chosen],
        settings={
            "preset": preset,
            "ratios": [str(r) for r in chosen],
            "exclude_types": sorted(excluded),
            "on_error": on_error,
            "format": fmt,
            "split": split,
        },
        fingerprint=fingerprint,
        summary={
            "queries": queries,
            "rows": rows,
            "levels": levels,
            "unmaskable_qids": unmaskable,
            "bad_rows": bad_rows,
        },
    )


def mask_file(
    input_path: str | Path,
    output: str | Path,
    *,
    preset: str | None = None,
    ratios: str | Sequence[float | str | Fraction] | None = None,
    exclude_types: str | Iterable[str] | None = None,
    spacy_model: str | None = None,
    on_error: str = "raise",
    fmt: str | None = None,
    split: str | None = None,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    allow_empty: bool = False,
    corpora: CorpusStore | None = None,
) -> MaskResult:
    """Read a query file, parse it once, mask every query, write the masked artifact
    (and its bad-row report, together). ``corpora`` hands in files an earlier stage has
    already read and parsed (see :mod:`negforge.corpus`)."""
    from negforge.atomic import atomic_files, check_output
    from negforge.corpus import CorpusStore
    from negforge.gc_settings import gc_paused
    from negforge.readers import report_path

    chosen = resolve_ratios(preset, ratios)
    excluded = parse_exclude_types(exclude_types)
    output = check_output(output, inputs=[input_path])
    check_output(report_path(output), inputs=[input_path], what="bad-row report")
    store = corpora if corpora is not None else CorpusStore()
    corpus = store.corpus(input_path, fmt=fmt, split=split, on_error=on_error,
                          allow_empty=allow_empty, spacy_model=spacy_model, cache_dir=cache_dir)
    result, parsed = corpus.read, corpus.parsed
    with gc_paused():
        table, unmaskable = mask_table(result.records, parsed.tokens, chosen, excluded)
    provenance = masked_provenance(
        input_path, spacy_model=parsed.model.name, spacy_version=parsed.model.version,
        chosen=chosen, preset=preset if ratios is None else None, excluded=excluded,
        on_error=on_error, fmt=result.format, split=split, fingerprint=fingerprint,
        queries=len(result.records), rows=table.num_rows, levels=len(chosen),
        unmaskable=unmaskable, bad_rows=len(result.bad_rows),
    )
    with atomic_files() as group:
        report = result.write_report(report_path(output), group)
        write_artifact(output, table, provenance, group)
    return MaskResult(
        output=output,
        queries=len(result.records),
        rows=table.num_rows,
        unmaskable=unmaskable,
        bad_rows=len(result.bad_rows),
        report=report,
        cache_hit=parsed.cache_hit,
    )
