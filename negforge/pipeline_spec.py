"""Pipeline files (``pipelines/*.yaml``): the stage models, loading and validation.

:func:`load_spec` reads a pipeline file, applies the command-line overrides
(``--set VAR=VALUE``, ``--set STAGE.KEY=VALUE`` checked and read as YAML by
:mod:`negforge.overrides`, ``--input NAME=PATH``), expands
``${var}`` references and checks the whole file (stage kinds and keys, option values,
references, override names) before anything runs; each error names the file, the stage and
the key. :mod:`negforge.pipeline` runs what it returns (the file format is described there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from negforge.errors import ConfigError, InputError, PipelineError
from negforge.overrides import check_key, parse_assignment

StageKind = Literal["read", "build-dict", "mask", "generate", "export"]


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")

    def settings(self) -> dict[str, Any]:
        """The settings that go into the fingerprint (everything but the name)."""
        return self.model_dump(exclude={"name"}, mode="json")


class ReadStage(_Stage):
    """Validate a query file and write its valid rows as SHINE jsonl."""

    stage: Literal["read"]
    input: str | None = None
    format: str | None = None
    split: str | None = None
    on_error: Literal["raise", "skip"] = "raise"


class BuildDictStage(_Stage):
    """POS dictionary D over one or more query files."""

    stage: Literal["build-dict"]
    inputs: list[str] | None = None
    on_error: Literal["raise", "skip"] = "raise"


class MaskStage(_Stage):
    """Progressive masking of a query file."""

    stage: Literal["mask"]
    input: str | None = None
    preset: str = "charades_cg"
    ratios: str | list[float] | None = None
    exclude_types: str | list[str] | None = None
    on_error: Literal["raise", "skip"] = "raise"


class GenerateStage(_Stage):
    """LLM fill-in of the masked levels (negforge.generation); extra keys are its config."""

    model_config = ConfigDict(extra="allow")

    stage: Literal["generate"]
    masked: str | None = None
    dictionary: str | None = None

    def config(self) -> dict[str, Any]:
        """The GenerateConfig settings (every key that is not a stage field)."""
        return dict(self.model_extra or {})


class ExportStage(_Stage):
    """Write a masked or negatives artifact as SHINE jsonl."""

    stage: Literal["export"]
    source: str | None = None
    format: Literal["shine-jsonl"] = "shine-jsonl"


Stage = ReadStage | BuildDictStage | MaskStage | GenerateStage | ExportStage
StageSpec = Annotated[Stage, Field(discriminator="stage")]


class PipelineSpec(BaseModel):
    """A pipeline file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    vars: dict[str, str] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    spacy_model: str | None = None
    stages: list[StageSpec] = Field(min_length=1)


#: Default output file of each stage kind.
OUTPUT_NAMES: dict[str, str] = {
    "read": "queries.jsonl",
    "build-dict": "dictionary.parquet",
    "mask": "masked.parquet",
    "generate": "negatives.parquet",
    "export": "shine.jsonl",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


#: The stage kinds whose output a named reference accepts (query files: read, export).
_REFERENCE_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("read", "input"): ("read", "export"),
    ("build-dict", "inputs"): ("read", "export"),
    ("mask", "input"): ("read", "export"),
    ("generate", "masked"): ("mask",),
    ("generate", "dictionary"): ("build-dict",),
    ("export", "source"): ("generate", "mask"),
}
#: Without a reference: the latest earlier stage of these kinds...
DEFAULT_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("read", "input"): (),
    ("build-dict", "inputs"): ("read",),
    ("mask", "input"): ("read",),
    ("generate", "masked"): ("mask",),
    ("generate", "dictionary"): ("build-dict",),
    ("export", "source"): ("generate", "mask"),
}
#: ...or, for these, the pipeline's first input.
_DEFAULTS_TO_INPUT = {("read", "input"), ("build-dict", "inputs"), ("mask", "input")}


def _check_stage_setting(stage: dict[str, Any], setting: str, source: str) -> None:
    """``--set STAGE.KEY=...`` names a setting of the stage's kind (else the closest names)."""
    models: dict[Any, type[BaseModel]] = {"read": ReadStage, "build-dict": BuildDictStage,
                                          "mask": MaskStage, "export": ExportStage}  # fmt: skip
    if stage.get("stage") == "generate":
        if setting.split(".")[0] not in GenerateStage.model_fields:
            from negforge.generation.config import GenerateConfig

            check_key(GenerateConfig, setting, source)
    elif stage.get("stage") in models:
        check_key(models[stage.get("stage")], setting, source)


