"""Moment predictions and the metrics the papers report, as the originals' ``standalone_eval``.

Everything here equals ``standalone_eval/eval.py`` (Moment-DETR / QD-DETR / SHINE) for
moment retrieval, figure for figure (tests/trainer/test_score_parity.py runs both):

* R1@θ (θ = 0.5 .. 0.95): share of queries whose *first listed* window has IoU ≥ θ with
  the ground-truth window it overlaps most (the first such window on ties); mIoU: the mean of
  that IoU (SHINE's ``MR-full-mIoU``).
* MR-mAP: per query, ActivityNet's interpolated AP of the first 10 listed windows ranked by
  score at IoU 0.5:0.05:0.95 (each ground-truth window matched once; a prediction tries the
  windows by decreasing IoU, the later-listed first on ties), averaged over queries.
* Length buckets by ground-truth window length: short (0, 10], middle (10, 30], long
  (30, 150] seconds, full = everything. A bucket keeps the queries with a window in range and
  only those windows; an empty bucket scores 0 (QD-DETR's and SHINE's behaviour).
* Rounding: ``float(f"{100 * x:.2f}")``; the mAP average is taken before rounding.

The ``brief`` keys are the originals' (``MR-full-R1@0.5``, ``MR-full-mAP``,
``MR-short-mAP``, ...); :class:`SplitMetrics` also keeps negforge's short names (``R1@0.5``,
``mIoU``, ``mAP``, ``mAP_short``, ...) for the run logs, and the per-composition-type table.

Predictions are written in the originals' submission format (``qid, query, vid,
pred_relevant_windows [[st, ed, score], ...] best first, pred_saliency_scores``) by
:func:`postprocess`, exactly as their ``inference.py`` composes them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from negforge.atomic import atomic_open, atomic_write_text

if TYPE_CHECKING:
    from negforge.trainer.data import GroundingSample
    from negforge.trainer.dataset import Batch

#: IoU thresholds of R1 and mAP: 0.5, 0.55, ..., 0.95.
IOU_THRESHOLDS: tuple[float, ...] = tuple(float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10))
R1_THRESHOLDS = (0.5, 0.7)
MAP_THRESHOLDS = IOU_THRESHOLDS
MAP_TOP_K = 10
#: (low, high]: ground-truth window lengths in seconds; "full" keeps everything.
LENGTH_BUCKETS: dict[str, tuple[float, float]] = {
    "short": (0.0, 10.0),
    "middle": (10.0, 30.0),
    "long": (30.0, 150.0),
}
#: Window post-processing of the originals' PostProcessorDETR: clamp, then round to clips.
MAX_TIMESTAMP = 150.0
#: The columns of the printed tables (the paper's Tables 1-2).
TABLE_METRICS = ("R1@0.5", "R1@0.7", "mIoU")
#: The per-split metrics logged every epoch.
LOGGED_METRICS = ("R1@0.5", "R1@0.7", "mIoU", "mAP")
Postprocess = Literal["round_to_clips", "none"]


class Prediction(BaseModel):
    """One query's predicted windows (seconds, best first) and per-clip saliency."""

    qid: str | int
    query: str
    vid: str
    pred_relevant_windows: list[list[float]] = Field(description="[start, end, score]")
    pred_saliency_scores: list[float] = Field(default_factory=list)


def format2(value: float) -> float:
    """``float(f"{value:.2f}")``: the originals' rounding of every reported figure."""
    return float(f"{value:.2f}")


def format4(value: float) -> float:
    """``float(f"{value:.4f}")``: the originals' rounding of predicted windows and scores."""
    return float(f"{value:.4f}")


def postprocess(
    outputs: Mapping[str, Any],
    batch: Batch,
    *,
    mode: Postprocess = "round_to_clips",
    clip_len: float = 2.0,
) -> list[Prediction]:
    """Model outputs -> predictions as the originals' ``compute_mr_results`` writes them.

    Windows are (centre, width) -> (start, end) times the video's ``duration``, ranked by
    foreground probability (a stable sort), every value rounded to 4 decimals; saliency
    scores are those of the valid clips in float16. ``round_to_clips`` then clamps the
    windows to [0, 150] s and rounds them to multiples of ``clip_len`` in float32, as the
    originals' ``PostProcessorDETR`` (SHINE skips it on ActivityNet: ``none``).
    """
    import torch

    from negforge.trainer.span_utils import span_cxw_to_xx

    probs = torch.softmax(outputs["pred_logits"].float(), dim=-1)[..., 0].cpu()  # (B, Q)
    spans = span_cxw_to_xx(outputs["pred_spans"].float()).cpu()  # (B, Q, 2) normalised
    saliency = outputs["saliency_scores"].float().half().cpu()
    lengths = batch.video_mask.sum(1).cpu().tolist()
    predictions = []
    for row, sample in enumerate(batch.samples):
        windows = spans[row] * sample.duration
        ranked = torch.cat([windows, probs[row][:, None]], dim=1).tolist()
        ranked = sorted(ranked, key=lambda w: w[2], reverse=True)
        ranked = [[format4(v) for v in w] for w in ranked]
        if mode == "round_to_clips":
            values = torch.tensor(ranked)
            times = values[:, :2].clamp(min=0.0, max=MAX_TIMESTAMP)
            times = torch.round(times / clip_len) * clip_len
            ranked = [
                [*t, format4(w[2])]
                for t, w in zip(times.tolist(), values.tolist(), strict=True)
            ]
        predictions.append(
            Prediction(
                qid=sample.qid_json,
                query=sample.query,
                vid=sample.vid,
                pred_relevant_windows=ranked,
                pred_saliency_scores=saliency[row, : int(lengths[row])].tolist(),
            )
        )
    return predictions


