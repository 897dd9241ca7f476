"""Sweep files (``sweeps/*.yaml``): a grid over training-config settings x seeds.

A sweep file::

    name: fig5_q                                  # default: the file's stem
    config: ../outputs/synth/train_config.yaml    # base training config (relative to this file)
    preset: null                                  # optional --preset of every trial
    set: {optim.epochs: 20}                       # settings of every trial (dotted names)
    grid:                                         # the axes; trials = product x seeds
      loss.shine.q: [2, 4, 8, 16]                 # a setting and its values
      variant:                                    # a named axis: each value sets several keys
        base: {loss.shine.enabled: false}
        shine: {}
    seeds: [1, 2, 3]                              # each trial's ``seed``
    report: {splits: [novel_composition], metrics: [R1@0.5, R1@0.7, mIoU]}
    plots: [{x: loss.shine.q, metric: [novel_composition/R1@0.5]}]

Keys are the dotted names of the training config (``negforge train --help`` shows each one
after its flag). A data path (``data.train``, ``data.eval``, ``data.video_feats``,
``data.text_feats``) given in ``set`` or ``grid`` is relative to the base config's folder,
as inside that config. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from negforge.errors import ConfigError, InputError
from negforge.trainer.config import (
    TrainConfig,
    build_config,
    leaf_fields,
    read_yaml_config,
    resolve_data_paths,
)

#: Metrics a trial reports per split (the trainer's evaluation).
METRICS = ("R1@0.5", "R1@0.7", "mIoU", "mAP")
#: Settings that do not change a trial's result (left out of its fingerprint).
_RUNTIME_SETTINGS = frozenset({"device", "progress", "cpu_threads", "data.num_workers"})
_AXIS_NAME = re.compile(r"^[A-Za-z0-9_+-]+$")


class ReportSpec(BaseModel):
    """What the Markdown summary shows (every split and metric are in the table anyway)."""

    model_config = ConfigDict(extra="forbid")

    splits: list[str] | None = Field(default=None, description="default: every evaluated split")
    metrics: list[str] = Field(default_factory=lambda: ["R1@0.5", "R1@0.7", "mIoU"])


class PlotSpec(BaseModel):
    """A Fig. 5 style plot: metric(s) against ``x`` (line), or a ``x`` x ``y`` heatmap."""

    model_config = ConfigDict(extra="forbid")

    x: str
    y: str | None = None
    metric: list[str] = Field(min_length=1, description="SPLIT/METRIC, e.g. val/mIoU")
    where: dict[str, Any] = Field(default_factory=dict, description="fix other axes")
    name: str | None = None

    @field_validator("metric", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class SweepFile(BaseModel):
    """The sweep file as written (validated shape; keys are checked by :func:`load_sweep`)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    config: Path | None = None
    preset: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [2018], min_length=1)
    report: ReportSpec = Field(default_factory=lambda: ReportSpec())
    plots: list[PlotSpec] = Field(default_factory=list)


class Axis(BaseModel):
    """One axis of the grid: its values, each a label and the settings it applies."""

    name: str
    labels: list[str]
    settings: list[dict[str, Any]]
    #: True for ``key: [values]`` axes (the value is the setting itself).
    is_setting: bool


class Trial(BaseModel):
    """One training run of the sweep."""

    id: str
    cell: dict[str, str]
    seed: int
    overrides: dict[str, Any]
    fingerprint: str


class Sweep(BaseModel):
    """A loaded, checked sweep: its axes and every trial."""

    name: str
    path: Path
    config: Path | None
    preset: str | None
    axes: list[Axis]
    seeds: list[int]
    trials: list[Trial]
    report: ReportSpec
    plots: list[PlotSpec]

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]

    def build_config(self, trial: Trial) -> TrainConfig:
        """The trial's resolved training config."""
        return build_config(preset=self.preset, yaml_path=self.config, overrides=trial.overrides)


