"""Metrics on hand-made predictions: IoU corner cases, several ground-truth windows, MR-mAP."""

from __future__ import annotations

import pytest

from negforge.trainer.data import GroundingSample
from negforge.trainer.evaluation import (
    Prediction,
    average_precision,
    best_gt_iou,
    evaluate,
    fixed_window_predictions,
    format_table,
    format_type_table,
    metric_row,
    read_predictions,
    window_iou,
    write_metrics,
    write_predictions,
)


def sample(qid, windows, duration=60.0, types=()):
    return GroundingSample(
        qid=qid,
        query=f"query {qid}",
        vid=f"v{qid}",
        duration=duration,
        windows=tuple(windows),
        novel_types=tuple(types),
    )


def pred(qid, windows):
    return Prediction(qid=qid, query=f"query {qid}", vid=f"v{qid}", pred_relevant_windows=windows)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 10), (0, 10), 1.0),  # identical
        ((0, 5), (5, 10), 0.0),  # touching
        ((0, 5), (6, 10), 0.0),  # disjoint
        ((2, 4), (0, 10), 0.2),  # contained
        ((0, 10), (5, 15), 5 / 15),  # partial overlap
        ((3, 3), (0, 10), 0.0),  # zero width
        ((3, 3), (3, 3), 0.0),  # both empty: no 0/0
    ],
)
def test_window_iou_corner_cases(a, b, expected):
    assert window_iou(a, b) == pytest.approx(expected)
    assert window_iou(b, a) == pytest.approx(expected)


def test_best_gt_iou_picks_the_window_that_overlaps_most():
    gts = [(0.0, 10.0), (20.0, 30.0)]
    assert best_gt_iou((21.0, 30.0), gts) == pytest.approx(0.9)
    assert best_gt_iou((12.0, 18.0), gts) == 0.0
    assert best_gt_iou((0.0, 30.0), gts) == pytest.approx(1 / 3)


def test_r1_and_miou_use_the_top1_window_and_inclusive_thresholds():
    samples = [
        sample("a", [(0.0, 10.0)]),  # top-1 IoU 0.5 exactly -> counts for R1@0.5
        sample("b", [(0.0, 10.0)]),  # top-1 IoU 0.7 exactly -> counts for R1@0.7
        sample("c", [(0.0, 10.0), (40.0, 50.0)]),  # top-1 hits the second GT window: IoU 1
        sample("d", [(0.0, 10.0)]),  # second-ranked window would be perfect; top-1 is 0
    ]
    preds = [
        pred("a", [[0.0, 5.0, 0.9]]),
        pred("b", [[0.0, 7.0, 0.9], [30.0, 40.0, 0.1]]),
        pred("c", [[40.0, 50.0, 0.8]]),
        pred("d", [[20.0, 30.0, 0.9], [0.0, 10.0, 0.5]]),
    ]
    result = evaluate(preds, samples)
    assert result.metrics["R1@0.5"] == 75.0
    assert result.metrics["R1@0.7"] == 50.0
    assert result.metrics["mIoU"] == pytest.approx(round(100 * (0.5 + 0.7 + 1.0 + 0.0) / 4, 2))
    assert result.num_queries == 4 and result.missing_predictions == 0


def test_missing_prediction_counts_as_zero_and_unknown_qids_are_reported():
    samples = [sample("a", [(0.0, 10.0)]), sample("b", [(0.0, 10.0)])]
    result = evaluate([pred("a", [[0.0, 10.0, 1.0]]), pred("zzz", [[0.0, 1.0, 1.0]])], samples)
    assert result.metrics["R1@0.5"] == 50.0
    assert result.missing_predictions == 1 and result.unmatched_predictions == 1


def test_average_precision_by_hand():
    # Two GT windows; predictions in arbitrary order (AP sorts by score):
    #   A [0,10] 0.9 -> GT1 (IoU 1), B [0,10] 0.8 -> duplicate of GT1 (false positive),
    #   C [20,25] 0.7 -> GT2 with IoU exactly 0.5.
    gts = [(0.0, 10.0), (20.0, 30.0)]
    preds = [[20.0, 25.0, 0.7], [0.0, 10.0, 0.9], [0.0, 10.0, 0.8]]
    # IoU 0.5: tp, fp, tp -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # Interpolated precision: 1 up to recall 1/2, 2/3 up to 1 -> AP = 0.5*1 + 0.5*2/3.
    assert average_precision(preds, gts, 0.5) == pytest.approx(0.5 + 1 / 3)
    # IoU >= 0.55: only A is a true positive -> AP = 0.5 * 1.
    assert average_precision(preds, gts, 0.55) == pytest.approx(0.5)
    assert average_precision(preds, gts, 0.95) == pytest.approx(0.5)
    # A lower-ranked hit counts less than a top-ranked one.
    late = [[50.0, 55.0, 0.9], [0.0, 10.0, 0.5]]
    assert average_precision(late, [(0.0, 10.0)], 0.5) == pytest.approx(0.5)
    assert average_precision([], [(0.0, 10.0)], 0.5) == 0.0


def test_iou_ties_between_ground_truth_windows_try_the_later_window_first():
    # [21, 31] has IoU 9/11 with both windows; like standalone_eval (argsort()[::-1]) it
    # takes the later one, which leaves [20, 30] for the exact second prediction: two hits
    # at IoU 0.8 (taking the first window would leave IoU 8/12 for the second: AP 0.5).
    gts = [(20.0, 30.0), (22.0, 32.0)]
    preds = [[21.0, 31.0, 0.9], [20.0, 30.0, 0.8]]
    assert average_precision(preds, gts, 0.8) == pytest.approx(1.0)
    assert average_precision(preds, gts, 0.95) == pytest.approx(0.25)  # only the second hits
    # R1: the best-IoU window, the first one on ties.
    result = evaluate([pred("a", preds)], [sample("a", gts)])
    assert result.metrics["mIoU"] == round(100 * 9 / 11, 2)


