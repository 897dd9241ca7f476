"""Transformer building blocks shared by the backbones (post-norm layers as in DETR).

Masks follow the model API: float or bool, 1 = valid token. Positional encodings are added
to queries and keys of every attention (never to values), as DETR does.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def padding_mask(valid: Tensor) -> Tensor:
    """(B, L) 1 = valid -> key_padding_mask for nn.MultiheadAttention (True = ignore)."""
    return ~valid.to(torch.bool)


def sine_position_encoding(valid: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine encodings (B, L, dim) of positions normalised to (0, 2*pi] per row.

    Position t of a row with n valid clips is (t + 1) / n * 2*pi, so videos of any length use
    the same range (DETR's normalised sine embedding, in one dimension).
    """
    mask = valid.to(torch.float32)
    positions = mask.cumsum(dim=1)
    positions = positions / positions[:, -1:].clamp(min=1.0) * (2 * math.pi)
    return _sine_embed(positions, dim, temperature).to(valid.device)


def _sine_embed(values: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """(...,) scalars -> (..., dim) features: sin on even, cos on odd indices (dim even)."""
    index = torch.arange(dim, device=values.device, dtype=torch.float32)
    frequencies = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / dim)
    angles = values[..., None].float() / frequencies  # (..., dim)
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def span_sine_embedding(spans: Tensor, dim: int) -> Tensor:
    """(..., 2) normalised (centre, width) -> (..., dim): half the features per coordinate.

    Used for DAB-style anchor queries; coordinates in [0, 1] are scaled by 2*pi.
    """
    half = dim // 2
    scaled = spans * (2 * math.pi)
    return torch.cat(
        (_sine_embed(scaled[..., 0], half), _sine_embed(scaled[..., 1], half)), dim=-1
    ).to(spans.dtype)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit of x, clamped away from 0 and 1."""
    x = x.clamp(min=eps, max=1 - eps)
    return torch.log(x / (1 - x))


class LearnedPositionEncoding(nn.Module):
    """Learned absolute positions (used for text tokens, up to ``max_len``)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, N, ...) -> (1, N, dim). Raises ValueError when N > max_len."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"{length} text tokens exceed max_q_len={self.max_len}")
        positions = torch.arange(length, device=tokens.device)
        return self.embedding(positions)[None]


