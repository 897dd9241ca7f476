"""Moment predictions and the metrics the papers report.

* R1@θ (θ = 0.5, 0.7): share of queries whose top-1 window has IoU ≥ θ with the
  ground-truth window that overlaps it best; mIoU: the mean of that IoU. ×100, 2 decimals.
* MR-mAP: ActivityNet-style average precision of the top 10 windows per query at IoU
  0.5:0.05:0.95, averaged over thresholds and queries; also ``mAP@0.5``, ``mAP@0.75`` and by
  ground-truth window length (short < 10 s ≤ middle < 30 s ≤ long).
* Per composition type (Table 7) when the split has ``novels``.

Predictions are written as the standard jsonl (``qid, query, vid, pred_relevant_windows
[[st, ed, score], ...] best first, pred_saliency_scores``). This module needs torch only in
:func:`postprocess`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from negforge.atomic import atomic_open, atomic_write_text

if TYPE_CHECKING:
    from negforge.trainer.data import Batch, GroundingSample

R1_THRESHOLDS = (0.5, 0.7)
MAP_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())
MAP_TOP_K = 10
LENGTH_BUCKETS: dict[str, tuple[float, float]] = {
    "short": (0.0, 10.0),
    "middle": (10.0, 30.0),
    "long": (30.0, math.inf),
}
#: The columns of the printed tables (the paper's Tables 1-2).
TABLE_METRICS = ("R1@0.5", "R1@0.7", "mIoU")
#: The per-split metrics logged every epoch.
LOGGED_METRICS = ("R1@0.5", "R1@0.7", "mIoU", "mAP")


class Prediction(BaseModel):
    """One query's predicted windows (seconds, best first) and per-clip saliency."""

    qid: str
    query: str
    vid: str
    pred_relevant_windows: list[list[float]] = Field(description="[start, end, score]")
    pred_saliency_scores: list[float] = Field(default_factory=list)


