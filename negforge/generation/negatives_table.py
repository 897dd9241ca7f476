"""The negatives artifact's table, filled in as queries finish.

Each finished query's generated rows go straight into the output columns at their rows
(:meth:`NegativesTable.put`); each block of :data:`BLOCK_ROWS` output rows becomes Arrow
arrays as soon as its last row arrives, and its Python values are dropped. Workers take the
queries in file order, so blocks fill in turn and building the artifact after the last
answer converts only the last of them, and the generated values of a corpus of millions of
rows are never all held as Python objects at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from negforge.artifacts import ARROW_SCHEMAS, GeneratedFields, GeneratedLevel
from negforge.generation.masked_input import MaskedJobs

#: The fields a generation run adds to a masked row (NegativeRow minus MaskedLevel).
GENERATED_FIELDS: tuple[str, ...] = tuple(GeneratedFields.model_fields)
#: Output rows converted to Arrow at a time (~8 ms of the event loop per block).
BLOCK_ROWS = 4096

_SCHEMA = ARROW_SCHEMAS["negatives"]


class NegativesTable:
    """The output rows of ``jobs`` (in job and level order), generated columns filled per query."""

    def __init__(self, jobs: MaskedJobs) -> None:
        self._jobs = jobs
        self._where: dict[str, tuple[int, list[int]]] = {}  # qid -> (first output row, levels)
        rows = 0
        for slot in jobs.slots:
            self._where[slot.qid] = (rows, slot.levels)
            rows += len(slot.rows)
        self._rows = rows
        self._filling: dict[int, dict[str, list[Any]]] = {}  # block -> its Python columns
        self._placed = bytearray(rows)
        self._left = [min(BLOCK_ROWS, rows - start) for start in range(0, rows, BLOCK_ROWS)]
        self._blocks: dict[int, list[pa.Array]] = {}  # block -> its generated columns
        self.valid_rows = 0  # rows placed so far that hold a valid negative

    def put(self, qid: str, rows: Sequence[GeneratedLevel]) -> None:
        """Place one query's generated rows (one per level, any order; each row once)."""
        offset, levels = self._where[qid]
        position = {level: offset + k for k, level in enumerate(levels)}
        for row in rows:
            at = position[row.level]
            if self._placed[at]:
                raise RuntimeError(f"query {qid} level {row.level} was placed twice")
            self._placed[at] = 1
            block, index = divmod(at, BLOCK_ROWS)
            columns = self._filling.get(block)
            if columns is None:
                size = self._left[block]  # nothing placed yet: the block's size
                columns = {name: [None] * size for name in GENERATED_FIELDS}
                self._filling[block] = columns
            values = vars(row)  # a model's field values (far cheaper than 12 getattr calls)
            for name in GENERATED_FIELDS:
                columns[name][index] = values[name]
            self.valid_rows += bool(row.valid)
            self._left[block] -= 1
            if not self._left[block]:
                self._convert(block)

    def _convert(self, block: int) -> None:
        columns = self._filling.pop(block)
        self._blocks[block] = [pa.array(columns[name], type=_SCHEMA.field(name).type)
                               for name in GENERATED_FIELDS]  # fmt: skip

    def table(self) -> pa.Table:
        """The whole table; every query must have been placed."""
        at = self._placed.find(0)
        if at >= 0:
            qid = next(q for q, (offset, levels) in self._where.items()
                       if offset <= at < offset + len(levels))  # fmt: skip
            raise RuntimeError(f"no generated row for query {qid} (output row {at + 1})")
        masked = self._jobs.table
        order = [row for slot in self._jobs.slots for row in slot.rows]
        base = masked.select([field.name for field in ARROW_SCHEMAS["masked"]])
        if order != list(range(masked.num_rows)):  # usually the file's own order: no take
            base = base.take(pa.array(order, type=pa.int64()))
        generated = [
            pa.concat_arrays([self._blocks[block][i] for block in range(len(self._left))])
            if self._left else pa.array([], type=_SCHEMA.field(name).type)
            for i, name in enumerate(GENERATED_FIELDS)
        ]
        return pa.Table.from_arrays([*base.columns, *generated], schema=_SCHEMA)
