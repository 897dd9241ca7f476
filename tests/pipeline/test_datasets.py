"""Partitioned artifacts (``negforge.datasets``) without Ray: negforge's readers, the CLI,
pandas and DuckDB see the parts as one artifact; an unfinished folder is an error."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from negforge.artifacts import artifact_sha256, read_artifact, read_provenance, write_artifact
from negforge.cli import app
from negforge.datasets import (
    MANIFEST,
    DatasetPart,
    is_dataset,
    part_name,
    prepare_folder,
    write_manifest,
)
from negforge.errors import InputError
from negforge.export import export_shine_jsonl
from negforge.pipeline_fingerprints import recorded_fingerprint
from tests.support.generation_inputs import (  # noqa: F401 - fixture
    GenerationInputs,
    sample_generation_inputs,
)


def _split(source: Path, folder: Path, cuts: list[int]) -> None:
    from negforge.artifacts import sha256_file

    table, provenance = read_artifact(source)
    prepare_folder(folder)
    parts = []
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        path = folder / part_name(index)
        write_artifact(path, table.slice(start, end - start), provenance, sidecar=False)
        parts.append(DatasetPart(name=path.name, rows=end - start, sha256=sha256_file(path)))
    write_manifest(folder, provenance.model_copy(update={"fingerprint": "fp"}), parts)


def test_a_partitioned_artifact_reads_as_the_single_file(
    tmp_path: Path, sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
) -> None:
    single = sample_generation_inputs.masked
    table, _ = read_artifact(single)
    folder = tmp_path / "masked.parquet"
    _split(single, folder, [0, 30, 90, table.num_rows])
    assert is_dataset(folder) and recorded_fingerprint(folder) == "fp"
    assert read_artifact(folder)[0].equals(table)
    assert read_provenance(folder).kind == "masked"
    assert pd.read_parquet(folder).equals(table.to_pandas())
    query = f"select count(*) from read_parquet('{folder}/*.parquet')"
    assert duckdb.connect().execute(query).fetchall() == [(table.num_rows,)]
    shown = CliRunner().invoke(app, ["inspect", str(folder)])
    assert f"masked artifact, {table.num_rows} rows" in shown.output
    export_shine_jsonl(folder, tmp_path / "a.jsonl")
    export_shine_jsonl(single, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    first = artifact_sha256(folder)
    _split(single, folder, [0, 60, table.num_rows])  # other parts: another content hash
    assert artifact_sha256(folder) != first


def test_an_unfinished_folder_is_not_an_artifact(tmp_path: Path) -> None:
    folder = prepare_folder(tmp_path / "masked.parquet")
    assert not is_dataset(folder) and recorded_fingerprint(folder) is None
    with pytest.raises(InputError, match=MANIFEST):
        read_provenance(folder)
