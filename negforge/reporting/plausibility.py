"""The report's plausibility section: how natural the negatives read to a language model.

Per artifact and level, over every row with a negative (valid or not, as the hierarchy
check): the distribution of ``Delta NLL = NLL(negative) - NLL(query)`` (mean negative
log-likelihood per token in nats under a local causal LM, :mod:`negforge.plausibility`),
its median, quartiles and mean, and the share of negatives *less plausible than the
threshold* (``Delta NLL > threshold``). Then the least plausible negatives of each artifact.

Scores come from a ``scored_negatives`` artifact (``negforge score-plausibility``) or, with
``report --score-plausibility``, are computed on the fly through the score cache.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from pydantic import BaseModel, Field

from negforge.artifacts import NegativeRow

#: Negatives with Delta NLL above this many nats per token count as implausible by default.
DEFAULT_THRESHOLD = 1.5
#: Histogram bins of Delta NLL (nats per token) kept for the chart.
BIN_LOW, BIN_HIGH, BIN_WIDTH = -4.0, 8.0, 0.25
DEFAULT_LEAST = 8


class RowScore(BaseModel):
    """The plausibility of one row's negative and of its query."""

    nll: float
    query_nll: float
    delta: float


class LevelPlausibility(BaseModel):
    """Delta NLL over the scored negatives of one level (``level`` None: all levels)."""

    level: int | None
    negatives: int
    median_delta: float | None = None
    q25_delta: float | None = None
    q75_delta: float | None = None
    mean_delta: float | None = None
    median_nll: float | None = None
    beyond: int = 0  # negatives with Delta NLL > threshold
    histogram: list[int] = Field(default_factory=list)  # counts per bin, clipped at the ends

    @property
    def beyond_share(self) -> float | None:
        return self.beyond / self.negatives if self.negatives else None


class ArtifactPlausibility(BaseModel):
    """The plausibility figures of one artifact."""

    artifact: str
    model: str | None
    threshold: float
    levels: list[LevelPlausibility]
    overall: LevelPlausibility


class ImplausibleExample(BaseModel):
    """One of the least plausible negatives of an artifact."""

    artifact: str
    qid: str
    level: int
    query: str
    negative: str
    valid: bool
    nll: float
    query_nll: float
    delta: float


def bin_edges() -> list[float]:
    """The histogram's bin edges (the outer bins also hold everything beyond them)."""
    count = round((BIN_HIGH - BIN_LOW) / BIN_WIDTH)
    return [BIN_LOW + i * BIN_WIDTH for i in range(count + 1)]


def _histogram(values: Sequence[float]) -> list[int]:
    edges = bin_edges()
    counts = [0] * (len(edges) - 1)
    for value in values:
        index = int((value - BIN_LOW) // BIN_WIDTH)
        counts[min(max(index, 0), len(counts) - 1)] += 1
    return counts


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def level_figures(level: int | None, scores: Sequence[RowScore],
                  threshold: float) -> LevelPlausibility:  # fmt: skip
    """Delta NLL figures of a group of scored rows."""
    if not scores:
        return LevelPlausibility(level=level, negatives=0)
    deltas = [score.delta for score in scores]
    q25, q75 = _quartiles(deltas)
    return LevelPlausibility(
        level=level,
        negatives=len(scores),
        median_delta=statistics.median(deltas),
        q25_delta=q25,
        q75_delta=q75,
        mean_delta=statistics.fmean(deltas),
        median_nll=statistics.median(score.nll for score in scores),
        beyond=sum(1 for delta in deltas if delta > threshold),
        histogram=_histogram(deltas),
    )


def plausibility_of(
    artifact: str,
    rows: Sequence[NegativeRow],
    scores: Sequence[RowScore | None],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    model: str | None = None,
) -> ArtifactPlausibility:
    """Per-level and overall figures of an artifact's scored rows."""
    by_level: dict[int, list[RowScore]] = {}
    for row, score in zip(rows, scores, strict=True):
        if score is not None:
            by_level.setdefault(row.level, []).append(score)
    levels = [level_figures(level, by_level[level], threshold) for level in sorted(by_level)]
    everything = [score for level in sorted(by_level) for score in by_level[level]]
    return ArtifactPlausibility(
        artifact=artifact,
        model=model,
        threshold=threshold,
        levels=levels,
        overall=level_figures(None, everything, threshold),
    )


def least_plausible(
    artifact: str,
    rows: Sequence[NegativeRow],
    scores: Sequence[RowScore | None],
    count: int = DEFAULT_LEAST,
) -> list[ImplausibleExample]:
    """The ``count`` negatives of an artifact with the largest Delta NLL (ties: qid, level)."""
    scored = [(row, score) for row, score in zip(rows, scores, strict=True)
              if score is not None and row.negative is not None]  # fmt: skip
    scored.sort(key=lambda pair: (-pair[1].delta, pair[0].qid, pair[0].level))
    return [
        ImplausibleExample(
            artifact=artifact,
            qid=row.qid,
            level=row.level,
            query=row.query,
            negative=str(row.negative),
            valid=row.valid,
            nll=score.nll,
            query_nll=score.query_nll,
            delta=score.delta,
        )
        for row, score in scored[:count]
    ]
