"""Write files atomically: temp files in the target's folder, then atomic renames.

* :func:`atomic_files` writes a group of files (an artifact and its side files: summary,
  bad-row report, provenance sidecar) together: every file goes to a temp file first and
  only when all were written are they renamed onto their targets, so they appear together
  or not at all. :func:`atomic_path`, :func:`atomic_open` and :func:`atomic_write_text` are
  the one-file cases.
* A temp file is named ``.<target name>.p<pid>.<random>.tmp``. A process killed while
  writing leaves its temp file behind; the next write of the same target removes every temp
  file of that target whose process is gone (and the unnamed ``.<name>.<random>.tmp`` of
  older versions). A clean exit of the process removes the temp files it still holds.
* Failures name the target, not the temp file: :class:`~negforge.errors.OutputError` for a
  read-only folder, a full disk, a target that is a folder or lies under a file.
  :func:`check_output` runs the same checks before a command starts its work, and refuses
  an output that is one of the command's inputs.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from negforge.errors import NegforgeError, OutputError, describe_os_error

TEMP_SUFFIX = ".tmp"
#: The part of a temp file name between ``.<target name>.`` and ``.tmp``.
_OWNED = re.compile(r"p(\d+)\.[a-z0-9_]{8}")
_LEGACY = re.compile(r"[a-z0-9_]{8}")  # tempfile.mkstemp's random part (negforge <= 0.1)
#: Temp files this process created and has not yet renamed or removed.
_LIVE: set[Path] = set()
#: Free space (bytes) under which a failed write is reported as a full disk.
_NEARLY_FULL = 64 * 1024


def temp_files_of(target: str | Path) -> list[Path]:
    """Temp files of ``target`` in its folder (any process, current or dead)."""
    target = Path(target)
    prefix = f".{target.name}."
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            middle = name[len(prefix) : -len(TEMP_SUFFIX)]
            if _OWNED.fullmatch(middle) or _LEGACY.fullmatch(middle):
                found.append(target.parent / name)
    return sorted(found)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(target: str | Path) -> list[Path]:
    """Remove the temp files of ``target`` left by dead processes; return them."""
    removed = []
    for temp in temp_files_of(target):
        middle = temp.name[len(Path(target).name) + 2 : -len(TEMP_SUFFIX)]
        owned = _OWNED.fullmatch(middle)
        if owned is not None:
            pid = int(owned.group(1))
            if (pid == os.getpid() and temp in _LIVE) or (
                pid != os.getpid() and _process_alive(pid)
            ):
                continue
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


@atexit.register
def _remove_live_temps() -> None:
    """On a clean exit: remove the temp files this process still holds."""
    for temp in list(_LIVE):
        with contextlib.suppress(OSError):
            temp.unlink()
    _LIVE.clear()


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (hard links and symlinks included)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unwritable_reason(folder: Path) -> str | None:
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    with contextlib.suppress(OSError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    return "permission denied"


def check_output(
    target: str | Path,
    *,
    inputs: Iterable[str | Path | None] = (),
    folder: bool = False,
    what: str = "output",
) -> Path:
    """Check that ``target`` can be written before any work starts; return it as a Path.

    Refuses a target that is one of ``inputs``, a folder given for a file (or a file given
    for a folder with ``folder=True``), a path under a file, and a read-only or unwritable
    folder. Raises :class:`~negforge.errors.OutputError` naming the target.
    """
    target = Path(target)
    if folder and target.exists() and not target.is_dir():
        raise OutputError(f"the {what} folder is a file", path=target)
    if not folder and target.is_dir():
        raise OutputError(f"the {what} is a folder; give a file name", path=target)
    for source in inputs:
        if source is not None and same_file(target, Path(source)):
            raise OutputError(
                f"the {what} is also an input ({source}); writing it would destroy the input",
                path=target,
            )
    existing = _nearest_existing(target if folder else target.parent)
    if not existing.is_dir():
        raise OutputError(f"cannot create a folder under {existing}: it is a file", path=target)
    reason = _unwritable_reason(existing)
    if reason is not None:
        raise OutputError(f"cannot write in {existing} ({reason})", path=target)
    return target


def _free_bytes(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class AtomicFiles:
    """Files written together: each into a temp file, all renamed at :meth:`commit`."""

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}  # target -> temp file
        self._removals: list[Path] = []
        self.current: Path | None = None  # the target whose temp file was handed out last

    def path(self, target: str | Path) -> Path:
        """A fresh temp file for ``target`` (the caller writes it; commit renames it)."""
        target = Path(target)
        if target in self._staged:
            raise ValueError(f"{target} is already part of this group")
        if target.is_dir():
            raise OutputError("the output is a folder; give a file name", path=target)
        self.current = target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_orphans(target)
            fd, name = tempfile.mkstemp(
                prefix=f".{target.name}.p{os.getpid()}.", suffix=TEMP_SUFFIX, dir=target.parent
            )
        except FileExistsError as exc:
            raise OutputError(f"cannot create its folder ({exc.filename} is a file)",
                              path=target) from exc  # fmt: skip
        except OSError as exc:
            raise OutputError(f"cannot write: {describe_os_error(exc)}", path=target) from exc
        os.close(fd)
        temp = Path(name)
        _LIVE.add(temp)
        os.chmod(temp, 0o666 & ~_current_umask())  # mkstemp makes 0600; match a plain open()
        self._staged[target] = temp
        return temp

    @contextlib.contextmanager
    def open(self, target: str | Path, mode: str = "w", encoding: str | None = "utf-8"
             ) -> Iterator[IO]:  # fmt: skip
        """Open a temp file of ``target`` for writing."""
        binary = "b" in mode
        with open(self.path(target), mode, encoding=None if binary else encoding) as handle:
            yield handle

    def write_text(self, target: str | Path, text: str) -> None:
        with self.open(target, "w") as handle:
            handle.write(text)

    def write_bytes(self, target: str | Path, data: bytes) -> None:
        with self.open(target, "wb") as handle:
            handle.write(data)

    def remove(self, target: str | Path) -> None:
        """Delete ``target`` at commit (a stale side file the new output no longer has)."""
        self._removals.append(Path(target))

    def commit(self) -> None:
        """fsync every temp file, then rename them all onto their targets."""
        for target, temp in self._staged.items():
            self.current = target
            try:
                _fsync_file(temp)
            except OSError as exc:
                raise self.error(exc) from exc
        renamed: list[Path] = []
        for target, temp in self._staged.items():
            try:
                os.replace(temp, target)
            except OSError as exc:
                for done in renamed:  # all or nothing: take back the ones already renamed
                    with contextlib.suppress(OSError):
                        done.unlink()
                self.current = target
                raise self.error(exc) from exc
            _LIVE.discard(temp)
            renamed.append(target)
        for folder in {target.parent for target in self._staged}:
            _fsync_dir(folder)
        for target in self._removals:
            if target not in self._staged:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()

    def discard(self) -> None:
        """Remove every temp file not yet renamed."""
        for temp in self._staged.values():
            if temp in _LIVE:
                with contextlib.suppress(OSError):
                    temp.unlink()
                _LIVE.discard(temp)

    def owns(self, exc: BaseException) -> bool:
        """Whether a failure happened while writing this group's temp files."""
        filename = getattr(exc, "filename", None)
        return filename is None or Path(str(filename)) in set(self._staged.values())

    def error(self, exc: BaseException) -> OutputError:
        """The failure of a write, naming its target."""
        target = self.current or next(iter(self._staged), None)
        if isinstance(exc, OSError):
            reason = describe_os_error(exc)
            if exc.errno == errno.EISDIR:
                reason = "the output is a folder"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return OutputError(f"cannot write: {reason}", path=target)

    def disk_full(self) -> bool:
        """Whether the folder of the current target is (nearly) full."""
        if self.current is None:
            return False
        free = _free_bytes(self.current.parent)
        return free is not None and free < _NEARLY_FULL


