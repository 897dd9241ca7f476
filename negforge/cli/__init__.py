"""The ``negforge`` command: a thin Typer layer over the library API.

Each command module registers its commands on :data:`app`; none imports torch, litellm or
spaCy at module level, so ``negforge --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from negforge.cli.app import app
from negforge.errors import NegforgeError

# Command modules register themselves on import (order = order in --help).
from negforge.cli import pipeline_commands as _pipeline_commands  # noqa: E402,F401,I001
from negforge.cli import generate_commands as _generate_commands  # noqa: E402,F401
from negforge.cli import local_llm_commands as _local_llm_commands  # noqa: E402,F401
from negforge.cli import train_commands as _train_commands  # noqa: E402,F401
from negforge.cli import report_commands as _report_commands  # noqa: E402,F401

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: run the app, turning negforge errors into one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except NegforgeError as exc:
        typer.echo(f"negforge: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
