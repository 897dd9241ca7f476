"""Model and loss settings (pydantic) with the defaults of the paper and the originals."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from negforge.errors import ConfigError

Backbone = Literal["moment_detr", "qd_detr"]
FineRankingMode = Literal["chain", "anchored"]
T2VMask = Literal["batch_major", "head_major"]


class ModelConfig(BaseModel):
    """Architecture of a Moment-DETR or QD-DETR model.

    Defaults are the originals' (``moment_detr/config.py``, ``qd_detr/config.py``): hidden 256,
    8 heads, feed-forward 1024, 2 + 2 layers, 10 queries, input dropout 0.5, dropout 0.1, two
    input projection layers, no learned text positions. ``t2v_mask`` is the one deliberate
    difference (docs/trainer_model.md).
    """

    model_config = ConfigDict(extra="forbid")

    backbone: Backbone = "qd_detr"
    v_dim: int = Field(gt=0, description="video clip feature size (e.g. 1024 I3D + 2 tef)")
    t_dim: int = Field(gt=0, description="text token feature size (512 for CLIP)")
    hidden: int = Field(256, gt=0)
    heads: int = Field(8, gt=0)
    ff: int = Field(1024, gt=0, description="feed-forward width of every transformer layer")
    enc_layers: int = Field(2, ge=1, description="encoder layers (ActivityNet-CG: 3)")
    dec_layers: int = Field(2, ge=1, description="decoder layers (ActivityNet-CG: 3)")
    t2v_layers: int | None = Field(
        None, ge=1, description="QD-DETR text-to-video layers (default: enc_layers, as QD-DETR)"
    )
    num_queries: int = Field(10, ge=1, description="moment queries of the decoder")
    input_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout of every input layer")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout inside the transformer")
    input_proj_layers: int = Field(
        2, ge=1, le=3, description="(LayerNorm, dropout, linear) input layers (n_input_proj)"
    )
    use_txt_pos: bool = Field(
        False, description="add learned text positions (the originals' --use_txt_pos, off)"
    )
    t2v_mask: T2VMask = Field(
        "batch_major",
        description="QD-DETR text-to-video padding mask: batch_major (correct) or head_major "
        "(the original's .repeat(nhead) layout, for parity checks)",
    )
    max_v_len: int | None = Field(
        75, gt=0, description="clips kept per video, the rest cut off (None: all clips)"
    )
    max_q_len: int = Field(32, gt=0, description="text tokens kept (ActivityNet: 50)")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.hidden % 4:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of 4 (sine encodings)")
        return self

    @property
    def text_to_video_layers(self) -> int:
        """QD-DETR's text-to-video layer count (its t2v encoder has ``enc_layers`` layers)."""
        return self.t2v_layers if self.t2v_layers is not None else self.enc_layers


class ShineConfig(BaseModel):
    """SHINE's coarse-to-fine saliency ranking (Eq. 1-5) and its ablation switches."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="add alpha*L_cr + beta*L_fr to L_base")
    alpha: float = Field(1.0, ge=0.0, description="weight of L_cr (Eq. 5)")
    beta: float = Field(1.0, ge=0.0, description="weight of L_fr (Eq. 5)")
    q: int = Field(8, ge=1, description="top-k ratio of Eq. 2: k = max(1, floor(T+/q))")
    h1: float = Field(1.0, description="margin of L_intra (Eq. 1)")
    h2: float = Field(2.0, description="margin of L_inter (Eq. 1)")
    levels: int | None = Field(
        None,
        ge=1,
        description="hard-negative levels per query, K (Eq. 3 has K + 1 hinge terms; "
        "default: those of TRAIN, recorded in the run's config)",
    )
    margins: tuple[float, ...] = Field(
        (0.25,),
        min_length=1,
        description="m0..mK of Eq. 3, one per hinge term, or one value for every term",
    )
    use_intra: bool = Field(True, description="L_intra term of Eq. 1 (Table 3)")
    use_inter: bool = Field(True, description="L_inter term of Eq. 1 (Table 3)")
    fine_terms: tuple[bool, ...] = Field(
        (True,),
        min_length=1,
        description="each hinge term of Eq. 3 on/off (Table 4), one per term or one for all",
    )
    intra_replaces_base_saliency: bool = Field(
        False, description="drop the backbone's in/out-of-window hinge when L_intra is on"
    )
    fine_ranking: FineRankingMode = Field(
        "chain", description="chain d1<d2<d3<d4<d5 (Eq. 3) or anchored on d2 (released code)"
    )

    @model_validator(mode="after")
    def _one_value_per_term(self) -> ShineConfig:
        if self.levels is not None:
            terms = self.levels + 1
            for name in ("margins", "fine_terms"):
                count = len(getattr(self, name))
                if count not in (1, terms):
                    raise ValueError(
                        f"loss.shine.{name} has {count} values but {self.levels} hard-negative "
                        f"levels make {terms} hinge terms in L_fr: give {terms} values or one"
                    )
        return self

    def with_levels(self, levels: int, *, source: str | Path | None = None) -> ShineConfig:
        """These settings for data with ``levels`` hard-negative levels (checked)."""
        if self.levels is not None and self.levels != levels:
            raise ConfigError(
                f"{source or 'TRAIN'}: the queries have {levels} hard-negative levels but "
                f"loss.shine.levels is {self.levels}"
            )
        try:
            return ShineConfig.model_validate({**self.model_dump(), "levels": levels})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{source or 'TRAIN'}: {reason}") from exc


class LossConfig(BaseModel):
    """Weights of L_base (the originals' ``SetCriterion``) and the SHINE settings."""

    model_config = ConfigDict(extra="forbid")

    span_l1: float = Field(10.0, ge=0.0)
    giou: float = Field(1.0, ge=0.0)
    cls: float = Field(4.0, ge=0.0, description="class cross-entropy weight")
    eos_coef: float = Field(0.1, ge=0.0, description="background class weight in the CE")
    saliency: float = Field(1.0, ge=0.0, description="weight of every base saliency loss")
    saliency_margin: float = Field(0.2, description="hinge margin (ActivityNet-CG: 1.0)")
    rank_contrastive_tau: float = Field(0.5, gt=0.0, description="QD-DETR rank-contrastive")
    match_cls: float = Field(4.0, ge=0.0, description="matcher cost of -p_fg")
    match_span_l1: float = Field(10.0, ge=0.0, description="matcher cost of span L1")
    match_giou: float = Field(1.0, ge=0.0, description="matcher cost of -gIoU")
    aux: bool = Field(True, description="losses on every decoder layer")
    shine: ShineConfig = Field(default_factory=ShineConfig)
