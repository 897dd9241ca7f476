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
from negforge.cli.config_options import ConfigFlag, assignments, switches, with_config_options
from negforge.errors import ConfigError, Interrupted
from negforge.generation.config import GenerateConfig
from negforge.overrides import build

_BACKEND = "Backend"
_FILLS = "Prompt and fills"
_FAILURES = "Invalid answers and failures"
_SPEED = "Speed, cost and the Batch API"
_CACHE = "Cache and resume"

#: The settings of :class:`GenerateConfig` shown as named flags (aliases of ``--set KEY=...``);
#: every other setting is reachable with ``--set``. Types, defaults and help: the model's.
GENERATE_FLAGS: tuple[ConfigFlag, ...] = (
    ConfigFlag("llm", panel=_BACKEND),
    ConfigFlag("api_base", panel=_BACKEND),
    ConfigFlag("client", panel=_BACKEND),
    ConfigFlag("local_fill", panel=_BACKEND),
    ConfigFlag("local_model", panel=_BACKEND),
    ConfigFlag("rank_candidates", panel=_BACKEND),
    ConfigFlag("rank_top_k", panel=_BACKEND),
    ConfigFlag("dict_sample", panel=_FILLS),
    ConfigFlag("seed", panel=_FILLS),
    ConfigFlag("temperature", panel=_FILLS),
    ConfigFlag("max_tokens", panel=_FILLS),
    ConfigFlag("prompt_template", ("--prompt",), panel=_FILLS),
    ConfigFlag("prompt_version", panel=_FILLS),
    ConfigFlag("response_format", panel=_FILLS),
    ConfigFlag("allow_phrases", ("--allow-phrases",), panel=_FILLS, sets=True),
    ConfigFlag("require_dict_words", ("--require-dict-words",), panel=_FILLS, sets=True),
    *switches("constrain_fills", "--constrain-fills", "--free-fills", panel=_FILLS),
    ConfigFlag("min_plausibility", panel=_FILLS),
    ConfigFlag("limit", panel=_FILLS),
    ConfigFlag("max_attempts", panel=_FAILURES),
    ConfigFlag("on_invalid", panel=_FAILURES),
    ConfigFlag("max_failed", panel=_FAILURES),
    ConfigFlag("on_failed", panel=_FAILURES),
    ConfigFlag("max_retries", panel=_FAILURES),
    ConfigFlag("concurrency", panel=_SPEED),
    ConfigFlag("rpm", panel=_SPEED),
    ConfigFlag("tpm", panel=_SPEED),
    ConfigFlag("timeout_s", ("--timeout",), panel=_SPEED),
    ConfigFlag("batch", ("--batch",), panel=_SPEED, sets=True),
    ConfigFlag("batch_retry", panel=_SPEED),
    ConfigFlag("batch_poll_s", panel=_SPEED),
    ConfigFlag("batch_max_requests", panel=_SPEED),
    ConfigFlag("dry_run", ("--dry-run",), sets=True),
    ConfigFlag("cache_dir", panel=_CACHE),
    ConfigFlag("no_cache", ("--no-cache",), panel=_CACHE, sets=True),
    ConfigFlag("resume", ("--no-resume",), panel=_CACHE, sets=False,
               help="ignore the finished rows of an earlier run"),
    ConfigFlag("quiet", ("--quiet", "-q"), sets=True),
)


@app.command("generate")
@with_config_options(GenerateConfig, GENERATE_FLAGS, example="max_backoff_s=30")
def generate_command(
    masked: Path = typer.Argument(..., help="masked artifact (negforge mask)"),
    dictionary: Path = typer.Option(..., "--dict", help="dictionary artifact (build-dict)"),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="negatives artifact to write (not needed with --dry-run)"
    ),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="accept a masked artifact without rows"
    ),
    **settings: Any,
) -> None:
    """Fill every masked level with a hard negative (LLM or the random baseline).

    Every setting is a --set KEY=VALUE (the keys of a pipeline's generate stage); flags alias some.
    """
    from negforge.generation.estimate import estimate_generation
    from negforge.generation.runner import generate_negatives

    config = build(GenerateConfig, assignments(GENERATE_FLAGS, settings))
    dry_run = config.dry_run
    if dry_run:
        from negforge.progress import StepProgress

        with StepProgress("generate --dry-run: reading and estimating", quiet=config.quiet):
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
