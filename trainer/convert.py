"""Convert the authors' Moment-DETR / QD-DETR / SHINE checkpoints into negforge checkpoints.

The originals' ``train.py`` saves ``{"model": state_dict, "optimizer": ..., "epoch": ...,
"opt": argparse.Namespace}``. :func:`convert_checkpoint` reads one without unpickling
arbitrary objects (``torch.load(weights_only=True)`` with ``argparse.Namespace`` and
``torch.device`` allowed), takes the architecture, loss weights and data settings from
``opt``, renames every weight (:data:`KEY_RENAMES`, one rule list per backbone: the module
map of docs/trainer_model.md) and writes a negforge checkpoint that ``negforge eval`` and
``plot-saliency`` accept. A weight without a rule, a missing weight, a shape that differs or
an option negforge does not implement is an :class:`~negforge.errors.InputError` naming it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from negforge.errors import InputError
from negforge.trainer.model_config import Backbone

#: (pattern, replacement) applied in order to each original key; the first match wins.
_SHARED_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^input_vid_proj\.(\d+)\.LayerNorm\.", r"video_proj.\1.norm."),
    (r"^input_vid_proj\.(\d+)\.net\.1\.", r"video_proj.\1.linear."),
    (r"^input_txt_proj\.(\d+)\.LayerNorm\.", r"text_proj.\1.norm."),
    (r"^input_txt_proj\.(\d+)\.net\.1\.", r"text_proj.\1.linear."),
    (r"^txt_position_embed\.position_embeddings\.", "text_position.embedding."),
    (r"^txt_position_embed\.LayerNorm\.", "text_position.norm."),
    (r"^class_embed\.", "class_head."),
    (r"^span_embed\.", "span_head."),
    (r"^transformer\.encoder\.layers\.", "encoder.layers."),
)
KEY_RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "moment_detr": (
        *_SHARED_RENAMES,
        (r"^transformer\.decoder\.", "decoder."),
        (r"^query_embed\.weight$", "query_pos.weight"),
        (r"^saliency_proj\.", "saliency_head."),
    ),
    "qd_detr": (
        *_SHARED_RENAMES,
        (r"^transformer\.t2v_encoder\.layers\.", "text_to_video.layers."),
        (r"^transformer\.decoder\.bbox_embed\.", "decoder.anchor_refine."),
        (r"^transformer\.decoder\.", "decoder."),
        (r"^query_embed\.weight$", "anchors.weight"),
        (r"^saliency_proj1\.", "saliency_video_proj."),
        (r"^saliency_proj2\.", "saliency_global_proj."),
        (r"^global_rep_token$", "global_token"),
        (r"^global_rep_pos$", "global_pos"),
    ),
}
#: Weights only one backbone has: they tell a checkpoint's backbone.
_SIGNATURES: dict[str, str] = {
    "qd_detr": "transformer.t2v_encoder.",
    "moment_detr": "saliency_proj.weight",
}


def detect_backbone(state_dict: Mapping[str, Any]) -> Backbone | None:
    """``qd_detr`` (QD-DETR and SHINE), ``moment_detr`` or None from the weight names."""
    for backbone, marker in _SIGNATURES.items():
        if any(key == marker or key.startswith(marker) for key in state_dict):
            return backbone  # type: ignore[return-value]
    return None


def rename_key(key: str, backbone: str) -> str | None:
    """negforge's name for an original weight (None when no rule covers it)."""
    for pattern, replacement in KEY_RENAMES[backbone]:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    backbone: str,
    reference: Mapping[str, torch.Tensor],
    *,
    source: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """The original ``state_dict`` under negforge's names, checked against the ``reference``
    state dict of the negforge model it is for (same keys, same shapes)."""
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        name = rename_key(key, backbone)
        if name is None or name not in reference:
            unknown.append(key)
            continue
        if tuple(value.shape) != tuple(reference[name].shape):
            raise InputError(
                f"weight has shape {tuple(value.shape)}, negforge's {name} needs "
                f"{tuple(reference[name].shape)} (does the checkpoint's opt match its weights?)",
                path=source,
                field=f"model.{key}",
            )
        converted[name] = value.detach().clone()
    if unknown:
        raise InputError(
            f"{len(unknown)} weight(s) negforge's {backbone} has no place for: "
            f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}",
            path=source,
            field=f"model.{unknown[0]}",
        )
    missing = [name for name in reference if name not in converted]
    if missing:
        raise InputError(
            f"checkpoint lacks {len(missing)} weight(s) negforge's {backbone} needs: "
            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}",
            path=source,
            field="model",
        )
    return converted


