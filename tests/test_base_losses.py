"""L_base parts (Moment-DETR / QD-DETR) on hand-computed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from negforge.trainer.base_losses import (
    SetCriterion,
    mismatched_query_loss,
    rank_contrastive_loss,
    saliency_hinge_loss,
)
from negforge.trainer.model_config import LossConfig


def test_saliency_hinge_averages_inside_outside_pairs():
    scores = torch.tensor([[0.5, 0.6, 0.1, 9.0], [1.0, 1.0, 1.0, 1.0]])
    window = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    # Row 0 pairs: (0,1) 0.2 + 0.6 - 0.5 = 0.3; (0,2) 0.2 + 0.1 - 0.5 < 0 -> 0; padding ignored.
    # Row 1 has no clip outside its window: no pair, not counted.
    loss = saliency_hinge_loss(scores, window, valid, margin=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)


def test_rank_contrastive_hand_computed():
    scores = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    window = torch.tensor([[1, 1, 0, 0]])
    valid = torch.tensor([[1, 1, 1, 0]])
    # tau = 0.5: logits 2, 0, 4. Each inside clip against the outside clip (logit 4).
    expected = (-math.log(math.exp(2) / (math.exp(2) + math.exp(4)))
                - math.log(1 / (1 + math.exp(4)))) / 2
    loss = rank_contrastive_loss(scores, window, valid, tau=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # No clip outside: the positive is its own only competitor -> 0, and finite gradients.
    scores = scores.clone().requires_grad_(True)
    loss = rank_contrastive_loss(scores, torch.tensor([[1, 1, 1, 0]]), valid, tau=0.5)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert scores.grad is not None and bool(torch.isfinite(scores.grad).all())


def test_mismatched_query_loss_is_minus_log_one_minus_sigmoid():
    neg = torch.tensor([[0.0, 2.0, 30.0], [1.0, -1.0, 0.5]])
    valid = torch.tensor([[1, 1, 0], [1, 1, 1]])
    row0 = -(math.log(1 - 0.5) + math.log(1 - 1 / (1 + math.exp(-2.0)))) / 2
    loss = mismatched_query_loss(neg, valid, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(row0, rel=1e-6)


def test_set_losses_perfect_match_and_class_weights():
    criterion = SetCriterion(LossConfig(), "moment_detr")
    spans = torch.tensor([[[0.5, 0.2], [0.1, 0.05], [0.8, 0.3]]])
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    losses = criterion.set_losses(logits, spans, [torch.tensor([[0.5, 0.2]])])
    assert losses["loss_span"].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    # Query 0 is foreground (weight 1), queries 1-2 background (weight 0.1):
    # CE = sum_q w_q * -log p_q(y_q) / sum_q w_q.
    log_softmax = torch.log_softmax(logits[0], dim=-1)
    expected = (-(log_softmax[0, 0]) - 0.1 * log_softmax[1, 1] - 0.1 * log_softmax[2, 1]) / 1.2
    assert losses["loss_label"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_set_losses_normalise_by_number_of_windows():
    criterion = SetCriterion(LossConfig(), "qd_detr")
    spans = torch.tensor([[[0.5, 0.2], [0.2, 0.2]], [[0.3, 0.1], [0.9, 0.1]]])
    logits = torch.zeros(2, 2, 2)
    targets = [torch.tensor([[0.5, 0.4]]), torch.tensor([[0.3, 0.1], [0.9, 0.2]])]
    losses = criterion.set_losses(logits, spans, targets)
    # L1 over (cx, w): 0.2 (row 0) + 0 + 0.1 -> / 3 windows.
    assert losses["loss_span"].item() == pytest.approx(0.3 / 3, abs=1e-6)
    # gIoU: [0.4,0.6] vs [0.3,0.7]: 0.2/0.4; [0.85,0.95] vs [0.8,1.0]: 0.1/0.2; exact: 1.
    assert losses["loss_giou"].item() == pytest.approx((0.5 + 0.5 + 0.0) / 3, abs=1e-6)
