"""What Moment-DETR and QD-DETR share: input projections, the query set, output assembly.

``GroundingModel.forward`` is the model API the engine calls. It projects video and text,
stacks every text a video must be scored against (its own query, the in-batch negative, its
K hard negatives, one per level; SHINE: K = 3) into ONE batch of rows for a single encoder
pass, runs the decoder on the positive rows only, and returns the DETR-style output dict.

The rows are stacked in the order of the originals' separate passes: the B positives, the B
in-batch negatives, then hard negative 0 of every row, hard negative 1, ... (SHINE's
layout). Each group is one pass of the original, which matters only for QD-DETR's
head-major text-to-video mask when it is switched on for parity checks.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from negforge.trainer.model_config import ModelConfig
from negforge.trainer.transformer import (
    InputProjection,
    TextPositionEncoding,
    sine_position_encoding,
)


@dataclass
class EncodedRows:
    """Encoder results for R (video, text) rows."""

    saliency: Tensor  # (R, L)
    memory: Tensor  # (R, S, d): what the decoder attends to
    memory_pos: Tensor  # (R, S, d)
    memory_valid: Tensor  # (R, S) 1 = valid


def ensure_one_valid_token(mask: Tensor) -> Tensor:
    """Mark token 0 valid in rows without any valid token, so attention never sees an empty
    key set (which would give NaN). Such rows are masked out of the losses by the caller."""
    empty = ~mask.to(torch.bool).any(dim=-1)
    if not bool(empty.any()):
        return mask
    mask = mask.clone()
    mask[..., 0] = torch.where(empty, torch.ones_like(mask[..., 0]), mask[..., 0])
    return mask


def _pad_tokens(tokens: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Right-pad (R, N, d) tokens and their (R, N) mask to ``length`` tokens."""
    extra = length - tokens.shape[1]
    if extra == 0:
        return tokens, mask
    tokens = torch.cat((tokens, tokens.new_zeros(tokens.shape[0], extra, tokens.shape[2])), 1)
    mask = torch.cat((mask, mask.new_zeros(mask.shape[0], extra)), 1)
    return tokens, mask


