"""Hostile input to every command, in process (typer's CliRunner), one table.

Every case must end with its exit code and one line ``negforge: error: ...`` naming the
file (and line / field where there is one), without a traceback, and leave the case's folder
exactly as it was: no file at the target, no temp file, inputs unchanged (a snapshot of every
file, hidden ones included, before and after). Disk-full and read-only cases run on a small
tmpfs mounted for the test (CI runs as root); where mounting is impossible they are skipped
with the reason shown in pytest's summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.hostile import (
    BaseInputs,
    Expected,
    assert_clean_failure,
    call_cli,
    fill_up,
    make_base_inputs,
    mount_tmpfs,
    snapshot,
    tmpfs_problem,
    unmount,
    write_jsonl,
)

GOOD = {"qid": "AAAAA_train_0", "query": "person opens a door.", "duration": 20.0,
        "vid": "AAAAA", "relevant_windows": [[1.0, 5.0]]}  # fmt: skip
LONG_QUERY = "person " * 1500 + "opens a door."  # 10,513 characters, over the 10,000 limit


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> BaseInputs:
    root = tmp_path_factory.mktemp("hostile")
    return make_base_inputs(root / "base", root / "cache")


def pipeline(d: Path, body: str, name: str = "p.yaml") -> Path:
    path = d / name
    path.write_text(f"name: hostile\ninputs: {{train: {d / 'queries.jsonl'}}}\n{body}")
    return path


Case = Callable[[Path], Expected]


def _read_missing(d: Path) -> Expected:
    return Expected(["read", str(d / "nope.jsonl")], d / "nope.jsonl", "file not found")


def _read_folder(d: Path) -> Expected:
    (d / "folder.jsonl").mkdir()
    return Expected(["read", str(d / "folder.jsonl")], d / "folder.jsonl", "is a folder")


def _read_empty(d: Path) -> Expected:
    (d / "empty.jsonl").write_bytes(b"")
    return Expected(["read", str(d / "empty.jsonl"), "-o", str(d / "out.jsonl")],
                    d / "empty.jsonl", "has no rows (pass --allow-empty")  # fmt: skip


def _read_blank(d: Path) -> Expected:
    (d / "blank.jsonl").write_text("\n   \n\t\n")
    return Expected(["read", str(d / "blank.jsonl"), "-o", str(d / "out.jsonl")],
                    d / "blank.jsonl", "has no rows")  # fmt: skip


def _read_all_rows_bad_skipped(d: Path) -> Expected:
    write_jsonl(d / "bad.jsonl", {**GOOD, "query": " "}, {**GOOD, "qid": "x", "duration": -1})
    return Expected(["read", str(d / "bad.jsonl"), "--on-error", "skip", "-o", str(d / "o.jsonl")],
                    d / "bad.jsonl", "none of its 2 rows is valid")  # fmt: skip


def _read_nan_window(d: Path) -> Expected:
    write_jsonl(d / "nan.jsonl", GOOD, b'{"qid": "B", "query": "a man sits.", "vid": "B", '
                b'"duration": 9.0, "relevant_windows": [[1.0, NaN]]}')  # fmt: skip
    return Expected(["read", str(d / "nan.jsonl"), "-o", str(d / "out.jsonl")],
                    d / "nan.jsonl", ":2, field 'relevant_windows[0][1]': Input should be a "
                    "finite number")  # fmt: skip


def _read_infinite_duration(d: Path) -> Expected:
    write_jsonl(d / "inf.jsonl", b'{"qid": "B", "query": "a man sits.", "vid": "B", '
                b'"duration": Infinity, "relevant_windows": [[1.0, 2.0]]}')  # fmt: skip
    return Expected(["read", str(d / "inf.jsonl")], d / "inf.jsonl",
                    ":1, field 'duration': Input should be a finite number")  # fmt: skip


def _read_csv_nan(d: Path) -> Expected:
    (d / "q.csv").write_text('qid,query,duration,vid,relevant_windows\n'
                             'A_0,person sits.,nan,A,"[[0, 3]]"\n')  # fmt: skip
    return Expected(["read", str(d / "q.csv")], d / "q.csv", ":2, field 'duration'")


def _read_long_query(d: Path) -> Expected:
    write_jsonl(d / "long.jsonl", GOOD, {**GOOD, "qid": "long", "query": LONG_QUERY})
    return Expected(["read", str(d / "long.jsonl")], d / "long.jsonl",
                    ":2, field 'query': query is 10,513 characters long")  # fmt: skip


def _read_bad_utf8_benchmark(d: Path) -> Expected:
    (d / "train.json").write_bytes(b'{"V1": {"sentences": ["caf\xe9 time."], '
                                   b'"timestamps": [[0, 1]], "duration": 5.0}}')  # fmt: skip
    return Expected(["read", str(d / "train.json")], d / "train.json", "invalid UTF-8")


def _read_output_is_input(d: Path) -> Expected:
    q = d / "queries.jsonl"
    return Expected(["read", str(q), "-o", str(q)], q, "is also an input")


def _read_output_under_file(d: Path) -> Expected:
    target = d / "queries.jsonl" / "out.jsonl"
    return Expected(["read", str(d / "queries.jsonl"), "-o", str(target)], target, "is a file")


def _read_output_is_folder(d: Path) -> Expected:
    (d / "outdir").mkdir()
    return Expected(["read", str(d / "queries.jsonl"), "-o", str(d / "outdir")], d / "outdir",
                    "is a folder")  # fmt: skip


def _mask_output_is_input(d: Path) -> Expected:
    q = d / "queries.jsonl"
    return Expected(["mask", str(q), "-o", str(q)], q, "is also an input")


def _mask_long_query(d: Path) -> Expected:
    write_jsonl(d / "long.jsonl", GOOD, {**GOOD, "qid": "long", "query": LONG_QUERY})
    return Expected(["mask", str(d / "long.jsonl"), "-o", str(d / "m.parquet")], d / "long.jsonl",
                    ":2, field 'query'")  # fmt: skip


def _mask_empty(d: Path) -> Expected:
    (d / "empty.jsonl").write_text("")
    return Expected(["mask", str(d / "empty.jsonl"), "-o", str(d / "m.parquet")],
                    d / "empty.jsonl", "has no rows")  # fmt: skip


def _mask_errors_report_is_input(d: Path) -> Expected:
    report = d / "m.parquet.errors.jsonl"
    write_jsonl(report, GOOD)
    return Expected(["mask", str(report), "-o", str(d / "m.parquet")], report,
                    "is also an input")  # fmt: skip


def _build_dict_output_is_second_input(d: Path) -> Expected:
    other = write_jsonl(d / "other.jsonl", GOOD)
    return Expected(["build-dict", str(d / "queries.jsonl"), str(other), "-o", str(other)],
                    other, "is also an input")  # fmt: skip


def _build_dict_missing_input(d: Path) -> Expected:
    return Expected(["build-dict", str(d / "queries.jsonl"), str(d / "gone.jsonl"), "-o",
                     str(d / "D.parquet")], d / "gone.jsonl", "file not found")  # fmt: skip


def _build_dict_output_under_file(d: Path) -> Expected:
    target = d / "dict.parquet" / "D.parquet"
    return Expected(["build-dict", str(d / "queries.jsonl"), "-o", str(target)], target,
                    "is a file")  # fmt: skip


def _export_output_is_input(d: Path) -> Expected:
    neg = d / "negatives.parquet"
    return Expected(["export", str(neg), "-o", str(neg)], neg, "is also an input")


def _export_dictionary(d: Path) -> Expected:
    return Expected(["export", str(d / "dict.parquet"), "-o", str(d / "o.jsonl")],
                    d / "dict.parquet", "cannot export a dictionary artifact")  # fmt: skip


def _export_not_parquet(d: Path) -> Expected:
    return Expected(["export", str(d / "queries.jsonl"), "-o", str(d / "o.jsonl")],
                    d / "queries.jsonl", "not a readable Parquet artifact")  # fmt: skip


def _export_empty(d: Path) -> Expected:
    return Expected(["export", str(d / "empty_masked.parquet"), "-o", str(d / "o.jsonl")],
                    d / "empty_masked.parquet", "has no rows")  # fmt: skip


def _inspect_folder(d: Path) -> Expected:
    (d / "a.parquet").mkdir()
    return Expected(["inspect", str(d / "a.parquet")], d / "a.parquet", "is a folder")


def _inspect_not_parquet(d: Path) -> Expected:
    return Expected(["inspect", str(d / "queries.jsonl")], d / "queries.jsonl",
                    "not a readable Parquet")  # fmt: skip


def _import_negatives_output_is_input(d: Path) -> Expected:
    q = d / "queries.jsonl"
    return Expected(["import-negatives", str(q), "-o", str(q)], q, "is also an input")


def _import_negatives_without_masked_queries(d: Path) -> Expected:
    return Expected(["import-negatives", str(d / "queries.jsonl"), "-o", str(d / "i.parquet")],
                    d / "queries.jsonl", ":1, field 'masked_queries'")  # fmt: skip


def _generate_masked_is_dictionary(d: Path) -> Expected:
    return Expected(["generate", str(d / "dict.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "n.parquet"), "-q"], d / "dict.parquet",
                    "expected a masked artifact, found dictionary")  # fmt: skip


def _generate_output_is_dictionary(d: Path) -> Expected:
    return Expected(["generate", str(d / "masked.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "dict.parquet"), "-q"], d / "dict.parquet",
                    "is also an input")  # fmt: skip


def _generate_output_is_folder(d: Path) -> Expected:
    (d / "n.parquet").mkdir()
    return Expected(["generate", str(d / "masked.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "n.parquet"), "-q"], d / "n.parquet", "is a folder")


def _generate_dictionary_lacks_a_type(d: Path) -> Expected:
    return Expected(["generate", str(d / "masked.parquet"), "--dict", str(d / "nouns_only.parquet"),
                     "-o", str(d / "n.parquet"), "-q"], d / "nouns_only.parquet",
                    "the dictionary has no verb")  # fmt: skip


def _generate_cache_dir_is_file(d: Path) -> Expected:
    blocker = d / "cache_file"
    blocker.write_text("not a folder")
    return Expected(["generate", str(d / "masked.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "n.parquet"), "-q", "--llm", "openai/fake-gpt",
                     "--api-base", "http://127.0.0.1:9/v1", "--cache-dir", str(blocker)],
                    blocker, "the response cache folder is a file")  # fmt: skip


def _generate_missing_masked(d: Path) -> Expected:
    return Expected(["generate", str(d / "no.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "n.parquet")], d / "no.parquet", "file not found")  # fmt: skip


def _generate_empty_masked(d: Path) -> Expected:
    return Expected(["generate", str(d / "empty_masked.parquet"), "--dict",
                     str(d / "dict.parquet"), "-o", str(d / "n.parquet"), "-q"],
                    d / "empty_masked.parquet", "has no rows")  # fmt: skip


def _run_not_utf8(d: Path) -> Expected:
    path = d / "p.yaml"
    path.write_bytes(b"name: p\n# caf\xe9\nstages: []\n")
    return Expected(["run", str(path)], path, ":2: invalid UTF-8")


def _run_malformed_yaml(d: Path) -> Expected:
    path = d / "p.yaml"
    path.write_text("name: p\nstages: [\n  {stage: read\n")
    return Expected(["run", str(path)], path, "malformed YAML")


def _run_unknown_set(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n")
    return Expected(["run", str(path), "--set", "nokey=1", "--output-dir", str(d / "o")], path,
                    "--set nokey=1: the pipeline has no variable or input 'nokey'")  # fmt: skip


def _run_unknown_input(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n")
    return Expected(["run", str(path), "--input", "nosuch=x.jsonl", "--output-dir", str(d / "o")],
                    path, "the pipeline has no input 'nosuch' (inputs: train)")  # fmt: skip


def _run_bad_ratios(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n  - stage: mask\n    ratios: abc\n")
    return Expected(["run", str(path), "--output-dir", str(d / "o")], path,
                    ":6: stage 'mask' (#2), key 'ratios'")  # fmt: skip


def _run_bad_concurrency(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n  - {stage: build-dict}\n"
                       "  - {stage: mask}\n  - {stage: generate, concurrency: many}\n")
    return Expected(["run", str(path), "--output-dir", str(d / "o")], path,
                    "stage 'generate' (#4), key 'concurrency'")  # fmt: skip


def _run_cycle(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read, name: a, input: b}\n"
                       "  - {stage: read, name: b, input: a}\n")
    return Expected(["run", str(path), "--output-dir", str(d / "o")], path,
                    "stage 'a' (#1), key 'input': refers to stage 'b', which runs after it "
                    "(a cycle: a -> b -> a)")  # fmt: skip


def _run_unknown_reference(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n  - {stage: mask, input: mystage}\n")
    return Expected(["run", str(path), "--output-dir", str(d / "o")], path,
                    "'mystage' is no earlier stage, no input (train) and no existing file")


def _run_wrong_kind_reference(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n  - {stage: build-dict}\n"
                       "  - {stage: export, source: build-dict}\n")
    return Expected(["run", str(path), "--output-dir", str(d / "o")], path,
                    "stage 'build-dict' is a build-dict stage")  # fmt: skip


def _run_output_dir_is_file(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n")
    return Expected(["run", str(path), "--output-dir", str(d / "queries.jsonl")],
                    d / "queries.jsonl", "the output folder is a file")  # fmt: skip


def _run_missing_input_file(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n")
    return Expected(["run", str(path), "--input", f"train={d / 'gone.jsonl'}", "--output-dir",
                     str(d / "o")], path, f"file not found: {d / 'gone.jsonl'}")  # fmt: skip


def _run_output_over_input(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read, name: queries}\n")
    return Expected(["run", str(path), "--output-dir", str(d)], path,
                    "would destroy the input")  # fmt: skip


def _run_unknown_stage_setting(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n  - {stage: build-dict}\n"
                       "  - {stage: mask}\n  - {stage: generate}\n")
    return Expected(["run", str(path), "--set", "generate.temprature=0.5", "--output-dir",
                     str(d / "o")], path,
                    "unknown key 'temprature'; closest: temperature")  # fmt: skip


def _run_set_stage_value_not_yaml(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n  - {stage: build-dict}\n  - {stage: mask}\n")
    return Expected(["run", str(path), "--set", "mask.ratios=[0.5", "--output-dir", str(d / "o")],
                    path, "--set mask.ratios=[0.5: the value is not YAML")  # fmt: skip


def _run_set_bad_stage_value(d: Path) -> Expected:
    path = pipeline(d, "stages:\n  - {stage: read}\n  - {stage: build-dict}\n"
                       "  - {stage: mask}\n  - {stage: generate}\n")
    return Expected(["run", str(path), "--set", "generate.on_failed=retry", "--output-dir",
                     str(d / "o")], path, "key 'on_failed'")  # fmt: skip


# A --set of generate / train names no file: the line names the option (Expected.path).
_SET = Path("--set")


def _generate_set_unknown_key(d: Path) -> Expected:
    return Expected(["generate", str(d / "masked.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "n.parquet"), "--set", "temprature=0.5"], _SET,
                    "unknown key 'temprature'; closest: temperature")  # fmt: skip


def _generate_set_bad_value(d: Path) -> Expected:
    return Expected(["generate", str(d / "masked.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "n.parquet"), "--set", "concurrency=many"], _SET,
                    "invalid value for concurrency")  # fmt: skip


def _generate_set_without_value(d: Path) -> Expected:
    return Expected(["generate", str(d / "masked.parquet"), "--dict", str(d / "dict.parquet"),
                     "-o", str(d / "n.parquet"), "--set", "seed"], _SET,
                    "expected KEY=VALUE")  # fmt: skip


def _train_set_unknown_key(d: Path) -> Expected:
    return Expected(["train", "-o", str(d / "runx"), "--set", "optim.lrr=0.1"], _SET,
                    "unknown key 'optim.lrr'")  # fmt: skip


def _train_set_bad_value(d: Path) -> Expected:
    return Expected(["train", "-o", str(d / "runx"), "--set", "loss.shine.fine_ranking=spiral"],
                    _SET, "expected one of chain|anchored")  # fmt: skip


def _train_set_section_not_a_mapping(d: Path) -> Expected:
    return Expected(["train", "-o", str(d / "runx"), "--set", "optim=fast"], _SET,
                    "invalid value for optim")  # fmt: skip


def _report_output_is_input(d: Path) -> Expected:
    neg = d / "negatives.parquet"
    return Expected(["report", str(neg), "-o", str(neg), "--no-hierarchy"], neg,
                    "is also an input")  # fmt: skip


def _report_not_negatives(d: Path) -> Expected:
    return Expected(["report", str(d / "masked.parquet"), "-o", str(d / "r.html"),
                     "--no-hierarchy"], d / "masked.parquet",
                    "expected a negatives artifact")  # fmt: skip


def _report_empty_artifact(d: Path) -> Expected:
    from negforge.artifacts import SCHEMA_VERSIONS, Provenance, write_artifact

    provenance = Provenance(kind="negatives", schema_version=SCHEMA_VERSIONS["negatives"])
    empty = write_artifact(d / "empty_neg.parquet", [], provenance)
    return Expected(["report", str(empty), "-o", str(d / "r.html"), "--no-hierarchy"], empty,
                    "has no rows")  # fmt: skip


def _report_output_under_file(d: Path) -> Expected:
    target = d / "negatives.parquet" / "r.html"
    return Expected(["report", str(d / "negatives.parquet"), "-o", str(target), "--no-hierarchy"],
                    target, "is a file")  # fmt: skip


def _plot_run_no_metrics(d: Path) -> Expected:
    (d / "emptyrun").mkdir()
    return Expected(["plot-run", str(d / "emptyrun"), "-o", str(d / "c.png")],
                    d / "emptyrun" / "metrics.csv", "no metrics.csv")  # fmt: skip


def _plot_run_output_is_metrics(d: Path) -> Expected:
    metrics = d / "run" / "metrics.csv"
    return Expected(["plot-run", str(d / "run"), "-o", str(metrics)], metrics, "is also an input")


def _plot_run_metrics_not_utf8(d: Path) -> Expected:
    metrics = d / "run" / "metrics.csv"
    metrics.write_bytes(b"epoch,lr\n1,0.1\n2,\xff\n")
    return Expected(["plot-run", str(d / "run"), "-o", str(d / "c.png")], metrics,
                    ":3: invalid UTF-8")  # fmt: skip


def _plot_saliency_not_a_checkpoint(d: Path) -> Expected:
    fake = d / "best.pt"
    fake.write_text("this is not a checkpoint")
    return Expected(["plot-saliency", str(fake), "--split", "val", "--n", "1", "-o",
                     str(d / "s.png")], fake, "not a negforge checkpoint")  # fmt: skip


def _eval_not_a_checkpoint(d: Path) -> Expected:
    fake = d / "last.pt"
    fake.write_bytes(b"PK\x03\x04 a broken zip")
    return Expected(["eval", str(fake), "--eval", str(d / "queries.jsonl"), "-o",
                     str(d / "ev")], fake, "not a negforge checkpoint")  # fmt: skip


def _eval_checkpoint_is_folder(d: Path) -> Expected:
    (d / "ck.pt").mkdir()
    return Expected(["eval", str(d / "ck.pt"), "--eval", str(d / "queries.jsonl"), "-o",
                     str(d / "ev")], d / "ck.pt", "is a folder")  # fmt: skip


def _train_output_is_file(d: Path) -> Expected:
    return Expected(["train", "-o", str(d / "queries.jsonl"), "--train", str(d / "queries.jsonl")],
                    d / "queries.jsonl", "the run folder is a file")  # fmt: skip


def _train_config_not_utf8(d: Path) -> Expected:
    config = d / "c.yaml"
    config.write_bytes(b"optim:\n  epochs: 1 # \xff\n")
    return Expected(["train", "-o", str(d / "runx"), "--config", str(config)], config,
                    "cannot read YAML config")  # fmt: skip


def _featurize_output_is_input(d: Path) -> Expected:
    q = d / "queries.jsonl"
    return Expected(["featurize", str(q), "-o", str(q)], q, "is also an input")


def _synth_output_is_file(d: Path) -> Expected:
    return Expected(["synth", "-o", str(d / "queries.jsonl")], d / "queries.jsonl",
                    "the output folder is a file")  # fmt: skip


def _serve_local_missing_model(d: Path) -> Expected:
    return Expected(["serve-local", "--model-path", str(d / "m.gguf")], d / "m.gguf",
                    "not found")  # fmt: skip


def _score_missing_qid(d: Path) -> Expected:
    preds = d / "preds.jsonl"
    write_jsonl(preds, {"qid": "nobody", "pred_relevant_windows": [[1.0, 5.0, 0.9]]})
    return Expected(["score", str(preds), "--gt", str(d / "queries.jsonl"), "-o",
                     str(d / "m.json")], preds, "qid")  # fmt: skip


def _score_window_start_after_end(d: Path) -> Expected:
    gt = [json.loads(line) for line in (d / "queries.jsonl").read_text().splitlines()]
    preds = d / "preds.jsonl"
    write_jsonl(preds, *({"qid": row["qid"], "pred_relevant_windows": [[5.0, 1.0, 0.9]]}
                         for row in gt))  # fmt: skip
    return Expected(["score", str(preds), "--gt", str(d / "queries.jsonl"), "-o",
                     str(d / "m.json")], preds,
                    "preds.jsonl:1, field 'pred_relevant_windows[0]'")  # fmt: skip


def _score_output_is_input(d: Path) -> Expected:
    gt = d / "queries.jsonl"
    return Expected(["score", str(gt), "--gt", str(gt), "-o", str(gt)], gt, "is also an input")


def _convert_checkpoint_not_a_checkpoint(d: Path) -> Expected:
    fake = d / "orig.ckpt"
    fake.write_text("not a checkpoint")
    return Expected(["convert-checkpoint", str(fake), "--backbone", "qd_detr", "-o",
                     str(d / "model.pt")], fake, "orig.ckpt")  # fmt: skip


def _convert_checkpoint_output_is_input(d: Path) -> Expected:
    fake = d / "orig.ckpt"
    fake.write_text("not a checkpoint")
    return Expected(["convert-checkpoint", str(fake), "--backbone", "qd_detr", "-o", str(fake)],
                    fake, "is also an input")  # fmt: skip


def _score_plausibility_output_is_input(d: Path) -> Expected:
    neg = d / "negatives.parquet"
    return Expected(["score-plausibility", str(neg), "-o", str(neg), "-q"], neg,
                    "is also an input")  # fmt: skip


def _score_plausibility_missing_gguf(d: Path) -> Expected:
    return Expected(["score-plausibility", str(d / "queries.jsonl"), "-o", str(d / "s.parquet"),
                     "--model-path", str(d / "m.gguf"), "-q"], d / "m.gguf",
                    "GGUF model file not found")  # fmt: skip


def _score_plausibility_masked_artifact(d: Path) -> Expected:
    return Expected(["score-plausibility", str(d / "masked.parquet"), "-o", str(d / "s.parquet"),
                     "-q"], d / "masked.parquet", "expected a negatives artifact or a query "
                    "file, found a masked artifact")  # fmt: skip


def _score_plausibility_not_a_query_file(d: Path) -> Expected:
    (d / "notes.txt").write_text("person opens a door.\n")
    return Expected(["score-plausibility", str(d / "notes.txt"), "-o", str(d / "s.parquet"),
                     "-q"], d / "notes.txt", "format")  # fmt: skip


def _score_plausibility_empty_negatives(d: Path) -> Expected:
    from negforge.artifacts import SCHEMA_VERSIONS, Provenance, write_artifact

    provenance = Provenance(kind="negatives", schema_version=SCHEMA_VERSIONS["negatives"])
    empty = write_artifact(d / "empty_neg.parquet", [], provenance)
    return Expected(["score-plausibility", str(empty), "-o", str(d / "s.parquet"), "-q"], empty,
                    "has no rows")  # fmt: skip


def _score_plausibility_report_is_input(d: Path) -> Expected:
    report = d / "s.parquet.errors.jsonl"
    write_jsonl(report, GOOD)
    return Expected(["score-plausibility", str(report), "-o", str(d / "s.parquet"), "-q"],
                    report, "is also an input")  # fmt: skip


def _sweep_unknown_grid_key(d: Path) -> Expected:
    spec = d / "s.yaml"
    spec.write_text("name: t\ngrid:\n  model.nosuch: [1, 2]\nseeds: [1]\n")
    return Expected(["sweep", str(spec), "-o", str(d / "sw")], spec,
                    "s.yaml:3, field 'model.nosuch'")  # fmt: skip


def _sweep_output_dir_is_file(d: Path) -> Expected:
    spec = d / "s.yaml"
    spec.write_text("name: t\ngrid:\n  model.hidden: [16, 32]\nseeds: [1]\n")
    return Expected(["sweep", str(spec), "-o", str(d / "queries.jsonl")], d / "queries.jsonl",
                    "the output folder is a file")  # fmt: skip


def _sweep_plot_output_is_input(d: Path) -> Expected:
    spec = d / "s.yaml"
    spec.write_text("name: t\ngrid:\n  model.hidden: [16, 32]\nseeds: [1]\n")
    return Expected(["sweep-plot", str(spec), "--x", "model.hidden", "--metric", "val/R1@0.5",
                     "-o", str(spec)], spec, "is also an input")  # fmt: skip


def _synth_negatives_not_a_benchmark(d: Path) -> Expected:
    (d / "bench").mkdir()
    return Expected(["synth-negatives", str(d / "bench"), str(d / "negatives.parquet"),
                     "--name", "r"], d / "bench" / "synth_info.json",
                    "not a negforge synth benchmark")  # fmt: skip


#: Every case above, by name: ``<command>_<what>`` (the command with ``_`` for ``-``).
CASES: dict[str, Case] = {
    name[1:]: case for name, case in sorted(globals().items())
    if name.startswith("_") and name[1:2].isalpha() and callable(case)
}  # fmt: skip


def test_the_table_covers_every_command_with_40_cases_or_more() -> None:
    from typer.main import get_command

    from negforge.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    named = [name.replace("_", "-") for name in CASES]
    hit = {command for command in commands if any(n.startswith(command + "-") for n in named)}
    assert len(CASES) >= 40, len(CASES)
    assert hit == commands, f"commands without a hostile case: {sorted(commands - hit)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(name: str, base: BaseInputs, tmp_path: Path) -> None:
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    base.copy_into(case_dir)
    expected = CASES[name](case_dir)
    before = snapshot(case_dir)
    result = call_cli(*expected.args, cache=base.cache, **expected.env)
    assert_clean_failure(result, expected)
    assert snapshot(case_dir) == before, "the failed command changed files"


def test_debug_shows_the_traceback_of_an_expected_failure(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    plain = call_cli("read", missing)
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    flagged = call_cli("--debug", "read", missing)
    assert flagged.exit_code == 2 and "Traceback" in flagged.stderr
    assert flagged.stderr.strip().splitlines()[-1].startswith("negforge: error: ")
    by_env = call_cli("read", missing, NEGFORGE_DEBUG="1")
    assert "Traceback" in by_env.stderr and by_env.exit_code == 2


def test_an_unexpected_exception_keeps_its_traceback(tmp_path: Path, monkeypatch) -> None:
    import negforge.readers as readers

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr(readers, "read_queries", broken)
    result = call_cli("read", tmp_path / "q.jsonl")
    assert isinstance(result.exception, ZeroDivisionError)  # not turned into a clean line
    assert "negforge: error" not in result.stderr


def test_long_query_is_skipped_and_listed_with_on_error_skip(base: BaseInputs, tmp_path: Path
                                                              ) -> None:  # fmt: skip
    source = write_jsonl(tmp_path / "q.jsonl", GOOD, {**GOOD, "qid": "long", "query": LONG_QUERY})
    out = tmp_path / "m.parquet"
    result = call_cli("mask", source, "-o", out, "--on-error", "skip", cache=base.cache)
    assert result.exit_code == 0, result.output
    listed = [json.loads(line) for line in (tmp_path / "m.parquet.errors.jsonl").read_text()
              .splitlines()]  # fmt: skip
    assert [(row["line"], row["field"], row["qid"]) for row in listed] == [(2, "query", "long")]
    assert "10,513 characters" in listed[0]["message"]


def test_allow_empty_accepts_an_empty_input(base: BaseInputs, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = call_cli("read", empty, "-o", tmp_path / "o.jsonl", "--allow-empty")
    assert result.exit_code == 0 and (tmp_path / "o.jsonl").read_text() == ""


# --- a full disk and a read-only folder, on a real tmpfs ----------------------------------------


@pytest.fixture
def mounted(tmp_path: Path):
    """Mount tmpfs folders on demand; skipped, with its reason, where that is impossible."""
    problem = tmpfs_problem()
    if problem is not None:
        pytest.skip(f"disk-full / read-only cases need a tmpfs: {problem}")
    mounts: list[Path] = []

    def mount(name: str, size: str = "1m", read_only: bool = False) -> Path:
        folder = tmp_path / name
        error = mount_tmpfs(folder, size, read_only=read_only)
        if error is not None:
            pytest.skip(f"disk-full / read-only cases need a tmpfs: {error}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        unmount(folder)


#: Commands writing ``{out}`` (a file in the mounted folder) from inputs in ``{d}``.
WRITERS = {
    "read": "read {d}/queries.jsonl -o {out}/q.jsonl",
    "mask": "mask {d}/queries.jsonl -o {out}/m.parquet",
    "build-dict": "build-dict {d}/queries.jsonl -o {out}/D.parquet",
    "export": "export {d}/negatives.parquet -o {out}/s.jsonl",
    "import-negatives": "import-negatives {d}/released.jsonl -o {out}/i.parquet",
    "generate": "generate {d}/masked.parquet --dict {d}/dict.parquet -o {out}/n.parquet -q",
    "report": "report {d}/negatives.parquet -o {out}/r.html --no-hierarchy --quiet",
    "plot-run": "plot-run {d}/run -o {out}/c.png",
    "run": "run {d}/p.yaml --output-dir {out}/pipe",
    "score-plausibility": "score-plausibility {d}/negatives.parquet -o {out}/s.parquet -q",
}


def _writer_case(d: Path, out: Path, command: str) -> list[str]:
    pipeline(d, "stages:\n  - {stage: read}\n  - {stage: export, source: "
                f"{d / 'negatives.parquet'}}}\n")  # fmt: skip
    released = json.loads((d / "queries.jsonl").read_text().splitlines()[0])
    released["masked_queries"] = ["<mask> " + released["query"].split(" ", 1)[1]]
    released["recomposed_queries"] = ["dog " + released["query"].split(" ", 1)[1]]
    write_jsonl(d / "released.jsonl", released)
    return WRITERS[command].format(d=d, out=out).split()


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_read_only_folder(command: str, base: BaseInputs, tmp_path: Path, mounted) -> None:
    d = tmp_path / "in"
    d.mkdir()
    base.copy_into(d)
    readonly = mounted("ro", read_only=True)
    args = _writer_case(d, readonly, command)
    before = snapshot(tmp_path)
    result = call_cli(*args, cache=base.cache)
    target = Path(args[args.index("-o") + 1] if "-o" in args else args[-1])
    assert_clean_failure(result, Expected(args, target, "read-only file system"))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_disk_full(command: str, base: BaseInputs, tmp_path: Path, mounted) -> None:
    d = tmp_path / "in"
    d.mkdir()
    base.copy_into(d)
    full = mounted("full", size="256k")
    fill_up(full)
    args = _writer_case(d, full, command)
    before = snapshot(tmp_path)
    result = call_cli(*args, cache=base.cache)
    expected = Expected(args, full, "no space left on the device (disk full)")
    assert_clean_failure(result, expected)
    assert snapshot(tmp_path) == before


def test_build_dict_artifact_and_summary_appear_together(base: BaseInputs, tmp_path: Path,
                                                          mounted) -> None:  # fmt: skip
    """Room for the artifact but not for its summary: neither appears."""
    d = tmp_path / "in"
    d.mkdir()
    base.copy_into(d)
    probe = call_cli("build-dict", d / "queries.jsonl", "-o", tmp_path / "probe" / "D.parquet",
                     cache=base.cache)  # fmt: skip
    assert probe.exit_code == 0, probe.output
    size = (tmp_path / "probe" / "D.parquet").stat().st_size
    full = mounted("full", size="256k")
    page = 4096
    fill_up(full, leave_bytes=-(-size // page) * page)  # the artifact's pages, no more
    before = snapshot(tmp_path)
    result = call_cli("build-dict", d / "queries.jsonl", "-o", full / "D.parquet",
                      cache=base.cache)  # fmt: skip
    # the artifact was written; its provenance sidecar and summary did not fit: so none is there
    assert_clean_failure(result, Expected([], full / "D.parquet.provenance.json", "disk full"))
    assert snapshot(tmp_path) == before  # no artifact without its summary, no temp file


def test_generate_cache_on_a_full_disk(base: BaseInputs, tmp_path: Path, mounted) -> None:
    """The response cache's sqlite cannot start on a full disk: one line, before any call."""
    d = tmp_path / "in"
    d.mkdir()
    base.copy_into(d)
    full = mounted("full", size="256k")
    fill_up(full)
    before = snapshot(tmp_path)
    result = call_cli("generate", d / "masked.parquet", "--dict", d / "dict.parquet", "-o",
                      d / "n.parquet", "-q", "--llm", "openai/fake-gpt", "--api-base",
                      "http://127.0.0.1:9/v1", "--cache-dir", full / "cache")  # fmt: skip
    assert_clean_failure(result, Expected([], full / "cache", "cannot open the response cache"))
    assert snapshot(tmp_path) == before
