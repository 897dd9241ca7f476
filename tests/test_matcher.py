"""Hungarian matching: the assignment solver against brute force, and the DETR matcher."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from negforge.trainer.matcher import HungarianMatcher, linear_sum_assignment


def brute_force_minimum(cost: np.ndarray) -> float:
    n_rows, n_cols = cost.shape
    if n_rows <= n_cols:
        return min(sum(cost[r, perm[r]] for r in range(n_rows))
                   for perm in itertools.permutations(range(n_cols), n_rows))
    return min(sum(cost[perm[c], c] for c in range(n_cols))
               for perm in itertools.permutations(range(n_rows), n_cols))


def test_known_square_matrix():
    # Classic example: the optimum 5 = 1 + 2 + 2 takes the diagonal-free assignment.
    cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    rows, cols = linear_sum_assignment(cost)
    assert rows.tolist() == [0, 1, 2]
    assert cols.tolist() == [1, 0, 2]
    assert cost[rows, cols].sum() == 5.0


def test_known_rectangular_matrices():
    # More columns than rows: each row picks a distinct column.
    wide = np.array([[1.0, 2.0, 0.5, 9.0], [0.4, 3.0, 0.3, 9.0]])
    rows, cols = linear_sum_assignment(wide)
    assert rows.tolist() == [0, 1] and cols.tolist() == [2, 0]  # 0.5 + 0.4 < 1.0 + 0.3
    # More rows than columns (queries x one ground truth): the cheapest row wins.
    tall = np.array([[3.0], [1.0], [2.0]])
    rows, cols = linear_sum_assignment(tall)
    assert rows.tolist() == [1] and cols.tolist() == [0]
    tall2 = np.array([[5.0, 1.0], [1.0, 5.0], [0.0, 0.0]])
    rows, cols = linear_sum_assignment(tall2)
    assert cost_of(tall2, rows, cols) == 1.0
    assert rows.tolist() == sorted(rows.tolist())


def cost_of(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    return float(cost[rows, cols].sum())


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (5, 2), (3, 6),
                                   (6, 3), (1, 7), (7, 1)])
def test_random_matrices_match_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(30):
        # Integer costs create ties; normal costs are generic.
        cost = (rng.integers(0, 4, shape).astype(float) if trial % 2
                else rng.normal(size=shape) * 10)
        rows, cols = linear_sum_assignment(cost)
        assert len(rows) == len(cols) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert rows.tolist() == sorted(rows.tolist())
        assert cost_of(cost, rows, cols) == pytest.approx(brute_force_minimum(cost), abs=1e-9)


def test_invalid_and_empty_inputs():
    rows, cols = linear_sum_assignment(np.zeros((0, 4)))
    assert rows.size == cols.size == 0
    with pytest.raises(ValueError):
        linear_sum_assignment(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        linear_sum_assignment(np.zeros(3))


def test_hungarian_matcher_picks_the_overlapping_query():
    # Three queries; two videos with 1 and 2 ground-truth windows.
    spans = torch.tensor([
        [[0.2, 0.2], [0.7, 0.3], [0.5, 1.0]],
        [[0.1, 0.1], [0.8, 0.2], [0.45, 0.1]],
    ])
    logits = torch.zeros(2, 3, 2)
    targets = [torch.tensor([[0.7, 0.3]]), torch.tensor([[0.8, 0.2], [0.1, 0.1]])]
    matches = HungarianMatcher()(logits, spans, targets)
    assert matches[0][0].tolist() == [1] and matches[0][1].tolist() == [0]
    assert matches[1][0].tolist() == [0, 1] and matches[1][1].tolist() == [1, 0]


def test_hungarian_matcher_class_cost_breaks_span_ties():
    spans = torch.tensor([[[0.5, 0.2], [0.5, 0.2]]])
    logits = torch.tensor([[[0.0, 3.0], [3.0, 0.0]]])  # query 1 is confidently foreground
    matches = HungarianMatcher()(logits, spans, [torch.tensor([[0.5, 0.2]])])
    assert matches[0][0].tolist() == [1]
    no_targets = HungarianMatcher()(logits, spans, [torch.zeros(0, 2)])
    assert no_targets[0][0].numel() == 0