def load_original_checkpoint(path: str | Path) -> dict[str, Any]:
    """An original checkpoint, read with ``weights_only=True`` (Namespace allowed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint does not exist", path=path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace, torch.device]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: one line, no traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable torch checkpoint ({reason[:200]})", path=path) from exc
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
        raise InputError(
            "not an original Moment-DETR / QD-DETR / SHINE checkpoint (no 'model' state dict)",
            path=path,
            field="model",
        )
    return state


def _options(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    opt = state.get("opt")
    if isinstance(opt, argparse.Namespace):
        return vars(opt)
    if isinstance(opt, Mapping):
        return dict(opt)
    raise InputError(
        "checkpoint has no 'opt' (the training options the originals save with the weights)",
        path=path,
        field="opt",
    )


def _require(options: Mapping[str, Any], name: str, path: Path) -> Any:
    if options.get(name) is None:
        raise InputError("option missing from the checkpoint's opt", path=path, field=f"opt.{name}")
    return options[name]


def train_config_from_options(
    options: Mapping[str, Any], backbone: Backbone, path: Path, *, t2v_mask: str = "batch_major"
) -> dict[str, Any]:
    """A negforge TrainConfig (as a dict) from the originals' ``opt``.

    Options absent from ``opt`` take the originals' defaults; options negforge does not
    implement (pre-norm, ``ce`` spans, the contrastive alignment loss) are refused.
    """

    def get(name: str, default: Any) -> Any:
        value = options.get(name)
        return default if value is None else value

    for name, unsupported, why in (
        ("pre_norm", True, "pre-norm transformers"),
        ("contrastive_align_loss", True, "the contrastive alignment loss"),
    ):
        if bool(options.get(name)) == unsupported:
            raise InputError(
                f"negforge does not implement {why}", path=path, field=f"opt.{name}"
            )
    if get("span_loss_type", "l1") != "l1":
        raise InputError(
            "negforge implements (centre, width) L1 spans only",
            path=path,
            field="opt.span_loss_type",
        )
    max_v_l = int(get("max_v_l", 75))
    is_shine = "hn_num" in options
    ctx_mode = str(get("ctx_mode", "video_tef"))
    model = {
        "backbone": backbone,
        "v_dim": int(_require(options, "v_feat_dim", path)),
        "t_dim": int(_require(options, "t_feat_dim", path)),
        "hidden": int(get("hidden_dim", 256)),
        "heads": int(get("nheads", 8)),
        "ff": int(get("dim_feedforward", 1024)),
        "enc_layers": int(get("enc_layers", 2)),
        "dec_layers": int(get("dec_layers", 2)),
        "num_queries": int(get("num_queries", 10)),
        "input_dropout": float(get("input_dropout", 0.5)),
        "dropout": float(get("dropout", 0.1)),
        "input_proj_layers": int(get("n_input_proj", 2)),
        "use_txt_pos": bool(get("use_txt_pos", False)),
        "t2v_mask": t2v_mask,
        "max_v_len": max_v_l if max_v_l > 0 else None,
        "max_q_len": int(get("max_q_l", 32)),
    }
    coarse = list(get("coarse_margin", [1.0, 2.0]))
    loss: dict[str, Any] = {
        "span_l1": float(get("span_loss_coef", 10)),
        "giou": float(get("giou_loss_coef", 1)),
        "cls": float(get("label_loss_coef", 4)),
        "eos_coef": float(get("eos_coef", 0.1)),
        "saliency": float(get("lw_saliency", 1.0)),
        "saliency_margin": float(get("saliency_margin", 0.2)),
        "match_cls": float(get("set_cost_class", 4)),
        "match_span_l1": float(get("set_cost_span", 10)),
        "match_giou": float(get("set_cost_giou", 1)),
        "aux": bool(get("aux_loss", True)),
        "shine": {
            "enabled": is_shine,
            "alpha": float(get("coarse_coef", 1.0)),
            "beta": float(get("fine_coef", 1.0)),
            "q": int(get("q", 8)),
            "h1": float(coarse[0]),
            "h2": float(coarse[1]),
            "margins": [float(m) for m in get("fine_margin", [0.25] * 4)],
            "fine_ranking": "anchored" if get("ranking_type", "red") == "abd" else "chain",
            "intra_replaces_base_saliency": is_shine and not bool(get("use_saliency_loss", False)),
        },
    }
    v_dirs = get("v_feat_dirs", [])
    t_dir = options.get("t_feat_dir")
    data = {
        "clip_len": float(get("clip_length", 2)),
        "use_tef": "tef" in ctx_mode,
        "normalize_video": not bool(get("no_norm_vfeat", False)),
        "normalize_text": not bool(get("no_norm_tfeat", False)),
        "video_feats": [str(p) for p in (v_dirs if isinstance(v_dirs, list) else [v_dirs])],
        "text_feats": [str(t_dir)] if t_dir else [],
    }
    optim = {
        "lr": float(get("lr", 1e-4)),
        "weight_decay": float(get("wd", 1e-4)),
        "lr_drop": int(get("lr_drop", 400)),
        "batch_size": int(get("bsz", 32)),
        "epochs": int(get("n_epoch", 200)),
        "grad_clip": max(float(get("grad_clip", 0.1)), 0.0),
    }
    # SHINE skips the originals' window post-processing on ActivityNet.
    postprocess = "none" if get("dset_name", "") == "anet" else "round_to_clips"
    return {
        "model": model,
        "loss": loss,
        "data": data,
        "optim": optim,
        "seed": int(get("seed", 2018)),
        "postprocess": postprocess,
        "bf16": False,  # the originals run in float32
    }


def convert_checkpoint(
    source: str | Path,
    backbone: str,
    output: str | Path,
    *,
    t2v_mask: str = "batch_major",
) -> Path:
    """Write ``output``, the negforge checkpoint of the original checkpoint ``source``."""
    from negforge.trainer.backbones import build_model
    from negforge.trainer.checkpoints import CHECKPOINT_FORMAT, save_checkpoint
    from negforge.trainer.config import TrainConfig

    source = Path(source)
    if backbone not in KEY_RENAMES:
        raise InputError(f"unknown backbone '{backbone}' (moment_detr or qd_detr)")
    state = load_original_checkpoint(source)
    weights: Mapping[str, torch.Tensor] = state["model"]
    found = detect_backbone(weights)
    if found is None:
        raise InputError(
            "no Moment-DETR or QD-DETR weights in this checkpoint", path=source, field="model"
        )
    if found != backbone:
        marker = _SIGNATURES[found]
        raise InputError(
            f"this is a {found} checkpoint (it has {marker}...), not {backbone}: "
            f"pass --backbone {found}",
            path=source,
            field=f"model.{marker.rstrip('.')}",
        )
    options = _options(state, source)
    try:
        cfg = TrainConfig.model_validate(
            train_config_from_options(options, found, source, t2v_mask=t2v_mask)
        )
    except ValueError as exc:
        raise InputError(f"unusable training options ({exc})", path=source, field="opt") from exc
    assert cfg.model.v_dim is not None and cfg.model.t_dim is not None
    model = build_model(cfg.model.resolve(cfg.model.v_dim, cfg.model.t_dim))
    converted = convert_state_dict(weights, found, model.state_dict(), source=source)
    model.load_state_dict(converted)
    epoch = state.get("epoch")
    save_checkpoint(
        Path(output),
        {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "config": cfg.model_dump(mode="json"),
            "epoch": int(epoch) if isinstance(epoch, int) else -1,
            "converted_from": str(source.resolve()),
        },
    )
    return Path(output)
