"""Stage fingerprints and the provenance a pipeline run records next to its outputs.

A stage's fingerprint is the sha256 of its input files' hashes, the hash of its own source
modules (:data:`STAGE_MODULES`) and its settings. It is stored in the artifact's provenance
(for jsonl outputs in ``<output>.provenance.json``, the sidecar); ``negforge run`` skips a
stage whose output exists with the same fingerprint and is complete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from negforge import __version__
from negforge.atomic import AtomicFiles
from negforge.errors import InputError

#: The modules whose source makes up a stage's code version.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "read": ("negforge.readers", "negforge.records", "negforge.atomic"),
    "build-dict": ("negforge.dictionary", "negforge.nlp", "negforge.post_parse",
                   "negforge.corpus", "negforge.masking", "negforge.readers", "negforge.records",
                   "negforge.artifacts"),
    "mask": ("negforge.masking", "negforge.nlp", "negforge.post_parse", "negforge.corpus",
             "negforge.readers", "negforge.records", "negforge.artifacts"),
    "generate": ("negforge.generation", "negforge.prompts", "negforge.dictionary",
                 "negforge.artifacts"),
    "export": ("negforge.export", "negforge.artifacts"),
}


def _module_files(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        files: list[Path] = []
        for location in spec.submodule_search_locations:
            folder = Path(location)
            files.extend(p for p in folder.rglob("*") if p.is_file()
                         and p.suffix in {".py", ".txt", ".json", ".md"}
                         and "__pycache__" not in p.parts)
        return sorted(files)
    return [Path(spec.origin)] if spec.origin else []


def code_version(stage: str) -> str:
    """sha256 of the source files a stage runs (and the negforge version)."""
    digest = hashlib.sha256(__version__.encode())
    for module in STAGE_MODULES[stage]:
        for file in _module_files(module):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def stage_fingerprint(
    stage: str, input_files: Sequence[Path], settings: dict[str, Any]
) -> str:
    """Fingerprint of a stage: input file hashes, its code version, its settings."""
    from negforge.artifacts import artifact_sha256
    from negforge.datasets import is_dataset

    payload = {
        "stage": stage,
        "inputs": [artifact_sha256(p) if p.is_file() or is_dataset(p) else f"missing:{p}"
                   for p in input_files],
        "code": code_version(stage),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def sidecar_path(output: Path) -> Path:
    """Where the provenance of a non-Parquet output is kept."""
    return output.with_name(output.name + ".provenance.json")


def recorded_fingerprint(output: Path) -> str | None:
    """The fingerprint stored with an existing output (None when absent or unreadable)."""
    from negforge.datasets import is_dataset

    if not (output.is_file() or is_dataset(output)):
        return None
    if output.suffix == ".parquet":
        from negforge.artifacts import read_provenance

        try:
            return read_provenance(output).fingerprint
        except (InputError, ValueError):
            return None
    sidecar = sidecar_path(output)
    try:
        value = json.loads(sidecar.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def write_sidecar(group: AtomicFiles, output: Path, stage: str, fingerprint: str,
                   inputs: Sequence[Path], settings: dict[str, Any], summary: dict[str, Any]
                   ) -> None:  # fmt: skip
    document = {
        "stage": stage,
        "fingerprint": fingerprint,
        "negforge_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(),
        "input_files": [str(p) for p in inputs],
        "settings": settings,
        "summary": summary,
    }
    group.write_text(sidecar_path(output), json.dumps(document, indent=2, sort_keys=True))


def stage_complete(output: Path) -> bool:
    """False for a generate artifact with failed queries: a rerun retries them."""
    if output.suffix != ".parquet":
        return True
    from negforge.artifacts import read_provenance

    try:
        summary = read_provenance(output).summary
    except (InputError, ValueError):
        return False
    return not summary.get("failed_queries")
