"""A model on every evaluation split, written out: ``negforge eval`` and a run's final step.

Writes ``predictions/<split>.jsonl`` and ``metrics.json`` and prints the paper's table
layouts (Tables 1-2, and Table 7 by composition type).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from negforge.errors import ConfigError
from negforge.trainer.checkpoints import load_model_from_checkpoint, read_checkpoint
from negforge.trainer.config import EvalSplit
from negforge.trainer.dataset import GroundingDataset
from negforge.trainer.engine import evaluate
from negforge.trainer.evaluation import (
    Postprocess,
    SplitMetrics,
    format_table,
    format_type_table,
    write_metrics,
    write_predictions,
)
from negforge.trainer.run_data import load_run_data
from negforge.trainer.run_log import RunPrinter
from negforge.trainer.runtime import resolve_device


def write_evaluation(
    model: nn.Module,
    datasets: dict[str, GroundingDataset],
    out_dir: Path,
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    title: str,
    printer: RunPrinter | None = None,
    postprocess_mode: Postprocess = "round_to_clips",
) -> dict[str, SplitMetrics]:
    """Predict every split; write ``predictions/<split>.jsonl`` and ``metrics.json``; print the
    Tables 1-2 / 7 layouts."""
    results = evaluate(
        model,
        datasets,
        batch_size=batch_size,
        device=device,
        bf16=bf16 and device.type == "cuda",
        postprocess_mode=postprocess_mode,
    )
    for name, (_, predictions) in results.items():
        write_predictions(out_dir / "predictions" / f"{name}.jsonl", predictions)
    metrics = {name: r[0] for name, r in results.items()}
    write_metrics(out_dir / "metrics.json", metrics)
    printer = printer or RunPrinter()
    printer.print(format_table({title: {k: v.metrics for k, v in metrics.items()}}))
    by_type = format_type_table(metrics)
    if by_type:
        printer.print("\nby composition type:\n" + by_type)
    return metrics


def evaluate_checkpoint_of_run(
    checkpoint: Path,
    datasets: dict[str, GroundingDataset],
    run_dir: Path,
    device: torch.device,
    printer: RunPrinter,
) -> dict[str, SplitMetrics]:
    """A run's last step: its ``best.pt`` on every split of the run, written to ``run_dir``."""
    model, cfg = load_model_from_checkpoint(checkpoint, device)
    epoch = read_checkpoint(checkpoint)["epoch"] + 1
    return write_evaluation(
        model,
        datasets,
        run_dir,
        batch_size=cfg.optim.batch_size,
        device=device,
        bf16=cfg.bf16,
        postprocess_mode=cfg.postprocess,
        title=f"{cfg.model.backbone} (best epoch {epoch})",
        printer=printer,
    )


def evaluate_checkpoint(
    checkpoint: str | Path,
    splits: Sequence[EvalSplit],
    out_dir: str | Path,
    *,
    video_feats: Sequence[Path] | None = None,
    text_feats: Sequence[Path] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    on_missing: str | None = None,
) -> dict[str, SplitMetrics]:
    """``negforge eval``: a checkpoint on the given splits (features default to the run's)."""
    if not splits:
        raise ConfigError("no split to evaluate (--eval)")
    resolved = resolve_device(device)
    model, cfg = load_model_from_checkpoint(checkpoint, resolved)
    data_update: dict[str, Any] = {}
    if video_feats:
        data_update["video_feats"] = list(video_feats)
    if text_feats:
        data_update["text_feats"] = list(text_feats)
    if on_missing:
        data_update["on_missing"] = on_missing
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=data_update)})
    data = load_run_data(cfg, splits, train=False)
    if data.v_dim != cfg.model.v_dim or data.t_dim != cfg.model.t_dim:
        raise ConfigError(
            f"features have {data.v_dim}/{data.t_dim} dims but the model expects "
            f"{cfg.model.v_dim}/{cfg.model.t_dim} (video/text)"
        )
    printer = RunPrinter()
    for name, report in data.reports.items():
        if report.skipped_queries:
            printer.print(f"{name}: {report.summary()}")
    return write_evaluation(
        model,
        data.evals,
        Path(out_dir),
        batch_size=batch_size or cfg.optim.batch_size,
        device=resolved,
        bf16=cfg.bf16,
        postprocess_mode=cfg.postprocess,
        title=f"{cfg.model.backbone} ({Path(checkpoint).name})",
        printer=printer,
    )
