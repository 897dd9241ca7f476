"""The full training objective (Eq. 5): L_base of the backbone + alpha L_cr + beta L_fr.

``SetCriterion`` computes DETR's set losses after Hungarian matching (span L1, span gIoU,
foreground/background cross-entropy with background weight ``eos_coef``) on the final and
every auxiliary decoder layer, the backbone's saliency losses, and - in training only - the
SHINE losses of ``negforge.trainer.shine_losses``. The base loss is always computed
(REFERENCE.md defect 1); the SHINE terms never at evaluation (defect 3).

Targets (dict): ``spans`` list of (n_i, 2) normalised (centre, width) windows,
``saliency_labels`` (B, L) 0/1 window mask, ``video_mask`` (B, L), optionally
``hard_neg_valid`` (B,) bool.
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

# Finite stand-in for -inf in log-sum-exp (keeps gradients free of NaN).
_VERY_NEGATIVE = -1e9


def _mean_over_rows(values: Tensor, rows: Tensor) -> Tensor:
    rows = rows.to(torch.bool)
    total = torch.where(rows, values, torch.zeros_like(values)).sum()
    return total / rows.sum().clamp(min=1).to(values.dtype)


def saliency_hinge_loss(
    scores: Tensor, window_mask: Tensor, valid_mask: Tensor, margin: float
) -> Tensor:
    """Moment-DETR's saliency hinge: max(0, margin + s_out - s_in).

    Moment-DETR samples one clip inside and one outside the window; here the hinge is
    averaged over every (inside, outside) pair of valid clips (same expectation, no sampling
    noise), then over rows that have both kinds of clips.
    """
    valid = valid_mask.to(torch.bool)
    inside = window_mask.to(torch.bool) & valid
    outside = valid & ~inside
    pairs = inside[:, :, None] & outside[:, None, :]  # (B, in, out)
    hinge = F.relu(margin + scores[:, None, :] - scores[:, :, None])
    per_row = torch.where(pairs, hinge, torch.zeros_like(hinge)).sum(dim=(1, 2))
    count = pairs.sum(dim=(1, 2))
    return _mean_over_rows(per_row / count.clamp(min=1).to(scores.dtype), count > 0)


def mismatched_query_loss(neg_scores: Tensor, valid_mask: Tensor, rows: Tensor | None) -> Tensor:
    """QD-DETR's negative-pair loss: -log(1 - sigma(s_neg)) = softplus(s_neg), averaged over
    valid clips, then over rows with a valid mismatched query."""
    valid = valid_mask.to(torch.bool)
    per_clip = torch.where(valid, F.softplus(neg_scores), torch.zeros_like(neg_scores))
    per_row = per_clip.sum(dim=1) / valid.sum(dim=1).clamp(min=1).to(neg_scores.dtype)
    eligible = valid.any(dim=1)
    if rows is not None:
        eligible = eligible & rows.to(torch.bool)
    return _mean_over_rows(per_row, eligible)


def rank_contrastive_loss(
    scores: Tensor, window_mask: Tensor, valid_mask: Tensor, tau: float
) -> Tensor:
    """QD-DETR's rank-contrastive saliency loss for 0/1 labels.

    Each clip i inside the window is contrasted against every valid clip outside it:
    -log(exp(s_i/tau) / (exp(s_i/tau) + sum_out exp(s_j/tau))), averaged over inside clips,
    then over rows with a non-empty window.
    """
    valid = valid_mask.to(torch.bool)
    inside = window_mask.to(torch.bool) & valid
    outside = valid & ~inside
    logits = scores / tau
    out_logits = torch.where(outside, logits, torch.full_like(logits, _VERY_NEGATIVE))
    out_lse = torch.logsumexp(out_logits, dim=1, keepdim=True)  # (B, 1)
    log_prob = logits - torch.logaddexp(logits, out_lse)
    per_row = -torch.where(inside, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    count = inside.sum(dim=1)
    return _mean_over_rows(per_row / count.clamp(min=1).to(scores.dtype), count > 0)


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
        count = max(sum(int(t.shape[0]) for t in target_spans), 1)
        loss_span = F.l1_loss(matched_preds, matched_targets, reduction="sum") / count
        giou = generalized_temporal_iou(
            span_cxw_to_xx(matched_preds), span_cxw_to_xx(matched_targets)
        )
        loss_giou = (1 - giou.diagonal()).sum() / count
        target_classes = torch.ones(pred_logits.shape[:2], dtype=torch.long, device=device)
        target_classes[batch_index, query_index] = 0
        class_weight: Tensor = self.class_weight  # type: ignore[assignment]
        loss_label = F.cross_entropy(
            pred_logits.transpose(1, 2), target_classes, weight=class_weight.to(device)
        )
        return {"loss_span": loss_span, "loss_giou": loss_giou, "loss_label": loss_label}

    def saliency_losses(
        self, out: dict[str, Any], window: Tensor, valid: Tensor
    ) -> dict[str, Tensor]:
        """The backbone's own saliency losses (part of L_base)."""
        cfg = self.cfg
        scores = out["saliency_scores"].float()
        losses: dict[str, Tensor] = {}
        shine = cfg.shine
        replaced = shine.enabled and shine.use_intra and shine.intra_replaces_base_saliency
        if not replaced:
            losses["loss_saliency"] = saliency_hinge_loss(
                scores, window, valid, cfg.saliency_margin
            )
        if self.backbone == "qd_detr":
            losses["loss_saliency_rc"] = rank_contrastive_loss(
                scores, window, valid, cfg.rank_contrastive_tau
            )
            if "saliency_scores_inbatch_neg" in out:
                losses["loss_saliency_neg"] = mismatched_query_loss(
                    out["saliency_scores_inbatch_neg"].float(), valid, out.get("inbatch_neg_valid")
                )
        return losses

    def forward(self, out: dict[str, Any], targets: dict[str, Any]) -> dict[str, Tensor]:
        """Named loss parts and ``loss``, the weighted total."""
        cfg = self.cfg
        target_spans: list[Tensor] = targets["spans"]
        window = targets["saliency_labels"]
        valid = targets.get("video_mask", out["video_mask"])
        weights = {
            "loss_span": cfg.span_l1,
            "loss_giou": cfg.giou,
            "loss_label": cfg.cls,
            "loss_saliency": cfg.saliency,
            "loss_saliency_rc": cfg.saliency,
            "loss_saliency_neg": cfg.saliency,
        }
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
        saliency = self.saliency_losses(out, window, valid)
        for name, value in saliency.items():
            losses[name] = value
            total = total + weights[name] * value
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
