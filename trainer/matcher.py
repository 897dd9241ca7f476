"""Hungarian matching of predicted spans to ground-truth windows (DETR's bipartite matching).

``linear_sum_assignment`` is a small numpy implementation of the shortest-augmenting-path
Hungarian algorithm (Kuhn-Munkres with potentials, O(n^2 m)); the matrices here are at most
``num_queries x windows`` (10 x k), so scipy is not needed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from negforge.trainer.span_utils import generalized_temporal_iou, span_cxw_to_xx


def _assign_rows_le_cols(cost: np.ndarray) -> np.ndarray:
    """Column assigned to each row of an (n, m) cost matrix with n <= m (minimum total)."""
    n_rows, n_cols = cost.shape
    # 1-based arrays; index 0 is the virtual start column of each augmenting path.
    row_potential = np.zeros(n_rows + 1)
    col_potential = np.zeros(n_cols + 1)
    row_of_col = np.zeros(n_cols + 1, dtype=np.int64)  # 0 = column free
    previous_col = np.zeros(n_cols + 1, dtype=np.int64)
    for row in range(1, n_rows + 1):
        row_of_col[0] = row
        current_col = 0
        min_slack = np.full(n_cols + 1, np.inf)
        visited = np.zeros(n_cols + 1, dtype=bool)
        while True:
            visited[current_col] = True
            current_row = row_of_col[current_col]
            free = ~visited[1:]
            reduced = cost[current_row - 1] - row_potential[current_row] - col_potential[1:]
            improve = free & (reduced < min_slack[1:])
            min_slack[1:][improve] = reduced[improve]
            previous_col[1:][improve] = current_col
            candidates = np.where(free, min_slack[1:], np.inf)
            next_col = int(np.argmin(candidates)) + 1
            delta = candidates[next_col - 1]
            # Shift potentials so the tight edges stay tight and the new edge becomes tight.
            row_potential[row_of_col[visited]] += delta
            col_potential[visited] -= delta
            min_slack[~visited] -= delta
            current_col = next_col
            if row_of_col[current_col] == 0:
                break
        # Augment along the alternating path back to the virtual column 0.
        while current_col != 0:
            back = previous_col[current_col]
            row_of_col[current_col] = row_of_col[back]
            current_col = back
    col_of_row = np.empty(n_rows, dtype=np.int64)
    for col in range(1, n_cols + 1):
        if row_of_col[col] != 0:
            col_of_row[row_of_col[col] - 1] = col - 1
    return col_of_row


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment for a rectangular (n, m) cost matrix.

    Same contract as ``scipy.optimize.linear_sum_assignment``: returns ``(rows, cols)`` with
    ``min(n, m)`` pairs, rows in increasing order, each row and column used at most once and
    the summed cost minimal. Raises ``ValueError`` on non-finite costs.
    """
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"cost matrix must be 2-d, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("cost matrix contains NaN or infinite entries")
    n_rows, n_cols = matrix.shape
    if n_rows == 0 or n_cols == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    if n_rows <= n_cols:
        return np.arange(n_rows, dtype=np.int64), _assign_rows_le_cols(matrix)
    row_of_col = _assign_rows_le_cols(matrix.T)
    order = np.argsort(row_of_col)
    return row_of_col[order], np.arange(n_cols, dtype=np.int64)[order]


class HungarianMatcher(nn.Module):
    """One-to-one matching of the Q predicted spans of each video to its ground-truth windows.

    Cost = ``cost_class`` * (-p_foreground) + ``cost_span`` * L1((cx, w), (cx, w))
    + ``cost_giou`` * (-gIoU) (REFERENCE.md defaults: 4, 10, 1). Class index 0 is foreground.
    """

    def __init__(self, cost_class: float = 4.0, cost_span: float = 10.0, cost_giou: float = 1.0):
        super().__init__()
        self.cost_class = cost_class
        self.cost_span = cost_span
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(
        self, pred_logits: Tensor, pred_spans: Tensor, target_spans: list[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """(B, Q, 2) logits, (B, Q, 2) (cx, w) spans, B tensors (n_i, 2) -> B index pairs.

        Each pair is ``(query_indices, target_indices)`` (int64, length min(Q, n_i)).
        """
        batch, num_queries = pred_logits.shape[:2]
        sizes = [int(t.shape[0]) for t in target_spans]
        if sum(sizes) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(batch)]
        foreground = pred_logits.flatten(0, 1).softmax(-1)[:, 0]  # (B*Q,)
        spans = pred_spans.flatten(0, 1)
        targets = torch.cat(target_spans).to(spans)
        cost = (
            self.cost_span * torch.cdist(spans, targets, p=1)
            - self.cost_giou
            * generalized_temporal_iou(span_cxw_to_xx(spans), span_cxw_to_xx(targets))
            - self.cost_class * foreground[:, None]
        )
        cost_np = cost.view(batch, num_queries, -1).float().cpu().numpy()
        matches = []
        start = 0
        for index, size in enumerate(sizes):
            rows, cols = linear_sum_assignment(cost_np[index, :, start : start + size])
            matches.append((torch.from_numpy(rows), torch.from_numpy(cols)))
            start += size
        return matches
