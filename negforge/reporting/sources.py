"""Read the negatives artifacts a report compares, with row-located errors.

A ``scored_negatives`` artifact (``negforge score-plausibility``) reads as its negatives rows
plus one :class:`~negforge.reporting.plausibility.RowScore` per row (None without a negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pydantic import ValidationError

from negforge.artifacts import ARROW_SCHEMAS, NegativeRow, Provenance, read_artifact
from negforge.errors import ConfigError, InputError
from negforge.reporting.plausibility import RowScore

_NEGATIVE_COLUMNS = [field.name for field in ARROW_SCHEMAS["negatives"]]


@dataclass(frozen=True)
class NegativesSource:
    """One negatives artifact: its display name, file, provenance and rows."""

    name: str
    path: Path
    provenance: Provenance
    rows: list[NegativeRow]
    scores: list[RowScore | None] | None = None  # None: not scored
    score_model: str | None = None  # the GGUF the scores came from


def load_negatives(path: str | Path, name: str | None = None) -> NegativesSource:
    """Read a negatives artifact; a bad row raises InputError naming its row and field."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    table, provenance = read_artifact(path)  # a file, or a dataset folder
    if provenance.kind not in ("negatives", "scored_negatives"):
        raise InputError(f"expected a negatives artifact, found {provenance.kind}", path=path)
    scores: list[RowScore | None] | None = None
    if provenance.kind == "scored_negatives":
        scores = _row_scores(table, path)
    rows: list[NegativeRow] = []
    for index, record in enumerate(table.select(_NEGATIVE_COLUMNS).to_pylist()):
        try:
            rows.append(NegativeRow.model_validate(record))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or None
            raise InputError(error["msg"], path=path, line=index + 1, field=field) from exc
    model = provenance.settings.get("model") if scores is not None else None
    return NegativesSource(name=name or path.stem, path=path, provenance=provenance, rows=rows,
                           scores=scores, score_model=model)  # fmt: skip


def _row_scores(table: pa.Table, path: Path) -> list[RowScore | None]:
    """The plausibility columns of a scored artifact, one score per row."""
    columns = ("plausibility_nll", "plausibility_query_nll", "plausibility_delta")
    for column in columns:
        if column not in table.column_names:
            raise InputError("column missing", path=path, field=column)
    nll, query_nll, delta = (table.column(column).to_pylist() for column in columns)
    scores: list[RowScore | None] = []
    for index, (a, b, c) in enumerate(zip(nll, query_nll, delta, strict=True)):
        if a is None or c is None:
            scores.append(None)
            continue
        if b is None:
            raise InputError("no query score", path=path, line=index + 1,
                             field="plausibility_query_nll")  # fmt: skip
        scores.append(RowScore(nll=a, query_nll=b, delta=c))
    return scores


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
