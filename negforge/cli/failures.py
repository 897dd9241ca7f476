"""The one place where an expected failure becomes one line on stderr and an exit code.

Every negforge error (:class:`~negforge.errors.NegforgeError`: bad input, a bad setting, an
unwritable target, a failed LLM run, an interruption) carries its message and exit code.
Failures raised by the libraries underneath (an ``OSError`` of the disk, undecodable text,
spaCy's length limit, the response cache's sqlite, a malformed YAML / JSON / Parquet file)
are expected too and are described here. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from dataclasses import dataclass

from negforge.errors import NegforgeError, describe_os_error

DEBUG_ENV = "NEGFORGE_DEBUG"
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Failure:
    """What the user sees of an expected failure."""

    message: str
    exit_code: int = 2

    def line(self) -> str:
        """``negforge: error: MESSAGE`` on one line, printable whatever bytes paths hold."""
        flat = re.sub(r"\s*\n\s*", " ", self.message.strip())
        safe = flat.encode("utf-8", "backslashreplace").decode("utf-8")
        return f"negforge: error: {safe}"


def _module_class(exc: BaseException, module: str, name: str) -> bool:
    """``isinstance(exc, module.name)`` without importing the module."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def _os_failure(exc: OSError) -> Failure:
    reason = describe_os_error(exc)
    if exc.filename is None:
        return Failure(reason)
    names = [os.fsdecode(exc.filename)]
    if exc.filename2 is not None:
        names.append(os.fsdecode(exc.filename2))
    return Failure(f"{' -> '.join(names)}: {reason}")


def describe_failure(exc: BaseException) -> Failure | None:
    """The user-facing failure of an expected exception; None for a bug (keep the traceback)."""
    if isinstance(exc, NegforgeError):
        return Failure(str(exc), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", EXIT_INTERRUPTED)
    if isinstance(exc, UnicodeDecodeError):
        return Failure(f"invalid UTF-8 text (byte {exc.start}: {exc.reason})")
    if isinstance(exc, OSError):
        if exc.errno == errno.EPIPE:  # `negforge ... | head`: typer exits quietly
            return None
        return _os_failure(exc)
    if _module_class(exc, "sqlite3", "Error"):
        return Failure(f"the response cache's database failed ({exc})")
    if _module_class(exc, "yaml", "YAMLError"):
        return Failure(f"malformed YAML ({exc})")
    if _module_class(exc, "pyarrow", "ArrowException"):
        return Failure(f"not a readable Parquet/Arrow file ({exc})")
    if isinstance(exc, ValueError) and "[E088]" in str(exc):
        return Failure("a text is longer than spaCy's max_length (queries are at most a few "
                       "hundred characters; check the input)")  # fmt: skip
    return None


def debug_enabled(flag: bool = False) -> bool:
    """``--debug`` or ``NEGFORGE_DEBUG=1``: show the traceback of expected failures too."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def report_failure(exc: BaseException, *, debug: bool = False) -> int | None:
    """Print an expected failure (its traceback first under debug); its exit code, or None."""
    failure = describe_failure(exc)
    if failure is None:
        return None
    sys.stdout.flush()
    if debug_enabled(debug):
        traceback.print_exception(exc, file=sys.stderr)
    print(failure.line(), file=sys.stderr, flush=True)
    return failure.exit_code
