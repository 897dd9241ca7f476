"""Artifacts' provenance without negforge: the sidecar JSON, DuckDB, Hugging Face datasets.

And the docs' schema tables (docs/pipeline.md#artifacts) against the Arrow schemas.
"""

from __future__ import annotations

import hashlib
import json
import re
import runpy
from pathlib import Path

import pytest

from negforge.artifacts import (
    ARROW_SCHEMAS,
    Provenance,
    provenance_sidecar,
    read_provenance,
    write_artifact,
)
from tests.support.negative_rows import rows_x

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A negatives artifact whose input was named by a path relative to the working folder."""
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "in" / "masked.jsonl"
    source.parent.mkdir()
    source.write_text('{"qid": "1"}\n', encoding="utf-8")
    provenance = Provenance(kind="negatives", schema_version=1,
                            input_files=["in/masked.jsonl"], summary={"rows": 6})  # fmt: skip
    return write_artifact(tmp_path / "neg.parquet", rows_x(), provenance), source


def test_sidecar_holds_absolute_inputs_and_their_sha256(artifact: tuple[Path, Path]) -> None:
    path, source = artifact
    document = json.loads(provenance_sidecar(path).read_text(encoding="utf-8"))
    assert provenance_sidecar(path).name == "neg.parquet.provenance.json"
    assert document["input_files"] == [str(source)]
    assert document["input_sha256"] == [hashlib.sha256(source.read_bytes()).hexdigest()]
    assert document == read_provenance(path).model_dump()  # the same as the file metadata
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp


def test_duckdb_reads_the_provenance_and_the_window_type(artifact: tuple[Path, Path]) -> None:
    duckdb = pytest.importorskip("duckdb")
    path, source = artifact
    con = duckdb.connect()
    kind, first_input = con.execute(
        "SELECT kind, input_files[1] FROM read_json(?)", [str(provenance_sidecar(path))]
    ).fetchone()
    assert (kind, first_input) == ("negatives", str(source))
    (embedded,) = con.execute(
        "SELECT json_extract_string(decode(value), '$.input_sha256[0]') "
        "FROM parquet_kv_metadata(?) WHERE decode(key) = 'negforge'", [str(path)]
    ).fetchone()
    assert embedded == hashlib.sha256(source.read_bytes()).hexdigest()
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE "
                             f"SELECT * FROM read_parquet('{path}'))").fetchall())  # fmt: skip
    # Parquet has no fixed-size list: pyarrow restores it from the stored Arrow schema,
    # DuckDB reads the plain nested list.
    assert types["relevant_windows"] == "DOUBLE[][]"


def test_hugging_face_datasets_reads_the_rows_and_the_sidecar(
    artifact: tuple[Path, Path], tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    path, source = artifact
    rows = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "hf"))
    assert rows.num_rows == len(rows_x())
    assert rows.features["relevant_windows"].feature.length == 2  # fixed-size pairs kept
    (provenance,) = datasets.Dataset.from_json(str(provenance_sidecar(path)),
                                               cache_dir=str(tmp_path / "hf"))  # fmt: skip
    assert provenance["kind"] == "negatives"
    assert provenance["input_files"] == [str(source)]


def _doc_tables() -> dict[str, list[tuple[str, str]]]:
    """The (column, type) rows of each ``**kind**`` table in docs/pipeline.md's Artifacts."""
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = text.split("\n## Artifacts\n", 1)[1].split("\n### Provenance", 1)[0]
    tables: dict[str, list[tuple[str, str]]] = {}
    kind = None
    for line in section.splitlines():
        heading = re.match(r"\*\*(\w+)\*\*", line)
        if heading:
            kind = heading.group(1)
            tables[kind] = []
        cell = re.match(r"\| `(\w+)` \| ([^|]+?) \|", line)
        if cell and kind:
            tables[kind].append((cell.group(1), cell.group(2)))
    return tables


def test_docs_tables_match_the_arrow_schemas() -> None:
    script = runpy.run_path(str(ROOT / "scripts" / "schema_docs.py"), run_name="schema_docs")
    documented = _doc_tables()
    assert set(documented) == set(ARROW_SCHEMAS)
    for kind in ARROW_SCHEMAS:
        assert documented[kind] == script["doc_rows"](kind), kind