def test_mr_map_over_thresholds_and_length_buckets():
    s = sample("a", [(0.0, 10.0), (20.0, 30.0)])
    preds = [pred("a", [[0.0, 10.0, 0.9], [0.0, 10.0, 0.8], [20.0, 25.0, 0.7]])]
    result = evaluate(preds, [s])
    # AP is 5/6 at IoU 0.5 and 1/2 at the nine thresholds 0.55..0.95.
    assert result.metrics["mAP"] == round(100 * (5 / 6 + 9 * 0.5) / 10, 2)
    assert result.metrics["mAP@0.5"] == round(100 * 5 / 6, 2)
    assert result.metrics["mAP@0.75"] == 50.0
    # Both GT windows are 10 s long: "short" is (0, 10] as in standalone_eval; the empty
    # middle and long buckets score 0 as in QD-DETR's and SHINE's eval.
    assert result.metrics["mAP_short"] == result.metrics["mAP"]
    assert result.metrics["mAP_middle"] == 0.0 and result.metrics["mAP_long"] == 0.0
    assert result.brief["MR-short-mAP"] == result.metrics["mAP"]


def test_map_uses_only_the_top_10_windows():
    s = sample("a", [(0.0, 10.0)])
    misses = [[30.0 + i, 31.0 + i, 1.0 - i / 100] for i in range(10)]
    hit_11th = [pred("a", [*misses, [0.0, 10.0, 0.5]])]
    assert evaluate(hit_11th, [s]).metrics["mAP"] == 0.0


def test_metrics_per_composition_type():
    samples = [
        sample("a", [(0.0, 10.0)], types=("v-n",)),
        sample("b", [(0.0, 10.0)], types=("v-n", "p-n")),
        sample("c", [(0.0, 10.0)], types=("p-n",)),
    ]
    preds = [
        pred("a", [[0.0, 10.0, 1.0]]),
        pred("b", [[0.0, 4.0, 1.0]]),
        pred("c", [[0.0, 10.0, 1.0]]),
    ]
    by_type = evaluate(preds, samples).by_type
    assert by_type["v-n"]["R1@0.5"] == 50.0 and by_type["v-n"]["count"] == 2
    assert by_type["p-n"]["mIoU"] == pytest.approx(70.0)
    assert "v-n (n=2)" in (format_type_table({"novel_composition": evaluate(preds, samples)}) or "")


def test_fixed_window_baseline_finds_the_common_window():
    train = [sample(str(i), [(0.0, 0.5 * 60.0)]) for i in range(5)]
    test = [sample("t", [(0.0, 15.0)], duration=30.0)]
    (only,) = fixed_window_predictions(train, test)
    assert only.pred_relevant_windows[0][:2] == pytest.approx([0.0, 15.0])


def test_table_files_and_log_row(tmp_path):
    samples = [sample("a", [(0.0, 10.0)])]
    results = {"test_trivial": evaluate([pred("a", [[0.0, 10.0, 1.0]])], samples)}
    table = format_table({"QD-DETR": {k: v.metrics for k, v in results.items()}})
    lines = table.splitlines()
    assert "test_trivial" in lines[0] and "R1@0.5" in lines[1] and "mIoU" in lines[1]
    assert lines[-1].startswith("QD-DETR") and "100.00" in lines[-1]
    row = metric_row(results)
    assert row["test_trivial/R1@0.7"] == 100.0 and "test_trivial/mAP" in row
    path = write_predictions(tmp_path / "p.jsonl", [pred("a", [[0.0, 10.0, 1.0]])])
    assert read_predictions(path)[0].pred_relevant_windows == [[0.0, 10.0, 1.0]]
    import json

    written = json.loads(write_metrics(tmp_path / "m.json", results).read_text())
    assert written["test_trivial"]["metrics"]["mAP_long"] == 0.0  # empty bucket
    assert written["test_trivial"]["brief"]["MR-full-R1@0.5"] == 100.0


def reference_ap(preds, gts, threshold):
    """A plain transcription of ActivityNet's AP, for cross-checking."""
    ranked = sorted(preds, key=lambda p: -p[2])
    used = [False] * len(gts)
    tp = []
    for p in ranked:
        ious = [window_iou(p, g) for g in gts]
        hit = 0
        for g in sorted(range(len(gts)), key=lambda i: -ious[i]):
            if ious[g] < threshold:
                break
            if not used[g]:
                used[g], hit = True, 1
                break
        tp.append(hit)
    precisions, recalls, cum = [], [], 0
    for k, hit in enumerate(tp, start=1):
        cum += hit
        precisions.append(cum / k)
        recalls.append(cum / len(gts))
    ap, previous_recall = 0.0, 0.0
    for k, recall in enumerate(recalls):
        if recall > previous_recall:
            ap += (recall - previous_recall) * max(precisions[k:])
            previous_recall = recall
    return ap


def test_average_precision_matches_a_plain_reference_on_random_cases():
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(300):
        gts = [tuple(sorted(rng.uniform(0, 60, size=2))) for _ in range(int(rng.integers(1, 4)))]
        preds = [
            [*sorted(rng.uniform(0, 60, size=2)), float(rng.uniform())]
            for _ in range(int(rng.integers(1, 8)))
        ]
        preds += [[g[0] + rng.normal(0, 1), g[1] + rng.normal(0, 1), 0.5] for g in gts]
        for threshold in (0.3, 0.5, 0.7):
            assert average_precision(preds, gts, threshold) == pytest.approx(
                reference_ap(preds, gts, threshold)
            )
