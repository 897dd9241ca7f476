"""``negforge score`` equals the originals' ``standalone_eval/eval.py`` (moment retrieval).

A generated submission with score ties, several ground-truth windows (some tied in IoU with
a prediction), more than 10 windows, unsorted windows, windows at the length-bucket edges
and beyond 150 s is scored by Moment-DETR's and SHINE's ``eval_submission`` and by
``negforge score``: every brief figure (and every per-bucket figure) is equal. Bad
submissions stop with exit code 2 naming file, line and field.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from negforge.trainer.scoring import score_file
from tests.support.cli import run_cli
from tests.support.reference import reference_root, reference_tree


@pytest.fixture(scope="module")
def root():
    return reference_root()


class SerialPool:
    """Stands in for multiprocessing.Pool in standalone_eval: same results, in order."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, func, iterable, chunksize=1):
        return map(func, iterable)


def original_eval(root, tree: str, submission: list[dict], gt: list[dict]) -> dict:
    with reference_tree(root, tree) as ref:
        module = ref.load("standalone_eval.eval")
        module.mp = types.SimpleNamespace(Pool=SerialPool)
        return module.eval_submission(
            json.loads(json.dumps(submission)), json.loads(json.dumps(gt)), verbose=False
        )


# Ground-truth lengths at and around the bucket edges (0, 10], (10, 30], (30, 150].
EDGE_LENGTHS = (0.5, 9.99, 10.0, 10.01, 29.99, 30.0, 30.5, 149.5, 150.0, 150.5, 180.0)


def varied_case(seed: int = 0, count: int = 90) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    gt, submission = [], []
    for index in range(count):
        duration = 200.0
        qid: int | str = index if index % 2 else f"q{index}"
        n_windows = int(rng.integers(1, 4))
        lengths = [EDGE_LENGTHS[(index + k) % len(EDGE_LENGTHS)] for k in range(n_windows)]
        windows = []
        for length in lengths:
            start = float(np.round(rng.uniform(0, duration - length), 1))
            windows.append([start, start + length])
        if index % 7 == 0:  # two windows tied in IoU with the first prediction
            windows = [[20.0, 30.0], [22.0, 32.0]]
        gt.append({"qid": qid, "query": f"q {index}", "vid": f"v{index % 13}",
                   "duration": duration, "relevant_windows": windows})
        preds = []
        for window in windows:  # near-hits of every window
            jitter = rng.normal(0, 2.0, size=2)
            start = max(0.0, window[0] + jitter[0])
            preds.append([start, max(start, window[1] + jitter[1]), float(rng.uniform())])
        for _ in range(int(rng.integers(0, 12))):  # misses, some beyond 150 s
            start = float(rng.uniform(0, duration))
            preds.append([start, start + float(rng.uniform(0, 40)), float(rng.uniform())])
        if index % 5 == 0:  # score ties
            for pred in preds:
                pred[2] = 0.5
        if index % 3 == 0:  # listed order is not score order; R1 takes the first listed
            preds = [preds[i] for i in rng.permutation(len(preds))]
        if index % 7 == 0:
            preds = [[21.0, 31.0, 0.9], [20.0, 30.0, 0.8], *preds]
        submission.append({"qid": qid, "query": f"q {index}", "vid": f"v{index % 13}",
                           "pred_relevant_windows": [[round(v, 4) for v in p] for p in preds]})
    order = rng.permutation(count)  # the submission lists queries in another order
    return [submission[i] for i in order], gt


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_equals_standalone_eval(root, tmp_path):
    submission, gt = varied_case()
    pred_path = write_jsonl(tmp_path / "preds.jsonl", submission)
    gt_path = write_jsonl(tmp_path / "gt.jsonl", gt)
    ours = score_file(pred_path, gt_path)
    moment_detr = original_eval(root, "moment_detr", submission, gt)
    shine = original_eval(root, "shine", submission, gt)
    assert set(moment_detr["brief"]) | {"MR-full-mIoU"} == set(ours["brief"])
    print("\nbrief: negforge score vs standalone_eval (Moment-DETR; mIoU: SHINE's)")
    for key, value in ours["brief"].items():
        expected = shine["brief"][key] if key == "MR-full-mIoU" else moment_detr["brief"][key]
        print(f"  {key:18s} {value:7.2f} {expected:7.2f}")
        assert value == expected, key
    for bucket in ("short", "middle", "long", "full"):
        assert ours[bucket]["MR-mAP"] == moment_detr[bucket]["MR-mAP"], bucket
        r1 = {k: v for k, v in ours[bucket]["MR-R1"].items() if k != "average"}
        assert r1 == moment_detr[bucket]["MR-R1"], bucket
        assert ours[bucket]["MR-R1"]["average"] == shine[bucket]["MR-R1"]["average"], bucket
    # The generated set really has what it is meant to test.
    lengths = [w[1] - w[0] for row in gt for w in row["relevant_windows"]]
    assert {10.0, 30.0, 150.0} <= set(lengths) and max(lengths) > 150
    assert any(len(r["pred_relevant_windows"]) > 10 for r in submission)


