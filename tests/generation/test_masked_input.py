"""The masked input of ``generate`` and the negatives table it fills, against the plain rules.

* The whole-column check never lets a row through that the row-by-row rule (pydantic plus
  the consistency checks) rejects, and ``read_masked`` reports exactly the row-by-row error;
* the lazily built jobs equal the jobs built eagerly from every validated row, in any row
  order, across chunk boundaries, sliced and filtered;
* ``NegativesTable`` filled in any order equals the table built by joining rows per query.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from negforge.artifacts import ARROW_SCHEMAS, GeneratedLevel, MaskedLevel, read_artifact
from negforge.errors import InputError
from negforge.generation import masked_input, negatives_table
from negforge.generation.masked_input import (
    MaskedJobs,
    _check_rows,
    _checked_slots,
    _query_slots,
    read_masked,
)
from negforge.generation.negatives_table import GENERATED_FIELDS, NegativesTable
from negforge.query_view import by_query
from tests.support.generation_inputs import (  # noqa: F401 - fixture
    GenerationInputs,
    sample_generation_inputs,
)

NAMES = [field.name for field in ARROW_SCHEMAS["masked"]]
Rows = list[dict[str, Any]]


@pytest.fixture(scope="module")
def masked_table(sample_generation_inputs: GenerationInputs) -> pa.Table:  # noqa: F811
    table, _ = read_artifact(sample_generation_inputs.masked, "masked")
    return table


def _with_rows(table: pa.Table, rows: Rows) -> pa.Table:
    """``rows`` in ``table``'s schema (nested elements may be null; top-level nulls too)."""
    schema = pa.schema([field.with_nullable(True) for field in table.schema],
                       metadata=table.schema.metadata)  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)


def _written(tmp_path: Path, table: pa.Table, name: str = "masked.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(table, path)  # the provenance travels in the schema metadata
    return path


def _row_rule_error(table: pa.Table, path: Path) -> InputError | None:
    """The row-by-row rule's verdict (the reference): its error, or None."""
    try:
        _check_rows(table, path)
    except InputError as exc:
        return exc
    return None


# Corruptions of one row: (name, column, change of the row's value).
CORRUPTIONS: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("null qid", "qid", lambda v: None),
    ("empty qid", "qid", lambda v: ""),
    ("null query", "query", lambda v: None),
    ("NaN duration", "duration", lambda v: math.nan),
    ("infinite duration", "duration", lambda v: math.inf),
    ("infinite window end", "relevant_windows", lambda v: [[v[0][0], math.inf]]),
    ("null window", "relevant_windows", lambda v: [None]),
    ("null window value", "relevant_windows", lambda v: [[None, 1.0]]),
    ("level 0", "level", lambda v: 0),
    ("negative level", "level", lambda v: -2),
    ("null ratio", "ratio", lambda v: None),
    ("null token", "tokens", lambda v: [v[0], None, *v[2:]]),
    ("null tokens", "tokens", lambda v: None),
    ("negative position", "masked_positions", lambda v: [-1, *v[1:]]),
    ("position past the tokens", "masked_positions", lambda v: [*v[:-1], 99]),
    ("null position", "masked_positions", lambda v: [None, *v[1:]]),
    ("a word too few", "original_words", lambda v: v[:-1]),
    ("a lemma too many", "original_lemmas", lambda v: [*v, "extra"]),
    ("unknown type", "types", lambda v: ["pronoun", *v[1:]]),
    ("null type", "types", lambda v: [None, *v[1:]]),
    ("null masked query", "masked_query", lambda v: None),
]


