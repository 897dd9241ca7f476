"""Moment-DETR (Lei et al., 2021), module for module as ``moment_detr/model.py``.

Video and text are projected, concatenated into one post-norm transformer encoder (video
clips with normalised sine positions, text tokens without positions unless
``use_txt_pos``); a linear head on the video part of the memory gives the saliency, and a
DETR decoder with learned query positions reads the whole memory to predict (centre, width)
spans and a foreground/background class. ReLU feed-forwards; the transformer's matrices are
Xavier-initialised as in DETR.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from negforge.trainer.backbones.base import EncodedRows, GroundingModel
from negforge.trainer.model_config import ModelConfig
from negforge.trainer.transformer import MLP, TransformerDecoder, TransformerEncoder, xavier_init


class MomentDETR(GroundingModel):
    """Moment-DETR with the model API of ``GroundingModel.forward``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d = cfg.hidden
        self.encoder = TransformerEncoder(
            cfg.enc_layers, d, cfg.heads, cfg.ff, cfg.dropout, "relu"
        )
        self.decoder = TransformerDecoder(
            cfg.dec_layers, d, cfg.heads, cfg.ff, cfg.dropout, "relu"
        )
        xavier_init(self.encoder, self.decoder)
        self.query_pos = nn.Embedding(cfg.num_queries, d)
        self.span_head = MLP(d, d, 2, 3)
        self.saliency_head = nn.Linear(d, 1)

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
        clips = video.shape[1]
        src = torch.cat((video, text), dim=1)
        pos = torch.cat((video_pos, text_pos), dim=1)
        valid = torch.cat((video_mask, text_mask.to(video_mask.dtype)), dim=1)
        memory = self.encoder(src, pos, valid)
        saliency = self.saliency_head(memory[:, :clips]).squeeze(-1)
        return EncodedRows(saliency, memory, pos, valid)

    def decode(self, encoded: EncodedRows) -> tuple[Tensor, Tensor]:
        batch = encoded.memory.shape[0]
        query_pos = self.query_pos.weight[None].expand(batch, -1, -1)
        hidden = self.decoder(query_pos, encoded.memory, encoded.memory_pos, encoded.memory_valid)
        return hidden, self.span_head(hidden).sigmoid()