@contextlib.contextmanager
def atomic_files() -> Iterator[AtomicFiles]:
    """Write several files together: all are renamed into place when the block exits cleanly.

    A failure inside the block removes every temp file and leaves the targets as they were;
    an OSError while writing a temp file (or any error while the disk is full) becomes an
    :class:`~negforge.errors.OutputError` naming the target.
    """
    group = AtomicFiles()
    try:
        yield group
        group.commit()
    except NegforgeError:
        group.discard()
        raise
    except OSError as exc:
        full = group.disk_full()
        group.discard()
        if group.owns(exc) or full:
            raise group.error(exc) from exc
        raise
    except Exception as exc:
        full = group.disk_full()  # some writers (torch, h5py) report ENOSPC in their own words
        group.discard()
        if full:
            raise OutputError("cannot write: no space left on the device (disk full)",
                              path=group.current) from exc  # fmt: skip
        raise
    except BaseException:
        group.discard()
        raise
    finally:
        group.discard()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``target``; rename it onto ``target`` only on success."""
    with atomic_files() as group:
        yield group.path(target)


@contextlib.contextmanager
def atomic_open(
    target: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temp file for writing; it replaces ``target`` when the block exits cleanly."""
    with atomic_files() as group, group.open(target, mode, encoding) as handle:
        yield handle


def atomic_write_text(target: str | Path, text: str) -> None:
    """Replace ``target`` with ``text`` atomically."""
    with atomic_files() as group:
        group.write_text(target, text)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
