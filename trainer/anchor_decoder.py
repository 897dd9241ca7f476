"""QD-DETR's decoder: conditional cross-attention over anchor spans refined layer by layer.

The decoder of QD-DETR (after Conditional / DAB-DETR) keeps one 2-d anchor (centre, width)
per moment query, starting from a learned, randomly initialised embedding:

* the anchor's sine embedding (``hidden / 2`` features per coordinate) gives the query
  position ``ref_point_head(sine)``; from layer 2 on the sine embedding is scaled by
  ``query_scale(content)``, and always by ``sigmoid(ref_anchor_head(content)) / width``
  (width-modulated attention);
* self-attention with separate content / position projections (``sa_*``), then
  cross-attention whose query and key concatenate, per head, content and position
  (``ca_*``; the first layer also adds the query position to the content);
* ``anchor_refine`` (zero-initialised last layer) moves the anchor in logit space; the moved
  anchor is the reference of the next layer's span prediction (with its gradient) and,
  detached, the next layer's input.

The attention has no input projections of its own (:class:`HeadConcatAttention`): the
projections above are its inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from negforge.trainer.transformer import (
    MLP,
    Activation,
    inverse_sigmoid,
    make_activation,
    padding_mask,
    sine_features,
)


def anchor_sine_embedding(anchors: Tensor, dim: int) -> Tensor:
    """(..., 2) normalised (centre, width) -> (..., dim): ``dim / 2`` sine features of
    2*pi*centre, then of 2*pi*width (QD-DETR's ``gen_sineembed_for_position`` at dim 256)."""
    half = dim // 2
    scaled = anchors * (2 * math.pi)
    return torch.cat((sine_features(scaled[..., 0], half), sine_features(scaled[..., 1], half)), -1)


class HeadConcatAttention(nn.Module):
    """Multi-head attention on already projected inputs (no input projection).

    Queries and keys have ``embed_dim`` features, values ``value_dim``; each head takes its
    slice of each. Softmax over keys after subtracting the row maximum, dropout on the
    weights, then ``out_proj`` (value_dim -> value_dim).
    """

    def __init__(self, embed_dim: int, heads: int, dropout: float, value_dim: int):
        super().__init__()
        self.heads = heads
        self.scale = (embed_dim // heads) ** -0.5
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(value_dim, value_dim)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """(B, Q, E) queries, (B, S, E) keys, (B, S, V) values -> (B, Q, V)."""
        batch, queries, _ = query.shape

        def split(x: Tensor) -> Tensor:
            return x.reshape(batch, x.shape[1], self.heads, -1).transpose(1, 2)

        weights = (split(query) * self.scale) @ split(key).transpose(-1, -2)  # (B, H, Q, S)
        if key_padding_mask is not None:
            weights = weights.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(weights - weights.amax(dim=-1, keepdim=True), dim=-1)
        out = self.dropout(weights) @ split(value)  # (B, H, Q, V/H)
        out = out.transpose(1, 2).reshape(batch, queries, -1)
        return self.out_proj(out)


class ConditionalDecoderLayer(nn.Module):
    """Self-attention + conditional cross-attention + feed-forward, post-norm."""

    def __init__(
        self,
        hidden: int,
        heads: int,
        ff: int,
        dropout: float,
        activation: Activation,
        *,
        first: bool,
    ):
        super().__init__()
        self.heads = heads
        self.first = first
        self.sa_qcontent_proj = nn.Linear(hidden, hidden)
        self.sa_qpos_proj = nn.Linear(hidden, hidden)
        self.sa_kcontent_proj = nn.Linear(hidden, hidden)
        self.sa_kpos_proj = nn.Linear(hidden, hidden)
        self.sa_v_proj = nn.Linear(hidden, hidden)
        self.self_attn = HeadConcatAttention(hidden, heads, dropout, hidden)
        self.ca_qcontent_proj = nn.Linear(hidden, hidden)
        # Only the first layer adds the query position to the cross-attention content.
        self.ca_qpos_proj = nn.Linear(hidden, hidden) if first else None
        self.ca_kcontent_proj = nn.Linear(hidden, hidden)
        self.ca_kpos_proj = nn.Linear(hidden, hidden)
        self.ca_v_proj = nn.Linear(hidden, hidden)
        self.ca_qpos_sine_proj = nn.Linear(hidden, hidden)
        self.cross_attn = HeadConcatAttention(2 * hidden, heads, dropout, hidden)
        self.linear1 = nn.Linear(hidden, ff)
        self.linear2 = nn.Linear(ff, hidden)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.norm3 = nn.LayerNorm(hidden)
        self.activation = make_activation(activation)

    def _per_head_concat(self, a: Tensor, b: Tensor) -> Tensor:
        """(B, S, d) and (B, S, d) -> (B, S, 2d): head h holds [a_h, b_h]."""
        batch, length, _ = a.shape
        return torch.cat(
            (a.reshape(batch, length, self.heads, -1), b.reshape(batch, length, self.heads, -1)),
            dim=-1,
        ).reshape(batch, length, -1)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_padding: Tensor,
        query_pos: Tensor,
        query_sine: Tensor,
    ) -> Tensor:
        query = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        key = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        update = self.self_attn(query, key, self.sa_v_proj(tgt))
        tgt = self.norm1(tgt + self.dropout1(update))

        query = self.ca_qcontent_proj(tgt)
        key = self.ca_kcontent_proj(memory)
        key_pos = self.ca_kpos_proj(memory_pos)
        if self.ca_qpos_proj is not None:
            query = query + self.ca_qpos_proj(query_pos)
            key = key + key_pos
        query = self._per_head_concat(query, self.ca_qpos_sine_proj(query_sine))
        key = self._per_head_concat(key, key_pos)
        update = self.cross_attn(query, key, self.ca_v_proj(memory), memory_padding)
        tgt = self.norm2(tgt + self.dropout2(update))
        update = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(update))


