"""Run the ``negforge`` entry point in-process, as a user would (exit codes included)."""

from __future__ import annotations

import sys
from typing import Any


def run_cli(monkeypatch: Any, capsys: Any, *args: object) -> tuple[int, str, str]:
    """``negforge ARGS``: (exit code, stdout, stderr)."""
    from negforge.cli import main

    monkeypatch.setattr(sys, "argv", ["negforge", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
