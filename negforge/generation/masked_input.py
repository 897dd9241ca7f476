"""A masked artifact read as generation input: every row checked up front, jobs built on demand.

:func:`read_masked` checks the whole artifact before anything is sent: the schema, then every
row's fields and consistency on whole Arrow columns (a few milliseconds for tens of thousands
of rows). Only when that finds a problem are the rows validated one by one (pydantic), to
name the first bad row and field.

The jobs (:class:`MaskedJobs`) are built from the table a chunk of queries at a time as the
workers take them, and each is freed when its query is done: the first request goes out
without waiting for tens of thousands of row models, and a corpus of millions of queries is
never held in memory as models.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter, ValidationError

from negforge.artifacts import (
    ARROW_SCHEMAS,
    PRIMITIVE_TYPES,
    MaskedLevel,
    PrimitiveType,
    Provenance,
    read_artifact,
)
from negforge.errors import InputError
from negforge.generation.filling import QueryJob, WordSource
from negforge.generation.sampling import FrozenDictionary
from negforge.query_view import by_query, group_indices

_MASKED_SCHEMA = ARROW_SCHEMAS["masked"]
_MASKED_NAMES = [field.name for field in _MASKED_SCHEMA]
_LEVELS: TypeAdapter[list[MaskedLevel]] = TypeAdapter(list[MaskedLevel])

#: Queries built per step of a :class:`MaskedJobs` iteration: small enough not to stall the
#: event loop (~3 ms), large enough that the per-step Arrow work is negligible.
JOB_CHUNK = 128


@dataclass(frozen=True)
class QuerySlot:
    """Where one query's levels lie in the artifact: its rows, levels ascending."""

    qid: str
    rows: list[int]
    levels: list[int]


class MaskedJobs(Sequence[QueryJob]):
    """The generation jobs of a checked masked table, one per query, in file order.

    Jobs are built (validated row models) a chunk at a time while iterating, and not kept:
    each iteration builds them anew.
    """

    def __init__(self, table: pa.Table, slots: Sequence[QuerySlot], path: Path) -> None:
        self.table = table
        self.slots = list(slots)
        self.path = path

    def __len__(self) -> int:
        return len(self.slots)

    @overload
    def __getitem__(self, index: int) -> QueryJob: ...

    @overload
    def __getitem__(self, index: slice) -> MaskedJobs: ...

    def __getitem__(self, index: int | slice) -> QueryJob | MaskedJobs:
        if isinstance(index, slice):
            return MaskedJobs(self.table, self.slots[index], self.path)
        return self._build([self.slots[index]])[0]

    def __iter__(self) -> Iterator[QueryJob]:
        for start in range(0, len(self.slots), JOB_CHUNK):
            yield from self._build(self.slots[start : start + JOB_CHUNK])

    @property
    def rows(self) -> int:
        """The number of (query, level) rows of these jobs."""
        return sum(len(slot.rows) for slot in self.slots)

    def excluding(self, qids: Collection[str]) -> MaskedJobs:
        """These jobs without the queries in ``qids``."""
        if not qids:
            return self
        return MaskedJobs(self.table, [s for s in self.slots if s.qid not in qids], self.path)

    def first_rows_of_types(self) -> dict[PrimitiveType, tuple[str, int]]:
        """Each primitive type some mask needs: the first (qid, 1-based row) that needs it."""
        order = pa.array([row for slot in self.slots for row in slot.rows], type=pa.int64())
        types = pc.take(self.table.column("types"), order).combine_chunks()
        flat, parents = types.flatten(), pc.list_parent_indices(types)
        first: dict[PrimitiveType, tuple[str, int]] = {}
        for word_type in pc.unique(flat).to_pylist():
            row = order[parents[pc.index(flat, word_type).as_py()].as_py()].as_py()
            first[word_type] = (self.table.column("qid")[row].as_py(), row + 1)
        return first

    def _build(self, slots: Sequence[QuerySlot]) -> list[QueryJob]:
        rows = [row for slot in slots for row in slot.rows]
        if not rows:
            return [QueryJob(qid=slot.qid, levels=[], row_indices=[]) for slot in slots]
        first = rows[0]
        if rows == list(range(first, first + len(rows))):  # usually contiguous: no copy
            part = self.table.slice(first, len(rows))
        else:
            part = self.table.take(pa.array(rows, type=pa.int64()))
        levels = _validated(part.select(_MASKED_NAMES).to_pylist(), self.path, rows)
        jobs, start = [], 0
        for slot in slots:
            end = start + len(slot.rows)
            jobs.append(QueryJob(qid=slot.qid, levels=levels[start:end], row_indices=slot.rows))
            start = end
        return jobs


@dataclass
class MaskedInput:
    """A masked artifact as read: its table, provenance and one job per query."""

    table: pa.Table
    provenance: Provenance
    jobs: MaskedJobs


def _check_masked_schema(table: pa.Table, path: Path) -> None:
    for expected in _MASKED_SCHEMA:
        if expected.name not in table.column_names:
            raise InputError("column missing", path=path, field=expected.name)
        found = table.schema.field(expected.name).type
        if found != expected.type:
            raise InputError(f"type {found}, expected {expected.type}", path=path,
                             field=expected.name)  # fmt: skip


def _validated(
    rows: list[dict[str, object]], path: Path, lines: Sequence[int]
) -> list[MaskedLevel]:
    """The rows as models (one pydantic call); an error names the artifact row and field."""
    try:
        return _LEVELS.validate_python(rows)
    except ValidationError as exc:
        error = exc.errors()[0]
        index = int(error["loc"][0])
        field = ".".join(str(part) for part in error["loc"][1:])
        raise InputError(error["msg"], path=path, line=lines[index] + 1, field=field) from exc


