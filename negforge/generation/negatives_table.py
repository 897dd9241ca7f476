"""The negatives artifact's table, filled in as queries finish.

Each finished query's generated rows go straight into the output columns at their rows
(:meth:`NegativesTable.put`), so building the artifact after the last answer is one Arrow
conversion per column, not a pass over tens of thousands of row models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from negforge.artifacts import ARROW_SCHEMAS, GeneratedFields, GeneratedLevel
from negforge.generation.masked_input import MaskedJobs

#: The fields a generation run adds to a masked row (NegativeRow minus MaskedLevel).
GENERATED_FIELDS: tuple[str, ...] = tuple(GeneratedFields.model_fields)


class NegativesTable:
    """The output rows of ``jobs`` (in job and level order), generated columns filled per query."""

    def __init__(self, jobs: MaskedJobs) -> None:
        self._jobs = jobs
        self._where: dict[str, tuple[int, list[int]]] = {}  # qid -> (first output row, levels)
        offset = 0
        for slot in jobs.slots:
            self._where[slot.qid] = (offset, slot.levels)
            offset += len(slot.rows)
        self._columns: dict[str, list[Any]] = {name: [None] * offset for name in GENERATED_FIELDS}
        self._missing = offset

    def put(self, qid: str, rows: Sequence[GeneratedLevel]) -> None:
        """Place one query's generated rows (one per level, any order)."""
        offset, levels = self._where[qid]
        position = {level: offset + k for k, level in enumerate(levels)}
        columns = self._columns
        for row in rows:
            values = vars(row)  # a model's field values (far cheaper than 12 getattr calls)
            at = position[row.level]
            if columns["valid"][at] is None:
                self._missing -= 1
            for name in GENERATED_FIELDS:
                columns[name][at] = values[name]

    @property
    def valid_rows(self) -> int:
        """Rows placed so far that hold a valid negative."""
        return sum(1 for valid in self._columns["valid"] if valid)

    def table(self) -> pa.Table:
        """The whole table; every query must have been placed."""
        if self._missing:
            at = self._columns["valid"].index(None)
            qid = next(q for q, (offset, levels) in self._where.items()
                       if offset <= at < offset + len(levels))  # fmt: skip
            raise RuntimeError(f"no generated row for query {qid} (output row {at + 1})")
        masked = self._jobs.table
        order = [row for slot in self._jobs.slots for row in slot.rows]
        base = masked.select([field.name for field in ARROW_SCHEMAS["masked"]])
        if order != list(range(masked.num_rows)):  # usually the file's own order: no take
            base = base.take(pa.array(order, type=pa.int64()))
        schema = ARROW_SCHEMAS["negatives"]
        generated = [pa.array(self._columns[name], type=schema.field(name).type)
                     for name in GENERATED_FIELDS]  # fmt: skip
        return pa.Table.from_arrays([*base.columns, *generated], schema=schema)
