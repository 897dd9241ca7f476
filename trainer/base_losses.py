"""The full training objective (Eq. 5): L_base of the backbone + alpha L_cr + beta L_fr.

L_base is the originals' ``SetCriterion`` term for term, with the same normalisations:

* ``loss_span``: L1 of the matched (centre, width), mean over matched spans x 2 coordinates;
* ``loss_giou``: 1 - gIoU of the matched spans, mean over matched spans;
* ``loss_label``: 2-class cross-entropy, matched queries foreground, background weighted
  ``eos_coef``, the weighted per-query terms averaged over B x Q (not over the weights);
* the three again for every earlier decoder layer (``_0``, ``_1``, ...), each re-matched;
* ``loss_saliency``: Moment-DETR's hinge on the sampled (inside, outside) clip pairs,
  sum / (B x pairs) x 2; QD-DETR adds its rank-contrastive loss and the mismatched-query
  loss, one term as in the original. The parts are logged as ``loss_saliency_hinge``,
  ``loss_saliency_rc`` and ``loss_saliency_neg``.

The base loss is always computed, the SHINE terms only in training, and the in-batch negative
is a query of another video: its scores enter QD-DETR's terms where the original uses the
next row of the batch (docs/trainer_model.md, "Deliberate differences from the authors'
release").

Targets (dict): ``spans`` list of (n_i, 2) normalised (centre, width) windows,
``saliency_labels`` (B, L) 0/1 window mask (SHINE), ``saliency_all_labels`` (B, L) graded
labels of the rank-contrastive loss (default: ``saliency_labels``), ``saliency_pos_labels``
and ``saliency_neg_labels`` (B, P) sampled clip indices of the hinge, ``video_mask`` (B, L),
optionally ``hard_neg_valid`` (B,) bool.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from negforge.trainer.matcher import HungarianMatcher
from negforge.trainer.model_config import LossConfig
from negforge.trainer.shine_losses import shine_losses
from negforge.trainer.span_utils import generalized_temporal_iou, span_cxw_to_xx

#: Score given to padded clips before the rank-contrastive softmax (QD-DETR's -1e3).
PADDED_SCORE = -1e3
#: The graded saliency labels run over ranks 1..11; the sum is divided by 12 (QD-DETR).
RANK_LEVELS = 11
RANK_DIVISOR = 12


def saliency_hinge_loss(
    scores: Tensor, pos_clips: Tensor, neg_clips: Tensor, margin: float
) -> Tensor:
    """Moment-DETR's hinge on sampled pairs: sum of max(0, margin + s_neg - s_pos) over the
    (B, P) pairs, divided by B x P, times 2."""
    pos = scores.gather(1, pos_clips.long())
    neg = scores.gather(1, neg_clips.long())
    return (margin + neg - pos).clamp(min=0).sum() / pos.numel() * 2


def rank_contrastive_loss(
    scores: Tensor,
    neg_scores: Tensor | None,
    labels: Tensor,
    valid_mask: Tensor,
    tau: float,
    neg_valid: Tensor | None = None,
) -> Tensor:
    """QD-DETR's rank-contrastive saliency loss.

    The positive query's clip scores and the mismatched query's (label 0) form one softmax
    set per row (padding at -1e3, divided by ``tau``). For each rank r = 1..11 with any clip
    labelled >= r in the batch, every row with such clips adds minus the mean log-probability
    of those clips; each rank's term is averaged over all B rows, and the sum divided by 12.
    A row without a valid mismatched query leaves it out of its set.
    """
    valid = valid_mask.to(scores.dtype)
    all_scores, all_valid, all_labels = scores, valid, labels.to(scores.dtype)
    if neg_scores is not None:
        neg_mask = valid
        if neg_valid is not None:
            neg_mask = valid * neg_valid.to(scores.dtype)[:, None]
        all_scores = torch.cat((scores, neg_scores), dim=1)
        all_valid = torch.cat((valid, neg_mask), dim=1)
        all_labels = torch.cat((all_labels, torch.zeros_like(all_labels)), dim=1)
    logits = (all_valid * all_scores + (1 - all_valid) * PADDED_SCORE) / tau
    logits = logits - logits.max(dim=1, keepdim=True).values
    log_prob = logits - torch.log(logits.exp().sum(dim=1, keepdim=True) + 1e-6)
    ranks = torch.arange(1, RANK_LEVELS + 1, device=scores.device, dtype=scores.dtype)
    positive = (all_labels[None] >= ranks[:, None, None]).to(scores.dtype)  # (R, B, S)
    mean_log_prob = (positive * log_prob[None] * all_valid[None]).sum(2) / (
        positive.sum(2) + 1e-6
    )  # (R, B)
    has_positive = (positive.sum(2) > 0).to(scores.dtype)
    per_rank = (-mean_log_prob * has_positive).mean(dim=1)  # (R,)
    used = positive.flatten(1).sum(1) > 0
    return torch.where(used, per_rank, torch.zeros_like(per_rank)).sum() / RANK_DIVISOR


def mismatched_query_loss(
    neg_scores: Tensor, valid_mask: Tensor, rows: Tensor | None = None
) -> Tensor:
    """QD-DETR's negative-pair loss: -log(1 - sigma(s_neg)) summed over valid clips, averaged
    over rows (rows without a valid mismatched query left out).

    Computed as softplus(s_neg), the same value without the original's overflow to inf once
    sigma(s) rounds to 1.
    """
    per_row = (F.softplus(neg_scores) * valid_mask.to(neg_scores.dtype)).sum(dim=1)
    if rows is None:
        return per_row.mean()
    rows = rows.to(torch.bool)
    total = torch.where(rows, per_row, torch.zeros_like(per_row)).sum()
    return total / rows.sum().clamp(min=1).to(per_row.dtype)


def _on_device(mask: Tensor | None, device: torch.device) -> Tensor | None:
    return None if mask is None else torch.as_tensor(mask, device=device)


class SetCriterion(nn.Module):
    """L_base + alpha L_cr + beta L_fr (Eq. 5) for a Moment-DETR or QD-DETR output dict.

    ``criterion.train()`` / ``criterion.eval()`` switch the SHINE terms on and off.
    """

    def __init__(self, cfg: LossConfig, backbone: str):
        super().__init__()
        if backbone not in ("moment_detr", "qd_detr"):
            raise ValueError(f"unknown backbone {backbone!r}")
        self.cfg = cfg
        self.backbone = backbone
        self.matcher = HungarianMatcher(cfg.match_cls, cfg.match_span_l1, cfg.match_giou)
        self.register_buffer("class_weight", torch.tensor([1.0, cfg.eos_coef]), persistent=False)

    def set_losses(
        self, pred_logits: Tensor, pred_spans: Tensor, target_spans: list[Tensor]
    ) -> dict[str, Tensor]:
        """Matched span L1, span gIoU loss and class cross-entropy of one decoder layer."""
        pred_logits, pred_spans = pred_logits.float(), pred_spans.float()
        matches = self.matcher(pred_logits, pred_spans, target_spans)
        device = pred_spans.device
        batch_index = torch.cat(
            [torch.full_like(query, row) for row, (query, _) in enumerate(matches)]
        ).to(device)
        query_index = torch.cat([query for query, _ in matches]).to(device)
        matched_targets = torch.cat(
            [
                spans.to(device)[target]
                for spans, (_, target) in zip(target_spans, matches, strict=True)
            ]
        ).float()
        matched_preds = pred_spans[batch_index, query_index]
        loss_span = F.l1_loss(matched_preds, matched_targets, reduction="none").mean()
        giou = generalized_temporal_iou(
            span_cxw_to_xx(matched_preds), span_cxw_to_xx(matched_targets)
        )
        loss_giou = (1 - giou.diagonal()).mean()
        target_classes = torch.ones(pred_logits.shape[:2], dtype=torch.long, device=device)
        target_classes[batch_index, query_index] = 0
        class_weight: Tensor = self.class_weight  # type: ignore[assignment]
        loss_label = F.cross_entropy(
            pred_logits.transpose(1, 2),
            target_classes,
            weight=class_weight.to(device),
            reduction="none",
        ).mean()
        return {"loss_span": loss_span, "loss_giou": loss_giou, "loss_label": loss_label}

    def saliency_losses(
        self, out: dict[str, Any], targets: dict[str, Any], valid: Tensor
    ) -> dict[str, Tensor]:
        """The backbone's own saliency loss (part of L_base) and its parts."""
        cfg = self.cfg
        scores = out["saliency_scores"].float()
        parts: dict[str, Tensor] = {}
        shine = cfg.shine
        replaced = shine.enabled and shine.use_intra and shine.intra_replaces_base_saliency
        if not replaced:
            if "saliency_pos_labels" not in targets or "saliency_neg_labels" not in targets:
                raise KeyError("targets need saliency_pos_labels and saliency_neg_labels")
            parts["loss_saliency_hinge"] = saliency_hinge_loss(
                scores,
                targets["saliency_pos_labels"].to(scores.device),
                targets["saliency_neg_labels"].to(scores.device),
                cfg.saliency_margin,
            )
        if self.backbone == "qd_detr":
            neg = out.get("saliency_scores_inbatch_neg")
            neg = neg.float() if neg is not None else None
            neg_valid = out.get("inbatch_neg_valid") if neg is not None else None
            labels = targets.get("saliency_all_labels", targets["saliency_labels"])
            parts["loss_saliency_rc"] = rank_contrastive_loss(
                scores, neg, labels.to(scores.device), valid, cfg.rank_contrastive_tau, neg_valid
            )
            if neg is not None:
                parts["loss_saliency_neg"] = mismatched_query_loss(neg, valid, neg_valid)
        if not parts:
            return {}
        total = torch.stack(list(parts.values())).sum()
        return {"loss_saliency": total, **parts}

    def forward(self, out: dict[str, Any], targets: dict[str, Any]) -> dict[str, Tensor]:
        """Named loss parts and ``loss``, the weighted total."""
        cfg = self.cfg
        target_spans: list[Tensor] = targets["spans"]
        window = targets["saliency_labels"]
        valid = targets.get("video_mask", out["video_mask"])
        weights = {"loss_span": cfg.span_l1, "loss_giou": cfg.giou, "loss_label": cfg.cls}
        losses = self.set_losses(out["pred_logits"], out["pred_spans"], target_spans)
        total = torch.zeros((), device=out["pred_spans"].device)
        for name, value in losses.items():
            total = total + weights[name] * value
        if cfg.aux:
            for layer, aux in enumerate(out.get("aux_outputs", [])):
                aux_losses = self.set_losses(aux["pred_logits"], aux["pred_spans"], target_spans)
                for name, value in aux_losses.items():
                    losses[f"{name}_{layer}"] = value
                    total = total + weights[name] * value
        saliency = self.saliency_losses(out, targets, valid)
        if saliency:
            total = total + cfg.saliency * saliency["loss_saliency"]
            losses.update(saliency)
        has_negatives = "saliency_scores_hard_neg" in out or "saliency_scores_inbatch_neg" in out
        if self.training and cfg.shine.enabled:
            hard = out.get("saliency_scores_hard_neg")
            inbatch = out.get("saliency_scores_inbatch_neg")
            shine = shine_losses(
                out["saliency_scores"].float(),
                hard.float() if hard is not None else None,
                inbatch.float() if inbatch is not None else None,
                window,
                valid,
                cfg.shine,
                hard_neg_valid=_on_device(targets.get("hard_neg_valid"), window.device),
                inbatch_valid=out.get("inbatch_neg_valid") if has_negatives else None,
            )
            total = total + shine.pop("loss_shine")
            losses.update(shine)
        losses["loss"] = total
        return losses


def build_criterion(loss_cfg: LossConfig, backbone: str) -> SetCriterion:
    """The criterion for ``backbone`` ("moment_detr" or "qd_detr")."""
    return SetCriterion(loss_cfg, backbone)
