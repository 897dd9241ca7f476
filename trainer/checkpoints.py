"""negforge checkpoints: written atomically, read with a one-line error for anything else.

A checkpoint is a dict saved by ``torch.save``: ``format`` (:data:`CHECKPOINT_FORMAT`),
``model`` (state dict), ``config`` (the run's resolved :class:`TrainConfig` as JSON data)
and, for a run's ``last.pt`` / ``best.pt``, what an exact resume needs: ``optimizer``,
``scheduler``, ``epoch`` (0-based), ``best_metric``, ``best_epoch``, ``stale``,
``history`` (the metrics rows) and ``rng`` (every generator's state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from negforge.atomic import atomic_path
from negforge.errors import ConfigError, InputError
from negforge.trainer.backbones import build_model
from negforge.trainer.config import TrainConfig

#: Version 2: the backbones equal the originals module for module; version-1 checkpoints
#: (the earlier, different architecture) do not load.
CHECKPOINT_FORMAT = "negforge-checkpoint/2"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temp file + rename."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A negforge checkpoint's state; anything else is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a checkpoint" if path.is_dir() else "checkpoint not found"
        raise InputError(reason, path=path)
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except OSError as exc:
        raise InputError(f"cannot read the checkpoint ({exc})", path=path) from exc
    except Exception as exc:  # pickle, zip, EOF, torch's own: all mean "not a checkpoint"
        raise InputError(
            f"not a negforge checkpoint ({type(exc).__name__}: {str(exc)[:120]})", path=path
        ) from exc
    if not isinstance(state, dict):
        raise InputError("not a negforge checkpoint", path=path)
    found = state.get("format")
    if found == CHECKPOINT_FORMAT:
        return state
    if isinstance(found, str) and found.startswith("negforge-checkpoint/"):
        raise InputError(
            f"written by an earlier negforge ({found}; this one reads {CHECKPOINT_FORMAT}): "
            "the backbones changed to equal the originals, retrain the run",
            path=path,
            field="format",
        )
    if "model" in state and "opt" in state:
        raise InputError(
            "an original Moment-DETR / QD-DETR / SHINE checkpoint: convert it first with "
            "negforge convert-checkpoint CKPT --backbone moment_detr|qd_detr -o model.pt",
            path=path,
            field="format",
        )
    raise InputError(
        "not a negforge checkpoint (no negforge format marker)", path=path, field="format"
    )


def load_model_from_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, TrainConfig]:
    """The model of a checkpoint (eval mode, on ``device``) and its run's config."""
    state = read_checkpoint(path, "cpu")
    cfg = TrainConfig.model_validate(state["config"])
    if cfg.model.v_dim is None or cfg.model.t_dim is None:
        raise ConfigError(f"{path} lacks the model's input sizes")
    model = build_model(cfg.model.resolve(cfg.model.v_dim, cfg.model.t_dim))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise InputError(f"weights do not fit its config ({reason})", path=path) from exc
    return model.to(device).eval(), cfg