def postprocess(outputs: Mapping[str, Any], batch: Batch) -> list[Prediction]:
    """Model outputs → windows in seconds ranked by foreground probability."""
    import torch

    from negforge.trainer.span_utils import span_cxw_to_xx

    probs = torch.softmax(outputs["pred_logits"].float(), dim=-1)[..., 0]  # (B, Q)
    spans = span_cxw_to_xx(outputs["pred_spans"].float())  # (B, Q, 2) normalised
    saliency = outputs["saliency_scores"].float()
    mask = batch.video_mask.bool()
    predictions = []
    for row, sample in enumerate(batch.samples):
        coverage = batch.coverages[row]
        windows = (spans[row] * coverage).clamp(min=0.0, max=sample.duration)
        order = torch.argsort(probs[row], descending=True)
        triples = [
            [
                round(float(windows[i, 0]), 4),
                round(float(windows[i, 1]), 4),
                round(float(probs[row, i]), 4),
            ]
            for i in order.tolist()
        ]
        predictions.append(
            Prediction(
                qid=sample.qid,
                query=sample.query,
                vid=sample.vid,
                pred_relevant_windows=triples,
                pred_saliency_scores=[round(float(s), 4) for s in saliency[row][mask[row]]],
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


def _iou_matrix(windows: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """(K, G) IoU of (K, 2) windows against (G, 2) ground-truth windows."""
    inter = np.clip(
        np.minimum(windows[:, None, 1], gts[None, :, 1])
        - np.maximum(windows[:, None, 0], gts[None, :, 0]),
        0.0,
        None,
    )
    lengths = np.clip(windows[:, 1] - windows[:, 0], 0.0, None)
    gt_lengths = np.clip(gts[:, 1] - gts[:, 0], 0.0, None)
    union = lengths[:, None] + gt_lengths[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def average_precisions(
    predictions: Sequence[Sequence[float]],
    gt_windows: Sequence[Sequence[float]],
    thresholds: Sequence[float],
) -> np.ndarray:
    """ActivityNet-style AP of scored windows ``[st, ed, score]`` at each IoU threshold.

    Predictions are taken by descending score; each one is a true positive when the
    unmatched ground-truth window it overlaps most has IoU ≥ the threshold (a ground-truth
    window is matched at most once). AP is the area under the interpolated (monotone)
    precision-recall curve.
    """
    out = np.zeros(len(thresholds))
    if not gt_windows or not predictions:
        return out
    ranked = np.asarray(sorted(predictions, key=lambda p: -p[2]), dtype=np.float64)
    ious = _iou_matrix(ranked[:, :2], np.asarray(gt_windows, dtype=np.float64)[:, :2])
    if ious.shape[1] == 1:  # one GT window: AP = precision at the first hit
        hits = ious[:, 0][:, None] >= np.asarray(thresholds)[None, :]  # (K, T)
        first = hits.argmax(axis=0)
        return np.where(hits.any(axis=0), 1.0 / (first + 1), 0.0)
    order = np.argsort(-ious, axis=1, kind="stable")
    for t_index, threshold in enumerate(thresholds):
        matched = np.zeros(ious.shape[1], dtype=bool)
        tp = np.zeros(len(ranked))
        for k in range(len(ranked)):
            for g in order[k]:
                if ious[k, g] < threshold:
                    break
                if not matched[g]:
                    matched[g] = True
                    tp[k] = 1.0
                    break
        cum_tp = np.cumsum(tp)
        precision = np.concatenate([[0.0], cum_tp / np.arange(1, len(ranked) + 1), [0.0]])
        recall = np.concatenate([[0.0], cum_tp / ious.shape[1], [1.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
        out[t_index] = float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))
    return out


def average_precision(
    predictions: Sequence[Sequence[float]],
    gt_windows: Sequence[Sequence[float]],
    threshold: float,
) -> float:
    """AP at one IoU threshold (see :func:`average_precisions`)."""
    return float(average_precisions(predictions, gt_windows, [threshold])[0])


def _percent(values: Iterable[float]) -> float:
    values = list(values)
    return round(100.0 * float(np.mean(values)), 2) if values else float("nan")


def _r1_metrics(top1_ious: Sequence[float]) -> dict[str, float]:
    metrics = {f"R1@{t}": _percent(float(iou >= t) for iou in top1_ious) for t in R1_THRESHOLDS}
    metrics["mIoU"] = _percent(top1_ious)
    return metrics


def _map_metrics(
    pairs: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]],
) -> dict[str, float]:
    """mAP (avg over 0.5:0.05:0.95), mAP@0.5 and mAP@0.75 over (predictions, gts) pairs."""
    if not pairs:
        nan = float("nan")
        return {"mAP": nan, "mAP@0.5": nan, "mAP@0.75": nan}
    table = np.stack(
        [average_precisions(preds[:MAP_TOP_K], gts, MAP_THRESHOLDS) for preds, gts in pairs]
    )  # (queries, thresholds)
    per_threshold = table.mean(axis=0)
    return {
        "mAP": round(100.0 * float(per_threshold.mean()), 2),
        "mAP@0.5": round(100.0 * float(per_threshold[MAP_THRESHOLDS.index(0.5)]), 2),
        "mAP@0.75": round(100.0 * float(per_threshold[MAP_THRESHOLDS.index(0.75)]), 2),
    }


class SplitMetrics(BaseModel):
    """The metrics of one split (percentages, two decimals; NaN when undefined)."""

    num_queries: int
    metrics: dict[str, float]
    #: Composition type → {R1@0.5, R1@0.7, mIoU, count}; empty without ``novels``.
    by_type: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: Predictions whose qid is not in the split (ignored) / split queries never predicted.
    unmatched_predictions: int = 0
    missing_predictions: int = 0


def evaluate(predictions: Sequence[Prediction], samples: Sequence[GroundingSample]) -> SplitMetrics:
    """All metrics of a split; every sample counts (a missing prediction scores IoU 0)."""
    by_qid = {p.qid: p for p in predictions}
    known = {s.qid for s in samples}
    top1: list[float] = []
    pairs: list[tuple[list[list[float]], list[tuple[float, float]]]] = []
    per_type: dict[str, list[float]] = defaultdict(list)
    missing = 0
    for sample in samples:
        pred = by_qid.get(sample.qid)
        windows = pred.pred_relevant_windows if pred is not None else []
        missing += pred is None
        iou = best_gt_iou(windows[0], sample.windows) if windows else 0.0
        top1.append(iou)
        pairs.append((windows, list(sample.windows)))
        for novel_type in sample.novel_types:
            per_type[novel_type].append(iou)
    metrics = _r1_metrics(top1)
    metrics.update(_map_metrics(pairs))
    for bucket, (low, high) in LENGTH_BUCKETS.items():
        kept = [(preds, [g for g in gts if low <= g[1] - g[0] < high]) for preds, gts in pairs]
        bucket_map = _map_metrics([(p, g) for p, g in kept if g])
        metrics[f"mAP_{bucket}"] = bucket_map["mAP"]
    by_type = {
        name: {**_r1_metrics(ious), "count": float(len(ious))}
        for name, ious in sorted(per_type.items())
    }
    return SplitMetrics(
        num_queries=len(samples),
        metrics=metrics,
        by_type=by_type,
        unmatched_predictions=sum(1 for p in predictions if p.qid not in known),
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
            qid=s.qid,
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
    """Read a predictions jsonl."""
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
