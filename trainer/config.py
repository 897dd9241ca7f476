"""The training configuration: model + loss (``model_config``) + data + optimisation.

Values are resolved in this order, later wins: field defaults < preset (``charades_cg`` /
``anet_cg``, the paper's Sec. 4 settings) < YAML file < command-line flags. The resolved
config is saved as ``RUN_DIR/config.yaml`` and inside every checkpoint.

This module imports pydantic and yaml only (no torch), so the CLI can build its flags from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from negforge.errors import ConfigError, InputError
from negforge.overrides import describe_error, merge, set_path
from negforge.overrides import leaf_fields as _leaf_fields
from negforge.trainer.model_config import Backbone, LossConfig, ModelConfig

PresetName = Literal["charades_cg", "anet_cg"]
PRESETS: tuple[str, ...] = ("charades_cg", "anet_cg")
SelectMetric = Literal["R1@0.5", "R1@0.7", "mIoU", "mAP"]
Postprocess = Literal["round_to_clips", "none"]
#: Short split names inferred from file names (``charades_cg_novel_composition.jsonl``).
SPLIT_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("novel_composition", "novel_composition"),
    ("novel_word", "novel_word"),
    ("test_trivial", "test_trivial"),
    ("test", "test_trivial"),
)
VALIDATION_SPLIT = "val"


class ModelSettings(ModelConfig):
    """:class:`ModelConfig` whose input sizes are filled in from the features at run time."""

    v_dim: int | None = Field(None, gt=0, description="video feature size (default: inferred)")  # type: ignore[assignment]
    t_dim: int | None = Field(None, gt=0, description="text feature size (default: inferred)")  # type: ignore[assignment]

    def resolve(self, v_dim: int, t_dim: int) -> ModelConfig:
        """The model config with the input sizes of the data (explicit values must match)."""
        for name, given, found in (("v_dim", self.v_dim, v_dim), ("t_dim", self.t_dim, t_dim)):
            if given is not None and given != found:
                raise ConfigError(f"model.{name} is {given} but the features have {found} dims")
        data = self.model_dump()
        data.update(v_dim=v_dim, t_dim=t_dim)
        return ModelConfig.model_validate(data)


class EvalSplit(BaseModel):
    """An evaluation split: a display name and a query file (jsonl or benchmark json)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    path: Path

    @classmethod
    def parse(cls, text: str) -> EvalSplit:
        """``NAME=PATH`` or ``PATH`` (the name then comes from the file name)."""
        name, sep, path = text.partition("=")
        if sep and name and "/" not in name:
            return cls(name=name, path=Path(path))
        return cls(name=split_name_from_path(Path(text)), path=Path(text))


def split_name_from_path(path: Path) -> str:
    """``novel_composition`` / ``novel_word`` / ``test_trivial`` when the file name says so."""
    stem = path.stem
    return next((name for hint, name in SPLIT_NAME_HINTS if hint in stem), stem)