@pytest.mark.parametrize("name,column,change", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_bad_row_is_reported_as_the_row_rule_reports_it(
    tmp_path: Path, masked_table: pa.Table, name: str, column: str,
    change: Callable[[Any], Any],
) -> None:  # fmt: skip
    rows = masked_table.to_pylist()
    at = next(i for i in range(6, len(rows)) if len(rows[i]["masked_positions"]) >= 2)
    rows[at][column] = change(rows[at][column])
    table = _with_rows(masked_table, rows)
    path = _written(tmp_path, table)
    expected = _row_rule_error(table, path)
    assert expected is not None and expected.line == at + 1, name
    assert _checked_slots(table) is None, f"{name}: the column check let a bad row through"
    with pytest.raises(InputError) as caught:
        read_masked(path)
    assert (caught.value.line, caught.value.field, str(caught.value)) == (
        expected.line, expected.field, str(expected))  # fmt: skip


def test_a_repeated_level_is_reported_at_its_row(tmp_path: Path, masked_table: pa.Table) -> None:
    rows = masked_table.to_pylist()
    at = next(i for i in range(4, len(rows)) if rows[i]["qid"] == rows[i - 1]["qid"])
    rows[at]["level"] = rows[at - 1]["level"]
    path = _written(tmp_path, _with_rows(masked_table, rows))
    with pytest.raises(InputError, match="twice") as caught:
        read_masked(path)
    assert (caught.value.line, caught.value.field) == (at + 1, "level")


def test_random_corruptions_never_pass_the_column_check(masked_table: pa.Table) -> None:
    """Whatever the row rule rejects, the column check rejects too (seeded, 300 cases)."""
    rng = random.Random(7)
    clean = masked_table.to_pylist()
    values: dict[str, list[Any]] = {
        "str": [None, "", "pronoun", "x"], "float": [None, math.nan, -math.inf, 0.0, 1e9],
        "int": [None, 0, -1, 1, 3, 99],
    }  # fmt: skip
    rejected = 0
    for _ in range(300):
        rows = [dict(row) for row in clean]
        at, column = rng.randrange(len(rows)), rng.choice(NAMES)
        value = rows[at][column]
        if isinstance(value, list):
            items = list(value)
            kind = rng.choice(["drop", "add", "replace", "null list"])
            element = items[0] if items else (rng.choice([1, 1.0, "x"]))
            scalar = {str: "str", float: "float", int: "int"}.get(type(element), "float")
            if kind == "drop" and items:
                items.pop(rng.randrange(len(items)))
            elif kind == "add":
                items.append(element)
            elif kind == "replace" and items and not isinstance(element, list):
                items[rng.randrange(len(items))] = rng.choice(values[scalar])
            elif kind == "replace" and items:
                items[rng.randrange(len(items))] = rng.choice(
                    [None, [None, 1.0], [math.nan, 1.0], [0.0, math.inf]])  # fmt: skip
            rows[at][column] = None if kind == "null list" else items
        else:
            scalar = {str: "str", float: "float", int: "int"}[type(value)]
            rows[at][column] = rng.choice(values[scalar])
        table = _with_rows(masked_table, rows)
        if _row_rule_error(table, Path("masked.parquet")) is not None:
            rejected += 1
            assert _checked_slots(table) is None, (at, column, rows[at][column])
    assert rejected > 100  # the cases do test the rule


#: What ``MaskedLevel`` checks, field by field. When this changes, the column check
#: (``masked_input._columns_pass``) must learn the new rule before this is updated.
MASKED_LEVEL_RULES = {
    "qid": ("<class 'str'>", []),
    "query": ("<class 'str'>", []),
    "vid": ("<class 'str'>", []),
    "duration": ("<class 'float'>", ["AllowInfNan(allow_inf_nan=False)"]),
    "relevant_windows": ("list[tuple[typing.Annotated[float, AllowInfNan(allow_inf_nan=False)], "
                         "typing.Annotated[float, AllowInfNan(allow_inf_nan=False)]]]", []),
    "level": ("<class 'int'>", ["Ge(ge=1)"]),
    "ratio": ("<class 'float'>", []),
    "tokens": ("list[str]", []),
    "masked_positions": ("list[int]", []),
    "original_words": ("list[str]", []),
    "original_lemmas": ("list[str]", []),
    "types": ("list[typing.Literal['verb', 'noun', 'adjective', 'preposition', 'adverb']]", []),
    "masked_query": ("<class 'str'>", []),
}  # fmt: skip


def test_the_row_model_has_no_rule_the_column_check_lacks() -> None:
    rules = {name: (str(field.annotation), [repr(m) for m in field.metadata])
             for name, field in MaskedLevel.model_fields.items()}  # fmt: skip
    decorators = MaskedLevel.__pydantic_decorators__
    validators = [decorators.validators, decorators.field_validators,
                  decorators.model_validators, decorators.root_validators]  # fmt: skip
    assert rules == MASKED_LEVEL_RULES and not any(validators), (
        "MaskedLevel's rules changed: teach masked_input._columns_pass the new rule, then "
        "update MASKED_LEVEL_RULES")
    assert MaskedLevel.model_config.get("extra") == "forbid"


def test_strings_that_are_not_utf8_are_an_input_error(
    tmp_path: Path, masked_table: pa.Table
) -> None:
    qids = masked_table.column("qid").combine_chunks()
    data = bytearray(qids.buffers()[2].to_pybytes())
    data[0] = 0xFF  # the first byte of the first qid: never valid UTF-8
    broken = pa.StringArray.from_buffers(len(qids), qids.buffers()[1], pa.py_buffer(bytes(data)))
    table = masked_table.set_column(masked_table.schema.get_field_index("qid"), "qid", broken)
    with pytest.raises(InputError, match="invalid column data"):
        read_masked(_written(tmp_path, table))


def test_a_clean_artifact_passes_the_column_check(masked_table: pa.Table) -> None:
    rows = masked_table.to_pylist()
    rows[3]["ratio"] = math.nan  # a float without a finiteness rule: valid for pydantic too
    table = _with_rows(masked_table, rows)
    assert _row_rule_error(table, Path("masked.parquet")) is None
    assert _checked_slots(masked_table) is not None and _checked_slots(table) is not None


def _eager_jobs(table: pa.Table) -> list[tuple[str, list[MaskedLevel], list[int]]]:
    """The reference: every row validated at once, grouped per query."""
    levels = TypeAdapter(list[MaskedLevel]).validate_python(table.select(NAMES).to_pylist())
    return [(query.qid, query.rows, query.indices) for query in by_query(levels)]


def _as_tuples(jobs: MaskedJobs) -> list[tuple[str, list[MaskedLevel], list[int]]]:
    return [(job.qid, job.levels, job.row_indices) for job in jobs]


@pytest.mark.parametrize("order", ["file", "shuffled"])
def test_lazy_jobs_equal_the_eager_jobs(
    tmp_path: Path, masked_table: pa.Table, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = masked_table
    if order == "shuffled":  # queries interleaved, levels out of order: the take path
        rows = table.to_pylist()
        random.Random(3).shuffle(rows)
        table = _with_rows(masked_table, rows)
    path = _written(tmp_path, table)
    monkeypatch.setattr(masked_input, "JOB_CHUNK", 5)  # many chunk boundaries
    jobs = read_masked(path).jobs
    expected = _eager_jobs(table)
    assert _as_tuples(jobs) == expected
    assert len(jobs) == len(expected) and jobs.rows == table.num_rows
    assert _as_tuples(jobs[3:11]) == expected[3:11]
    assert (jobs[7].qid, jobs[7].levels) == expected[7][:2]
    skip = {expected[i][0] for i in (0, 4, 9)}
    assert _as_tuples(jobs.excluding(skip)) == [job for job in expected if job[0] not in skip]


def test_first_rows_of_types_are_the_first_masks_needing_them(masked_table: pa.Table) -> None:
    jobs = MaskedJobs(masked_table, _query_slots(masked_table), Path("m.parquet"))[4:]
    expected: dict[str, tuple[str, int]] = {}
    for qid, levels, indices in _eager_jobs(masked_table)[4:]:
        for level, row in zip(levels, indices, strict=True):
            for word_type in level.types:
                expected.setdefault(word_type, (qid, row + 1))
    assert jobs.first_rows_of_types() == expected


def test_a_row_that_fails_while_building_names_its_artifact_row(masked_table: pa.Table) -> None:
    """The checks run first; should a row still fail when its chunk is built, it is named."""
    rows = masked_table.to_pylist()
    slots = _query_slots(masked_table)
    bad = slots[2].rows[1]
    rows[bad]["level"] = 0
    jobs = MaskedJobs(_with_rows(masked_table, rows), slots, Path("m.parquet"))
    with pytest.raises(InputError) as caught:
        list(jobs)
    assert (caught.value.line, caught.value.field) == (bad + 1, "level")


def _generated(qid: str, level: int) -> GeneratedLevel:
    return GeneratedLevel(level=level, negative=f"{qid} at {level}", fills=[qid, str(level)],
                          valid=level % 2 == 1, invalid_reasons=[] if level % 2 else ["x"],
                          attempts=level, backend="b", model="m")  # fmt: skip


@pytest.mark.parametrize("block_rows", [4096, 7])  # one block; many, the last one short
def test_negatives_table_filled_in_any_order_equals_the_joined_rows(
    masked_table: pa.Table, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(negatives_table, "BLOCK_ROWS", block_rows)
    rows = masked_table.to_pylist()
    random.Random(5).shuffle(rows)
    table = _with_rows(masked_table, rows)
    slots = _query_slots(table)
    jobs = MaskedJobs(table, slots, Path("m.parquet"))
    output = NegativesTable(jobs)
    finished = {slot.qid: [_generated(slot.qid, level) for level in reversed(slot.levels)]
                for slot in slots}  # fmt: skip
    for qid in random.Random(6).sample(list(finished), len(finished)):
        output.put(qid, finished[qid])
    expected: Rows = []
    for qid, levels, indices in _eager_jobs(table):
        by_level = {row.level: row for row in finished[qid]}
        for level, index in zip(levels, indices, strict=True):
            generated = by_level[level.level].model_dump(include=set(GENERATED_FIELDS))
            expected.append({**{name: rows[index][name] for name in NAMES}, **generated})
    built = output.table()
    assert built.schema == ARROW_SCHEMAS["negatives"]
    assert built.to_pylist() == expected
    assert output.valid_rows == sum(1 for row in expected if row["valid"])
    with pytest.raises(RuntimeError, match="placed twice"):
        output.put(slots[0].qid, finished[slots[0].qid])


def test_negatives_table_names_a_query_without_rows(masked_table: pa.Table) -> None:
    slots = _query_slots(masked_table)
    output = NegativesTable(MaskedJobs(masked_table, slots, Path("m.parquet")))
    for slot in slots[:-1]:
        output.put(slot.qid, [_generated(slot.qid, level) for level in slot.levels])
    with pytest.raises(RuntimeError, match=f"no generated row for query {slots[-1].qid}"):
        output.table()
