"""The ``negforge`` command: a thin Typer layer over the library API.

Each command module registers its commands on :data:`app`; none imports torch, litellm or
spaCy at module level, so ``negforge --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

from negforge.cli.app import app

# Command modules register themselves on import; this order is the order of --help.
_COMMAND_MODULES = (
    "pipeline_commands",
    "generate_commands",
    "local_llm_commands",
    "plausibility_commands",
    "train_commands",
    "sweep_commands",
    "report_commands",
)
for _module in _COMMAND_MODULES:
    importlib.import_module(f"negforge.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    """Entry point (the ``negforge`` script): exit codes 0, 2 (bad input, unwritable target),
    3 (the LLM backend failed), 130 (interrupted); see :mod:`negforge.cli.failures`."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except (typer.TyperException, click.ClickException) as exc:  # usage errors
        getattr(exc, "show")()  # noqa: B009 - typer's vendored click errors have show()
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
