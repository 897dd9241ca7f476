"""The ``negforge`` command: a thin Typer layer over the library API.

Each command module registers its commands on :data:`app`; none imports torch, litellm or
spaCy at module level, so ``negforge --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from negforge.cli.app import app
from negforge.errors import NegforgeError

# Command modules register themselves on import; this order is the order of --help.
_COMMAND_MODULES = (
    "pipeline_commands",
    "generate_commands",
    "local_llm_commands",
    "plausibility_commands",
    "train_commands",
    "report_commands",
)
for _module in _COMMAND_MODULES:
    importlib.import_module(f"negforge.cli.{_module}")

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

        # typer >= 0.20 raises its vendored copy of click's exceptions (typer._click)
        vendored = getattr(getattr(typer, "_click", None), "exceptions", None)
        usage_errors: tuple[type[Exception], ...] = (click.ClickException,)
        if vendored is not None:
            usage_errors += (vendored.ClickException,)
        if isinstance(exc, usage_errors):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
