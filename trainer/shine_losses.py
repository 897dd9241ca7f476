"""SHINE's coarse-to-fine saliency ranking losses (Cheng et al., ECCV 2024, Sec. 3.3-3.4).

Public, model-agnostic functions: give them saliency scores of a DETR-style model
(one score per video clip and query), the ground-truth window mask and the valid-clip mask,
and they return a scalar loss. Everything is vectorised over the batch with masks; there is
no Python loop over samples.

Shapes: B rows (video-query pairs), T clips (padded). ``window_mask`` (B, T) is 1 for clips
inside the ground-truth window (the saliency pseudo-label Y), ``valid_mask`` (B, T) is 1 for
real (non-padding) clips. Masks may be float or bool.

Choices the paper leaves open (documented here, tested in tests/trainer/test_shine_losses.py):

* A row takes part in L_cr only when its window holds at least one valid clip (T+ >= 1).
  Each term is averaged over the rows that take part in it: L_inter additionally needs a
  valid in-batch negative (``inbatch_row_mask``). When every row qualifies this is exactly
  the batch mean of Eq. 1.
* When no valid clip lies outside the window, S_p^- is undefined and that row's L_intra
  term is 0 (it still counts in the mean: there is nothing to rank).
* In Eq. 4, T is the number of valid clips of the row and the sum runs over valid clips.
  log(sigma(s)) is computed as ``logsigmoid(s)``, which is exact and never log(0), so no
  clamping is needed.
* L_fr takes any number K >= 1 of hard-negative levels (the paper and the released code: 3):
  the chain of Eq. 3 then has K + 2 distances and K + 1 hinge terms, and K = 3 is exactly
  Eq. 3. Margins and term switches are given per term, or as one value for every term.
* L_fr rows: ``row_mask`` (rows whose hard negatives are valid) and at least one valid
  clip; the last term (which uses the in-batch negative S_n) additionally needs
  ``inbatch_row_mask``. Each term is averaged over its eligible rows.
* A loss with no eligible row is an exact 0 that stays connected to the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from negforge.trainer.model_config import ShineConfig

_T = TypeVar("_T")


def _masked_row_mean(values: Tensor, rows: Tensor) -> Tensor:
    """Mean of (B,) ``values`` over the rows where ``rows`` is true; 0 when none is."""
    rows = rows.to(torch.bool)
    total = torch.where(rows, values, torch.zeros_like(values)).sum()
    return total / rows.sum().clamp(min=1).to(values.dtype)


def topk_window_mean(scores: Tensor, window_mask: Tensor, q: int) -> Tensor:
    """Eq. 2: mean of the top-k scores inside the window, k = max(1, floor(T+ / q)).

    ``scores`` (B, T), ``window_mask`` (B, T) -> (B,). Rows with an empty window give 0.
    """
    inside = window_mask.to(torch.bool)
    t_plus = inside.sum(dim=1)
    k = torch.clamp(torch.div(t_plus, q, rounding_mode="floor"), min=1)
    k_max = int(k.max().item()) if k.numel() else 1
    masked = torch.where(inside, scores, torch.full_like(scores, float("-inf")))
    top = masked.topk(k_max, dim=1).values  # (B, k_max), sorted descending
    rank = torch.arange(k_max, device=scores.device)
    keep = (rank[None, :] < k[:, None]) & (rank[None, :] < t_plus[:, None])
    summed = torch.where(keep, top, torch.zeros_like(top)).sum(dim=1)
    return summed / k.to(scores.dtype)


class CoarseRankingTerms(NamedTuple):
    """L_intra and L_inter of Eq. 1, each already averaged over its rows."""

    intra: Tensor
    inter: Tensor


def coarse_ranking_terms(
    pos_scores: Tensor,
    inbatch_neg_scores: Tensor | None,
    window_mask: Tensor,
    valid_mask: Tensor,
    *,
    q: int = 8,
    h1: float = 1.0,
    h2: float = 2.0,
    inbatch_row_mask: Tensor | None = None,
) -> CoarseRankingTerms:
    """The two terms of Eq. 1 (see ``coarse_ranking_loss``)."""
    valid = valid_mask.to(torch.bool)
    inside = window_mask.to(torch.bool) & valid
    outside = valid & ~inside
    has_window = inside.any(dim=1)
    # S_p^+ (Eq. 2 on the positive query's scores inside the window).
    s_pos_plus = topk_window_mean(pos_scores, inside, q)
    # S_p^-: maximum positive score outside the window (valid clips only).
    has_outside = outside.any(dim=1)
    masked_out = torch.where(outside, pos_scores, torch.full_like(pos_scores, float("-inf")))
    s_pos_minus = torch.where(
        has_outside, masked_out.max(dim=1).values, torch.zeros_like(s_pos_plus)
    )
    # L_intra = max(0, h1 + S_p^- - S_p^+); 0 for a row without any clip outside the window.
    intra_rows = torch.where(
        has_outside, F.relu(h1 + s_pos_minus - s_pos_plus), torch.zeros_like(s_pos_plus)
    )
    intra = _masked_row_mean(intra_rows, has_window)
    if inbatch_neg_scores is None:
        return CoarseRankingTerms(intra, pos_scores.sum() * 0.0)
    # S_n^+: Eq. 2 on the in-batch negative's scores inside the same window.
    s_neg_plus = topk_window_mean(inbatch_neg_scores, inside, q)
    # L_inter = max(0, h2 + S_n^+ - S_p^+).
    inter_rows = F.relu(h2 + s_neg_plus - s_pos_plus)
    inter_eligible = has_window
    if inbatch_row_mask is not None:
        inter_eligible = inter_eligible & inbatch_row_mask.to(torch.bool)
    inter = _masked_row_mean(inter_rows, inter_eligible)
    return CoarseRankingTerms(intra, inter)


def coarse_ranking_loss(
    pos_scores: Tensor,
    inbatch_neg_scores: Tensor | None,
    window_mask: Tensor,
    valid_mask: Tensor,
    *,
    q: int = 8,
    h1: float = 1.0,
    h2: float = 2.0,
    use_intra: bool = True,
    use_inter: bool = True,
    inbatch_row_mask: Tensor | None = None,
) -> Tensor:
    """Coarse-grained saliency ranking loss L_cr (Eq. 1-2).

    L_cr = max(0, h1 + S_p^- - S_p^+) [L_intra] + max(0, h2 + S_n^+ - S_p^+) [L_inter]

    Args:
        pos_scores: (B, T) saliency of each video with its own query (S_p).
        inbatch_neg_scores: (B, T) saliency of the same video with the in-batch negative
            query (S_n), or None (then L_inter is 0).
        window_mask: (B, T) 1 inside the ground-truth window (V_p^+).
        valid_mask: (B, T) 1 for real clips.
        q: top-k ratio: S^+ is the mean of the k = max(1, floor(T+/q)) largest scores.
        h1, h2: margins of L_intra and L_inter.
        use_intra, use_inter: the ablation switches of Table 3.
        inbatch_row_mask: (B,) rows whose in-batch negative is valid (default: all).

    Returns:
        Scalar: the enabled terms, each averaged over its eligible rows (module docstring).
    """
    terms = coarse_ranking_terms(
        pos_scores,
        inbatch_neg_scores,
        window_mask,
        valid_mask,
        q=q,
        h1=h1,
        h2=h2,
        inbatch_row_mask=inbatch_row_mask,
    )
    loss = pos_scores.sum() * 0.0
    if use_intra:
        loss = loss + terms.intra
    if use_inter:
        loss = loss + terms.inter
    return loss


def saliency_cross_entropy(target: Tensor, scores: Tensor, valid_mask: Tensor) -> Tensor:
    """Eq. 4: d(y, y_hat) = -(1/T) sum_i y_i log(y_hat_i), y_hat = sigma(scores).

    ``target`` (..., T) probabilities, ``scores`` (..., T) logits, ``valid_mask`` broadcastable
    to them: the sum and T run over valid clips. Returns (...,).
    """
    valid = valid_mask.to(torch.bool)
    log_prob = F.logsigmoid(scores)  # log(sigma(s)) without log(0)
    per_clip = torch.where(valid, target * log_prob, torch.zeros_like(log_prob))
    count = valid.sum(dim=-1).clamp(min=1).to(scores.dtype)
    return -per_clip.sum(dim=-1) / count


def fine_ranking_distances(
    pos_scores: Tensor,
    hard_neg_scores: Tensor,
    inbatch_neg_scores: Tensor,
    window_mask: Tensor,
    valid_mask: Tensor,
) -> Tensor:
    """The K + 2 distances of Eq. 3 per row, (B, K + 2) for (B, K, T) hard negatives.

    d1 = d(Y, S_p) with Y the 0/1 window mask; d2..d(K+1) = d(S_p, S_hn^1..K);
    d(K+2) = d(S_p, S_n) (K = 3: d1..d5). The teacher y = sigma(S_p) is detached, so the
    student side (the negatives' scores) receives the gradient; d1 trains S_p towards the
    window.
    """
    valid = valid_mask.to(torch.bool)
    window = (window_mask.to(torch.bool) & valid).to(pos_scores.dtype)
    teacher = torch.sigmoid(pos_scores).detach()
    d1 = saliency_cross_entropy(window, pos_scores, valid)
    d_hard = saliency_cross_entropy(teacher[:, None, :], hard_neg_scores, valid[:, None, :])
    d5 = saliency_cross_entropy(teacher, inbatch_neg_scores, valid)
    return torch.cat((d1[:, None], d_hard, d5[:, None]), dim=1)


def _per_term(values: Sequence[_T], terms: int, name: str) -> tuple[_T, ...]:
    """``values`` for ``terms`` hinge terms: one each, or one value for all of them."""
    if len(values) == 1:
        return tuple(values) * terms
    if len(values) != terms:
        raise ValueError(f"{name}: {len(values)} values for {terms} hinge terms of L_fr")
    return tuple(values)


def fine_ranking_terms(
    pos_scores: Tensor,
    hard_neg_scores: Tensor,
    inbatch_neg_scores: Tensor | None,
    window_mask: Tensor,
    valid_mask: Tensor,
    *,
    margins: Sequence[float] = (0.25,),
    mode: Literal["chain", "anchored"] = "chain",
    row_mask: Tensor | None = None,
    inbatch_row_mask: Tensor | None = None,
) -> Tensor:
    """The K + 1 hinge terms of Eq. 3, each averaged over its eligible rows: (K + 1,)."""
    if mode not in ("chain", "anchored"):
        raise ValueError(f"fine ranking mode must be 'chain' or 'anchored', got {mode!r}")
    levels = hard_neg_scores.shape[1]
    if levels < 1:
        raise ValueError("L_fr needs at least one hard-negative level")
    margins = _per_term(margins, levels + 1, "margins")
    valid = valid_mask.to(torch.bool)
    batch = pos_scores.shape[0]
    if inbatch_neg_scores is None:
        # The in-batch negative is absent: the fourth term has no eligible row.
        inbatch_neg_scores = pos_scores.detach()
        inbatch_row_mask = torch.zeros(batch, dtype=torch.bool, device=pos_scores.device)
    d = fine_ranking_distances(pos_scores, hard_neg_scores, inbatch_neg_scores, window_mask, valid)
    margin = torch.tensor(margins, dtype=d.dtype, device=d.device)
    # K = 3, chain (Eq. 3): [m0 + d1 - d2]+ + [m1 + d2 - d3]+ + [m2 + d3 - d4]+ + [m3 + d4 - d5]+
    # anchored on d2:       [m0 + d1 - d2]+ + [m1 + d2 - d3]+ + [m2 + d2 - d4]+ + [m3 + d2 - d5]+
    anchored_lower = torch.cat((d[:, 0:1], d[:, 1:2].expand(-1, levels)), dim=1)
    lower = d[:, : levels + 1] if mode == "chain" else anchored_lower
    upper = d[:, 1:]
    hinge = F.relu(margin + lower - upper)  # (B, K + 1)
    rows = valid.any(dim=1)
    if row_mask is not None:
        rows = rows & row_mask.to(torch.bool)
    last_rows = rows
    if inbatch_row_mask is not None:
        last_rows = rows & inbatch_row_mask.to(torch.bool)
    eligible = torch.stack((*[rows] * levels, last_rows), dim=1)  # (B, K + 1)
    summed = torch.where(eligible, hinge, torch.zeros_like(hinge)).sum(dim=0)
    return summed / eligible.sum(dim=0).clamp(min=1).to(hinge.dtype)


def fine_ranking_loss(
    pos_scores: Tensor,
    hard_neg_scores: Tensor,
    inbatch_neg_scores: Tensor | None,
    window_mask: Tensor,
    valid_mask: Tensor,
    *,
    margins: Sequence[float] = (0.25,),
    terms: Sequence[bool] = (True,),
    mode: Literal["chain", "anchored"] = "chain",
    row_mask: Tensor | None = None,
    inbatch_row_mask: Tensor | None = None,
) -> Tensor:
    """Fine-grained saliency ranking loss L_fr (Eq. 3-4).

    With d1 = d(Y, S_p), d2..d4 = d(S_p, S_hn^1..3) (closest negative first) and
    d5 = d(S_p, S_n), where d is the cross-entropy of Eq. 4 on sigmoid scores:

    * ``mode="chain"`` (Eq. 3): [m0+d1-d2]+ + [m1+d2-d3]+ + [m2+d3-d4]+ + [m3+d4-d5]+
    * ``mode="anchored"`` (the released code's other mode):
      [m0+d1-d2]+ + [m1+d2-d3]+ + [m2+d2-d4]+ + [m3+d2-d5]+

    K hard-negative levels extend the chain to d1..d(K+2) and K + 1 terms (anchored: every
    term after the first is [m_i + d2 - d(i+2)]+).

    Args:
        pos_scores: (B, T) S_p. hard_neg_scores: (B, K, T) S_hn^1..K (K = 3 in the paper).
        inbatch_neg_scores: (B, T) S_n or None (the last term is then 0).
        window_mask, valid_mask: (B, T) as in ``coarse_ranking_loss``.
        margins: m0..mK, or one margin for every term. terms: switch each hinge term on/off
            (Table 4), or one switch for all.
        row_mask: (B,) rows whose hard negatives are valid (default: all).
        inbatch_row_mask: (B,) rows whose in-batch negative is valid (default: all).

    Returns:
        Scalar: the enabled terms, each averaged over its eligible rows.
    """
    per_term_losses = fine_ranking_terms(
        pos_scores,
        hard_neg_scores,
        inbatch_neg_scores,
        window_mask,
        valid_mask,
        margins=margins,
        mode=mode,
        row_mask=row_mask,
        inbatch_row_mask=inbatch_row_mask,
    )
    switches = _per_term(terms, per_term_losses.shape[0], "terms")
    switch = torch.tensor(switches, dtype=torch.bool, device=per_term_losses.device)
    return torch.where(switch, per_term_losses, torch.zeros_like(per_term_losses)).sum()


def shine_losses(
    pos_scores: Tensor,
    hard_neg_scores: Tensor | None,
    inbatch_neg_scores: Tensor | None,
    window_mask: Tensor,
    valid_mask: Tensor,
    cfg: ShineConfig,
    *,
    hard_neg_valid: Tensor | None = None,
    inbatch_valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """alpha * L_cr + beta * L_fr of Eq. 5 with every part, for logging.

    Rows whose hard negatives are missing or invalid (``hard_neg_valid`` false) get L_cr only;
    rows without a valid in-batch negative (``inbatch_valid`` false) lose L_inter and the
    last fine term. Returns ``loss_intra``, ``loss_inter``, ``loss_cr``, ``loss_fr``,
    ``loss_fr_0..K`` (one per hinge term for K levels: those of ``hard_neg_scores``, else
    ``cfg.levels``; unweighted, disabled parts reported as 0) and ``loss_shine``
    (= alpha * loss_cr + beta * loss_fr).
    """
    zero = pos_scores.sum() * 0.0
    coarse = coarse_ranking_terms(
        pos_scores,
        inbatch_neg_scores,
        window_mask,
        valid_mask,
        q=cfg.q,
        h1=cfg.h1,
        h2=cfg.h2,
        inbatch_row_mask=inbatch_valid,
    )
    intra = coarse.intra if cfg.use_intra else zero
    inter = coarse.inter if cfg.use_inter else zero
    parts = {"loss_intra": intra, "loss_inter": inter, "loss_cr": intra + inter}
    if hard_neg_scores is not None:
        if cfg.levels is not None and hard_neg_scores.shape[1] != cfg.levels:
            raise ValueError(
                f"{hard_neg_scores.shape[1]} hard-negative levels scored, "
                f"loss.shine.levels is {cfg.levels}"
            )
        per_term = fine_ranking_terms(
            pos_scores,
            hard_neg_scores,
            inbatch_neg_scores,
            window_mask,
            valid_mask,
            margins=cfg.margins,
            mode=cfg.fine_ranking,
            row_mask=hard_neg_valid,
            inbatch_row_mask=inbatch_valid,
        )
        switches = _per_term(cfg.fine_terms, per_term.shape[0], "fine_terms")
        switch = torch.tensor(switches, dtype=torch.bool, device=per_term.device)
        per_term = torch.where(switch, per_term, torch.zeros_like(per_term))
        fine = per_term.sum()
        terms = list(per_term.unbind())
    else:
        fine = zero
        terms = [zero] * (cfg.levels + 1 if cfg.levels else 0)
    parts["loss_fr"] = fine
    for index, term in enumerate(terms):
        parts[f"loss_fr_{index}"] = term
    parts["loss_shine"] = cfg.alpha * parts["loss_cr"] + cfg.beta * fine
    return parts
