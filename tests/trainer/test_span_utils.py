"""Span conversions, temporal IoU and generalised IoU corner cases."""

from __future__ import annotations

import pytest
import torch

from negforge.trainer.span_utils import (
    generalized_temporal_iou,
    span_cxw_to_xx,
    span_xx_to_cxw,
    temporal_iou,
)


def test_conversions_round_trip():
    xx = torch.tensor([[0.0, 1.0], [0.2, 0.5], [0.3, 0.3]])
    cxw = span_xx_to_cxw(xx)
    expected = torch.tensor([[0.5, 1.0], [0.35, 0.3], [0.3, 0.0]])
    assert torch.allclose(cxw, expected, atol=1e-6)
    assert torch.allclose(span_cxw_to_xx(cxw), xx, atol=1e-6)
    batched = torch.rand(2, 5, 2)
    assert torch.allclose(span_xx_to_cxw(span_cxw_to_xx(batched)), batched, atol=1e-6)


@pytest.mark.parametrize(
    ("a", "b", "iou", "giou"),
    [
        ((0.0, 1.0), (0.0, 1.0), 1.0, 1.0),  # identical
        ((0.0, 0.4), (0.2, 0.6), 0.2 / 0.6, 0.2 / 0.6),  # partial overlap, hull = union
        ((0.0, 0.2), (0.2, 0.4), 0.0, 0.0),  # touching: no gap, hull = union
        ((0.0, 0.2), (0.6, 1.0), 0.0, -0.4 / 1.0),  # disjoint with a gap of 0.4
        ((0.1, 0.9), (0.3, 0.5), 0.2 / 0.8, 0.2 / 0.8),  # containment
        ((0.5, 0.5), (0.0, 1.0), 0.0, 0.0),  # zero-width inside: union 1, hull 1
        ((0.5, 0.5), (0.5, 0.5), 0.0, 0.0),  # two identical points: degenerate -> 0, not NaN
    ],
)
def test_iou_and_giou_corner_cases(a, b, iou, giou):
    first, second = torch.tensor([a]), torch.tensor([b])
    assert temporal_iou(first, second).item() == pytest.approx(iou, abs=1e-6)
    assert generalized_temporal_iou(first, second).item() == pytest.approx(giou, abs=1e-6)
    # Symmetric.
    assert temporal_iou(second, first).item() == pytest.approx(iou, abs=1e-6)


def test_pairwise_shapes_and_bounds():
    generator = torch.Generator().manual_seed(1)
    starts = torch.rand(7, generator=generator)
    spans1 = torch.stack((starts, starts + torch.rand(7, generator=generator) * 0.5), dim=1)
    starts = torch.rand(4, generator=generator)
    spans2 = torch.stack((starts, starts + torch.rand(4, generator=generator) * 0.5), dim=1)
    iou = temporal_iou(spans1, spans2)
    giou = generalized_temporal_iou(spans1, spans2)
    assert iou.shape == giou.shape == (7, 4)
    assert bool(((iou >= 0) & (iou <= 1)).all())
    assert bool(((giou >= -1) & (giou <= iou + 1e-7)).all())
    assert torch.allclose(temporal_iou(spans1, spans1).diagonal(), torch.ones(7))


def test_giou_is_differentiable_for_disjoint_spans():
    pred = torch.tensor([[0.0, 0.2]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0.6, 1.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: generalized_temporal_iou(p, target), (pred,))
    (-generalized_temporal_iou(pred, target)).sum().backward()
    # Minimising -gIoU moves the prediction's end towards the target.
    assert pred.grad is not None and pred.grad[0, 1].item() < 0
