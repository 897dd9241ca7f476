"""Temporal spans: (centre, width) <-> (start, end), pairwise IoU and generalised IoU.

Spans are normalised by the video length, so every coordinate lies in [0, 1]. All functions
are plain torch and differentiable. A degenerate pair (union or enclosing hull of length 0,
e.g. two zero-width spans) gets IoU 0 and gIoU 0 instead of 0/0: lengths are clamped to
``EPS`` before dividing.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-9


def span_cxw_to_xx(spans: Tensor) -> Tensor:
    """(..., 2) spans as (centre, width) -> (start, end)."""
    centre, width = spans.unbind(-1)
    return torch.stack((centre - 0.5 * width, centre + 0.5 * width), dim=-1)


def span_xx_to_cxw(spans: Tensor) -> Tensor:
    """(..., 2) spans as (start, end) -> (centre, width)."""
    start, end = spans.unbind(-1)
    return torch.stack((0.5 * (start + end), end - start), dim=-1)


def temporal_intersection_union(spans1: Tensor, spans2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union lengths of (N, 2) and (M, 2) (start, end) spans.

    Returns two (N, M) tensors. Intersections of disjoint spans are 0.
    """
    lengths1 = (spans1[:, 1] - spans1[:, 0]).clamp(min=0)
    lengths2 = (spans2[:, 1] - spans2[:, 0]).clamp(min=0)
    left = torch.maximum(spans1[:, None, 0], spans2[None, :, 0])
    right = torch.minimum(spans1[:, None, 1], spans2[None, :, 1])
    intersection = (right - left).clamp(min=0)
    union = lengths1[:, None] + lengths2[None, :] - intersection
    return intersection, union


def temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise IoU (N, M) of (N, 2) and (M, 2) spans given as (start, end)."""
    intersection, union = temporal_intersection_union(spans1, spans2)
    return intersection / union.clamp(min=EPS)


def generalized_temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise generalised IoU (N, M) in [-1, 1] of (start, end) spans.

    gIoU = IoU - (hull - union) / hull, where hull is the smallest span enclosing both
    (Rezatofighi et al., 2019, in one dimension).
    """
    intersection, union = temporal_intersection_union(spans1, spans2)
    iou = intersection / union.clamp(min=EPS)
    hull_left = torch.minimum(spans1[:, None, 0], spans2[None, :, 0])
    hull_right = torch.maximum(spans1[:, None, 1], spans2[None, :, 1])
    hull = (hull_right - hull_left).clamp(min=0)
    return iou - (hull - union) / hull.clamp(min=EPS)
