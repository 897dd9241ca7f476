"""The per-query fast paths of ``generate`` give exactly what the plain code gave.

* ``sample_indices`` (sparse partial Fisher-Yates) equals the shuffle of ``list(range(n))``;
* ``prompts.substitute`` equals ``string.Template.substitute`` (escapes, braces, errors);
* ``BatchedWriteCache``: reads see queued writes, ``close`` commits them, a missing value
  stays a miss;
* ``read_masked`` validates all rows in one call and still names the bad row and field;
* Batch API files: split at both limits, custom ids round-trip, both result-line shapes.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pyarrow as pa
import pytest

from negforge.artifacts import read_artifact, write_artifact
from negforge.errors import InputError
from negforge.generation.batch_files import (
    batch_line,
    custom_id_for,
    parse_custom_id,
    parse_result_file,
    split_lines,
)
from negforge.generation.cache import BatchedWriteCache, CachedAnswer, ResponseCache
from negforge.generation.masked_input import read_masked
from negforge.generation.prompts import load_template, substitute
from negforge.generation.sampling import sample_indices
from tests.support.generation_inputs import (  # noqa: F401 - fixture
    GenerationInputs,
    sample_generation_inputs,
)


def _reference_indices(rng: random.Random, n: int, k: int) -> list[int]:
    k = min(k, n)
    pool = list(range(n))
    bits = rng.getrandbits(64 * k) if k else 0
    for i in range(k):
        j = i + (bits & 0xFFFFFFFFFFFFFFFF) % (n - i)
        bits >>= 64
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 40, 41, 500, 5000])
@pytest.mark.parametrize("k", [0, 1, 3, 40, 45, 600])
def test_sample_indices_is_the_list_shuffle(n: int, k: int) -> None:
    for seed in range(10):
        assert sample_indices(random.Random(seed), n, k) == _reference_indices(
            random.Random(seed), n, k)  # fmt: skip


def test_substitute_equals_string_template() -> None:
    values = {"query": "a $x {person}", "n_levels": "3", "payload": "{\"a\": \"$$\"}",
              "keys": "level_1", "reasons": "- r", "c": "C", "e": "E"}  # fmt: skip
    template = load_template("negative_fill", None)
    for part in (template.system, template.user, template.reask_text,
                 string.Template("$$ ${c}d $e $$e")):  # fmt: skip
        assert substitute(part, values) == part.substitute(values)
    with pytest.raises(KeyError):
        substitute(string.Template("$missing"), {})


def test_batched_write_cache_reads_its_queue_and_commits_on_close(tmp_path: Path) -> None:
    cache = BatchedWriteCache(tmp_path / "c", batch=16)
    answers = {f"k{i}": CachedAnswer(text=f"t{i}", input_tokens=i) for i in range(50)}
    for key, answer in answers.items():
        cache.set(key, answer)
        assert cache.get(key) == answer  # queued or written: visible at once
    assert cache.get("absent") is None
    cache.close()
    reopened = ResponseCache(tmp_path / "c")
    assert {key: reopened.get(key) for key in answers} == answers
    reopened.close()


def test_read_masked_names_the_bad_row_and_field(
    tmp_path: Path, sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
) -> None:
    table, provenance = read_artifact(sample_generation_inputs.masked)
    assert len(read_masked(sample_generation_inputs.masked).jobs) == len(
        sample_generation_inputs.queries)  # fmt: skip
    levels = table.column("level").to_pylist()
    levels[6] = 0
    broken = table.set_column(table.schema.get_field_index("level"), "level",
                              pa.array(levels, pa.int16()))  # fmt: skip
    write_artifact(tmp_path / "bad.parquet", broken, provenance)
    with pytest.raises(InputError) as caught:
        read_masked(tmp_path / "bad.parquet")
    assert caught.value.line == 7 and caught.value.field == "level"
    levels = table.column("level").to_pylist()
    qids = table.column("qid").to_pylist()
    row = next(i for i in range(4, len(qids)) if qids[i] == qids[i - 1])
    levels[row] = levels[row - 1]  # a row repeats the previous row's level of its query
    repeated = table.set_column(table.schema.get_field_index("level"), "level",
                                pa.array(levels, pa.int16()))  # fmt: skip
    write_artifact(tmp_path / "repeated.parquet", repeated, provenance)
    with pytest.raises(InputError, match="twice") as caught:
        read_masked(tmp_path / "repeated.parquet")
    assert caught.value.line == row + 1 and caught.value.field == "level"


def test_batch_files_split_at_both_limits_and_results_parse() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 100}]}
    lines = [batch_line(custom_id_for(f"q{i}", 1), body) for i in range(10)]
    size = len(lines[0].data)
    assert [len(g) for g in split_lines(lines, 4, 10**6)] == [4, 4, 2]
    assert [len(g) for g in split_lines(lines, 100, 3 * size)] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="alone"):
        split_lines(lines, 100, size - 1)
    assert parse_custom_id(custom_id_for("v#1_train_0", 2, 3)) == ("v#1_train_0", 2, 3)
    assert parse_custom_id(custom_id_for("a~b", 1)) == ("a~b", 1, 1)
    ok = {"custom_id": "q1#1", "response": {"status_code": 200, "body": {"choices": []}},
          "error": None}  # fmt: skip
    failed = {"custom_id": "q2#1", "response": {"status_code": 500, "body": {
        "error": {"message": "boom", "type": "server_error"}}}, "error": None}  # fmt: skip
    expired = {"custom_id": "q3#1", "response": None,
               "error": {"code": "batch_expired", "message": "not run"}}  # fmt: skip
    data = "\n".join(json.dumps(x) for x in (ok, failed, expired)).encode() + b"\nnot json\n"
    results, unreadable = parse_result_file(data)
    assert unreadable == 1 and results["q1#1"].ok
    assert (results["q2#1"].status_code, results["q2#1"].error_message) == (500, "boom")
    assert results["q3#1"].error_code == "batch_expired" and not results["q3#1"].ok
