"""The Typer application object shared by every command module.

Its group class is where every command's expected failures are turned into one line and an
exit code (:mod:`negforge.cli.failures`): a command registered on :data:`app` gets that for
free, whether it runs from the ``negforge`` script or from typer's ``CliRunner``.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup

from negforge.cli.examples import epilog
from negforge.cli.failures import report_failure
from negforge.progress import silence_third_party

_TYPE_NAMES = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "Path": "PATH", "bool": "BOOL"}


def plain_metavar(param: Any) -> str:
    """How a parameter's value is shown in ``--help``: ``[a|b]`` for choices, nothing for
    switches, else the plain type name (``INTEGER``, ``FLOAT``, ``PATH``, ``TEXT``)."""
    described = param.type_descriptor
    if described.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in described.choices) + "]"
    if getattr(param, "is_flag", False):
        return ""
    if described.is_path:
        return "PATH"
    bare = param.bare_type().removeprefix("list[").removesuffix("]")
    return _TYPE_NAMES.get(bare, bare.upper())


def _plain_types(command: Any) -> None:
    """Plain type names in a command's help instead of typer's ``<list[Path]>`` style."""
    make_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    setattr(command, "get_help_option", get_help_option)  # noqa: B010
    for param in command.params:
        if isinstance(param, TyperArgument):
            label = plain_metavar(param) + ("..." if param.nargs != 1 else "")
            setattr(param, "display_type_rich", lambda ctx, label=label: label)  # noqa: B010
        elif param.metavar is None:
            param.metavar = plain_metavar(param)


class NegforgeGroup(TyperGroup):
    """The command group: runs a command and reports its expected failures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, command in self.commands.items():
            _plain_types(command)
            command.epilog = command.epilog or epilog(name)

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)  # typer adds the completion options late
        for param in params:
            if param.metavar is None:
                param.metavar = plain_metavar(param)
        return params

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
    add_completion=True,
    pretty_exceptions_enable=False,
    cls=NegforgeGroup,
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"negforge {version('negforge')}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="show the Python traceback of an error (also NEGFORGE_DEBUG=1)"
    ),
    show_version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True,
        help="print the version of negforge and exit",
    ),
) -> None:
    """Options of every command (given before the command's name)."""