class MLP(nn.Module):
    """``layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class InputProjection(nn.Sequential):
    """Feature projection: ``layers`` x (LayerNorm, dropout, linear), ReLU between blocks.

    The first block drops with ``input_dropout`` (0.5 by default), the others with ``dropout``.
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, input_dropout: float, dropout: float):
        blocks: list[nn.Module] = []
        dims = [in_dim] + [hidden] * layers
        for index in range(layers):
            blocks += [
                nn.LayerNorm(dims[index]),
                nn.Dropout(input_dropout if index == 0 else dropout),
                nn.Linear(dims[index], dims[index + 1]),
            ]
            if index < layers - 1:
                blocks.append(nn.ReLU())
        super().__init__(*blocks)


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> linear, with residual dropout and post-LayerNorm."""

    def __init__(self, hidden: int, ff: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(hidden, ff)
        self.linear2 = nn.Linear(ff, hidden)
        self.dropout = nn.Dropout(dropout)
        self.residual_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor) -> Tensor:
        update = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm(x + self.residual_dropout(update))


class EncoderLayer(nn.Module):
    """Self-attention (positions added to queries/keys) + feed-forward, post-norm."""

    def __init__(self, hidden: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)
        self.feed_forward = FeedForward(hidden, ff, dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        query = src + pos
        update = self.attention(
            query, query, src, key_padding_mask=key_padding_mask, need_weights=False
        )[0]
        src = self.norm(src + self.dropout(update))
        return self.feed_forward(src)


class CrossAttentionLayer(nn.Module):
    """Queries attend to a context (e.g. video clips to text tokens) + feed-forward."""

    def __init__(self, hidden: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)
        self.feed_forward = FeedForward(hidden, ff, dropout)

    def forward(
        self,
        x: Tensor,
        x_pos: Tensor,
        context: Tensor,
        context_pos: Tensor,
        context_padding_mask: Tensor,
    ) -> Tensor:
        update = self.attention(
            x + x_pos,
            context + context_pos,
            context,
            key_padding_mask=context_padding_mask,
            need_weights=False,
        )[0]
        x = self.norm(x + self.dropout(update))
        return self.feed_forward(x)


class DecoderLayer(nn.Module):
    """DETR decoder layer: query self-attention, cross-attention to memory, feed-forward."""

    def __init__(self, hidden: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(
            hidden, heads, dropout=dropout, batch_first=True
        )
        self.cross_attention = nn.MultiheadAttention(
            hidden, heads, dropout=dropout, batch_first=True
        )
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.feed_forward = FeedForward(hidden, ff, dropout)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_padding_mask: Tensor,
    ) -> Tensor:
        query = tgt + query_pos
        update = self.self_attention(query, query, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(update))
        update = self.cross_attention(
            tgt + query_pos,
            memory + memory_pos,
            memory,
            key_padding_mask=memory_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(update))
        return self.feed_forward(tgt)


class TransformerEncoder(nn.Module):
    """A stack of ``EncoderLayer``."""

    def __init__(self, layers: int, hidden: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ff, dropout) for _ in range(layers))

    def forward(self, src: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
        mask = padding_mask(valid)
        for layer in self.layers:
            src = layer(src, pos, mask)
        return src


class TransformerDecoder(nn.Module):
    """DETR decoder with learned query positions; returns every layer's normalised output."""

    def __init__(self, layers: int, hidden: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(hidden, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(
        self, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, memory_valid: Tensor
    ) -> Tensor:
        """(B, Q, d) query positions, (B, S, d) memory -> (layers, B, Q, d)."""
        mask = padding_mask(memory_valid)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, memory_pos, mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class AnchorDecoder(nn.Module):
    """DAB-style decoder: learned 2-d anchors (centre, width) refined layer by layer.

    Each layer's query position is an MLP of the sine embedding of its current anchor,
    scaled by an MLP of the content (conditional spatial query, identity for layer 0). A
    shared span head predicts an offset in logit space; the refined anchor is that layer's
    prediction and, detached, the next layer's reference (DAB-DETR). DAB's width-modulated
    attention is not used.
    """

    def __init__(self, layers: int, hidden: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.hidden = hidden
        self.layers = nn.ModuleList(DecoderLayer(hidden, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.anchor_head = MLP(hidden, hidden, hidden, 2)
        self.query_scale = MLP(hidden, hidden, hidden, 2)
        self.span_head = MLP(hidden, hidden, 2, 3)
        nn.init.zeros_(self.span_head.layers[-1].weight)
        nn.init.zeros_(self.span_head.layers[-1].bias)

    def forward(
        self, anchors: Tensor, memory: Tensor, memory_pos: Tensor, memory_valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(B, Q, 2) anchor logits, memory (B, S, d) -> outputs (layers, B, Q, d) and
        refined spans (layers, B, Q, 2) as sigmoid (centre, width)."""
        mask = padding_mask(memory_valid)
        reference = anchors.sigmoid()
        tgt = memory.new_zeros(anchors.shape[0], anchors.shape[1], self.hidden)
        outputs, spans = [], []
        for index, layer in enumerate(self.layers):
            query_pos = self.anchor_head(span_sine_embedding(reference, self.hidden))
            if index > 0:
                query_pos = query_pos * self.query_scale(tgt)
            tgt = layer(tgt, query_pos, memory, memory_pos, mask)
            normed = self.norm(tgt)
            refined = (inverse_sigmoid(reference) + self.span_head(normed)).sigmoid()
            outputs.append(normed)
            spans.append(refined)
            reference = refined.detach()
        return torch.stack(outputs), torch.stack(spans)
