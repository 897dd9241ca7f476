"""The DETR matcher (scipy's linear_sum_assignment) against a brute-force minimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from negforge.trainer.matcher import HungarianMatcher


def brute_force_minimum(cost: np.ndarray) -> float:
    n_rows, n_cols = cost.shape
    if n_rows <= n_cols:
        return min(sum(cost[r, perm[r]] for r in range(n_rows))
                   for perm in itertools.permutations(range(n_cols), n_rows))
    return min(sum(cost[perm[c], c] for c in range(n_cols))
               for perm in itertools.permutations(range(n_rows), n_cols))


def matcher_cost(logits: torch.Tensor, spans: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """The matching cost of one video, written out: 10 L1 - gIoU - 4 p_fg."""
    rows = []
    for query in range(spans.shape[0]):
        fg = torch.softmax(logits[query], -1)[0].item()
        row = []
        for window in target:
            (c1, w1), (c2, w2) = spans[query].tolist(), window.tolist()
            a, b = (c1 - w1 / 2, c1 + w1 / 2), (c2 - w2 / 2, c2 + w2 / 2)
            inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
            union = (a[1] - a[0]) + (b[1] - b[0]) - inter
            hull = max(a[1], b[1]) - min(a[0], b[0])
            giou = inter / union - (hull - union) / hull
            row.append(10 * (abs(c1 - c2) + abs(w1 - w2)) - giou - 4 * fg)
        rows.append(row)
    return np.asarray(rows)


@pytest.mark.parametrize("windows", [1, 2, 3, 6])
def test_matcher_finds_the_minimum_cost_assignment(windows):
    """Per video, the chosen (query, window) pairs reach the brute-force minimum cost."""
    generator = torch.Generator().manual_seed(windows)
    queries = 5
    logits = torch.randn(3, queries, 2, generator=generator)
    spans = torch.rand(3, queries, 2, generator=generator) * torch.tensor([1.0, 0.5]) + 0.01
    targets = [torch.rand(windows, 2, generator=generator) * 0.5 + 0.1 for _ in range(3)]
    matches = HungarianMatcher()(logits, spans, targets)
    for video, (query_index, target_index) in enumerate(matches):
        assert len(query_index) == min(queries, windows)
        assert query_index.tolist() == sorted(query_index.tolist())
        cost = matcher_cost(logits[video], spans[video], targets[video])
        chosen = cost[query_index.numpy(), target_index.numpy()].sum()
        assert chosen == pytest.approx(brute_force_minimum(cost), abs=1e-4)


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