class GroundingModel(nn.Module):
    """DETR-style moment retrieval model; subclasses define ``encode`` and ``decode``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.video_proj = InputProjection(cfg.v_dim, d, cfg.input_proj_layers, cfg.input_dropout)
        self.text_proj = InputProjection(cfg.t_dim, d, cfg.input_proj_layers, cfg.input_dropout)
        self.text_position = TextPositionEncoding(cfg.max_q_len, d, cfg.input_dropout)
        if not cfg.use_txt_pos:
            # Kept (as in the originals' state dicts) but unused: frozen, so optimisers and
            # DistributedDataParallel skip them (the originals' AdamW skips grad-less weights).
            self.text_position.requires_grad_(False)
        self.class_head = nn.Linear(d, 2)  # index 0 = foreground

    @abstractmethod
    def encode(
        self,
        video: Tensor,
        video_pos: Tensor,
        video_mask: Tensor,
        text: Tensor,
        text_pos: Tensor,
        text_mask: Tensor,
        groups: tuple[int, ...],
    ) -> EncodedRows:
        """Projected video (R, L, d) and text (R, N, d) rows -> saliency and memory.

        ``groups`` lists the row counts of the originals' separate passes (they sum to R).
        """

    @abstractmethod
    def decode(self, encoded: EncodedRows) -> tuple[Tensor, Tensor]:
        """Memory of B rows -> per-layer hidden states (layers, B, Q, d) and spans
        (layers, B, Q, 2) as normalised (centre, width)."""

    def text_positions(self, text: Tensor) -> Tensor:
        """Learned text positions with ``use_txt_pos``, else zeros (the originals' default)."""
        if self.cfg.use_txt_pos:
            return self.text_position(text)
        if text.shape[1] > self.cfg.max_q_len:
            raise ValueError(f"{text.shape[1]} text tokens exceed max_q_len={self.cfg.max_q_len}")
        return torch.zeros_like(text)

    def forward(
        self,
        video_feats: Tensor,
        video_mask: Tensor,
        text_feats: Tensor,
        text_mask: Tensor,
        *,
        hard_neg_text_feats: Tensor | None = None,
        hard_neg_text_mask: Tensor | None = None,
        inbatch_neg_index: Tensor | None = None,
    ) -> dict[str, Any]:
        """Predict spans, classes and saliency; score the negatives when they are given.

        Args:
            video_feats (B, L, Dv), video_mask (B, L) 1 = valid clip,
            text_feats (B, N, Dt), text_mask (B, N) 1 = valid token.
            hard_neg_text_feats (B, K, N', Dt) and hard_neg_text_mask (B, K, N'): the K
                hard negatives of each row, one per level (closest first).
            inbatch_neg_index (B,): row whose query is this row's in-batch negative
                (-1 = none; the engine picks a row of another video).

        Returns:
            ``pred_logits`` (B, Q, 2), ``pred_spans`` (B, Q, 2), ``saliency_scores`` (B, L),
            ``aux_outputs`` (earlier decoder layers), ``video_mask``; with negatives also
            ``saliency_scores_inbatch_neg`` (B, L) + ``inbatch_neg_valid`` (B,) and
            ``saliency_scores_hard_neg`` (B, K, L). Scores at padded clips are meaningless.
        """
        batch, clips = video_mask.shape
        if (hard_neg_text_feats is None) != (hard_neg_text_mask is None):
            raise ValueError("hard_neg_text_feats and hard_neg_text_mask go together")
        video_mask = video_mask.to(video_feats.dtype)
        video = self.video_proj(video_feats)
        video_pos = sine_position_encoding(video_mask, self.cfg.hidden).to(video.dtype)
        text = self.text_proj(text_feats)
        text_mask = ensure_one_valid_token(text_mask.to(video.dtype))

        own_rows = torch.arange(batch, device=video.device)
        texts, masks, video_rows, groups = [text], [text_mask], [own_rows], [batch]
        inbatch_valid = None
        if inbatch_neg_index is not None:
            index = inbatch_neg_index.to(device=video.device, dtype=torch.long)
            inbatch_valid = (index >= 0) & (index < batch)
            index = torch.where(inbatch_valid, index, own_rows)
            texts.append(text[index])
            masks.append(text_mask[index])
            video_rows.append(own_rows)
            groups.append(batch)
        hard_count = 0
        if hard_neg_text_feats is not None and hard_neg_text_mask is not None:
            hard_count = hard_neg_text_feats.shape[1]
            # Negative-major: hard negative 0 of every row, then 1, ... (SHINE's layout).
            texts.append(self.text_proj(hard_neg_text_feats.transpose(0, 1).flatten(0, 1)))
            masks.append(
                ensure_one_valid_token(
                    hard_neg_text_mask.transpose(0, 1).flatten(0, 1).to(video.dtype)
                )
            )
            video_rows.append(own_rows.repeat(hard_count))
            groups.append(batch * hard_count)
        length = max(t.shape[1] for t in texts)
        padded = [_pad_tokens(t, m, length) for t, m in zip(texts, masks, strict=True)]
        all_text = torch.cat([t for t, _ in padded])
        all_mask = torch.cat([m for _, m in padded])
        text_pos = self.text_positions(all_text).to(all_text.dtype)
        if len(texts) == 1:
            encoded = self.encode(
                video, video_pos, video_mask, all_text, text_pos, all_mask, tuple(groups)
            )
        else:
            # One encoder pass over every (video, text) row of the query set.
            rows = torch.cat(video_rows)
            encoded = self.encode(
                video[rows],
                video_pos[rows],
                video_mask[rows],
                all_text,
                text_pos,
                all_mask,
                tuple(groups),
            )
        positive = EncodedRows(
            encoded.saliency[:batch],
            encoded.memory[:batch],
            encoded.memory_pos[:batch],
            encoded.memory_valid[:batch],
        )
        hidden, spans = self.decode(positive)
        logits = self.class_head(hidden)
        out: dict[str, Any] = {
            "pred_logits": logits[-1],
            "pred_spans": spans[-1],
            "saliency_scores": positive.saliency,
            "aux_outputs": [
                {"pred_logits": logits[i], "pred_spans": spans[i]}
                for i in range(logits.shape[0] - 1)
            ],
            "video_mask": video_mask,
        }
        offset = batch
        if inbatch_valid is not None:
            out["saliency_scores_inbatch_neg"] = encoded.saliency[offset : offset + batch]
            out["inbatch_neg_valid"] = inbatch_valid
            offset += batch
        if hard_count:
            hard = encoded.saliency[offset:].reshape(hard_count, batch, clips)
            out["saliency_scores_hard_neg"] = hard.transpose(0, 1)
        return out
