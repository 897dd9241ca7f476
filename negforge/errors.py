"""Errors that the CLI turns into one clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path


class NegforgeError(Exception):
    """Base of every error negforge reports to users (exit code 2)."""

    exit_code = 2


class InputError(NegforgeError):
    """Bad input, located by file, line (or row) and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = ":".join(str(p) for p in (self.path, line) if p is not None)
        parts = [p for p in (where, f"field '{field}'" if field else None) if p]
        super().__init__(f"{', '.join(parts)}: {message}" if parts else message)


class ConfigError(NegforgeError):
    """An invalid setting, pipeline file or command-line combination."""


class MissingModelError(NegforgeError):
    """A model (spaCy pipeline, GGUF, encoder weights) is not installed."""
