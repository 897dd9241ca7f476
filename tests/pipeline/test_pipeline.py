"""The pipeline runner: stage order, fingerprint skip, --force, overrides, interrupted stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negforge.artifacts import read_provenance
from negforge.errors import ConfigError, InputError
from negforge.pipeline import run_pipeline
from negforge.pipeline_fingerprints import recorded_fingerprint
from negforge.pipeline_spec import load_spec

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "pipelines" / "sample.yaml"


def statuses(outcomes):
    return {o.name: o.status for o in outcomes}


@pytest.fixture
def workdir(tmp_path):
    """A copy of the sample queries and a pipeline over it (so tests may edit the input)."""
    data = tmp_path / "queries.jsonl"
    shutil.copy(REPO / "negforge" / "sample_data" / "sample_queries.jsonl", data)
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: ptest\n"
        f"inputs: {{train: {data}}}\n"
        "stages:\n"
        "  - {stage: read, input: train}\n"
        "  - {stage: build-dict}\n"
        "  - {stage: mask, preset: charades_cg}\n"
        "  - {stage: export}\n"
    )
    return tmp_path, spec, data


def test_sample_pipeline_runs_every_stage_then_skips_them(tmp_path):
    out = tmp_path / "out"
    first = run_pipeline(SAMPLE, output_dir=out)
    names = [o.name for o in first]
    assert names == [s.name or s.stage for s in load_spec(SAMPLE).stages]
    assert names[:3] == ["read", "build-dict", "mask"] and names[-1] == "export"
    assert set(statuses(first).values()) == {"ran"}
    for name in ("queries.jsonl", "dictionary.parquet", "dictionary.parquet.summary.txt",
                 "masked.parquet", "shine.jsonl"):
        assert (out / name).is_file(), name
    masked = read_provenance(out / "masked.parquet")
    assert masked.fingerprint == first[2].fingerprint
    assert masked.ratios == [0.25, 0.5, 0.75] and masked.spacy_model
    assert recorded_fingerprint(out / "shine.jsonl") == first[-1].fingerprint
    rows = [json.loads(line) for line in (out / "shine.jsonl").read_text().splitlines()]
    assert len(rows) == 51 and all(len(r["masked_queries"]) == 3 for r in rows)

    before = (out / "masked.parquet").stat().st_mtime_ns
    second = run_pipeline(SAMPLE, output_dir=out)
    assert set(statuses(second).values()) == {"skipped"}
    assert (out / "masked.parquet").stat().st_mtime_ns == before

    forced = run_pipeline(SAMPLE, output_dir=out, force=True)
    assert set(statuses(forced).values()) == {"ran"}
    # same inputs and settings give the same fingerprints; the export's input (the rewritten
    # masked artifact) carries a new creation time, so its fingerprint moves on
    assert [o.fingerprint for o in forced][:3] == [o.fingerprint for o in first][:3]


def test_changed_setting_or_input_reruns_only_what_depends_on_it(workdir):
    folder, spec, data = workdir
    out = folder / "out"
    run_pipeline(spec, output_dir=out)
    changed = run_pipeline(spec, output_dir=out, overrides=["mask.preset=anet_cg"])
    assert statuses(changed) == {"read": "skipped", "build-dict": "skipped", "mask": "ran",
                                 "export": "ran"}
    assert read_provenance(out / "masked.parquet").ratios == [0.1, 0.3, 0.5]
    # back to the file's settings: the mask stage differs from what is on disk -> rerun
    again = run_pipeline(spec, output_dir=out)
    assert statuses(again)["mask"] == "ran"
    # an edited input file changes every fingerprint downstream
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")
    edited = run_pipeline(spec, output_dir=out)
    assert set(statuses(edited).values()) == {"ran"}
    assert pq.ParquetFile(out / "masked.parquet").metadata.num_rows == 150


def test_interrupted_stage_leaves_the_previous_artifact_intact(workdir, monkeypatch):
    folder, spec, _ = workdir
    out = folder / "out"
    run_pipeline(spec, output_dir=out)
    previous = (out / "masked.parquet").read_bytes()

    import negforge.artifacts as artifacts

    def die_half_way(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(artifacts.pq, "write_table", die_half_way)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(spec, output_dir=out, overrides=["mask.preset=anet_cg"])
    monkeypatch.undo()
    assert (out / "masked.parquet").read_bytes() == previous
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    resumed = run_pipeline(spec, output_dir=out, overrides=["mask.preset=anet_cg"])
    assert statuses(resumed)["mask"] == "ran"
    assert read_provenance(out / "masked.parquet").ratios == [0.1, 0.3, 0.5]


def test_input_override_and_variables(workdir, tmp_path):
    folder, _, data = workdir
    spec = folder / "vars.yaml"
    spec.write_text(
        "name: vtest\nvars: {root: /nonexistent}\ninputs: {train: '${root}/q.jsonl'}\n"
        "stages:\n  - {stage: read}\n"
    )
    loaded = load_spec(spec, overrides=[f"root={data.parent}"])
    assert loaded.inputs["train"] == str(data.parent / "q.jsonl")
    loaded = load_spec(spec, input_overrides=[f"train={data}"])
    assert loaded.inputs["train"] == str(data)
    outcomes = run_pipeline(spec, output_dir=tmp_path / "o", input_overrides=[f"train={data}"])
    assert outcomes[0].status == "ran"
    with pytest.raises(InputError, match="file not found"):
        run_pipeline(spec, output_dir=tmp_path / "o2")


def test_bad_pipeline_files(tmp_path):
    bad_stage = tmp_path / "a.yaml"
    bad_stage.write_text("name: a\ninputs: {t: x.jsonl}\nstages:\n  - {stage: train}\n")
    with pytest.raises(InputError) as info:
        load_spec(bad_stage)
    assert "a.yaml:4: stage 'train' (#1), key 'stage': unknown" in str(info.value)
    unknown_var = tmp_path / "b.yaml"
    unknown_var.write_text("name: b\ninputs: {t: '${nowhere}/x.jsonl'}\nstages:\n"
                           "  - {stage: read}\n")
    with pytest.raises(ConfigError, match="nowhere"):
        load_spec(unknown_var)
    typo = tmp_path / "c.yaml"
    typo.write_text("name: c\ninputs: {t: x.jsonl}\nstages:\n  - {stage: mask, presett: x}\n")
    with pytest.raises(InputError, match="presett"):
        load_spec(typo)
    with pytest.raises(ConfigError, match="no stage named"):
        load_spec(SAMPLE, overrides=["nostage.preset=anet_cg"])
    with pytest.raises(InputError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_shipped_pipeline_files_validate():
    for name in ("sample", "charades_cg", "anet_cg"):
        overrides = [] if name == "sample" else ["data_dir=/data"]  # sample has no data_dir
        spec = load_spec(REPO / "pipelines" / f"{name}.yaml", overrides=overrides)
        assert spec.name == name
        assert spec.stages[0].stage == "read"
    anet = load_spec(REPO / "pipelines" / "anet_cg.yaml", overrides=["data_dir=/data"])
    assert anet.inputs["train"] == "/data/visa/activitynet_cg/train.json"


def test_generate_stage_runs_the_llm_stage_with_its_settings(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(
        "name: gtest\ninputs: {train: '${sample_data}/sample_queries.jsonl'}\nstages:\n"
        "  - {stage: read}\n  - {stage: build-dict}\n  - {stage: mask}\n"
        f"  - {{stage: generate, llm: random, seed: 3, cache_dir: '{tmp_path / 'llm'}', "
        "quiet: true}\n"
        "  - {stage: export}\n"
    )
    out = tmp_path / "out"
    outcomes = run_pipeline(spec, output_dir=out)
    assert statuses(outcomes)["generate"] == "ran"
    provenance = read_provenance(out / "negatives.parquet")
    assert provenance.kind == "negatives" and provenance.fingerprint == outcomes[3].fingerprint
    rows = [json.loads(line) for line in (out / "shine.jsonl").read_text().splitlines()]
    qids = pq.read_table(out / "negatives.parquet", columns=["qid"])["qid"].to_pylist()
    assert rows and sorted(r["qid"] for r in rows) == sorted(set(qids))  # one row per query
    for row in rows:  # either all three negatives, or which of the three are valid
        assert ("recomposed_queries" in row) != ("negative_valid" in row)
        assert len(row.get("recomposed_queries") or row["negative_valid"]) == 3
    assert statuses(run_pipeline(spec, output_dir=out))["generate"] == "skipped"
    with pytest.raises(ConfigError, match="temprature"):
        run_pipeline(spec, output_dir=out, overrides=["generate.temprature=0.5"])
