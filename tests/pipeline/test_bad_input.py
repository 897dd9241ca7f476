"""Every bad input of the issue, through the CLI: one clear line naming file, line and field,
exit code 2, nothing half-written; ``--on-error skip`` leaves bad rows out and lists them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.cli import run_cli

GOOD = {"qid": "AAAAA_train_0", "query": "person opens a door.", "duration": 20.0,
        "vid": "AAAAA", "relevant_windows": [[1.0, 5.0]]}


def row(**changes):
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def jsonl(path, *rows):
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def second(**changes):
    return row(qid="AAAAA_train_1", **changes)


CASES = {
    "malformed_json": ([GOOD, b'{"qid": "AAAAA_train_1", "query": "x"'], 2, None,
                       "malformed JSON"),
    "missing_field": ([GOOD, second(duration=...)], 2, "duration", "missing field"),
    "mistyped_field": ([GOOD, second(duration="long")], 2, "duration", "valid number"),
    "mistyped_windows": ([GOOD, second(relevant_windows="1-5")], 2, "relevant_windows",
                         "valid list"),
    "empty_query": ([GOOD, second(query="   ")], 2, "query", "query is empty"),
    "duplicate_qid": ([GOOD, row(query="person sits.")], 2, "qid", "duplicate qid"),
    "invalid_utf8": ([GOOD, b'{"qid": "AAAAA_train_1", "query": "caf\xe9"}'], 2, None,
                     "invalid UTF-8"),
    "window_outside_duration": ([GOOD, second(relevant_windows=[[18.0, 25.0]])], 2,
                                "relevant_windows", "outside the video's duration"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_jsonl_row_names_file_line_field_and_exits_2(case, tmp_path, monkeypatch, capsys):
    rows, line, field, message = CASES[case]
    source = jsonl(tmp_path / "bad.jsonl", *rows)
    out = tmp_path / "masked.parquet"
    code, _, err = run_cli(monkeypatch, capsys, "mask", source, "-o", out)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("negforge: error: ")
    assert f"{source}:{line}" in err
    if field:
        assert f"field '{field}" in err
    assert message in err
    assert not out.exists()  # nothing written
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_and_unreadable_files(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(monkeypatch, capsys, "mask", missing, "-o", tmp_path / "m.parquet")
    assert code == 2 and f"{missing}: file not found" in err
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "build-dict", folder, "-o", tmp_path / "d.pq")
    assert code == 2 and str(folder) in err and "folder" in err
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    code, _, err = run_cli(monkeypatch, capsys, "read", broken)
    assert code == 2 and "not a readable Parquet file" in err
    code, _, err = run_cli(monkeypatch, capsys, "inspect", broken)
    assert code == 2 and str(broken) in err


def test_bad_benchmark_json_and_csv_rows(tmp_path, monkeypatch, capsys):
    split = {"VIDAA": {"sentences": ["person sits.", "person stands."],
                       "timestamps": [[0.0, 3.0], [5.0, 40.0]], "duration": 20.0}}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(split))
    code, _, err = run_cli(monkeypatch, capsys, "read", path)
    assert code == 2
    assert f"{path}:2, field 'VIDAA.timestamps[1]'" in err and "outside" in err
    broken = tmp_path / "test_trivial.json"
    broken.write_text('{"VIDAA": {"sentences": ["a"],\n "duration": 3.0,,}}')
    code, _, err = run_cli(monkeypatch, capsys, "read", broken)
    assert code == 2 and f"{broken}:2" in err and "malformed JSON" in err
    table = tmp_path / "q.csv"
    table.write_text("qid,query,duration,vid,relevant_windows\n"
                     'A_0,person sits.,20,A,"[[0, 3]]"\n'
                     'A_1,person naps.,soon,A,"[[0, 3]]"\n')
    code, _, err = run_cli(monkeypatch, capsys, "read", table)
    assert code == 2 and f"{table}:3, field 'duration'" in err


def test_on_error_skip_leaves_bad_rows_out_and_lists_them(tmp_path, monkeypatch, capsys):
    rows = [GOOD] + [CASES[name][0][1] for name in sorted(CASES)]
    rows.append(row(qid="AAAAA_train_9", query="person closes the window."))
    source = jsonl(tmp_path / "mixed.jsonl", *rows)
    out = tmp_path / "masked.parquet"
    code, stdout, _ = run_cli(monkeypatch, capsys, "mask", source, "-o", out,
                              "--on-error", "skip", "--cache-dir", tmp_path / "cache")
    assert code == 0, stdout
    assert "masked 2 queries" in stdout and f"{len(CASES)} bad rows skipped" in stdout
    report = out.with_name("masked.parquet.errors.jsonl")
    listed = [json.loads(line) for line in report.read_text().splitlines()]
    assert [item["line"] for item in listed] == list(range(2, 2 + len(CASES)))
    assert all(item["path"] == str(source) and item["message"] for item in listed)
    assert {"duration", "query", "qid", "relevant_windows"} <= {i["field"] for i in listed}
    from negforge.artifacts import read_provenance

    assert read_provenance(out).summary["bad_rows"] == len(CASES)


def test_failed_run_keeps_the_previous_artifact(tmp_path, monkeypatch, capsys):
    good = jsonl(tmp_path / "q.jsonl", GOOD)
    out = tmp_path / "masked.parquet"
    code, _, _ = run_cli(monkeypatch, capsys, "mask", good, "-o", out,
                         "--cache-dir", tmp_path / "cache")
    assert code == 0
    before = out.read_bytes()
    jsonl(good, GOOD, second(query=""))
    code, _, err = run_cli(monkeypatch, capsys, "mask", good, "-o", out)
    assert code == 2 and "field 'query'" in err
    assert out.read_bytes() == before


def test_bad_options_exit_2(tmp_path, monkeypatch, capsys):
    source = jsonl(tmp_path / "q.jsonl", GOOD)
    out = tmp_path / "m.parquet"
    for extra, expected in ((["--preset", "imagenet"], "unknown preset"),
                            (["--ratios", "0.5,0.2"], "must not decrease"),
                            (["--exclude-types", "pronoun"], "unknown primitive type"),
                            (["--spacy-model", "xx_no_such_model"], "is not installed")):
        code, _, err = run_cli(monkeypatch, capsys, "mask", source, "-o", out, *extra)
        assert code == 2 and expected in err, (extra, err)
        assert err.count("\n") == 1
    assert "python -m spacy download en_core_web_sm" in err
    code, _, err = run_cli(monkeypatch, capsys, "mask", source, "-o", out, "--on-error", "x")
    assert code == 2


def test_exit_code_through_a_real_process(tmp_path):
    source = jsonl(tmp_path / "q.jsonl", GOOD, second(relevant_windows=[[30.0, 40.0]]))
    done = subprocess.run([sys.executable, "-m", "negforge", "read", str(source)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{source}:2, field 'relevant_windows'" in done.stderr
    assert "Traceback" not in done.stderr
