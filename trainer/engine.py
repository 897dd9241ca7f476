"""The epoch loops, as DETR's ``engine.py``: :func:`train_one_epoch` and :func:`evaluate`.

The run around them (set-up, resume, checkpoint selection, DDP) is
:func:`negforge.trainer.run.train`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from negforge.errors import NegforgeError
from negforge.trainer import evaluation
from negforge.trainer.dataset import Batch, GroundingDataset
from negforge.trainer.evaluation import Postprocess, Prediction, SplitMetrics
from negforge.trainer.prediction import predict
from negforge.trainer.run_log import RunPrinter, loss_summary
from negforge.trainer.runtime import Runtime, autocast, mean_over_processes


class TrainingDiverged(NegforgeError):
    """The loss became NaN or infinite."""


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    *,
    runtime: Runtime,
    epoch: int,
    epochs: int,
    grad_clip: float = 0.0,
    bf16: bool = False,
    hard_negatives: bool = False,
    inbatch: bool = False,
    printer: RunPrinter | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` (0-based ``epoch`` of ``epochs``).

    Returns the mean of every loss part over the epoch's samples, across all processes.
    ``hard_negatives`` / ``inbatch`` score each row's hard negatives / a query of another
    video (SHINE, QD-DETR); ``grad_clip`` > 0 clips the gradient norm.
    """
    model.train()
    criterion.train()
    params = [p for p in model.parameters() if p.requires_grad]
    printer = printer or RunPrinter(enabled=False)
    sums: dict[str, float] = {}
    count = 0
    with printer.progress() as bar:
        task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=len(loader), losses="")
        for step, cpu_batch in enumerate(loader):
            batch: Batch = cpu_batch.to(runtime.device)
            with autocast(runtime.device, bf16):
                out = model(**batch.model_inputs(hard_negatives=hard_negatives, inbatch=inbatch))
            losses = criterion(out, batch.targets())
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: "
                    "lower --lr or check the features"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            size = len(batch.samples)
            count += size
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * size
            bar.update(
                task, advance=1, losses=loss_summary({k: v / count for k, v in sums.items()})
            )
    return mean_over_processes(sums, count, runtime)


def evaluate(
    model: nn.Module,
    datasets: dict[str, GroundingDataset],
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
    postprocess_mode: Postprocess = "round_to_clips",
) -> dict[str, tuple[SplitMetrics, list[Prediction]]]:
    """Predictions and metrics (R1@{0.5,0.7}, mIoU, mAP, per composition type) of every split."""
    results = {}
    for name, dataset in datasets.items():
        predictions = [
            p.prediction
            for p in predict(
                model,
                dataset,
                batch_size=batch_size,
                device=device,
                bf16=bf16,
                postprocess_mode=postprocess_mode,
            )
        ]
        results[name] = (evaluation.evaluate(predictions, dataset.samples), predictions)
    return results
