"""Query readers: jsonl, benchmark json, csv, parquet, and the shared Charades-CG/ANet-CG files."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negforge.errors import InputError
from negforge.readers import (
    detect_format,
    read_queries,
    record_to_json,
    split_from_filename,
    write_jsonl,
)

ROWS = [
    {"qid": "VID01_train_0", "query": "person opens a door.", "duration": 30.0, "vid": "VID01",
     "relevant_windows": [[1.0, 4.5]]},
    {"qid": "VID01_train_1", "query": " a person walks in.", "duration": 30.0, "vid": "VID01",
     "relevant_windows": [[4.5, 9.0], [12.0, 14.0]],
     "masked_queries": ["a person <mask> in.", "a person <mask> <mask>.",
                        "a <mask> <mask> <mask>."]},
    {"qid": 17, "query": "someone laughs.", "duration": 12.5, "vid": "VID02",
     "relevant_windows": [[0.0, 12.5]]},
]


def write_jsonl_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs(result):
    return [(r.qid, r.query) for r in result.records]


def test_jsonl_reader_validates_and_keeps_optional_fields(tmp_path):
    path = write_jsonl_rows(tmp_path / "q.jsonl", ROWS)
    result = read_queries(path)
    assert result.format == "jsonl" and result.lines == [1, 2, 3]
    assert pairs(result) == [("VID01_train_0", "person opens a door."),
                             ("VID01_train_1", " a person walks in."), ("17", "someone laughs.")]
    assert result.records[1].masked_queries == ROWS[1]["masked_queries"]
    assert result.records[1].relevant_windows == [(4.5, 9.0), (12.0, 14.0)]
    assert result.bad_rows == []


def test_jsonl_blank_lines_and_bom_are_tolerated(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\n\n  \n"
                     + json.dumps(ROWS[2]).encode())
    result = read_queries(path)
    assert result.lines == [1, 4]


def test_benchmark_json_rows_qids_and_splits(tmp_path):
    split_file = {
        "VIDAA": {"sentences": ["person sits.", "  A man stands up."],
                  "timestamps": [[0.0, 3.0], [3.0, 8.5]], "duration": 20.0},
        "VIDBB": {"sentences": ["someone eats."], "timestamps": [[1.0, 2.0]], "duration": 9.0,
                  "novels": [{"v-n": [["eat", "apple"]]}]},
    }
    for stem, split in (("train", "train"), ("test_trivial", "test"),
                        ("novel_composition", "composition"), ("novel_word", "word")):
        path = tmp_path / f"{stem}.json"
        path.write_text(json.dumps(split_file))
        result = read_queries(path)
        assert pairs(result) == [(f"VIDAA_{split}_0", "person sits."),
                                 (f"VIDAA_{split}_1", "  A man stands up."),
                                 (f"VIDBB_{split}_0", "someone eats.")]
    assert result.records[1].relevant_windows == [(3.0, 8.5)]
    assert result.records[2].novels == {"v-n": [["eat", "apple"]]}
    assert result.records[2].novel_types == ["v-n"]
    other = tmp_path / "mine.json"
    other.write_text(json.dumps(split_file))
    assert read_queries(other, split="val").records[0].qid == "VIDAA_val_0"
    with pytest.raises(InputError, match="split"):
        read_queries(other)


def test_csv_and_parquet_give_the_same_records(tmp_path):
    expected = read_queries(write_jsonl_rows(tmp_path / "q.jsonl", ROWS)).records
    csv_path = tmp_path / "q.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["qid", "query", "duration", "vid",
                                                    "relevant_windows", "masked_queries"])
        writer.writeheader()
        for row in ROWS:
            writer.writerow({**row, "relevant_windows": json.dumps(row["relevant_windows"]),
                             "masked_queries": json.dumps(row["masked_queries"])
                             if "masked_queries" in row else ""})
    from_csv = read_queries(csv_path)
    assert from_csv.records == expected and from_csv.lines == [2, 3, 4]
    table = pa.Table.from_pylist([
        {**r, "qid": str(r["qid"]), "masked_queries": r.get("masked_queries")} for r in ROWS])
    pq.write_table(table, tmp_path / "q.parquet")
    assert read_queries(tmp_path / "q.parquet").records == expected


def test_write_jsonl_round_trips(tmp_path):
    records = read_queries(write_jsonl_rows(tmp_path / "q.jsonl", ROWS)).records
    write_jsonl(records, tmp_path / "back.jsonl")
    assert read_queries(tmp_path / "back.jsonl").records == records
    assert list(record_to_json(records[0])) == ["qid", "query", "duration", "vid",
                                                "relevant_windows"]


def test_format_detection():
    assert detect_format("a/b.JSONL") == "jsonl"
    assert detect_format("x.pq") == "parquet"
    with pytest.raises(InputError, match="suffix"):
        detect_format("x.txt")
    assert split_from_filename("charades_cg_novel_word.json") == "word"


# --- the shared benchmark files ---------------------------------------------------------------


def released_pairs(path):
    with open(path, encoding="utf-8") as handle:
        return [(str(r["qid"]), r["query"]) for r in map(json.loads, handle)]


@pytest.mark.shared
def test_charades_cg_train_json_matches_shine_qids_and_queries(shared_dir):
    data = shared_dir / "data"
    ours = pairs(read_queries(data / "visa" / "charades_cg" / "train.json"))
    released = released_pairs(data / "charades_cg" / "charades_cg_gpt_train.jsonl")
    assert len(ours) == 8281
    assert sorted(ours) == sorted(released)


@pytest.mark.shared
def test_anet_cg_test_trivial_json_matches_shine_qids_and_queries(shared_dir):
    data = shared_dir / "data"
    ours = pairs(read_queries(data / "visa" / "activitynet_cg" / "test_trivial.json"))
    released = released_pairs(data / "anet_cg" / "anet_cg_test.jsonl")
    assert len(ours) == 15712
    assert sorted(ours) == sorted(released)
    assert any(query.startswith(" ") for _, query in ours)  # leading spaces kept verbatim


@pytest.mark.shared
def test_anet_cg_train_zero_length_windows_are_reported(shared_dir):
    path = shared_dir / "data" / "visa" / "activitynet_cg" / "train.json"
    result = read_queries(path, on_error="skip")
    assert len(result.records) + len(result.bad_rows) == 36724
    # The bad windows, found in the json with plain Python: zero-length or reversed, or
    # outside the video (end more than 2 s past the duration, the reader's tolerance).
    videos = json.loads(path.read_text())
    zero_length, bad = set(), set()
    for vid, video in videos.items():
        for index, (start, end) in enumerate(video["timestamps"]):
            field = f"{vid}.timestamps[{index}]"
            zero_length |= {field} if end == start else set()
            if not 0 <= start < end or start >= video["duration"] or end > video["duration"] + 2:
                bad.add(field)
    assert len(zero_length) == 2 and zero_length <= bad
    assert sorted(b.field or "" for b in result.bad_rows) == sorted(bad)
