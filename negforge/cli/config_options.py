"""Command-line options generated from a config model, plus ``--set KEY=VALUE``.

A command that takes a config (``generate``, ``train``) lists the settings it shows as named
flags (:class:`ConfigFlag`); the flag's type, choices, help and default come from the
pydantic field, so nothing is written twice. Every flag and every ``--set`` becomes an
:class:`~negforge.overrides.Assignment`, checked and applied by :mod:`negforge.overrides`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

from negforge.overrides import Assignment, check_key, leaf_fields, parse_assignment

#: The option every config-taking command has.
SET_OPTION = "--set"
_SET_PARAM = "cfg_set"


@dataclass(frozen=True)
class ConfigFlag:
    """A setting shown as a named flag (an alias of ``--set KEY=VALUE``)."""

    key: str  # dotted setting
    decls: tuple[str, ...] = ()  # option names; default ``--<last part>`` (bool: ``/--no-``)
    panel: str | None = None  # rich help panel
    sets: Any = None  # a switch that sets this fixed value (``--no-resume`` sets False)
    repeat: bool = False  # a list setting given by repeating the option
    help: str | None = None  # shown instead of the field's description

    @property
    def names(self) -> tuple[str, ...]:
        """The option names: ``decls``, else ``--<last part of the key>``."""
        return self.decls or ("--" + self.key.rsplit(".", 1)[-1].replace("_", "-"),)

    @property
    def param(self) -> str:
        return "cfg__" + self.key.replace(".", "__") + ("__off" if self.sets is False else "")


def _base(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) is not typing.Literal and len(args) == 1:
        return args[0]
    return annotation


def _shown_default(info: FieldInfo) -> str | None:
    default = info.get_default(call_default_factory=True)
    if default is None or default == [] or default == ():
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple | list):
        return ",".join(map(str, default))
    return str(default)


def _option(model: type[BaseModel], flag: ConfigFlag) -> inspect.Parameter:
    info = check_key(model, flag.key)
    base = _base(info.annotation)
    text = flag.help if flag.help is not None else (info.description or "")
    default = _shown_default(info)
    if flag.help is None and default is not None:
        text = f"{text} [default: {default}]".strip()
    metavar: str | None = None
    kind: Any
    initial: Any = None
    if flag.sets is not None:
        kind, initial = bool, False
    elif base is bool:
        kind = bool | None
    elif typing.get_origin(base) is typing.Literal or base in (int, float, str, Path):
        kind = base | None
    elif flag.repeat:
        kind = list[str] | None
        text += " (repeatable)"
    else:  # tuples and lists of numbers or words: comma-separated
        kind, metavar = str | None, "A,B,..."
    option = typer.Option(initial, *flag.names, help=escape(text), show_default=False,
                          rich_help_panel=flag.panel, metavar=metavar)  # fmt: skip
    return inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=kind)  # fmt: skip


def all_flags(
    model: type[BaseModel],
    *,
    renamed: dict[str, str] | None = None,
    panels: dict[str, str | None] | None = None,
    repeat: Sequence[str] = (),
) -> list[ConfigFlag]:
    """A flag for every leaf of ``model``: ``--<last part>`` where that is
    unique, else ``--<whole-dotted-name>``; ``renamed`` gives nicer names, ``panels`` maps a
    key prefix (``"loss.shine."``) to its help panel (the longest prefix wins)."""
    renamed = renamed or {}
    panels = panels or {}
    leaves = leaf_fields(model)
    lasts = [k.rsplit(".", 1)[-1] for k in leaves]
    flags: list[ConfigFlag] = []
    for key in leaves:
        last = key.rsplit(".", 1)[-1]
        name = renamed.get(key) or (last if lasts.count(last) == 1 else key.replace(".", "-"))
        name = name.replace("_", "-")
        prefix = max((p for p in panels if key.startswith(p)), key=len, default=None)
        panel = panels[prefix] if prefix is not None else None
        if _base(leaves[key].annotation) is bool:
            flags += switches(key, f"--{name}", f"--no-{name}", panel=panel)
        else:
            flags.append(ConfigFlag(key, (f"--{name}",), panel=panel, repeat=key in repeat))
    return flags


def switches(key: str, on: str, off: str, *, panel: str | None = None) -> list[ConfigFlag]:
    """An on/off setting as two flags, each on its own help line (``--shine``, ``--no-shine``):
    a ``--x/--no-x`` pair would need a third column, which cuts names at 80 columns."""
    return [ConfigFlag(key, (on,), panel=panel, sets=True),
            ConfigFlag(key, (off,), panel=panel, sets=False, help="turns the setting above off")]


def with_config_options(
    model: type[BaseModel], flags: Sequence[ConfigFlag], *, example: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--set`` and ``flags`` to a command whose signature ends in ``**settings``
    (``example``: a ``KEY=VALUE`` for the help of ``--set``)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func, eval_str=True)
        params = [p for p in signature.parameters.values()
                  if p.kind != inspect.Parameter.VAR_KEYWORD]  # fmt: skip
        set_option = typer.Option(
            [], SET_OPTION, metavar="KEY=VALUE",
            help=escape(f"any setting by its dotted name, the value read as YAML, e.g. --set "
                        f"{example} (repeatable; wins over the flags)"),
        )  # fmt: skip
        extra = [inspect.Parameter(_SET_PARAM, inspect.Parameter.KEYWORD_ONLY,
                                   default=set_option, annotation=list[str])]  # fmt: skip
        extra += [_option(model, flag) for flag in flags]
        func.__signature__ = signature.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
        return func

    return decorate


def assignments(flags: Sequence[ConfigFlag], settings: dict[str, Any]) -> list[Assignment]:
    """The settings a call gave: named flags first, then ``--set`` (so ``--set`` wins)."""
    found: list[Assignment] = []
    for flag in flags:
        value = settings.get(flag.param)
        name = flag.names[0]
        if flag.sets is not None:
            if value:
                found.append(Assignment(flag.key, flag.sets, name))
            continue
        if value is None or (flag.repeat and not value):
            continue
        if isinstance(value, bool):  # a --x/--no-x pair
            found.append(Assignment(flag.key, value, name.split("/")[0 if value else -1]))
            continue
        value = str(value) if isinstance(value, Path) else value
        found.append(Assignment(flag.key, value, f"{name} {value}"))
    found += [parse_assignment(text) for text in settings.get(_SET_PARAM) or []]
    return found
