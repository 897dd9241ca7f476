"""Partitioned artifacts: one Parquet file per shard in a folder, plus a manifest.

``negforge run --engine ray`` writes the masked and negatives artifacts this way::

    masked.parquet/
        part-00000.parquet   # a complete artifact of its shard (schema + provenance)
        part-00001.parquet
        _negforge.json       # the manifest: provenance of the whole, parts, row counts

The manifest is written last (atomically), so a folder without one is an unfinished stage;
parts are written atomically one by one and carry their shard's fingerprint, so a rerun
recomputes only missing shards. pyarrow, pandas and Hugging Face ``datasets`` skip files whose
name starts with ``_`` or ``.``, so they read the folder as the artifact's table
(``pd.read_parquet("masked.parquet")``, ``load_dataset("parquet",
data_files="masked.parquet/*.parquet")``); DuckDB reads ``'masked.parquet/*.parquet'``.
negforge's own readers (:func:`negforge.artifacts.read_artifact`, ``read_provenance``) take
either layout.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from negforge.artifacts import ARROW_SCHEMAS, Provenance, provenance_sidecar, resolve_inputs
from negforge.atomic import atomic_write_text
from negforge.errors import InputError

MANIFEST = "_negforge.json"
MANIFEST_FORMAT = 1


class DatasetPart(BaseModel):
    """One part file of a dataset."""

    name: str
    rows: int
    sha256: str


class DatasetManifest(BaseModel):
    """The manifest of a partitioned artifact."""

    negforge_dataset: int = MANIFEST_FORMAT
    provenance: Provenance
    parts: list[DatasetPart]

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def is_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a finished partitioned artifact (a folder with a manifest)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> DatasetManifest:
    """A dataset's manifest (InputError when the folder is not a finished dataset)."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise InputError(f"is a folder without {MANIFEST}, so not a Parquet artifact nor a "
                         "finished negforge dataset (rerun the stage that makes it)",
                         path=path)  # fmt: skip
    try:
        return DatasetManifest.model_validate_json(manifest.read_bytes())
    except ValueError as exc:
        raise InputError(f"unreadable dataset manifest ({exc})", path=manifest) from exc


def read_table(path: str | Path) -> pa.Table:
    """The dataset's rows: its parts in order (checked against the manifest's row counts)."""
    path = Path(path)
    manifest = read_manifest(path)
    tables = []
    for part in manifest.parts:
        table = pq.read_table(path / part.name)
        if table.num_rows != part.rows:
            raise InputError(f"{table.num_rows} rows, the manifest says {part.rows}",
                             path=path / part.name)  # fmt: skip
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        return ARROW_SCHEMAS[manifest.provenance.kind].empty_table()
    return pa.concat_tables(tables)


def dataset_sha256(path: str | Path) -> str:
    """The content hash of a dataset: sha256 over its parts' hashes, in order."""
    digest = hashlib.sha256(b"negforge-dataset\n")
    for part in read_manifest(path).parts:
        digest.update(f"{part.name} {part.sha256}\n".encode())
    return digest.hexdigest()


def write_manifest(path: str | Path, provenance: Provenance, parts: Sequence[DatasetPart]) -> Path:
    """Finish a dataset: write its manifest (atomically) and remove part files not listed."""
    path = Path(path)
    listed = {part.name for part in parts}
    for stale in path.glob("part-*.parquet"):
        if stale.name not in listed:
            stale.unlink()
    manifest = DatasetManifest(provenance=resolve_inputs(provenance), parts=list(parts))
    atomic_write_text(path / MANIFEST, manifest.model_dump_json(indent=2))
    return path


def prepare_folder(path: str | Path) -> Path:
    """Make ``path`` a folder for a dataset: an artifact file there is removed (with its
    provenance sidecar), a finished dataset's manifest too (parts stay, for resuming)."""
    path = Path(path)
    if path.is_file() or path.is_symlink():
        path.unlink()
        provenance_sidecar(path).unlink(missing_ok=True)  # the file's, not the dataset's
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    return path


def remove_dataset(path: str | Path) -> None:
    """Delete a dataset folder (before another engine writes a single file there)."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
