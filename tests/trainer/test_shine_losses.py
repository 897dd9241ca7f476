"""SHINE's L_cr (Eq. 1-2) and L_fr (Eq. 3-4) against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from negforge.errors import ConfigError
from negforge.trainer.model_config import ShineConfig
from negforge.trainer.shine_losses import (
    coarse_ranking_loss,
    coarse_ranking_terms,
    fine_ranking_loss,
    fine_ranking_terms,
    saliency_cross_entropy,
    shine_losses,
    topk_window_mean,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- coarse (Eq. 1-2)
# Row 0: window = clips 1..2 (T+ = 2), all 5 clips valid.
# Row 1: window = clips 0..3 (T+ = 4), clip 4 is padding (its huge scores must be ignored),
#        so no valid clip lies outside the window.
POS = [[0.5, 1.2, 1.0, -1.0, 0.3], [0.1, 0.7, -0.2, 0.5, 9.0]]
NEG = [[0.0, 0.4, 0.9, 3.0, 0.0], [1.0, 0.2, 0.8, -0.5, 5.0]]
WINDOW = [[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
VALID = [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]


def coarse_inputs(dtype: torch.dtype = torch.float32):
    return (torch.tensor(POS, dtype=dtype), torch.tensor(NEG, dtype=dtype),
            torch.tensor(WINDOW), torch.tensor(VALID))


def test_coarse_ranking_hand_computed_q2():
    # q = 2: row 0 k = max(1, floor(2/2)) = 1, row 1 k = floor(4/2) = 2.
    # Row 0: S_p+ = max(1.2, 1.0) = 1.2; S_p- = max(0.5, -1.0, 0.3) = 0.5;
    #        S_n+ = max(0.4, 0.9) = 0.9.
    #        L_intra = max(0, 1 + 0.5 - 1.2) = 0.3; L_inter = max(0, 2 + 0.9 - 1.2) = 1.7.
    # Row 1: S_p+ = (0.7 + 0.5) / 2 = 0.6; no valid clip outside -> L_intra = 0;
    #        S_n+ = (1.0 + 0.8) / 2 = 0.9; L_inter = 2 + 0.9 - 0.6 = 2.3.
    pos, neg, window, valid = coarse_inputs()
    terms = coarse_ranking_terms(pos, neg, window, valid, q=2, h1=1.0, h2=2.0)
    assert terms.intra.item() == pytest.approx((0.3 + 0.0) / 2, abs=1e-6)
    assert terms.inter.item() == pytest.approx((1.7 + 2.3) / 2, abs=1e-6)
    loss = coarse_ranking_loss(pos, neg, window, valid, q=2)
    assert loss.item() == pytest.approx(0.15 + 2.0, abs=1e-6)


def test_coarse_ranking_default_q8_uses_single_max():
    # q = 8: k = max(1, floor(T+/8)) = 1 for both rows -> S+ is the maximum inside.
    # Row 1: S_p+ = 0.7, S_n+ = 1.0 -> L_inter = 2 + 1.0 - 0.7 = 2.3 (row 0 unchanged 1.7).
    pos, neg, window, valid = coarse_inputs()
    terms = coarse_ranking_terms(pos, neg, window, valid)
    assert terms.inter.item() == pytest.approx((1.7 + 2.3) / 2, abs=1e-6)
    assert terms.intra.item() == pytest.approx(0.15, abs=1e-6)


def test_topk_window_mean_floor_and_empty_window():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0],
                           [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    window = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    # T+ = 7, q = 3 -> k = floor(7/3) = 2 -> (5 + 4) / 2; empty window -> 0.
    out = topk_window_mean(scores, window, q=3)
    assert out.tolist() == pytest.approx([4.5, 0.0])


def test_coarse_switches_change_exactly_their_term():
    pos, neg, window, valid = coarse_inputs()
    both = coarse_ranking_loss(pos, neg, window, valid, q=2)
    intra_only = coarse_ranking_loss(pos, neg, window, valid, q=2, use_inter=False)
    inter_only = coarse_ranking_loss(pos, neg, window, valid, q=2, use_intra=False)
    none = coarse_ranking_loss(pos, neg, window, valid, q=2, use_intra=False, use_inter=False)
    assert intra_only.item() == pytest.approx(0.15, abs=1e-6)
    assert inter_only.item() == pytest.approx(2.0, abs=1e-6)
    assert none.item() == 0.0
    assert both.item() == pytest.approx(intra_only.item() + inter_only.item(), abs=1e-6)


def test_coarse_masks_padding_and_invalid_inbatch_rows():
    pos, neg, window, valid = coarse_inputs()
    base = coarse_ranking_loss(pos, neg, window, valid, q=2)
    # Changing padded clip scores changes nothing.
    pos2, neg2 = pos.clone(), neg.clone()
    pos2[1, 4] = -50.0
    neg2[1, 4] = 80.0
    assert coarse_ranking_loss(pos2, neg2, window, valid, q=2).item() == pytest.approx(base.item())
    # A row without a valid in-batch negative drops out of L_inter's mean (row 0 alone: 1.7).
    terms = coarse_ranking_terms(pos, neg, window, valid, q=2,
                                 inbatch_row_mask=torch.tensor([True, False]))
    assert terms.inter.item() == pytest.approx(1.7, abs=1e-6)
    assert terms.intra.item() == pytest.approx(0.15, abs=1e-6)
    # A row with an empty window takes no part in L_cr.
    window3 = window.clone()
    window3[1] = 0
    terms = coarse_ranking_terms(pos, neg, window3, valid, q=2)
    assert terms.intra.item() == pytest.approx(0.3, abs=1e-6)
    assert terms.inter.item() == pytest.approx(1.7, abs=1e-6)
    # Without an in-batch negative at all, L_inter is 0.
    assert coarse_ranking_terms(pos, None, window, valid, q=2).inter.item() == 0.0


def test_coarse_gradient_matches_autograd_gradcheck():
    pos, neg, window, valid = coarse_inputs(torch.float64)
    pos.requires_grad_(True)
    neg.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, n: coarse_ranking_loss(p, n, window, valid, q=2), (pos, neg)
    )
    loss = coarse_ranking_loss(pos, neg, window, valid, q=2)
    loss.backward()
    # Hand-derived: row 0 intra (active) pushes S_p- = pos[0,0] up by 1/2 and S_p+ = pos[0,1]
    # down by 1/2; inter (active in both rows) pushes pos[0,1] down by 1/2 and S_n+ = neg[0,2]
    # up by 1/2; row 1: S_p+ averages pos[1,1], pos[1,3] (k=2) -> -1/2 * 1/2 each.
    assert pos.grad is not None and neg.grad is not None
    assert pos.grad[0].tolist() == pytest.approx([0.5, -1.0, 0.0, 0.0, 0.0])
    assert pos.grad[1].tolist() == pytest.approx([0.0, -0.25, 0.0, -0.25, 0.0])
    assert neg.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0, 0.0])
    assert neg.grad[1].tolist() == pytest.approx([0.25, 0.0, 0.25, 0.0, 0.0])


# ---------------------------------------------------------------- fine (Eq. 3-4)
# One row, 3 valid clips + 1 padding clip; window = clip 0.
F_POS = [2.0, 0.0, -1.0, 7.0]
F_NEGS = [[1.5, 0.5, -2.0, 3.0], [0.8, 0.3, -1.5, -3.0], [0.0, -0.5, -1.0, 1.0]]
F_INBATCH = [-0.2, -0.6, -1.2, 4.0]
F_WINDOW = [1, 0, 0, 0]
F_VALID = [1, 1, 1, 0]
F_MARGINS = (0.5, 0.25, 0.25, 0.25)


def hand_distances() -> list[float]:
    """Eq. 4 written out: d(y, s) = -(1/T) sum_i y_i log sigmoid(s_i) over the 3 valid clips."""

    def d(y, s):
        return -sum(a * math.log(sigmoid(b)) for a, b in zip(y, s[:3], strict=True)) / 3

    teacher = [sigmoid(p) for p in F_POS[:3]]
    return [d(F_WINDOW[:3], F_POS)] + [d(teacher, n) for n in [*F_NEGS, F_INBATCH]]


def fine_inputs(dtype: torch.dtype = torch.float32):
    return (torch.tensor([F_POS], dtype=dtype), torch.tensor([F_NEGS], dtype=dtype),
            torch.tensor([F_INBATCH], dtype=dtype), torch.tensor([F_WINDOW]),
            torch.tensor([F_VALID]))


def test_saliency_cross_entropy_matches_eq4():
    target = torch.tensor([[0.2, 0.9, 0.5]])
    scores = torch.tensor([[0.3, -1.0, 2.0]])
    valid = torch.tensor([[1, 1, 0]])
    expected = -(0.2 * math.log(sigmoid(0.3)) + 0.9 * math.log(sigmoid(-1.0))) / 2
    out = saliency_cross_entropy(target, scores, valid)
    assert out.item() == pytest.approx(expected, rel=1e-6)
    # Very negative logits stay finite (no log(0)).
    assert torch.isfinite(saliency_cross_entropy(target, torch.full((1, 3), -1e4), valid)).all()


def test_fine_chain_hand_computed():
    d = hand_distances()
    expected = [max(0.0, m + d[i] - d[i + 1]) for i, m in enumerate(F_MARGINS)]
    # The example is built so that terms 0..3 are all active and differ from "anchored".
    assert all(e > 0.05 for e in expected)
    pos, hard, inbatch, window, valid = fine_inputs()
    terms = fine_ranking_terms(pos, hard, inbatch, window, valid, margins=F_MARGINS)
    assert terms.tolist() == pytest.approx(expected, abs=1e-6)
    loss = fine_ranking_loss(pos, hard, inbatch, window, valid, margins=F_MARGINS)
    assert loss.item() == pytest.approx(sum(expected), abs=1e-6)


def test_fine_anchored_hand_computed_differs_from_chain():
    d = hand_distances()
    expected = [max(0.0, F_MARGINS[0] + d[0] - d[1])] + [
        max(0.0, F_MARGINS[j - 1] + d[1] - d[j]) for j in (2, 3, 4)
    ]
    pos, hard, inbatch, window, valid = fine_inputs()
    anchored = fine_ranking_terms(pos, hard, inbatch, window, valid, margins=F_MARGINS,
                                  mode="anchored")
    chain = fine_ranking_terms(pos, hard, inbatch, window, valid, margins=F_MARGINS)
    assert anchored.tolist() == pytest.approx(expected, abs=1e-6)
    assert anchored[:2].tolist() == pytest.approx(chain[:2].tolist())
    assert abs(anchored[2].item() - chain[2].item()) > 1e-3
    assert abs(anchored[3].item() - chain[3].item()) > 1e-3
    with pytest.raises(ValueError):
        fine_ranking_terms(pos, hard, inbatch, window, valid, mode="bogus")  # type: ignore[arg-type]


def test_fine_term_switches_change_exactly_their_term():
    pos, hard, inbatch, window, valid = fine_inputs()
    terms = fine_ranking_terms(pos, hard, inbatch, window, valid, margins=F_MARGINS)
    full = fine_ranking_loss(pos, hard, inbatch, window, valid, margins=F_MARGINS)
    for index in range(4):
        switches = [True] * 4
        switches[index] = False
        off = fine_ranking_loss(pos, hard, inbatch, window, valid, margins=F_MARGINS,
                                terms=tuple(switches))
        assert (full - off).item() == pytest.approx(terms[index].item(), abs=1e-6)


def test_fine_teacher_is_detached_and_gradcheck():
    pos, hard, inbatch, window, valid = fine_inputs(torch.float64)
    for tensor in (pos, hard, inbatch):
        tensor.requires_grad_(True)
    # Finite differences on the negatives' scores (the student side) match autograd. S_p is
    # held fixed here: its analytic gradient deliberately ignores the detached teacher.
    assert torch.autograd.gradcheck(
        lambda h, n: fine_ranking_loss(pos.detach(), h, n, window, valid, margins=F_MARGINS),
        (hard, inbatch),
    )
    # Only term 0 (through d(Y, S_p)) reaches S_p: the teacher sigma(S_p) is detached.
    # d(Y, S_p) = -(1/3) log sigma(S_p[0]) -> dL/dS_p[0] = -(1/3) * (1 - sigma(2.0)).
    loss = fine_ranking_loss(pos, hard, inbatch, window, valid, margins=F_MARGINS,
                             terms=(True, False, False, False))
    loss.backward()
    assert pos.grad is not None
    assert pos.grad[0, 0].item() == pytest.approx(-(1 - sigmoid(2.0)) / 3, rel=1e-9)
    assert pos.grad[0, 1:].abs().max().item() == 0.0
    # Term 0 = [m0 + d1 - d2]+ also pushes S_hn^1 up (its d2 down): d d2 / d s = -(1/3) y (1 - sig).
    assert hard.grad is not None
    expected = [-(-(1 / 3) * sigmoid(F_POS[i]) * (1 - sigmoid(F_NEGS[0][i]))) for i in range(3)]
    assert hard.grad[0, 0, :3].tolist() == pytest.approx(expected, rel=1e-9)
    assert hard.grad[0, 0, 3].item() == 0.0  # padding clip


def test_fine_row_masks_and_padding():
    pos, hard, inbatch, window, valid = fine_inputs()
    two = [torch.cat((t, t)) for t in (pos, hard, inbatch, window, valid)]
    # Second row flagged invalid: its values do not matter, the loss equals the single row's.
    two[1][1] = two[1][1] * 3.0 + 1.0
    single = fine_ranking_loss(pos, hard, inbatch, window, valid, margins=F_MARGINS)
    masked = fine_ranking_loss(*two, margins=F_MARGINS, row_mask=torch.tensor([True, False]))
    assert masked.item() == pytest.approx(single.item(), abs=1e-6)
    # Padding clip scores are ignored.
    hard2 = hard.clone()
    hard2[0, :, 3] = -40.0
    assert fine_ranking_loss(pos, hard2, inbatch, window, valid, margins=F_MARGINS).item() == (
        pytest.approx(single.item(), abs=1e-6)
    )
    # Without a valid in-batch negative the last term has no eligible row.
    terms = fine_ranking_terms(pos, hard, inbatch, window, valid, margins=F_MARGINS,
                               inbatch_row_mask=torch.tensor([False]))
    assert terms[3].item() == 0.0
    assert fine_ranking_terms(pos, hard, None, window, valid)[3].item() == 0.0


def test_vectorised_batch_equals_mean_of_rows():
    generator = torch.Generator().manual_seed(0)
    batch, clips = 6, 9
    pos = torch.randn(batch, clips, generator=generator)
    hard = torch.randn(batch, 3, clips, generator=generator)
    inbatch = torch.randn(batch, clips, generator=generator)
    window = torch.zeros(batch, clips, dtype=torch.long)
    valid = torch.ones(batch, clips, dtype=torch.long)
    for row in range(batch):
        window[row, row : row + 3] = 1
        valid[row, clips - row // 2 :] = 0
    full = fine_ranking_loss(pos, hard, inbatch, window, valid)
    rows = [fine_ranking_loss(pos[r : r + 1], hard[r : r + 1], inbatch[r : r + 1],
                              window[r : r + 1], valid[r : r + 1]) for r in range(batch)]
    assert full.item() == pytest.approx(sum(r.item() for r in rows) / batch, abs=1e-6)
    full_cr = coarse_ranking_loss(pos, inbatch, window, valid)
    rows_cr = [coarse_ranking_loss(pos[r : r + 1], inbatch[r : r + 1], window[r : r + 1],
                                   valid[r : r + 1]) for r in range(batch)]
    assert full_cr.item() == pytest.approx(sum(r.item() for r in rows_cr) / batch, abs=1e-6)


def test_shine_losses_combines_with_alpha_beta_and_switches():
    pos, hard, inbatch, window, valid = fine_inputs()
    cfg = ShineConfig(alpha=0.5, beta=2.0, margins=F_MARGINS, q=2)
    parts = shine_losses(pos, hard, inbatch, window, valid, cfg)
    assert parts["loss_cr"].item() == pytest.approx(
        parts["loss_intra"].item() + parts["loss_inter"].item())
    assert parts["loss_fr"].item() == pytest.approx(
        sum(parts[f"loss_fr_{i}"].item() for i in range(4)), abs=1e-6)
    assert parts["loss_shine"].item() == pytest.approx(
        0.5 * parts["loss_cr"].item() + 2.0 * parts["loss_fr"].item(), abs=1e-6)
    no_inter = shine_losses(pos, hard, inbatch, window, valid, cfg.model_copy(
        update={"use_inter": False}))
    assert no_inter["loss_inter"].item() == 0.0
    assert no_inter["loss_intra"].item() == parts["loss_intra"].item()
    assert no_inter["loss_fr"].item() == parts["loss_fr"].item()
    no_term2 = shine_losses(pos, hard, inbatch, window, valid, cfg.model_copy(
        update={"fine_terms": (True, True, False, True)}))
    assert no_term2["loss_fr_2"].item() == 0.0
    assert no_term2["loss_cr"].item() == parts["loss_cr"].item()
    for index in (0, 1, 3):
        assert no_term2[f"loss_fr_{index}"].item() == parts[f"loss_fr_{index}"].item()
    # Rows with invalid hard negatives keep L_cr and lose L_fr.
    masked = shine_losses(pos, hard, inbatch, window, valid, cfg,
                          hard_neg_valid=torch.tensor([False]))
    assert masked["loss_fr"].item() == 0.0
    assert masked["loss_cr"].item() == parts["loss_cr"].item()


def loop_fine_terms(pos, hard, inbatch, window, valid, margins, mode):
    """Eq. 3 for K levels, one row and one term at a time: the per-term means over rows."""
    levels = hard.shape[1]
    per_row = []
    for b in range(pos.shape[0]):
        n = int(valid[b].sum())
        teacher = torch.sigmoid(pos[b, :n])

        def d(target, scores, n=n):
            return float(-(target * torch.nn.functional.logsigmoid(scores)).sum() / n)

        dist = [d(window[b, :n].float(), pos[b, :n])]
        dist += [d(teacher, hard[b, k, :n]) for k in range(levels)]
        dist.append(d(teacher, inbatch[b, :n]))
        lower = [dist[i] if mode == "chain" or i == 0 else dist[1] for i in range(levels + 1)]
        per_row.append(
            [max(0.0, margins[i] + lower[i] - dist[i + 1]) for i in range(levels + 1)]
        )
    return [sum(row[i] for row in per_row) / len(per_row) for i in range(levels + 1)]


@pytest.mark.parametrize("levels", [1, 2, 4, 5])
@pytest.mark.parametrize("mode", ["chain", "anchored"])
def test_fine_ranking_takes_any_number_of_levels(levels, mode):
    generator = torch.Generator().manual_seed(levels)
    batch, clips = 5, 12
    pos = 2 * torch.randn(batch, clips, generator=generator)
    hard = 2 * torch.randn(batch, levels, clips, generator=generator)
    inbatch = 2 * torch.randn(batch, clips, generator=generator)
    window = torch.zeros(batch, clips, dtype=torch.long)
    valid = torch.ones(batch, clips, dtype=torch.long)
    for row in range(batch):
        window[row, row : row + 4] = 1
        valid[row, clips - row :] = 0
    margins = [0.1 * (i + 1) for i in range(levels + 1)]
    terms = fine_ranking_terms(pos, hard, inbatch, window, valid, margins=margins, mode=mode)
    expected = loop_fine_terms(pos, hard, inbatch, window, valid, margins, mode)
    assert terms.shape == (levels + 1,)
    assert terms.tolist() == pytest.approx(expected, abs=1e-6)
    # One margin / switch stands for every term; any other count is an error.
    one = fine_ranking_loss(pos, hard, inbatch, window, valid, margins=(0.3,), mode=mode)
    each = fine_ranking_loss(pos, hard, inbatch, window, valid, margins=(0.3,) * (levels + 1),
                             terms=(True,) * (levels + 1), mode=mode)
    assert one.item() == pytest.approx(each.item(), abs=1e-7)
    with pytest.raises(ValueError, match="hinge terms"):
        fine_ranking_loss(pos, hard, inbatch, window, valid, margins=(0.3,) * (levels + 2))


def test_shine_losses_report_one_part_per_level():
    pos, hard, inbatch, window, valid = fine_inputs()
    two = hard[:, :2]
    parts = shine_losses(pos, two, inbatch, window, valid, ShineConfig(levels=2))
    fine_parts = sorted(k for k in parts if k.startswith("loss_fr_"))
    assert fine_parts == [f"loss_fr_{i}" for i in range(3)]
    assert parts["loss_fr"].item() == pytest.approx(
        sum(parts[f"loss_fr_{i}"].item() for i in range(3)), abs=1e-6)
    with pytest.raises(ValueError, match="levels"):
        shine_losses(pos, hard, inbatch, window, valid, ShineConfig(levels=2))
    # No hard negatives in the batch: the parts of the run's levels, all 0.
    none = shine_losses(pos, None, inbatch, window, valid, ShineConfig(levels=2))
    assert [none[f"loss_fr_{i}"].item() for i in range(3)] == [0.0, 0.0, 0.0]


def test_shine_config_margins_follow_the_level_count():
    assert ShineConfig(levels=2, margins=(0.1, 0.2, 0.3)).margins == (0.1, 0.2, 0.3)
    with pytest.raises(ValueError, match="2 hard-negative levels make 3 hinge terms"):
        ShineConfig(levels=2, margins=(0.1, 0.2, 0.3, 0.4))
    with pytest.raises(ConfigError, match=r"train\.jsonl: loss\.shine\.fine_terms has 4 values"):
        ShineConfig(fine_terms=(True, True, False, True)).with_levels(2, source="train.jsonl")
    with pytest.raises(ConfigError, match=r"have 2 hard-negative levels but loss\.shine\.levels"):
        ShineConfig(levels=3).with_levels(2)
    assert ShineConfig().with_levels(4).levels == 4
