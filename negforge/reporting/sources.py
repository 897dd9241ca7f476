"""Read the negatives artifacts a report compares, with row-located errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from negforge.artifacts import NegativeRow, Provenance, read_artifact
from negforge.errors import ConfigError, InputError


@dataclass(frozen=True)
class NegativesSource:
    """One negatives artifact: its display name, file, provenance and rows."""

    name: str
    path: Path
    provenance: Provenance
    rows: list[NegativeRow]


def load_negatives(path: str | Path, name: str | None = None) -> NegativesSource:
    """Read a negatives artifact; a bad row raises InputError naming its row and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    table, provenance = read_artifact(path, "negatives")
    rows: list[NegativeRow] = []
    for index, record in enumerate(table.to_pylist()):
        try:
            rows.append(NegativeRow.model_validate(record))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or None
            raise InputError(error["msg"], path=path, line=index + 1, field=field) from exc
    return NegativesSource(name=name or path.stem, path=path, provenance=provenance, rows=rows)


def unique_names(paths: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    """Display names: the given ones, else file stems made unique with their parent folder."""
    if names:
        if len(names) != len(paths):
            raise ConfigError(f"{len(names)} --name values for {len(paths)} artifacts")
        return list(names)
    stems = [p.stem for p in paths]
    result: list[str] = []
    for path, stem in zip(paths, stems, strict=True):
        clash = stems.count(stem) > 1
        result.append(f"{path.parent.name}/{stem}" if clash else stem)
    return result
