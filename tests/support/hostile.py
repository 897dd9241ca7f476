"""Helpers of the hostile-input tests: small valid inputs, an in-process CLI call, a folder
snapshot and the contract every failure must meet (exit code, one line naming the path, no
traceback, nothing written, no temp file, inputs unchanged)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel
from typer.testing import CliRunner, Result

from negforge.cli import app

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_QUERIES = REPO_ROOT / "negforge" / "sample_data" / "sample_queries.jsonl"


class BaseInputs(BaseModel):
    """Valid inputs made once per session (copied into each case's folder)."""

    folder: Path
    cache: Path  # NEGFORGE_CACHE_DIR of every call (spaCy parses, LLM answers)

    def copy_into(self, target: Path) -> None:
        for item in self.folder.iterdir():
            if item.is_file():
                shutil.copy(item, target / item.name)
            elif item.name == "run":
                shutil.copytree(item, target / item.name)


def make_base_inputs(folder: Path, cache: Path) -> BaseInputs:
    """queries.jsonl (3 queries), dict.parquet, masked.parquet, negatives.parquet, a dictionary
    of nouns only, an empty masked artifact and a training run folder with metrics.csv."""
    from negforge.artifacts import SCHEMA_VERSIONS, DictionaryEntry, Provenance, write_artifact
    from negforge.dictionary import build_dictionary
    from negforge.generation.config import GenerateConfig
    from negforge.generation.runner import generate_negatives
    from negforge.masking import mask_file

    folder.mkdir(parents=True, exist_ok=True)
    queries = folder / "queries.jsonl"
    queries.write_text("".join(SAMPLE_QUERIES.read_text().splitlines(keepends=True)[:3]))
    docs = cache / "docs"
    build_dictionary([queries], folder / "dict.parquet", cache_dir=docs)
    (folder / "dict.parquet.summary.txt").unlink()
    mask_file(queries, folder / "masked.parquet", cache_dir=docs)
    generate_negatives(folder / "masked.parquet", folder / "dict.parquet",
                       folder / "negatives.parquet", GenerateConfig(quiet=True))  # fmt: skip
    nouns = [DictionaryEntry(type="noun", word="door", lemma="door", count=1)]
    write_artifact(folder / "nouns_only.parquet", nouns,
                   Provenance(kind="dictionary", schema_version=SCHEMA_VERSIONS["dictionary"]))
    write_artifact(folder / "empty_masked.parquet", [],
                   Provenance(kind="masked", schema_version=SCHEMA_VERSIONS["masked"]))
    run = folder / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,lr,train/loss\n1,0.0001,2.5\n2,0.0001,2.1\n")
    return BaseInputs(folder=folder, cache=cache)


def call_cli(*args: str | Path, cache: Path | None = None, **env: str | None) -> Result:
    """``negforge ARGS`` in this process (typer's CliRunner)."""
    environment: dict[str, str | None] = {"NEGFORGE_DEBUG": None, "LITELLM_LOCAL_MODEL_COST_MAP":
                                          "True", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    if cache is not None:
        environment["NEGFORGE_CACHE_DIR"] = str(cache)
    environment.update(env)
    return CliRunner().invoke(app, [str(a) for a in args], env=environment)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256), temp and hidden files too."""
    found = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if path.is_symlink():
                continue
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Expected:
    """What one hostile call must produce."""

    args: list[str]
    path: Path  # named in the message
    message: str  # a part of the message
    code: int = 2
    env: dict[str, str | None] = field(default_factory=dict)


def assert_clean_failure(result: Result, expected: Expected) -> str:
    """Exit code, one line ``negforge: error: ...`` naming the path, no traceback; the line."""
    described = f"{expected.args}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"unexpected {result.exception!r}: {described}"
    )
    assert result.exit_code == expected.code, described
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, described
    line = lines[0]
    assert line.startswith("negforge: error: "), described
    assert str(expected.path) in line, described
    assert expected.message in line, described
    assert "Traceback" not in result.output, described
    return line


def write_jsonl(path: Path, *rows: dict | bytes) -> Path:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def tmpfs_problem() -> str | None:
    """Why this machine cannot mount a small tmpfs (None when it can)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


def mount_tmpfs(folder: Path, size: str, *, read_only: bool = False) -> str | None:
    """Mount a tmpfs of ``size`` on ``folder``; the reason when that is impossible."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0777" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
    return None


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill_up(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of ``folder`` until at most ``leave_bytes`` are free."""
    filler = folder / "filler.bin"
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    block = stat.f_frsize
    with open(filler, "wb") as handle:
        remaining = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            piece = chunk[: min(len(chunk), remaining)]
            try:
                handle.write(piece)
                handle.flush()
            except OSError:
                break
            remaining -= len(piece)
    stat = os.statvfs(folder)
    assert stat.f_bavail * stat.f_frsize <= leave_bytes + block, "could not fill the tmpfs"
    return filler