def test_cli_writes_the_metrics_and_an_empty_bucket_scores_zero(root, tmp_path, monkeypatch,
                                                                capsys):
    gt = [{"qid": f"q{i}", "query": "x", "vid": "v", "duration": 60.0,
           "relevant_windows": [[1.0, 5.0 + i]]} for i in range(4)]  # all "short"
    submission = [{"qid": f"q{i}", "pred_relevant_windows": [[1.0, 4.0 + 2 * i, 0.9]]}
                  for i in range(4)]
    pred_path = write_jsonl(tmp_path / "p.jsonl", submission)
    gt_path = write_jsonl(tmp_path / "gt.jsonl", gt)
    code, out, _ = run_cli(monkeypatch, capsys, "score", pred_path, "--gt", gt_path,
                           "-o", tmp_path / "m.json")
    assert code == 0
    written = json.loads((tmp_path / "m.json").read_text())
    assert json.loads(out[: out.rindex("}") + 1]) == written["brief"]
    reference = original_eval(root, "shine", submission, gt)  # Moment-DETR's and QD-DETR's crash
    for key, value in reference["brief"].items():
        assert written["brief"][key] == value, key
    assert written["brief"]["MR-middle-mAP"] == 0.0 and written["brief"]["MR-long-mAP"] == 0.0


@pytest.mark.parametrize(
    ("rows", "where", "message"),
    [
        ([{"qid": "a", "pred_relevant_windows": [[1.0, 2.0, 0.5]]}], "gt.jsonl:2, field 'qid'",
         "qid 'b' has no prediction"),
        ([{"qid": "a", "pred_relevant_windows": [[1.0, 2.0, 0.5]]},
          {"qid": "b", "pred_relevant_windows": [[3.0, 2.0, 0.5]]}],
         "preds.jsonl:2, field 'pred_relevant_windows[0]'", "start 3.0 > end 2.0"),
        ([{"qid": "a", "pred_relevant_windows": [[1.0, 2.0, 0.5]]},
          {"qid": "b", "pred_relevant_windows": [[1.0, 2.0, 0.5]]},
          {"qid": "c", "pred_relevant_windows": [[1.0, 2.0, 0.5]]}],
         "preds.jsonl:3, field 'qid'", "not in the ground truth"),
        ([{"qid": "a", "pred_relevant_windows": [[1.0, 2.0, 0.5]]},
          {"qid": "a", "pred_relevant_windows": [[1.0, 2.0, 0.5]]}],
         "preds.jsonl:2, field 'qid'", "duplicate qid"),
        ([{"qid": "a", "pred_relevant_windows": []}],
         "preds.jsonl:1, field 'pred_relevant_windows'", "missing or empty"),
    ],
)
def test_bad_submissions_exit_2_naming_file_line_and_field(
    tmp_path, monkeypatch, capsys, rows, where, message
):
    gt = [{"qid": q, "query": "x", "vid": "v", "duration": 10.0, "relevant_windows": [[1, 3]]}
          for q in ("a", "b")]
    pred_path = write_jsonl(tmp_path / "preds.jsonl", rows)
    gt_path = write_jsonl(tmp_path / "gt.jsonl", gt)
    code, _, err = run_cli(monkeypatch, capsys, "score", pred_path, "--gt", gt_path)
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert where in line and message in line, line
