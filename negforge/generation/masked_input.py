"""A masked artifact read as generation input: one job per query, every row checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from negforge.artifacts import ARROW_SCHEMAS, MaskedLevel, Provenance, read_artifact
from negforge.errors import InputError
from negforge.generation.filling import QueryJob, WordSource
from negforge.generation.sampling import FrozenDictionary
from negforge.query_view import by_query

_MASKED_SCHEMA = ARROW_SCHEMAS["masked"]
_LEVELS: TypeAdapter[list[MaskedLevel]] = TypeAdapter(list[MaskedLevel])


@dataclass
class MaskedInput:
    """A masked artifact as read: its table, provenance and one job per query."""

    table: pa.Table
    provenance: Provenance
    jobs: list[QueryJob]


def _check_masked_schema(table: pa.Table, path: Path) -> None:
    for expected in _MASKED_SCHEMA:
        if expected.name not in table.column_names:
            raise InputError("column missing", path=path, field=expected.name)
        found = table.schema.field(expected.name).type
        if found != expected.type:
            raise InputError(f"type {found}, expected {expected.type}", path=path,
                             field=expected.name)  # fmt: skip


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


def read_masked(masked_path: Path) -> MaskedInput:
    """Read a masked artifact into one job per query (levels ascending), in file order.

    Every row is validated (pydantic) and checked for consistency, errors naming row and field.
    """
    masked_path = Path(masked_path)
    table, provenance = read_artifact(masked_path, "masked")
    _check_masked_schema(table, masked_path)
    names = [field.name for field in _MASKED_SCHEMA]
    rows = table.select(names).to_pylist()
    try:  # one call for all rows: several times faster than a model_validate per row
        levels = _LEVELS.validate_python(rows)
    except ValidationError as exc:
        error = exc.errors()[0]
        index = int(error["loc"][0])
        field = ".".join(str(part) for part in error["loc"][1:])
        raise InputError(error["msg"], path=masked_path, line=index + 1, field=field) from exc
    queries = by_query(levels)
    repeated = min((i for query in queries for i in query.repeated()), default=None)
    for index, level in enumerate(levels):  # rows in file order: the first error is reported
        _check_level(level, masked_path, index + 1)
        if index == repeated:
            raise InputError(f"query {level.qid} has level {level.level} twice",
                             path=masked_path, line=index + 1, field="level")  # fmt: skip
    jobs = [QueryJob(qid=q.qid, levels=q.rows, row_indices=q.indices) for q in queries]
    return MaskedInput(table=table, provenance=provenance, jobs=jobs)


def load_jobs(masked_path: Path) -> tuple[list[QueryJob], Provenance]:
    """The masked artifact as one job per query (levels ascending), in file order."""
    masked = read_masked(masked_path)
    return masked.jobs, masked.provenance


def load_word_source(dictionary_path: Path) -> WordSource:
    """The POS dictionary D (``negforge.dictionary.load_dictionary``)."""
    from negforge.dictionary import load_dictionary

    return FrozenDictionary(load_dictionary(dictionary_path))
