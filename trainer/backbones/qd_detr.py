"""QD-DETR (Moon et al., 2023), module for module as ``qd_detr/model.py`` + ``transformer.py``.

Video clips first attend to the text tokens (``text_to_video``: enc_layers layers), a learned
global token is prepended, and a post-norm transformer encoder mixes global token and clips.
The saliency of clip t is <proj_v(memory_t), proj_g(memory_global)> / sqrt(d), so it depends
on the query. The decoder (``negforge.trainer.anchor_decoder``) refines one anchor span per
moment query; the span of layer i is sigmoid(span_head(h_i) + logit(anchor_i)). Every
feed-forward of the transformer uses a learned PReLU; its matrices are Xavier-initialised.

The one deliberate difference is the text-to-video padding mask (``t2v_mask``): the
original lays it out head-major, which gives one sample's mask to another's heads when
padding differs across the batch; ``batch_major`` (default) is the correct layout and
``head_major`` reproduces the original for parity checks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from negforge.trainer.anchor_decoder import AnchorDecoder
from negforge.trainer.backbones.base import EncodedRows, GroundingModel
from negforge.trainer.model_config import ModelConfig
from negforge.trainer.transformer import (
    MLP,
    TextToVideoLayer,
    TransformerEncoder,
    head_major_t2v_mask,
    inverse_sigmoid,
    xavier_init,
)


class TextToVideo(nn.Module):
    """A stack of :class:`TextToVideoLayer` with the configured padding-mask layout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.head_major = cfg.t2v_mask == "head_major"
        self.layers = nn.ModuleList(
            TextToVideoLayer(cfg.hidden, cfg.heads, cfg.ff, cfg.dropout, "prelu")
            for _ in range(cfg.text_to_video_layers)
        )

    def forward(
        self,
        clips: Tensor,
        clip_pos: Tensor,
        clip_valid: Tensor,
        text: Tensor,
        text_pos: Tensor,
        text_valid: Tensor,
        groups: tuple[int, ...],
    ) -> Tensor:
        text_padding = ~text_valid.to(torch.bool)
        attn_mask = None
        if self.head_major:
            attn_mask = head_major_t2v_mask(
                ~clip_valid.to(torch.bool), text_padding, self.heads, groups
            )
        for layer in self.layers:
            clips = layer(clips, clip_pos, text, text_pos, text_padding, attn_mask)
        return clips


class QDDETR(GroundingModel):
    """QD-DETR with the model API of ``GroundingModel.forward``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d = cfg.hidden
        self.text_to_video = TextToVideo(cfg)
        self.encoder = TransformerEncoder(
            cfg.enc_layers, d, cfg.heads, cfg.ff, cfg.dropout, "prelu"
        )
        self.decoder = AnchorDecoder(cfg.dec_layers, d, cfg.heads, cfg.ff, cfg.dropout, "prelu")
        xavier_init(self.text_to_video, self.encoder, self.decoder)
        self.anchors = nn.Embedding(cfg.num_queries, 2)  # anchor logits, N(0, 1) as QD-DETR
        self.span_head = MLP(d, d, 2, 3)
        self.saliency_video_proj = nn.Linear(d, d)
        self.saliency_global_proj = nn.Linear(d, d)
        self.global_token = nn.Parameter(torch.randn(d))
        self.global_pos = nn.Parameter(torch.randn(d))

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
        rows = video.shape[0]
        video = self.text_to_video(video, video_pos, video_mask, text, text_pos, text_mask, groups)
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
        ).sum(-1) / math.sqrt(self.cfg.hidden)
        return EncodedRows(saliency, video_memory, video_pos, video_mask)

    def decode(self, encoded: EncodedRows) -> tuple[Tensor, Tensor]:
        batch = encoded.memory.shape[0]
        anchors = self.anchors.weight[None].expand(batch, -1, -1)
        hidden, references = self.decoder(
            anchors, encoded.memory, encoded.memory_pos, encoded.memory_valid
        )
        spans = (self.span_head(hidden) + inverse_sigmoid(references)).sigmoid()
        return hidden, spans
