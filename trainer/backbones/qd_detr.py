"""QD-DETR (Moon et al., 2023): query-dependent video representations.

Video clips first attend to the text tokens (text-to-video cross-attention), a learned global
token is prepended, and a transformer encoder mixes them. The saliency of clip t is
<proj_v(memory_t), proj_g(memory_global)> / sqrt(d), so it depends on the query. A DAB-style
decoder with learned 2-d anchors, refined per layer, reads the video memory.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from negforge.trainer.backbones.base import EncodedRows, GroundingModel
from negforge.trainer.model_config import ModelConfig
from negforge.trainer.transformer import (
    AnchorDecoder,
    CrossAttentionLayer,
    TransformerEncoder,
    inverse_sigmoid,
)


class QDDETR(GroundingModel):
    """QD-DETR with the model API of ``GroundingModel.forward``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d = cfg.hidden
        self.text_to_video = nn.ModuleList(
            CrossAttentionLayer(d, cfg.heads, cfg.ff, cfg.dropout) for _ in range(cfg.t2v_layers)
        )
        self.global_token = nn.Parameter(torch.randn(d) * 0.02)
        self.global_pos = nn.Parameter(torch.randn(d) * 0.02)
        self.encoder = TransformerEncoder(cfg.enc_layers, d, cfg.heads, cfg.ff, cfg.dropout)
        self.saliency_video_proj = nn.Linear(d, d)
        self.saliency_global_proj = nn.Linear(d, d)
        self.decoder = AnchorDecoder(cfg.dec_layers, d, cfg.heads, cfg.ff, cfg.dropout)
        # Anchors start spread evenly over the video, each 1/Q wide (logit space).
        centres = (torch.arange(cfg.num_queries, dtype=torch.float32) + 0.5) / cfg.num_queries
        widths = torch.full_like(centres, 1.0 / cfg.num_queries)
        self.anchors = nn.Parameter(inverse_sigmoid(torch.stack((centres, widths), dim=1)))

    def encode(
        self,
        video: Tensor,
        video_pos: Tensor,
        video_mask: Tensor,
        text: Tensor,
        text_pos: Tensor,
        text_mask: Tensor,
    ) -> EncodedRows:
        rows = video.shape[0]
        text_padding = ~text_mask.to(torch.bool)
        for layer in self.text_to_video:
            video = layer(video, video_pos, text, text_pos, text_padding)
        global_token = self.global_token.to(video.dtype).expand(rows, 1, -1)
        global_pos = self.global_pos.to(video.dtype).expand(rows, 1, -1)
        src = torch.cat((global_token, video), dim=1)
        pos = torch.cat((global_pos, video_pos), dim=1)
        valid = torch.cat((video_mask.new_ones(rows, 1), video_mask), dim=1)
        memory = self.encoder(src, pos, valid)
        global_memory, video_memory = memory[:, 0], memory[:, 1:]
        saliency = (
            self.saliency_video_proj(video_memory)
            * self.saliency_global_proj(global_memory)[:, None]
        ).sum(-1)
        saliency = saliency / math.sqrt(self.cfg.hidden)
        return EncodedRows(saliency, video_memory, video_pos, video_mask)

    def decode(self, encoded: EncodedRows) -> tuple[Tensor, Tensor]:
        batch = encoded.memory.shape[0]
        anchors = self.anchors[None].expand(batch, -1, -1)
        return self.decoder(anchors, encoded.memory, encoded.memory_pos, encoded.memory_valid)
