"""Backbones: Moment-DETR and QD-DETR behind one model API (``GroundingModel.forward``)."""

from __future__ import annotations

from negforge.trainer.backbones.base import GroundingModel
from negforge.trainer.backbones.moment_detr import MomentDETR
from negforge.trainer.backbones.qd_detr import QDDETR
from negforge.trainer.model_config import ModelConfig

__all__ = ["QDDETR", "GroundingModel", "MomentDETR", "build_model"]


def build_model(cfg: ModelConfig) -> GroundingModel:
    """The backbone named by ``cfg.backbone``, on the CPU (move it with ``.to(device)``)."""
    if cfg.backbone == "moment_detr":
        return MomentDETR(cfg)
    if cfg.backbone == "qd_detr":
        return QDDETR(cfg)
    raise ValueError(f"unknown backbone {cfg.backbone!r}")
