"""Errors that the CLI turns into one clear line and an exit code (2 unless said otherwise).

Exit codes: 0 success; 2 bad input, a bad setting or a file that cannot be read or written;
3 the LLM backend failed on more queries than ``--max-failed`` allows; 130 interrupted.
"""

from __future__ import annotations

import errno
from pathlib import Path


class NegforgeError(Exception):
    """Base of every error negforge reports to users (exit code 2)."""

    exit_code = 2


class LocatedError(NegforgeError):
    """An error about one file, located by path, line (or row) and field when known."""

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


class InputError(LocatedError):
    """Bad input, located by file, line (or row) and field."""


class OutputError(LocatedError):
    """A target that cannot be written (read-only, disk full, a folder, an input...)."""


class ConfigError(NegforgeError):
    """An invalid setting, pipeline file or command-line combination."""


class PipelineError(InputError, ConfigError):
    """An invalid pipeline file or override, located by file (and line), stage and key."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path,
        stage: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.stage = stage
        self.key = key
        where = ", ".join(
            part for part in (f"stage {stage}" if stage else None,
                              f"key '{key}'" if key else None) if part
        )  # fmt: skip
        super().__init__(f"{where}: {message}" if where else message, path=path, line=line)


class MissingModelError(NegforgeError):
    """A model (spaCy pipeline, GGUF, encoder weights) is not installed."""


class Interrupted(NegforgeError):
    """Ctrl-C: the command stopped after saving what it could (exit code 130)."""

    exit_code = 130


#: Plain words for the errno values users meet when reading or writing files.
_ERRNO_TEXT = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
}


def describe_os_error(exc: OSError) -> str:
    """A short lower-case reason for an OSError (without its file name)."""
    code = exc.errno
    if code is None:  # e.g. pyarrow: "Error writing bytes to file. Detail: [errno 28] ..."
        text = str(exc)
        for number, words in _ERRNO_TEXT.items():
            if f"[errno {number}]" in text.lower():
                return words
        return text.splitlines()[0] if text else type(exc).__name__
    return _ERRNO_TEXT.get(code, exc.strerror or str(exc))