def _check_level(level: MaskedLevel, path: Path, line: int) -> None:
    """The consistency checks a masked row needs beyond its field types."""
    masks = len(level.masked_positions)
    for name in ("original_words", "original_lemmas", "types"):
        if len(getattr(level, name)) != masks:
            raise InputError(f"{len(getattr(level, name))} entries for {masks} masks",
                             path=path, line=line, field=name)  # fmt: skip
    if any(not 0 <= position < len(level.tokens) for position in level.masked_positions):
        raise InputError("a masked position lies outside the tokens", path=path, line=line,
                         field="masked_positions")  # fmt: skip
    if not level.qid:
        raise InputError("empty qid", path=path, line=line, field="qid")


def _check_rows(table: pa.Table, path: Path) -> None:
    """Row by row: every row validated and checked; raises at the first bad row in file order."""
    levels = _validated(table.select(_MASKED_NAMES).to_pylist(), path, range(table.num_rows))
    queries = by_query(levels)
    repeated = min((i for query in queries for i in query.repeated()), default=None)
    for index, level in enumerate(levels):
        _check_level(level, path, index + 1)
        if index == repeated:
            raise InputError(f"query {level.qid} has level {level.level} twice",
                             path=path, line=index + 1, field="level")  # fmt: skip


def _all(mask: pa.Array | pa.ChunkedArray) -> bool:
    return bool(pc.all(mask).as_py() is not False)  # an empty column passes (all() is None)


def _query_slots(table: pa.Table) -> list[QuerySlot]:
    """Each query's rows (levels ascending), queries in order of first appearance."""
    levels = table.column("level").to_pylist()
    groups = group_indices(table.column("qid").to_pylist(), levels)
    return [QuerySlot(qid, rows, [levels[row] for row in rows]) for qid, rows in groups]


def _checked_slots(table: pa.Table) -> list[QuerySlot] | None:
    """The query slots, when every row passes :func:`_check_rows` (decided on whole columns
    and the slots); None means only "look row by row"."""
    if not all(_columns_pass(batch) for batch in table.to_batches()):  # no copy of the input
        return None
    slots = _query_slots(table)
    if any(len(set(slot.levels)) != len(slot.levels) for slot in slots):
        return None  # a level repeated within a query
    return slots


def _columns_pass(batch: pa.RecordBatch) -> bool:
    """Whether every row's fields pass, decided on whole columns.

    Covers each field's type (the schema is already checked), nulls at every nesting level,
    finite floats, ``level >= 1``, the primitive-type names, the per-mask list lengths, the
    masked positions and non-empty qids: every rule of ``MaskedLevel`` and
    :func:`_check_level` (``tests/generation/test_masked_input.py`` holds the model's schema
    and fails when it changes, so that a new rule is added here too).
    """
    columns = {name: batch.column(name) for name in _MASKED_NAMES}
    if any(column.null_count for column in columns.values()):
        return False
    nested = [columns[name].flatten() for name in _MASKED_NAMES
              if pa.types.is_list(columns[name].type)]  # fmt: skip
    windows = columns["relevant_windows"].flatten()
    if any(values.null_count for values in [*nested, windows.flatten()]):
        return False
    masks = pc.list_value_length(columns["masked_positions"])
    positions = columns["masked_positions"].flatten()
    token_counts = pc.take(pc.list_value_length(columns["tokens"]),
                           pc.list_parent_indices(columns["masked_positions"]))  # fmt: skip
    checks = [
        pc.is_finite(columns["duration"]),
        pc.is_finite(windows.flatten()),
        pc.greater_equal(columns["level"], 1),
        pc.is_in(columns["types"].flatten(), value_set=pa.array(PRIMITIVE_TYPES)),
        *(pc.equal(pc.list_value_length(columns[name]), masks)
          for name in ("original_words", "original_lemmas", "types")),
        pc.greater_equal(positions, 0),
        pc.less(positions, token_counts),
        pc.greater(pc.binary_length(columns["qid"]), 0),
    ]
    return all(_all(check) for check in checks)


def read_masked(masked_path: Path) -> MaskedInput:
    """Read and check a masked artifact: one job per query (levels ascending), in file order.

    Every row is checked before this returns (errors name the row and field); the jobs'
    row models are built when iterated (:class:`MaskedJobs`).
    """
    masked_path = Path(masked_path)
    table, provenance = read_artifact(masked_path, "masked")
    _check_masked_schema(table, masked_path)
    try:
        table.validate(full=True)  # e.g. strings that are not UTF-8
    except pa.ArrowInvalid as exc:
        raise InputError(f"invalid column data ({exc})", path=masked_path) from exc
    slots = _checked_slots(table)
    if slots is None:
        _check_rows(table, masked_path)  # names the first bad row and field
        slots = _query_slots(table)
    return MaskedInput(table=table, provenance=provenance,
                       jobs=MaskedJobs(table, slots, masked_path))  # fmt: skip


def load_jobs(masked_path: Path) -> tuple[MaskedJobs, Provenance]:
    """The masked artifact as one job per query (levels ascending), in file order."""
    masked = read_masked(masked_path)
    return masked.jobs, masked.provenance


def load_word_source(dictionary_path: Path) -> WordSource:
    """The POS dictionary D (``negforge.dictionary.load_dictionary``)."""
    from negforge.dictionary import load_dictionary

    return FrozenDictionary(load_dictionary(dictionary_path))
