"""L_base parts (Moment-DETR / QD-DETR) on hand-computed inputs, with the originals'
normalisations (tests/trainer/test_parity_losses.py runs the originals' SetCriterion itself)."""

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


def test_saliency_hinge_on_sampled_pairs():
    scores = torch.tensor([[0.5, 0.6, 0.1, 9.0], [1.0, 2.0, 1.0, 1.0]])
    pos = torch.tensor([[0, 0], [1, 1]])
    neg = torch.tensor([[1, 2], [0, 3]])
    # Row 0: 0.2 + 0.6 - 0.5 = 0.3 and 0.2 + 0.1 - 0.5 < 0; row 1: 0.2 + 1 - 2 < 0 twice.
    # Sum / (B x pairs) x 2, as Moment-DETR.
    loss = saliency_hinge_loss(scores, pos, neg, margin=0.2)
    assert loss.item() == pytest.approx(0.3 / 4 * 2, abs=1e-6)


def test_rank_contrastive_hand_computed():
    scores = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    neg = torch.tensor([[0.5, -1.0, 0.0, 7.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # tau = 0.5: one softmax over the 3 valid positive-query clips and the 3 valid
    # mismatched-query clips (padding at -1e3 / tau, numerically absent).
    logits = [2.0, 0.0, 4.0, 1.0, -2.0, 0.0]
    log_z = math.log(sum(math.exp(v) for v in logits))
    mean_log_prob = ((2.0 - log_z) + (0.0 - log_z)) / 2
    # Only rank 1 has positives: its term over 12 (QD-DETR's divisor).
    expected = -mean_log_prob / 12
    loss = rank_contrastive_loss(scores, neg, labels, valid, tau=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Graded labels: a clip labelled 3 is positive for ranks 1, 2 and 3.
    graded = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    rank1 = -mean_log_prob
    rank23 = -(2.0 - log_z)
    loss = rank_contrastive_loss(scores, neg, graded, valid, tau=0.5)
    assert loss.item() == pytest.approx((rank1 + 2 * rank23) / 12, rel=1e-5)
    # A row without a valid mismatched query leaves it out of the softmax.
    alone = rank_contrastive_loss(scores, neg, labels, valid, 0.5, torch.tensor([False]))
    log_z = math.log(sum(math.exp(v) for v in logits[:3]))
    assert alone.item() == pytest.approx(-((2.0 - log_z) + (0.0 - log_z)) / 2 / 12, rel=1e-5)


def test_mismatched_query_loss_sums_clips_and_averages_rows():
    neg = torch.tensor([[0.0, 2.0, 30.0], [1.0, -1.0, 0.5]])
    valid = torch.tensor([[1, 1, 0], [1, 1, 1]])
    row0 = -(math.log(1 - 0.5) + math.log(1 - 1 / (1 + math.exp(-2.0))))
    row1 = -sum(math.log(1 - 1 / (1 + math.exp(-x))) for x in (1.0, -1.0, 0.5))
    assert mismatched_query_loss(neg, valid).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    only_first = mismatched_query_loss(neg, valid, torch.tensor([True, False]))
    assert only_first.item() == pytest.approx(row0, rel=1e-6)
    # Large scores stay finite (the original's log(1 - sigmoid) would give inf).
    assert torch.isfinite(mismatched_query_loss(torch.tensor([[40.0]]), torch.ones(1, 1)))


def test_set_losses_perfect_match_and_class_weights():
    criterion = SetCriterion(LossConfig(), "moment_detr")
    spans = torch.tensor([[[0.5, 0.2], [0.1, 0.05], [0.8, 0.3]]])
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    losses = criterion.set_losses(logits, spans, [torch.tensor([[0.5, 0.2]])])
    assert losses["loss_span"].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    # Query 0 is foreground (weight 1), queries 1-2 background (weight 0.1); the weighted
    # terms are averaged over B x Q (reduction="none" then mean), as the originals.
    log_softmax = torch.log_softmax(logits[0], dim=-1)
    expected = (-(log_softmax[0, 0]) - 0.1 * log_softmax[1, 1] - 0.1 * log_softmax[2, 1]) / 3
    assert losses["loss_label"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_set_losses_average_over_matched_spans_and_coordinates():
    criterion = SetCriterion(LossConfig(), "qd_detr")
    spans = torch.tensor([[[0.5, 0.2], [0.2, 0.2]], [[0.3, 0.1], [0.9, 0.1]]])
    logits = torch.zeros(2, 2, 2)
    targets = [torch.tensor([[0.5, 0.4]]), torch.tensor([[0.3, 0.1], [0.9, 0.2]])]
    losses = criterion.set_losses(logits, spans, targets)
    # L1 over (cx, w): 0.2 (row 0) + 0 + 0.1 -> mean over 3 spans x 2 coordinates.
    assert losses["loss_span"].item() == pytest.approx(0.3 / 6, abs=1e-6)
    # gIoU: [0.4,0.6] vs [0.3,0.7]: 0.2/0.4; [0.85,0.95] vs [0.8,1.0]: 0.1/0.2; exact: 1.
    assert losses["loss_giou"].item() == pytest.approx((0.5 + 0.5 + 0.0) / 3, abs=1e-6)
