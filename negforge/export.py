"""SHINE jsonl export of masked / negatives artifacts, and import of released SHINE files.

Export (``negforge export ARTIFACT --format shine-jsonl``) writes one row per query with the
keys SHINE-style trainers read, in this order: ``qid, query, duration, vid,
relevant_windows, masked_queries`` and, for a negatives artifact, ``recomposed_queries``
(level order, closest negative first). When some level of a query has no negative (the
generator dropped it as invalid), ``recomposed_queries`` is left out of that row and
``negative_valid`` (one boolean per level) is written instead, so trainers that need all
three negatives skip the row rather than train on a hole.

Import (``negforge import-negatives``) turns a released SHINE training file (rows with
``masked_queries`` and ``recomposed_queries``) into a negatives artifact:

* the masked positions of each level are recovered by aligning the released masked string
  with our spaCy tokenisation of the query, rendered by masking rule 7
  (:mod:`negforge.masking`) with each token either itself or ``<mask>``; positions are
  listed left to right. When the tokenisation
  does not line up (it did for every row of the Charades-CG file), the tokens are taken from
  the masked string itself (split on spaces, ``.``/``,`` split off) and the masked words
  are read off the query by matching the masked template against it;
* a masked token's type is its masking rule 3 type (subjects: noun); a token our tagger does
  not see as a primitive gets the closest type (AUX -> verb, PART -> adverb, NUM/DET ->
  adjective, SCONJ/CCONJ -> preposition, anything else -> noun);
* fills, ``valid`` and ``invalid_reasons`` come from
  :func:`negforge.generation.validation.validate_negative_strings` (with the dictionary when
  one is given); the released negative is kept as it is even when invalid.

Import then export gives back the released rows byte for byte (the values of qid, query,
vid, duration, relevant_windows, masked_queries, recomposed_queries). Integer windows or
durations (some ActivityNet rows) come back as floats (``0`` -> ``0.0``).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from negforge.artifacts import (
    SCHEMA_VERSIONS,
    MaskedLevel,
    NegativeRow,
    PrimitiveType,
    Provenance,
    read_artifact,
    sha256_file,
    write_artifact,
)
from negforge.atomic import AtomicFiles, atomic_files, check_output
from negforge.errors import ConfigError, InputError
from negforge.masking import POS_TO_TYPE, Token, is_subject
from negforge.query_view import by_query
from negforge.template import MASK, align, extract_fills, split_words

EXPORT_FORMATS = ("shine-jsonl",)
RELEASED_MODEL = "gpt-3.5-turbo (released)"
_LOOSE_TYPES: dict[str, PrimitiveType] = {
    "AUX": "verb",
    "PART": "adverb",
    "NUM": "adjective",
    "DET": "adjective",
    "SCONJ": "preposition",
    "CCONJ": "preposition",
}
_QUERY_KEYS = ("qid", "query", "duration", "vid", "relevant_windows")


@dataclass
class ExportResult:
    """What an export wrote."""

    output: Path
    kind: str
    queries: int
    rows_without_negatives: int


def export_shine_jsonl(
    artifact: str | Path,
    out: str | Path,
    *,
    group: AtomicFiles | None = None,
    allow_empty: bool = False,
) -> ExportResult:
    """Write a masked or negatives artifact as SHINE jsonl (one row per query).

    With ``group`` the file is renamed into place together with the group's other files.
    """
    from negforge.readers import empty_input_error

    out = check_output(out, inputs=[artifact])
    table, provenance = read_artifact(artifact)
    if provenance.kind not in ("masked", "negatives"):
        raise InputError(
            f"cannot export a {provenance.kind} artifact as SHINE jsonl (masked or negatives)",
            path=artifact,
        )
    negatives = provenance.kind == "negatives"
    columns = [*_QUERY_KEYS, "level", "masked_query"]
    if negatives:
        columns += ["negative", "valid"]
    rows = table.select(columns).to_pylist()
    if not rows and not allow_empty:
        raise empty_input_error(artifact)
    for number, row in enumerate(rows, start=1):
        _check_finite(row, artifact, number)
    queries = by_query(rows)
    items: list[dict[str, Any]] = []
    holes = 0
    for query in queries:
        levels, first = query.rows, query.first
        item: dict[str, Any] = {key: first[key] for key in _QUERY_KEYS}
        item["masked_queries"] = [r["masked_query"] for r in levels]
        if negatives:
            if all(r["negative"] is not None for r in levels):
                item["recomposed_queries"] = [r["negative"] for r in levels]
            else:
                holes += 1
                item["negative_valid"] = [
                    bool(r["valid"]) and r["negative"] is not None for r in levels
                ]
        items.append(item)
    with contextlib.ExitStack() as stack:
        files = group if group is not None else stack.enter_context(atomic_files())
        with files.open(out) as handle:
            for item in items:
                handle.write(json.dumps(item, allow_nan=False) + "\n")
    return ExportResult(Path(out), provenance.kind, len(queries), holes)


def _check_finite(row: dict[str, Any], artifact: str | Path, number: int) -> None:
    """A duration or window that is NaN or infinite would be written as invalid JSON."""
    values = [("duration", row["duration"])] + [
        (f"relevant_windows[{i}]", value)
        for i, window in enumerate(row["relevant_windows"] or [])
        for value in window
    ]
    for field, value in values:
        if value is None or not math.isfinite(value):
            raise InputError(f"not a finite number ({value})", path=artifact, line=number,
                             field=field)  # fmt: skip


# --- import ----------------------------------------------------------------------------------


def align_masked(tokens: Sequence[Token], masked_query: str) -> list[int] | None:
    """Masked positions of ``masked_query`` over our tokens (left to right), or None."""
    found = align([t[0] for t in tokens], masked_query)
    return None if found is None else sorted(set(found))


def token_type(token: Token) -> PrimitiveType:
    """The type a masked token is filled with: masking rule 3, or the closest type."""
    if is_subject(token):
        return "noun"
    return POS_TO_TYPE.get(token[1]) or _LOOSE_TYPES.get(token[1], "noun")


@dataclass
class ImportResult:
    """What import-negatives did."""

    output: Path
    queries: int
    rows: int
    valid_rows: int
    unaligned_levels: int
    reasons: dict[str, int]


def _level_fields(
    tokens: Sequence[Token], query: str, masked_query: str
) -> tuple[list[str], list[int], list[str], list[str], list[PrimitiveType], bool]:
    """tokens, positions, words, lemmas, types of one released level; True if aligned."""
    texts = [t[0] for t in tokens]
    positions = align_masked(tokens, masked_query)
    if positions is not None:
        return (
            texts,
            positions,
            [texts[p] for p in positions],
            [tokens[p][3].lower() for p in positions],
            [token_type(tokens[p]) for p in positions],
            True,
        )
    pieces = split_words(masked_query)
    slots = [i for i, piece in enumerate(pieces) if piece == MASK]
    words = extract_fills(masked_query, query) or [""] * len(slots)
    if len(words) != len(slots):
        words = [""] * len(slots)
    for slot, word in zip(slots, words, strict=True):
        pieces[slot] = word or MASK
    return pieces, slots, words, [w.lower() for w in words], ["noun"] * len(slots), False


def import_negatives(
    shine_jsonl: str | Path,
    out: str | Path,
    *,
    model: str = RELEASED_MODEL,
    preset: str | None = "charades_cg",
    ratios: str | None = None,
    spacy_model: str | None = None,
    dictionary: str | Path | None = None,
    on_error: str = "raise",
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    allow_empty: bool = False,
) -> ImportResult:
    """Turn a released SHINE training file into a negatives artifact (see module docs)."""
    from negforge.generation.validation import validate_negative_strings
    from negforge.masking import resolve_ratios
    from negforge.nlp import parse_texts
    from negforge.readers import read_queries, report_path

    out = check_output(out, inputs=[shine_jsonl, dictionary])
    check_output(report_path(out), inputs=[shine_jsonl, dictionary], what="bad-row report")
    chosen = [float(r) for r in resolve_ratios(preset, ratios)]
    index = None
    if dictionary is not None:
        from negforge.dictionary import load_dictionary

        index = load_dictionary(dictionary)
    result = read_queries(shine_jsonl, fmt="jsonl", on_error=on_error, allow_empty=allow_empty)
    for record, line in zip(result.records, result.lines, strict=True):
        for key in ("masked_queries", "recomposed_queries"):
            if not getattr(record, key):
                raise InputError(
                    "a released SHINE training row needs masked_queries and recomposed_queries",
                    path=shine_jsonl, line=line, field=key,
                )
        if len(record.masked_queries or []) != len(record.recomposed_queries or []):
            raise InputError(
                "masked_queries and recomposed_queries differ in length",
                path=shine_jsonl, line=line, field="recomposed_queries",
            )
    parsed = parse_texts([r.query for r in result.records], spacy_model, cache_dir=cache_dir)
    rows: list[dict[str, Any]] = []
    unaligned = 0
    reasons: dict[str, int] = {}
    for record, tokens in zip(result.records, parsed.tokens, strict=True):
        masked_queries = record.masked_queries or []
        negatives = list(record.recomposed_queries or [])
        levels: list[MaskedLevel] = []
        for number, masked_query in enumerate(masked_queries, start=1):
            texts, positions, words, lemmas, types, aligned = _level_fields(
                tokens, record.query, masked_query
            )
            unaligned += not aligned
            levels.append(
                MaskedLevel(
                    qid=record.qid, query=record.query, vid=record.vid,
                    duration=record.duration, relevant_windows=record.relevant_windows,
                    level=number,
                    ratio=chosen[number - 1] if number <= len(chosen) else 0.0,
                    tokens=texts, masked_positions=positions, original_words=words,
                    original_lemmas=lemmas, types=types, masked_query=masked_query,
                )
            )
        # Masks are listed left to right (align_masked), as extract_fills reads them.
        verdicts = validate_negative_strings(levels, negatives, dictionary=index)
        for level, negative, verdict in zip(levels, negatives, verdicts, strict=True):
            for code in verdict.reasons:
                reasons[code] = reasons.get(code, 0) + 1
            rows.append(
                NegativeRow(
                    **level.model_dump(),
                    negative=negative,
                    fills=list(verdict.fills),
                    valid=verdict.valid,
                    invalid_reasons=list(verdict.reasons),
                    backend="import",
                    model=model,
                ).model_dump()
            )
    valid_rows = sum(1 for row in rows if row["valid"])
    provenance = Provenance(
        kind="negatives",
        schema_version=SCHEMA_VERSIONS["negatives"],
        input_files=[str(shine_jsonl)],
        input_sha256=[sha256_file(shine_jsonl)],
        spacy_model=parsed.model.name,
        spacy_version=parsed.model.version,
        ratios=chosen,
        settings={"backend": "import", "model": model, "preset": preset, "on_error": on_error,
                  "dictionary": str(dictionary) if dictionary else None},
        fingerprint=fingerprint,
        summary={"queries": len(result.records), "rows": len(rows), "valid_rows": valid_rows,
                 "unaligned_levels": unaligned, "reasons": reasons,
                 "bad_rows": len(result.bad_rows)},
    )
    with atomic_files() as group:
        result.write_report(report_path(out), group)
        write_artifact(out, rows, provenance, group)
    return ImportResult(Path(out), len(result.records), len(rows), valid_rows, unaligned, reasons)


def check_export_format(fmt: str) -> str:
    """Validate ``--format`` of the export command."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; supported: {EXPORT_FORMATS}")
    return fmt