def _parse_assignment(text: str, flag: str, path: Path) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if "=" not in text or not key.strip():
        raise PipelineError(f"{flag} expects KEY=VALUE, got {text!r}", path=path)
    return key.strip(), value


def _yaml_line(text: str, index: int | None, key: str | None) -> int | None:
    """1-based line of a stage (``index``) or of one of its keys, or of a top-level key."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None

    def value_of(node: Any, name: str) -> tuple[Any, Any] | None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == name:
                    return key_node, value_node
        return None

    node = root
    if index is not None:
        stages = value_of(root, "stages")
        if stages is None or not isinstance(stages[1], yaml.SequenceNode):
            return None
        if not 0 <= index < len(stages[1].value):
            return None
        node = stages[1].value[index]
    if key is not None:
        found = value_of(node, key.split(".")[0])
        if found is not None:
            return int(found[0].start_mark.line) + 1
    return int(node.start_mark.line) + 1 if node is not None and index is not None else None


def _stage_label(raw_stage: Any, index: int) -> str:
    name = raw_stage.get("name") or raw_stage.get("stage") if isinstance(raw_stage, dict) else None
    return f"'{name}' (#{index + 1})" if name else f"#{index + 1}"


def _spec_error(exc: ValidationError, raw: dict[str, Any], path: Path, text: str
                ) -> PipelineError:  # fmt: skip
    """The first problem pydantic found, located by stage and key."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown key (a typo?)"
    if loc[:1] == ["stages"] and len(loc) >= 2 and isinstance(loc[1], int):
        index = loc[1]
        listed = raw.get("stages") or []
        raw_stage = listed[index] if index < len(listed) else None
        rest = [str(part) for part in loc[2:]]
        if rest and isinstance(raw_stage, dict) and rest[0] == raw_stage.get("stage"):
            rest = rest[1:]  # the discriminator's tag
        key = ".".join(rest) or None
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            key = "stage"
            kinds = ", ".join(OUTPUT_NAMES)
            message = f"unknown or missing stage kind {error['input'].get('stage')!r} " \
                      f"(kinds: {kinds})" if isinstance(error["input"], dict) else message
        return PipelineError(message, path=path, stage=_stage_label(raw_stage, index), key=key,
                             line=_yaml_line(text, index, key))  # fmt: skip
    key = ".".join(str(part) for part in loc) or None
    return PipelineError(message, path=path, key=key, line=_yaml_line(text, None, key))