class DataConfig(BaseModel):
    """Where the queries and features are and how clips are prepared."""

    model_config = ConfigDict(extra="forbid")

    train: Path | None = Field(None, description="negatives artifact (Parquet) or SHINE jsonl")
    eval: list[EvalSplit] = Field(default_factory=list, description="NAME=PATH or PATH")
    video_feats: list[Path] = Field(default_factory=list, description="feature folders / HDF5")
    text_feats: list[Path] = Field(default_factory=list, description="npz folders / packed HDF5")
    clip_len: float = Field(0.5, gt=0, description="seconds per feature clip (ActivityNet: 1.0)")
    long_videos: Literal["truncate", "pool"] = Field(
        "truncate",
        description="videos with more than max_v_len clips: keep the first max_v_len "
        "(the originals) or mean-pool them into max_v_len clips",
    )
    use_tef: bool = Field(True, description="append the clip position (t/L, (t+1)/L) to every clip")
    normalize_video: bool = Field(True, description="L2-normalise every clip per source")
    normalize_text: bool = Field(True, description="L2-normalise every text token")
    val_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of train videos held out to select checkpoints"
    )
    inbatch_negative: Literal["other_video", "next_row"] = Field(
        "other_video",
        description="in-batch negative query: a random row of another video, or the next row "
        "as the originals (may be the same video)",
    )
    on_missing: Literal["error", "skip"] = Field(
        "error", description="a query whose features are missing: stop, or skip and count it"
    )
    cache_features: bool = Field(False, description="keep loaded features in memory")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")

    @field_validator("eval", mode="before")
    @classmethod
    def _parse_splits(cls, value: object) -> object:
        if isinstance(value, list):
            return [EvalSplit.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("video_feats", "text_feats", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str | Path) else value


class OptimConfig(BaseModel):
    """AdamW + StepLR + gradient clipping (Moment-DETR / QD-DETR defaults)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    lr_drop: int = Field(400, ge=1, description="StepLR step size in epochs")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="StepLR decay factor")
    batch_size: int = Field(32, ge=1, description="per process (DDP: per GPU)")
    epochs: int = Field(200, ge=1)
    grad_clip: float = Field(0.1, ge=0, description="max gradient norm (0 = off)")


class TrainConfig(BaseModel):
    """Everything a run needs; saved with the run."""

    model_config = ConfigDict(extra="forbid")

    preset: PresetName | None = Field(None, description="charades_cg or anet_cg")
    model: ModelSettings = Field(default_factory=ModelSettings)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = Field(2018, description="seed of weights, data order and in-batch negatives")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    postprocess: Postprocess = Field(
        "round_to_clips",
        description="predicted windows: clamp to [0, 150] s and round to multiples of "
        "clip_len as the originals' PostProcessorDETR, or none (SHINE on ActivityNet)",
    )
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    eval_every: int = Field(1, ge=1, description="evaluate every N epochs (and the last)")
    select_on: str = Field(
        VALIDATION_SPLIT, description="split choosing best.pt: 'val' (held out from train)"
    )
    select_metric: SelectMetric = Field("mIoU", description="metric choosing best.pt")
    patience: int | None = Field(
        None, ge=1, description="stop after N evaluations without improvement"
    )
    progress: bool = Field(True, description="show a progress bar")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads (default: torch's choice)"
    )

    @property
    def backbone(self) -> Backbone:
        return self.model.backbone

    def with_absolute_paths(self) -> TrainConfig:
        """The same config with every data path made absolute (a saved config then loads
        from anywhere)."""
        data = self.data
        absolute = data.model_copy(
            update={
                "train": data.train.resolve() if data.train else None,
                "eval": [EvalSplit(name=s.name, path=s.path.resolve()) for s in data.eval],
                "video_feats": [p.resolve() for p in data.video_feats],
                "text_feats": [p.resolve() for p in data.text_feats],
            }
        )
        return self.model_copy(update={"data": absolute})


def preset_values(preset: str, backbone: str) -> dict[str, Any]:
    """The paper's settings (Sec. 4 and the authors' release) for a dataset and backbone, nested."""
    if preset == "charades_cg":
        return {
            "preset": preset,
            "model": {"enc_layers": 2, "dec_layers": 2, "max_q_len": 32, "max_v_len": None},
            "loss": {"saliency_margin": 0.2, "shine": _shine_paper_values()},
            "data": {"clip_len": 0.5},
            "postprocess": "round_to_clips",
            "optim": {
                "lr": 1e-4 if backbone == "qd_detr" else 2e-4,
                "batch_size": 32,
                "epochs": 200,
            },
        }
    if preset == "anet_cg":
        return {
            "preset": preset,
            "model": {"enc_layers": 3, "dec_layers": 3, "max_q_len": 50, "max_v_len": None},
            "loss": {"saliency_margin": 1.0, "shine": _shine_paper_values()},
            "data": {"clip_len": 1.0},
            "postprocess": "none",
            "optim": {"lr": 2e-4, "batch_size": 32, "epochs": 200},
        }
    raise ConfigError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")


def _shine_paper_values() -> dict[str, Any]:
    return {"h1": 1.0, "h2": 2.0, "margins": [0.25], "q": 8, "alpha": 1.0, "beta": 1.0}


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """A YAML config as a nested dict; relative data paths are resolved against its folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read YAML config ({exc})", path=path) from exc
    if not isinstance(data, dict):
        raise InputError("a config file must hold a mapping", path=path)
    section = data.get("data")
    if isinstance(section, dict):
        _resolve_relative(section, path.parent)
    return data


def _resolve_relative(section: dict[str, Any], root: Path) -> None:
    def fix(value: Any) -> Any:
        return (
            str(root / value) if isinstance(value, str) and not Path(value).is_absolute() else value
        )

    for key in ("train", "video_feats", "text_feats"):
        if key in section:
            value = section[key]
            section[key] = [fix(v) for v in value] if isinstance(value, list) else fix(value)
    if isinstance(section.get("eval"), list):
        resolved = []
        for item in section["eval"]:
            if isinstance(item, str):
                split = EvalSplit.parse(item)
                resolved.append({"name": split.name, "path": fix(str(split.path))})
            elif isinstance(item, dict) and "path" in item:
                resolved.append({**item, "path": fix(str(item["path"]))})
            else:
                resolved.append(item)
        section["eval"] = resolved


def resolve_data_paths(overrides: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """Dotted overrides whose relative data paths (``data.train``, ``data.eval``,
    ``data.video_feats``, ``data.text_feats``) are made relative to ``root``, as inside a
    YAML config file in ``root``."""
    section = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("data.")}
    _resolve_relative(section, Path(root))
    return {**overrides, **{f"data.{k}": v for k, v in section.items()}}


def build_config(
    *,
    preset: str | None = None,
    backbone: str | None = None,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sources: dict[str, str] | None = None,
) -> TrainConfig:
    """Resolve defaults < preset < YAML < overrides (dotted keys) into a :class:`TrainConfig`.

    ``sources`` tells how each override was given (``--set optim.lr=x``), for the error."""
    from_yaml = read_yaml_config(yaml_path) if yaml_path is not None else {}
    flat = dict(overrides or {})
    chosen_backbone = (
        backbone
        or flat.get("model.backbone")
        or (from_yaml.get("model") or {}).get("backbone")
        or ModelSettings.model_fields["backbone"].default
    )
    chosen_preset = preset or flat.get("preset") or from_yaml.get("preset")
    merged: dict[str, Any] = {}
    if chosen_preset:
        merged = preset_values(str(chosen_preset), str(chosen_backbone))
    merged = merge(merged, from_yaml)
    for dotted, value in flat.items():
        set_path(merged, dotted, value)
    set_path(merged, "model.backbone", chosen_backbone)
    if chosen_preset:
        merged["preset"] = chosen_preset
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        source = f" (from {yaml_path})" if yaml_path else ""
        raise ConfigError(describe_error(TrainConfig, exc, sources) + source) from exc


def config_to_yaml(config: TrainConfig) -> str:
    """The config as YAML (paths as strings), loadable by :func:`build_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def leaf_fields(model: type[BaseModel] = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf setting as ``{dotted name: FieldInfo}`` (nested models are walked)."""
    return _leaf_fields(model, prefix)
