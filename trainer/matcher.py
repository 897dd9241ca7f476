"""Hungarian matching of predicted spans to ground-truth windows (DETR's bipartite matching).

The cost of query q for window w is ``cost_span * L1((cx, w)_q, (cx, w)_w) - cost_giou *
gIoU - cost_class * p_foreground(q)``, computed for the whole batch at once as in the
originals' ``HungarianMatcher``; each row's block is solved by
``scipy.optimize.linear_sum_assignment``, the solver all three originals use.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from negforge.trainer.span_utils import generalized_temporal_iou, span_cxw_to_xx


class HungarianMatcher(nn.Module):
    """One-to-one matching of the Q predicted spans of each video to its ground-truth windows.

    Costs default to the originals' ``--set_cost_class 4 --set_cost_span 10
    --set_cost_giou 1``. Class index 0 is foreground.
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

        Each pair is ``(query_indices, target_indices)`` (int64, length min(Q, n_i)), query
        indices increasing.
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
            + self.cost_giou
            * -generalized_temporal_iou(span_cxw_to_xx(spans), span_cxw_to_xx(targets))
            + self.cost_class * -foreground[:, None]
        )
        blocks = cost.view(batch, num_queries, -1).cpu().split(sizes, -1)
        matches = []
        for index, block in enumerate(blocks):
            rows, cols = linear_sum_assignment(block[index].numpy())
            matches.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return matches
