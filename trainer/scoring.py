"""``negforge score``: a prediction file in the originals' submission format against a split.

The submission is jsonl, one row per query: ``qid``, ``pred_relevant_windows`` as
``[[start, end, score], ...]`` (the order the originals list them: best first), optional
``query``, ``vid`` and ``pred_saliency_scores``. The figures are those of
``standalone_eval/eval.py`` for moment retrieval (:mod:`negforge.trainer.evaluation`); like
the original's default (``match_number=True``) every ground-truth query needs exactly one
prediction row and no other qid may appear. Bad rows stop with an
:class:`~negforge.errors.InputError` naming file, line and field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from negforge.atomic import atomic_write_text
from negforge.errors import InputError
from negforge.trainer.evaluation import brief_metrics, moment_retrieval_metrics


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_submission(path: str | Path) -> list[tuple[int, str, list[list[float]]]]:
    """(line, qid as text, windows) for every row of a submission jsonl, checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError("prediction file does not exist", path=path)
    rows: list[tuple[int, str, list[list[float]]]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not JSON ({exc.msg})", path=path, line=line_number) from exc
            if not isinstance(row, dict):
                raise InputError("a row must be a JSON object", path=path, line=line_number)
            qid = row.get("qid")
            if isinstance(qid, bool) or not isinstance(qid, int | str) or qid == "":
                raise InputError(
                    "missing or empty qid (a string or an integer)",
                    path=path,
                    line=line_number,
                    field="qid",
                )
            key = str(qid)
            if key in seen:
                raise InputError(
                    f"duplicate qid {qid!r} (first at line {seen[key]})",
                    path=path,
                    line=line_number,
                    field="qid",
                )
            seen[key] = line_number
            rows.append((line_number, key, _windows(row, path, line_number)))
            saliency = row.get("pred_saliency_scores")
            if saliency is not None and not (
                isinstance(saliency, list) and all(_number(s) for s in saliency)
            ):
                raise InputError(
                    "must be a list of numbers",
                    path=path,
                    line=line_number,
                    field="pred_saliency_scores",
                )
    if not rows:
        raise InputError("no predictions in the file", path=path)
    return rows


def _windows(row: dict[str, Any], path: Path, line: int) -> list[list[float]]:
    windows = row.get("pred_relevant_windows")
    if not isinstance(windows, list) or not windows:
        raise InputError(
            "missing or empty (a list of [start, end, score])",
            path=path,
            line=line,
            field="pred_relevant_windows",
        )
    checked = []
    for index, window in enumerate(windows):
        field = f"pred_relevant_windows[{index}]"
        if not isinstance(window, list) or len(window) != 3 or not all(map(_number, window)):
            raise InputError(
                f"must be [start, end, score] of finite numbers, got {window!r}",
                path=path,
                line=line,
                field=field,
            )
        start, end, score = (float(v) for v in window)
        if start > end:
            raise InputError(f"start {start} > end {end}", path=path, line=line, field=field)
        checked.append([start, end, score])
    return checked


def score_file(predictions: str | Path, ground_truth: str | Path) -> dict[str, Any]:
    """``{"brief": {...}, "full": {...}, "long": ..., "middle": ..., "short": ...}`` as
    ``standalone_eval``'s ``eval_submission`` returns for moment retrieval."""
    from negforge.readers import read_queries

    submission = read_submission(predictions)
    gt = read_queries(ground_truth, on_error="raise")
    gt_windows = {
        record.qid: [(float(s), float(e)) for s, e in record.relevant_windows]
        for record in gt.records
    }
    predicted = {qid for _, qid, _ in submission}
    for record, line in zip(gt.records, gt.lines, strict=True):
        if record.qid not in predicted:
            raise InputError(
                f"qid {record.qid!r} has no prediction in {predictions}",
                path=ground_truth,
                line=line,
                field="qid",
            )
    for line, qid, _ in submission:
        if qid not in gt_windows:
            raise InputError(
                f"qid {qid!r} is not in the ground truth {ground_truth}",
                path=predictions,
                line=line,
                field="qid",
            )
    # Queries in submission order, as the original iterates them.
    pairs = [(windows, gt_windows[qid]) for _, qid, windows in submission]
    detail = moment_retrieval_metrics(pairs)
    return {"brief": brief_metrics(detail), **dict(sorted(detail.items()))}


def write_scores(path: str | Path, scores: dict[str, Any]) -> Path:
    """The scores as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(scores, indent=4) + "\n")
    return Path(path)