def _key_lines(path: Path, text: str) -> dict[tuple[str, ...], int]:
    """Line (1-based) of every mapping key, by its path of keys, for error messages."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    here = (*prefix, str(key.value))
                    lines[here] = key.start_mark.line + 1
                    walk(value, here)

    walk(root, ())
    return lines


def _label(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_label(v) for v in value)
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+,-]+", "_", text)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file: every key is a training setting, every trial validates.

    Raises :class:`InputError` naming the file, line and key for a bad entry (exit code 2).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read sweep file ({exc})", path=path) from exc
    if not isinstance(raw, dict):
        raise InputError("a sweep file must hold a mapping", path=path)
    lines = _key_lines(path, text)
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(p) for p in first["loc"])
        raise InputError(
            first["msg"], path=path, line=lines.get(loc[:1]), field=".".join(loc)
        ) from exc
    config = (path.parent / spec.config).resolve() if spec.config else None
    if config is not None and not config.is_file():
        raise InputError(
            f"base training config {config} does not exist",
            path=path,
            line=lines.get(("config",)),
            field="config",
        )
    base_dir = config.parent if config else Path.cwd()
    leaves = leaf_fields()

    def check_key(key: str, where: tuple[str, ...]) -> None:
        if key == "seed":
            raise InputError(
                "the seed is set by 'seeds', not as a setting",
                path=path,
                line=lines.get(where),
                field=key,
            )
        if key not in leaves:
            raise InputError(
                f"'{key}' is not a training config setting "
                "(dotted names as in the training config; see negforge train --help)",
                path=path,
                line=lines.get(where),
                field=key,
            )

    fixed = dict(spec.set)
    for key in fixed:
        check_key(key, ("set", key))
    axes: list[Axis] = []
    for name, values in spec.grid.items():
        where = ("grid", name)
        if isinstance(values, list):
            check_key(name, where)
            if not values:
                raise _empty_axis(path, lines.get(where), name)
            axes.append(
                Axis(
                    name=name,
                    labels=[_label(v) for v in values],
                    settings=[{name: v} for v in values],
                    is_setting=True,
                )
            )
        elif isinstance(values, dict):
            if name in leaves or not _AXIS_NAME.match(name):
                raise InputError(
                    f"'{name}' is not a training config setting: a setting takes a list of "
                    "values; a named axis (letters, digits, _ + -) maps variant names to "
                    "settings",
                    path=path,
                    line=lines.get(where),
                    field=name,
                )
            labels, settings = [], []
            for label, variant in values.items():
                variant = variant or {}
                if not isinstance(variant, dict):
                    raise InputError(
                        "a variant maps dotted settings to values",
                        path=path,
                        line=lines.get((*where, str(label))),
                        field=f"{name}.{label}",
                    )
                for key in variant:
                    check_key(key, (*where, str(label), key))
                labels.append(str(label))
                settings.append(dict(variant))
            if not labels:
                raise _empty_axis(path, lines.get(where), name)
            axes.append(Axis(name=name, labels=labels, settings=settings, is_setting=False))
        else:
            raise InputError(
                "an axis is a list of values or a mapping of named variants",
                path=path,
                line=lines.get(where),
                field=name,
            )
    sweep = Sweep(
        name=spec.name or path.stem,
        path=path.resolve(),
        config=config,
        preset=spec.preset,
        axes=axes,
        seeds=spec.seeds,
        trials=[],
        report=spec.report,
        plots=spec.plots,
    )
    sweep.trials = list(_expand(sweep, fixed, base_dir, path, lines))
    _check_plots(sweep, path, lines)
    return sweep


def _empty_axis(path: Path, line: int | None, name: str) -> InputError:
    return InputError("an axis needs at least one value", path=path, line=line, field=name)


def _expand(
    sweep: Sweep,
    fixed: dict[str, Any],
    base_dir: Path,
    path: Path,
    lines: dict[tuple[str, ...], int],
) -> Iterator[Trial]:
    seen: dict[str, str] = {}
    choices = [range(len(a.labels)) for a in sweep.axes]
    # What a trial's result depends on: the base config's content, the preset and its own
    # settings (not the code's defaults: a new setting with a default keeps finished trials).
    base = read_yaml_config(sweep.config) if sweep.config else {}
    for combo in itertools.product(*choices):
        overrides = dict(fixed)
        cell: dict[str, str] = {}
        for axis, index in zip(sweep.axes, combo, strict=True):
            overrides.update(axis.settings[index])
            cell[axis.name] = axis.labels[index]
        overrides = resolve_data_paths(overrides, base_dir)
        for seed in sweep.seeds:
            settings = {**overrides, "seed": seed}
            try:
                resolved = build_config(
                    preset=sweep.preset, yaml_path=sweep.config, overrides=settings
                )
            except ConfigError as exc:
                where = ", ".join(f"{k}={v}" for k, v in cell.items()) or "every trial"
                raise InputError(f"{exc} (trial {where})", path=path) from exc
            _check_data_paths(resolved, cell, path)
            recipe = {
                "preset": sweep.preset,
                "config": base,
                "settings": {k: v for k, v in settings.items() if k not in _RUNTIME_SETTINGS},
            }
            dumped = json.dumps(recipe, sort_keys=True, default=str)
            fingerprint = hashlib.sha256(dumped.encode()).hexdigest()[:16]
            parts = [f"{_short(k)}={v}" for k, v in cell.items()] + [f"seed={seed}"]
            trial_id = _slug(",".join(parts))
            if trial_id in seen:
                raise InputError(f"two trials would share the folder '{trial_id}'", path=path)
            seen[trial_id] = fingerprint
            yield Trial(
                id=trial_id, cell=cell, seed=seed, overrides=settings, fingerprint=fingerprint
            )


def _check_data_paths(cfg: TrainConfig, cell: dict[str, str], path: Path) -> None:
    """Every data file / folder of a trial exists (a missing one stops the sweep up front)."""
    data = cfg.data
    named: list[tuple[str, Path]] = [("data.train", data.train)] if data.train else []
    named += [("data.eval", split.path) for split in data.eval]
    named += [("data.video_feats", p) for p in data.video_feats]
    named += [("data.text_feats", p) for p in data.text_feats]
    for key, target in named:
        if not target.exists():
            where = ", ".join(f"{k}={v}" for k, v in cell.items()) or "every trial"
            raise InputError(f"{target} does not exist (trial {where})", path=path, field=key)


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _check_plots(sweep: Sweep, path: Path, lines: dict[tuple[str, ...], int]) -> None:
    names = set(sweep.axis_names)
    for index, plot in enumerate(sweep.plots):
        for key in (plot.x, plot.y, *plot.where):
            if key is not None and key not in names:
                raise InputError(
                    f"plot axis '{key}' is not an axis of the grid ({', '.join(names)})",
                    path=path,
                    line=lines.get(("plots",)),
                    field=f"plots.{index}",
                )
        for metric in plot.metric:
            split, _, name = metric.partition("/")
            if not split or name not in METRICS:
                raise InputError(
                    f"plot metric '{metric}' must be SPLIT/METRIC with METRIC one of "
                    f"{', '.join(METRICS)}",
                    path=path,
                    line=lines.get(("plots",)),
                    field=f"plots.{index}.metric",
                )