def window_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two windows ``(start, end)``; 0 when they do not overlap or both are empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(0.0, a[1] - a[0]) + max(0.0, b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def best_gt_iou(window: Sequence[float], gt_windows: Sequence[Sequence[float]]) -> float:
    """IoU of ``window`` with the ground-truth window that overlaps it best."""
    return max((window_iou(window, gt) for gt in gt_windows), default=0.0)


def cross_iou(windows: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """(K, G) IoU of (K, 2) windows against (G, 2) windows, the originals' formula
    (intersection / (len_a + len_b - intersection), no guard: 0/0 gives NaN)."""
    left = np.maximum(windows[:, None, 0], gts[None, :, 0])
    right = np.minimum(windows[:, None, 1], gts[None, :, 1])
    inter = np.clip(right - left, 0, None)
    union = (windows[:, 1] - windows[:, 0])[:, None] + (gts[:, 1] - gts[:, 0])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def top1_iou(window: Sequence[float], gt_windows: Sequence[Sequence[float]]) -> float:
    """R1's IoU: against the ground-truth window with the highest IoU (the first on ties),
    as intersection over the hull of the two windows (0 when the hull is empty)."""
    pred = np.asarray([window[:2]], dtype=float)
    gts = np.asarray([g[:2] for g in gt_windows], dtype=float)
    gt = gts[int(np.argmax(cross_iou(pred, gts)[0]))]
    inter = max(0.0, min(pred[0, 1], gt[1]) - max(pred[0, 0], gt[0]))
    hull = max(pred[0, 1], gt[1]) - min(pred[0, 0], gt[0])
    return float(inter / hull) if hull != 0 else 0.0


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the monotone (VOC 2011) precision envelope."""
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def average_precisions(
    predictions: Sequence[Sequence[float]],
    gt_windows: Sequence[Sequence[float]],
    thresholds: Sequence[float] = MAP_THRESHOLDS,
) -> np.ndarray:
    """ActivityNet AP of scored windows ``[st, ed, score]`` at each IoU threshold.

    Predictions are taken by descending score (stable); each tries the ground-truth windows
    by decreasing IoU (``argsort()[::-1]``: the later window first on ties) and is a true
    positive on the first unmatched one with IoU ≥ the threshold, a false positive once the
    IoU drops below it. All predictions given are used (the caller keeps the top 10).
    """
    out = np.zeros(len(thresholds))
    if not predictions or not gt_windows:
        return out
    ranked = sorted(predictions, key=lambda p: -p[2])
    windows = np.asarray([p[:2] for p in ranked], dtype=float)
    gts = np.asarray([g[:2] for g in gt_windows], dtype=float)
    ious = cross_iou(windows, gts)  # (K, G)
    thresholds_array = np.asarray(thresholds, dtype=float)
    if gts.shape[0] == 1:  # one window: AP = precision at the first hit
        hits = ~(ious[:, 0][:, None] < thresholds_array[None, :])  # NaN counts as a hit
        first = hits.argmax(axis=0)
        return np.where(hits.any(axis=0), 1.0 / (first + 1), 0.0)
    orders = [np.argsort(row)[::-1] for row in ious]
    for t_index, threshold in enumerate(thresholds):
        matched = np.zeros(gts.shape[0], dtype=bool)
        tp = np.zeros(len(ranked))
        for k, order in enumerate(orders):
            for g in order:
                if ious[k, g] < threshold:
                    break
                if matched[g]:
                    continue
                matched[g] = True
                tp[k] = 1.0
                break
        cum_tp = np.cumsum(tp)
        precision = cum_tp / np.arange(1, len(ranked) + 1)
        out[t_index] = _interpolated_ap(precision, cum_tp / gts.shape[0])
    return out


def average_precision(
    predictions: Sequence[Sequence[float]],
    gt_windows: Sequence[Sequence[float]],
    threshold: float,
) -> float:
    """AP at one IoU threshold (see :func:`average_precisions`)."""
    return float(average_precisions(predictions, gt_windows, [threshold])[0])


def _in_bucket(window: Sequence[float], bucket: tuple[float, float]) -> bool:
    low, high = bucket
    return low < window[1] - window[0] <= high


def moment_retrieval_metrics(
    pairs: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{bucket: {"MR-mAP": {thr, "average"}, "MR-R1": {thr, "average"}}}`` for
    (predicted windows, ground-truth windows) pairs, one per query (see the module doc)."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    buckets: dict[str, tuple[float, float] | None] = {**LENGTH_BUCKETS, "full": None}
    for name, bucket in buckets.items():
        kept = [
            (preds, [g for g in gts if bucket is None or _in_bucket(g, bucket)])
            for preds, gts in pairs
        ]
        kept = [(preds, gts) for preds, gts in kept if gts]
        if kept:
            table = np.stack([average_precisions(p[:MAP_TOP_K], g) for p, g in kept])
            per_threshold = table.mean(axis=0)
            ious = np.asarray([top1_iou(p[0], g) if p else 0.0 for p, g in kept])
        else:  # QD-DETR / SHINE: an empty bucket scores 0
            per_threshold = np.zeros(len(MAP_THRESHOLDS))
            ious = np.zeros(1)
        ap = {str(t): format2(100 * v) for t, v in zip(MAP_THRESHOLDS, per_threshold, strict=True)}
        ap["average"] = format2(100 * float(np.mean(per_threshold)))
        r1 = {str(t): format2(float(np.mean(ious >= t)) * 100) for t in IOU_THRESHOLDS}
        r1["average"] = format2(float(np.sum(ious)) / len(ious) * 100)
        result[name] = {"MR-mAP": ap, "MR-R1": r1}
    return result


def brief_metrics(detail: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """The originals' ``brief`` block (sorted by key) plus SHINE's ``MR-full-mIoU``."""
    brief = {
        "MR-full-mAP": detail["full"]["MR-mAP"]["average"],
        "MR-full-mAP@0.5": detail["full"]["MR-mAP"]["0.5"],
        "MR-full-mAP@0.75": detail["full"]["MR-mAP"]["0.75"],
        "MR-short-mAP": detail["short"]["MR-mAP"]["average"],
        "MR-middle-mAP": detail["middle"]["MR-mAP"]["average"],
        "MR-long-mAP": detail["long"]["MR-mAP"]["average"],
        "MR-full-R1@0.5": detail["full"]["MR-R1"]["0.5"],
        "MR-full-R1@0.7": detail["full"]["MR-R1"]["0.7"],
        "MR-full-mIoU": detail["full"]["MR-R1"]["average"],
    }
    return dict(sorted(brief.items()))


class SplitMetrics(BaseModel):
    """The metrics of one split (percentages, two decimals)."""

    num_queries: int
    #: negforge's names: R1@0.5, R1@0.7, mIoU, mAP, mAP@0.5, mAP@0.75, mAP_short/_middle/_long.
    metrics: dict[str, float]
    #: The originals' brief keys (MR-full-R1@0.5, MR-full-mAP, MR-short-mAP, ...).
    brief: dict[str, float] = Field(default_factory=dict)
    #: Composition type → {R1@0.5, R1@0.7, mIoU, count}; empty without ``novels``.
    by_type: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: Predictions whose qid is not in the split (ignored) / split queries never predicted.
    unmatched_predictions: int = 0
    missing_predictions: int = 0


def _r1_metrics(top1_ious: Sequence[float]) -> dict[str, float]:
    ious = np.asarray(top1_ious, dtype=float)
    metrics = {f"R1@{t}": format2(float(np.mean(ious >= t)) * 100) for t in R1_THRESHOLDS}
    metrics["mIoU"] = format2(float(np.sum(ious)) / len(ious) * 100)
    return metrics


def evaluate(predictions: Sequence[Prediction], samples: Sequence[GroundingSample]) -> SplitMetrics:
    """All metrics of a split; a query without prediction scores 0 (the originals refuse
    such a submission: ``negforge score`` does too)."""
    by_qid = {str(p.qid): p for p in predictions}
    known = {s.qid for s in samples}
    pairs: list[tuple[list[list[float]], list[tuple[float, float]]]] = []
    per_type: dict[str, list[float]] = defaultdict(list)
    missing = 0
    for sample in samples:
        pred = by_qid.get(sample.qid)
        windows = pred.pred_relevant_windows if pred is not None else []
        missing += pred is None
        pairs.append((windows, list(sample.windows)))
        iou = top1_iou(windows[0], sample.windows) if windows else 0.0
        for novel_type in sample.novel_types:
            per_type[novel_type].append(iou)
    detail = moment_retrieval_metrics(pairs)
    brief = brief_metrics(detail)
    metrics = {
        "R1@0.5": brief["MR-full-R1@0.5"],
        "R1@0.7": brief["MR-full-R1@0.7"],
        "mIoU": brief["MR-full-mIoU"],
        "mAP": brief["MR-full-mAP"],
        "mAP@0.5": brief["MR-full-mAP@0.5"],
        "mAP@0.75": brief["MR-full-mAP@0.75"],
        **{f"mAP_{name}": brief[f"MR-{name}-mAP"] for name in LENGTH_BUCKETS},
    }
    by_type = {
        name: {**_r1_metrics(ious), "count": float(len(ious))}
        for name, ious in sorted(per_type.items())
    }
    return SplitMetrics(
        num_queries=len(samples),
        metrics=metrics,
        brief=brief,
        by_type=by_type,
        unmatched_predictions=sum(1 for p in predictions if str(p.qid) not in known),
        missing_predictions=missing,
    )


def fixed_window_predictions(
    train: Sequence[GroundingSample], samples: Sequence[GroundingSample], grid: int = 20
) -> list[Prediction]:
    """A fixed-window baseline: the (start, end) fraction of the video that maximises the mean
    top-1 IoU on ``train`` (searched on a ``grid``), predicted for every sample."""
    best, best_iou = (0.0, 1.0), -1.0
    points = np.linspace(0.0, 1.0, grid + 1)
    for start in points:
        for end in points[points > start]:
            mean = float(
                np.mean(
                    [best_gt_iou((start * s.duration, end * s.duration), s.windows) for s in train]
                )
            )
            if mean > best_iou:
                best, best_iou = (float(start), float(end)), mean
    return [
        Prediction(
            qid=s.qid_json,
            query=s.query,
            vid=s.vid,
            pred_relevant_windows=[[best[0] * s.duration, best[1] * s.duration, 1.0]],
        )
        for s in samples
    ]


def write_predictions(path: str | Path, predictions: Iterable[Prediction]) -> Path:
    """Write predictions as jsonl, atomically."""
    with atomic_open(path) as handle:
        for prediction in predictions:
            handle.write(prediction.model_dump_json() + "\n")
    return Path(path)


def read_predictions(path: str | Path) -> list[Prediction]:
    """Read a predictions jsonl (no checks; see ``negforge.trainer.scoring`` for those)."""
    with open(path, encoding="utf-8") as handle:
        return [Prediction.model_validate_json(line) for line in handle if line.strip()]


def write_metrics(path: str | Path, results: Mapping[str, SplitMetrics]) -> Path:
    """Write ``{split: metrics}`` as JSON, atomically (NaN becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    payload = {name: clean(result.model_dump()) for name, result in results.items()}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return Path(path)


def _cell(value: float | None) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
    )


def format_table(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] = TABLE_METRICS,
) -> str:
    """A plain-text table like the paper's Tables 1-2.

    ``rows`` maps a row name (a method or a run) to ``{split: {metric: value}}``; columns are
    grouped by split, in first-seen order, with ``metrics`` under each.
    """
    splits: list[str] = []
    for per_split in rows.values():
        splits.extend(s for s in per_split if s not in splits)
    name_width = max([len("method"), *(len(r) for r in rows)])
    cell = max(8, *(len(m) for m in metrics))
    group = len(metrics) * (cell + 1) - 1
    header1 = " " * name_width + " | " + " | ".join(s[:group].center(group) for s in splits)
    header2 = (
        "method".ljust(name_width)
        + " | "
        + " | ".join(" ".join(m.rjust(cell) for m in metrics) for _ in splits)
    )
    lines = [header1, header2, "-" * len(header2)]
    for name, per_split in rows.items():
        cells = [
            " ".join(_cell(per_split.get(split, {}).get(m)).rjust(cell) for m in metrics)
            for split in splits
        ]
        lines.append(name.ljust(name_width) + " | " + " | ".join(cells))
    return "\n".join(lines)


def format_type_table(results: Mapping[str, SplitMetrics]) -> str | None:
    """Table 7: one row per composition type of the splits that have ``novels``."""
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for split, result in results.items():
        for novel_type, values in result.by_type.items():
            rows.setdefault(f"{novel_type} (n={int(values['count'])})", {})[split] = values
    return format_table(rows) if rows else None


def metric_row(results: Mapping[str, SplitMetrics]) -> dict[str, float]:
    """``{"<split>/<metric>": value}`` for the metrics log."""
    return {
        f"{split}/{name}": result.metrics[name]
        for split, result in results.items()
        for name in LOGGED_METRICS
    }
