"""Sampled examples for the report: a query, its masked levels and each artifact's negatives."""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel

from negforge.artifacts import NegativeRow
from negforge.query_view import by_query
from negforge.reporting.alignment import changed_word_flags


class ExampleNegative(BaseModel):
    """One artifact's negative of one level, its words flagged changed or not."""

    artifact: str
    words: list[tuple[str, bool]]  # (word as written, changed from the positive query)
    negative: str | None
    valid: bool
    reasons: list[str]
    fallback: str | None = None


class ExampleLevel(BaseModel):
    """One masking level of an example query."""

    level: int
    masked_query: str
    negatives: list[ExampleNegative]


class Example(BaseModel):
    """One sampled query with every compared artifact's negatives."""

    qid: str
    query: str
    levels: list[ExampleLevel]


def _example_negative(artifact: str, row: NegativeRow) -> ExampleNegative:
    words = changed_word_flags(row.query, row.negative) if row.negative else []
    return ExampleNegative(
        artifact=artifact,
        words=words,
        negative=row.negative,
        valid=row.valid,
        reasons=list(row.invalid_reasons),
        fallback=row.fallback,
    )


def sample_examples(
    artifacts: Sequence[tuple[str, Sequence[NegativeRow]]], n: int, seed: int = 0
) -> list[Example]:
    """``n`` queries drawn (seeded) from those every artifact has, in qid order of the first.

    When the artifacts share no query, the queries of the first artifact are drawn from.
    """
    if n <= 0 or not artifacts:
        return []
    grouped = [
        (name, {query.qid: query.by_level() for query in by_query(rows)})
        for name, rows in artifacts
    ]
    first = list(grouped[0][1])
    common = [qid for qid in first if all(qid in g for _, g in grouped[1:])]
    pool = common or first
    chosen = set(random.Random(seed).sample(pool, min(n, len(pool))))
    examples: list[Example] = []
    for qid in (q for q in pool if q in chosen):
        holders = [(name, g[qid]) for name, g in grouped if qid in g]
        reference = holders[0][1]
        levels = []
        for level in sorted(reference):
            levels.append(
                ExampleLevel(
                    level=level,
                    masked_query=reference[level].masked_query,
                    negatives=[
                        _example_negative(name, rows[level])
                        for name, rows in holders
                        if level in rows
                    ],
                )
            )
        query = next(iter(reference.values())).query
        examples.append(Example(qid=qid, query=query, levels=levels))
    return examples