def load_spec(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    input_overrides: Sequence[str] = (),
) -> PipelineSpec:
    """Read a pipeline file, apply command-line overrides, expand ``${vars}`` and check it.

    Everything that can be checked without the data is checked here, so that a run never
    stops half way on a typo: stage kinds and keys, option values (mask ratios and types,
    every generate setting), references between stages (unknown names, a later stage, a
    cycle, a stage of the wrong kind) and the override names. Each error names the file,
    the stage and the key (:class:`~negforge.errors.PipelineError`).
    """
    import yaml

    from negforge.readers import read_text

    path = Path(path)
    text = read_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"malformed YAML ({' '.join(str(exc).split())})", path=path,
                         line=mark.line + 1 if mark is not None else None) from exc
    if not isinstance(raw, dict):
        raise InputError("a pipeline file is a mapping with name, inputs and stages", path=path)
    for key in ("vars", "inputs"):
        if raw.get(key) is None:
            raw[key] = {}
        if not isinstance(raw[key], dict):
            raise PipelineError("must be a mapping of names to values", path=path, key=key,
                                line=_yaml_line(text, None, key))  # fmt: skip
    listed = raw.get("stages")
    stages: list[Any] = listed if isinstance(listed, list) else []
    used_vars = set(_VAR.findall(text))
    for item in overrides:
        key, value = _parse_assignment(item, "--set", path)
        if "." in key:
            stage_name, setting = key.split(".", 1)
            targets = [s for s in stages if isinstance(s, dict)
                       and (s.get("name") or s.get("stage")) == stage_name]
            if not targets:
                known = [s.get("name") or s.get("stage") for s in stages if isinstance(s, dict)]
                raise PipelineError(f"--set {item}: no stage named {stage_name!r} "
                                    f"(stages: {', '.join(map(str, known))})", path=path)
            try:
                parsed = parse_assignment(item).value
                for target in targets:
                    _check_stage_setting(target, setting, f"--set {item}")
            except ConfigError as exc:
                raise PipelineError(str(exc), path=path) from exc
            for target in targets:
                target[setting] = parsed
        elif key == "spacy_model":
            raw["spacy_model"] = value or None
        elif key in raw["inputs"] and key not in raw["vars"]:
            raw["inputs"][key] = value
        elif key in raw["vars"] or key in used_vars:
            raw["vars"][key] = value
        else:
            known = sorted(set(raw["vars"]) | (used_vars - set(_BUILTIN_VARS)))
            raise PipelineError(
                f"--set {item}: the pipeline has no variable or input {key!r} (variables: "
                f"{', '.join(known) or 'none'}; inputs: {', '.join(raw['inputs']) or 'none'}; "
                "a stage setting is --set STAGE.KEY=VALUE)",
                path=path,
            )
    for item in input_overrides:
        key, value = _parse_assignment(item, "--input", path)
        if key not in raw["inputs"]:
            raise PipelineError(f"--input {item}: the pipeline has no input {key!r} "
                                f"(inputs: {', '.join(raw['inputs']) or 'none'})", path=path)
        raw["inputs"][key] = value
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise _spec_error(exc, raw, path, text) from exc
    names = [s.name or s.stage for s in spec.stages]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PipelineError(f"stage names must be unique (give each a name:): {duplicated}",
                            path=path, key="stages")
    spec = _expand(spec, path, text)
    _check_stages(spec, path, text)
    return spec


#: Variables every pipeline has (see the module docstring).
_BUILTIN_VARS = ("sample_data", "pipeline_dir")


def _expand(spec: PipelineSpec, path: Path, text: str) -> PipelineSpec:
    from negforge import sample_data

    variables = {
        "sample_data": str(Path(sample_data.__file__).parent),
        "pipeline_dir": str(path.resolve().parent),
    }
    variables.update(spec.vars)

    def expand(value: Any, where: tuple[int | None, str], depth: int = 0) -> Any:
        if isinstance(value, str):
            def substitute(match: re.Match[str]) -> str:
                key = match.group(1)
                if key not in variables:
                    index, field = where
                    label = _stage_label(data["stages"][index], index) if index is not None \
                        else None  # fmt: skip
                    raise PipelineError(
                        f"unknown variable ${{{key}}} (declare it under vars: or set it with "
                        f"--set {key}=...)", path=path, stage=label, key=field,
                        line=_yaml_line(text, index, field))  # fmt: skip
                return variables[key]

            expanded = _VAR.sub(substitute, value)
            if _VAR.search(expanded) and depth < 5:
                return expand(expanded, where, depth + 1)
            return expanded
        if isinstance(value, list):
            return [expand(v, where, depth) for v in value]
        if isinstance(value, dict):
            return {k: expand(v, where, depth) for k, v in value.items()}
        return value

    data = spec.model_dump(mode="python", exclude_none=False)
    data["inputs"] = {k: expand(v, (None, f"inputs.{k}")) for k, v in data["inputs"].items()}
    data["stages"] = [
        {key: expand(value, (index, key)) for key, value in stage.items()}
        for index, stage in enumerate(data["stages"])
    ]
    data["spacy_model"] = expand(data["spacy_model"], (None, "spacy_model"))
    return PipelineSpec.model_validate(data)


def stage_references(stage: Stage) -> list[tuple[str, str | None]]:
    """(key, reference) of a stage's inputs; None where the default applies."""
    if isinstance(stage, BuildDictStage):
        return [("inputs", ref) for ref in stage.inputs] if stage.inputs else [("inputs", None)]
    if isinstance(stage, GenerateStage):
        return [("masked", stage.masked), ("dictionary", stage.dictionary)]
    if isinstance(stage, ExportStage):
        return [("source", stage.source)]
    return [("input", stage.input)]


