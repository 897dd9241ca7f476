"""Transformer parts shared by the backbones: DETR's post-norm encoder and decoder, QD-DETR's
text-to-video layer, positional encodings, input projections and the MLP heads.

Everything is batch-first; masks follow the model API (float or bool, 1 = valid token).
Positions are added to the queries and keys of every attention, never to the values, as in
DETR. Layer and parameter names follow ``torch.nn.Transformer``'s vocabulary (``self_attn``,
``linear1``, ``norm1``, ...), so the map to the original checkpoints is a list of prefix
renames (``negforge.trainer.convert``).
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "prelu"]


def padding_mask(valid: Tensor) -> Tensor:
    """(B, L) 1 = valid -> key_padding_mask for nn.MultiheadAttention (True = ignore)."""
    return ~valid.to(torch.bool)


def sine_position_encoding(valid: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR's normalised sine encoding (B, L, dim) of clip positions, as Moment-DETR computes it.

    Position t of a row with n valid clips is (t + 1) / (n + 1e-6) * 2*pi; feature 2i is
    sin(pos / T^(2i/dim)), feature 2i + 1 is cos(pos / T^(2i/dim)).
    """
    positions = valid.to(torch.float32).cumsum(dim=1)
    positions = positions / (positions[:, -1:] + 1e-6) * (2 * math.pi)
    return sine_features(positions, dim, temperature)


def sine_features(values: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """(...,) scalars -> (..., dim) features: sin on even, cos on odd indices (dim even)."""
    index = torch.arange(dim, device=values.device, dtype=torch.float32)
    frequencies = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / dim)
    angles = values[..., None].float() / frequencies  # (..., dim)
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """Logit of x clamped to [0, 1], each side floored at ``eps`` (QD-DETR's 1e-3)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def xavier_init(*modules: nn.Module) -> None:
    """Xavier-uniform every parameter with more than one dimension (DETR's transformer init)."""
    for module in modules:
        for parameter in module.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)


def make_activation(name: Activation) -> nn.Module:
    """ReLU (Moment-DETR) or a learned PReLU with one slope (QD-DETR's transformer)."""
    return nn.PReLU() if name == "prelu" else nn.ReLU()


class TextPositionEncoding(nn.Module):
    """Moment-DETR's trainable text positions: dropout(LayerNorm(tokens + E[position])).

    Used only with ``use_txt_pos`` (off in every original); the weights exist either way, as
    in the originals.
    """

    def __init__(self, max_len: int, dim: int, dropout: float):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, dim). Raises ValueError when N > max_len."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"{length} text tokens exceed max_q_len={self.max_len}")
        positions = self.embedding(torch.arange(length, device=tokens.device))[None]
        return self.dropout(self.norm(tokens + positions))


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


class ProjectionBlock(nn.Module):
    """LayerNorm -> dropout -> linear (-> ReLU): one of the originals' input ``LinearLayer``."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, relu: bool):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(self.dropout(self.norm(x)))
        return F.relu(x) if self.relu else x


class InputProjection(nn.Sequential):
    """``layers`` projection blocks, all with ``dropout`` (the input dropout), ReLU between."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float):
        dims = [in_dim] + [hidden] * layers
        super().__init__(
            *(
                ProjectionBlock(dims[i], dims[i + 1], dropout, relu=i < layers - 1)
                for i in range(layers)
            )
        )


class EncoderLayer(nn.Module):
    """Post-norm self-attention (positions on queries and keys) + feed-forward."""

    def __init__(self, hidden: int, heads: int, ff: int, dropout: float, activation: Activation):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(hidden, ff)
        self.linear2 = nn.Linear(ff, hidden)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.activation = make_activation(activation)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        query = src + pos
        update = self.self_attn(
            query, query, src, key_padding_mask=key_padding_mask, need_weights=False
        )[0]
        src = self.norm1(src + self.dropout1(update))
        update = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(update))


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` (no final norm, as in DETR's post-norm encoder)."""

    def __init__(
        self, layers: int, hidden: int, heads: int, ff: int, dropout: float, activation: Activation
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, heads, ff, dropout, activation) for _ in range(layers)
        )

    def forward(self, src: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
        mask = padding_mask(valid)
        for layer in self.layers:
            src = layer(src, pos, mask)
        return src


class TextToVideoLayer(nn.Module):
    """QD-DETR's text-to-video layer: clips (+ positions) attend to the text tokens.

    x = clips + drop(attn(clips + pos, text + text_pos, text)); out = norm2(x + drop(FFN(
    norm1(x)))): the feed-forward reads the normalised sum but its output is added to the
    un-normalised one, as in the original.
    """

    def __init__(self, hidden: int, heads: int, ff: int, dropout: float, activation: Activation):
        super().__init__()
        self.heads = heads
        self.self_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(hidden, ff)
        self.linear2 = nn.Linear(ff, hidden)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.activation = make_activation(activation)

    def forward(
        self,
        clips: Tensor,
        clip_pos: Tensor,
        text: Tensor,
        text_pos: Tensor,
        text_padding: Tensor,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """(R, L, d) clips attend to (R, N, d) text; ``text_padding`` (R, N) True = pad;
        ``attn_mask`` (R * heads, L, N) True = blocked, row ``r * heads + h``."""
        update = self.self_attn(
            clips + clip_pos,
            text + text_pos,
            text,
            key_padding_mask=text_padding,
            attn_mask=attn_mask,
            need_weights=False,
        )[0]
        x = clips + self.dropout1(update)
        update = self.linear2(self.dropout(self.activation(self.linear1(self.norm1(x)))))
        return self.norm2(x + self.dropout2(update))


def head_major_t2v_mask(
    video_padding: Tensor, text_padding: Tensor, heads: int, groups: tuple[int, ...]
) -> Tensor:
    """The original QD-DETR's text-to-video ``attn_mask``, reproduced (``t2v_mask=head_major``;
    docs/trainer_model.md, "Deliberate differences from the authors' release").

    QD-DETR blocks (clip i, token j) when both are padding and lays the (B, L, N) mask out as
    ``.repeat(nhead, 1, 1)``: head h of sample b then reads sample (b * nhead + h) mod B's
    mask, where PyTorch expects batch-major rows. Each forward pass of the original (positive,
    mismatched query, hard negatives) is one group of rows here; the result is
    (R * heads, L, N) in PyTorch's batch-major order.
    """
    pair = video_padding[:, :, None] & text_padding[:, None, :]  # (R, L, N)
    sources = []
    start = 0
    for size in groups:
        local = torch.arange(size * heads, device=pair.device) % size
        sources.append(start + local)
        start += size
    return pair[torch.cat(sources)]


class DecoderLayer(nn.Module):
    """DETR decoder layer: query self-attention, cross-attention to memory, feed-forward."""

    def __init__(self, hidden: int, heads: int, ff: int, dropout: float, activation: Activation):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(
            hidden, heads, dropout=dropout, batch_first=True
        )
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

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_padding_mask: Tensor,
    ) -> Tensor:
        query = tgt + query_pos
        update = self.self_attn(query, query, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(update))
        update = self.multihead_attn(
            tgt + query_pos,
            memory + memory_pos,
            memory,
            key_padding_mask=memory_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(update))
        update = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(update))


class TransformerDecoder(nn.Module):
    """DETR decoder with learned query positions; returns every layer's normalised output."""

    def __init__(
        self, layers: int, hidden: int, heads: int, ff: int, dropout: float, activation: Activation
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(hidden, heads, ff, dropout, activation) for _ in range(layers)
        )
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
