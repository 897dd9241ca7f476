"""The Typer application object shared by every command module.

Its group class is where every command's expected failures are turned into one line and an
exit code (:mod:`negforge.cli.failures`): a command registered on :data:`app` gets that for
free, whether it runs from the ``negforge`` script or from typer's ``CliRunner``.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from negforge.cli.failures import report_failure
from negforge.progress import silence_third_party


class NegforgeGroup(TyperGroup):
    """The command group: runs a command and reports its expected failures."""

    def invoke(self, ctx: Any) -> Any:
        silence_third_party()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, SystemExit):
            raise
        except BaseException as exc:
            code = report_failure(exc, debug=bool(ctx.params.get("debug")))
            if code is None:
                raise
            raise typer.Exit(code) from None


app = typer.Typer(
    name="negforge",
    help="SHINE end to end: hierarchical hard-negative queries and a saliency-ranking trainer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=NegforgeGroup,
)


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="show the Python traceback of an error (also NEGFORGE_DEBUG=1)"
    ),
) -> None:
    """Options of every command (given before the command's name)."""