def _cycle(spec: PipelineSpec, start: int, target: int) -> list[str] | None:
    """Stage names of a reference path from ``start`` back to ``target``, if any."""
    names = [s.name or s.stage for s in spec.stages]
    position = {name: index for index, name in enumerate(names)}
    seen: set[int] = set()

    def walk(index: int, trail: list[str]) -> list[str] | None:
        if index == target:
            return trail
        if index in seen:
            return None
        seen.add(index)
        for _, ref in stage_references(spec.stages[index]):
            if ref in position:
                found = walk(position[ref], [*trail, ref])
                if found:
                    return found
        return None

    return walk(start, [names[start]])


def _check_stages(spec: PipelineSpec, path: Path, text: str) -> None:
    """Option values and references of every stage (see :func:`load_spec`)."""
    from negforge.generation.config import GenerateConfig
    from negforge.masking import parse_exclude_types, resolve_ratios
    from negforge.readers import FORMATS

    names = [s.name or s.stage for s in spec.stages]
    position = {name: index for index, name in enumerate(names)}
    outputs: dict[str, str] = {}
    for index, stage in enumerate(spec.stages):
        label = f"'{names[index]}' (#{index + 1})"

        def fail(key: str | None, message: str, index: int = index, label: str = label
                 ) -> PipelineError:  # fmt: skip
            return PipelineError(message, path=path, stage=label, key=key,
                                 line=_yaml_line(text, index, key))  # fmt: skip

        output = stage_output_name(stage)
        if output in outputs:
            raise fail("name", f"writes {output}, as stage '{outputs[output]}' does; "
                               "give one of them another name:")  # fmt: skip
        outputs[output] = names[index]
        if isinstance(stage, ReadStage) and stage.format is not None \
                and stage.format not in FORMATS:  # fmt: skip
            raise fail("format", f"unknown format {stage.format!r}; use one of {FORMATS}")
        if isinstance(stage, MaskStage):
            try:
                resolve_ratios(stage.preset, stage.ratios)
            except ConfigError as exc:
                raise fail("ratios" if stage.ratios is not None else "preset", str(exc)) from exc
            try:
                parse_exclude_types(stage.exclude_types)
            except ConfigError as exc:
                raise fail("exclude_types", str(exc)) from exc
        if isinstance(stage, GenerateStage):
            try:
                GenerateConfig.model_validate(stage.config())
            except ValidationError as exc:
                error = exc.errors()[0]
                key = ".".join(str(part) for part in error["loc"]) or None
                message = "unknown key (a typo?)" if error["type"] == "extra_forbidden" \
                    else f"{error['msg']} (got {error.get('input')!r})"  # fmt: skip
                raise fail(key, message) from exc
        for key, ref in stage_references(stage):
            kinds = _REFERENCE_KINDS[(stage.stage, key)]
            if ref is None:
                defaults = DEFAULT_KINDS[(stage.stage, key)]
                if any(s.stage in defaults for s in spec.stages[:index]):
                    continue
                if (stage.stage, key) not in _DEFAULTS_TO_INPUT:
                    raise fail(key, f"no earlier {' or '.join(kinds)} stage to take it from; "
                                    f"name one (or a file) with {key}:")  # fmt: skip
                if not spec.inputs:
                    raise fail(key, "nothing to read: the pipeline has no inputs")
                continue
            if ref in position:
                target = position[ref]
                if target == index:
                    raise fail(key, f"refers to its own stage {ref!r} (a cycle)")
                if target > index:
                    trail = _cycle(spec, target, index)
                    why = (f"a cycle: {' -> '.join([names[index], *trail])}" if trail else
                           "stages run in file order and use only earlier stages' outputs")
                    raise fail(key, f"refers to stage {ref!r}, which runs after it ({why})")
                found = spec.stages[target].stage
                if found not in kinds:
                    raise fail(key, f"stage {ref!r} is a {found} stage; {key} needs the output "
                                    f"of a {' or '.join(kinds)} stage")  # fmt: skip
                continue
            if ref in spec.inputs:
                continue
            if not Path(ref).exists():
                raise fail(key, f"{ref!r} is no earlier stage, no input ("
                                f"{', '.join(spec.inputs) or 'none'}) and no existing file")


def stage_output_name(stage: Stage) -> str:
    """The file name a stage writes in the output folder."""
    default = OUTPUT_NAMES[stage.stage]
    return default if stage.name is None else f"{stage.name}{Path(default).suffix}"

