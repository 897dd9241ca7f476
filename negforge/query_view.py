"""The per-query view of an artifact: its rows grouped by qid, levels ascending.

Masked, negatives and scored artifacts hold one row per (query, masking level). Everything
that works per query (generation, export, the trainer's data, featurize, the report) takes
its rows through :func:`by_query`, as row models or as plain Arrow rows (``to_pylist``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar


class LevelRow(Protocol):
    """A row model of one (query, level): :class:`~negforge.artifacts.MaskedLevel` and kin."""

    @property
    def qid(self) -> str: ...

    @property
    def level(self) -> int: ...


RowT = TypeVar("RowT", bound=LevelRow | Mapping[str, Any])


@dataclass(frozen=True)
class QueryRows(Generic[RowT]):
    """One query's rows, levels ascending (a repeated level keeps its file order)."""

    qid: str
    rows: list[RowT]
    indices: list[int]  # each row's index in the input, for error messages and tables

    @property
    def first(self) -> RowT:
        """The lowest level's row: it carries the query's own fields."""
        return self.rows[0]

    def by_level(self) -> dict[int, RowT]:
        """``{level: row}`` (for a repeated level, its last row)."""
        return {level_of(row): row for row in self.rows}

    def repeated(self) -> list[int]:
        """Input indices of the rows whose level an earlier row of the query already had."""
        seen: set[int] = set()
        out: list[int] = []
        for row, index in zip(self.rows, self.indices, strict=True):
            level = level_of(row)
            if level in seen:
                out.append(index)
            seen.add(level)
        return sorted(out)


def qid_of(row: LevelRow | Mapping[str, Any]) -> str:
    """A row's qid, from a row model or an Arrow row."""
    return str(row["qid"]) if isinstance(row, Mapping) else row.qid


def level_of(row: LevelRow | Mapping[str, Any]) -> int:
    """A row's masking level, from a row model or an Arrow row."""
    return int(row["level"]) if isinstance(row, Mapping) else row.level


def group_indices(qids: Sequence[str], levels: Sequence[int]) -> list[tuple[str, list[int]]]:
    """Row indices grouped per qid, queries in order of first appearance, levels ascending.

    A repeated level keeps its file order (the sort is stable).
    """
    groups: dict[str, list[int]] = {}
    for index, qid in enumerate(qids):
        groups.setdefault(qid, []).append(index)
    for indices in groups.values():
        indices.sort(key=levels.__getitem__)
    return list(groups.items())


def by_query(rows: Iterable[RowT]) -> list[QueryRows[RowT]]:
    """The rows grouped per qid, queries in order of first appearance, levels ascending."""
    rows = list(rows)
    if rows and not isinstance(rows[0], Mapping):  # row models: plain attribute reads
        qids = [row.qid for row in rows]  # type: ignore[union-attr]
        levels = [row.level for row in rows]  # type: ignore[union-attr]
    else:
        qids = [qid_of(row) for row in rows]
        levels = [level_of(row) for row in rows]
    return [
        QueryRows(qid, [rows[i] for i in indices], indices)
        for qid, indices in group_indices(qids, levels)
    ]