class AnchorDecoder(nn.Module):
    """QD-DETR's decoder over the video memory (see the module docstring)."""

    def __init__(
        self, layers: int, hidden: int, heads: int, ff: int, dropout: float, activation: Activation
    ):
        super().__init__()
        self.hidden = hidden
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(hidden, heads, ff, dropout, activation, first=index == 0)
            for index in range(layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.query_scale = MLP(hidden, hidden, hidden, 2)
        self.ref_point_head = MLP(hidden, hidden, hidden, 2)
        self.ref_anchor_head = MLP(hidden, hidden, 1, 2)
        self.anchor_refine = MLP(hidden, hidden, 2, 3)
        last = self.anchor_refine.layers[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(
        self, anchors: Tensor, memory: Tensor, memory_pos: Tensor, memory_valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(B, Q, 2) anchor logits, (B, S, d) memory -> every layer's normalised output
        (layers, B, Q, d) and the reference anchor each layer started from (layers, B, Q, 2)."""
        mask = padding_mask(memory_valid)
        reference = anchors.sigmoid()  # layer 0's reference keeps its gradient
        tgt = memory.new_zeros(anchors.shape[0], anchors.shape[1], self.hidden)
        outputs, references = [], [reference]
        for index, layer in enumerate(self.layers):
            sine = anchor_sine_embedding(reference, self.hidden)
            query_pos = self.ref_point_head(sine)
            if index > 0:
                sine = sine * self.query_scale(tgt)
            modulation = self.ref_anchor_head(tgt).sigmoid()[..., 0] / reference[..., 1]
            sine = sine * modulation[..., None]
            tgt = layer(tgt, memory, memory_pos, mask, query_pos, sine)
            moved = (self.anchor_refine(tgt) + inverse_sigmoid(reference)).sigmoid()
            if index < len(self.layers) - 1:
                # The next layer's prediction is relative to the moved anchor, with its
                # gradient (this is how anchor_refine learns); the next layer's input is
                # the detached anchor, as in DAB-DETR.
                references.append(moved)
            reference = moved.detach()
            outputs.append(self.norm(tgt))
        return torch.stack(outputs), torch.stack(references)
