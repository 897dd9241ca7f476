"""A training run, as DETR's ``main.py``: set-up, resume, the epochs, checkpoint selection.

A run directory holds:

* ``config.yaml`` -- the resolved :class:`~negforge.trainer.config.TrainConfig` (feature
  sizes and the hard-negative level count taken from the data);
* ``checkpoints/last.pt`` (every epoch) and ``checkpoints/best.pt`` (best ``select_metric``
  on ``select_on``: the validation part held out from train by video, never a test split
  unless named) -- see :mod:`negforge.trainer.checkpoints`;
* ``metrics.csv`` -- one row per epoch (:mod:`negforge.trainer.run_log`);
* ``predictions/<split>.jsonl`` and ``metrics.json`` -- the best checkpoint on every split.

``resume`` restores everything from ``last.pt`` and continues as if never stopped: data
order, in-batch negatives and dropout are seeded per epoch / restored from the checkpoint.
Under ``torchrun`` the model runs in DistributedDataParallel (:mod:`negforge.trainer.runtime`);
only rank 0 evaluates and writes.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from negforge.atomic import atomic_write_text
from negforge.errors import ConfigError
from negforge.trainer.backbones import build_model
from negforge.trainer.base_losses import build_criterion
from negforge.trainer.checkpoint_eval import evaluate_checkpoint_of_run
from negforge.trainer.checkpoints import CHECKPOINT_FORMAT, read_checkpoint, save_checkpoint
from negforge.trainer.config import VALIDATION_SPLIT, ModelSettings, TrainConfig, config_to_yaml
from negforge.trainer.data import MissingReport
from negforge.trainer.dataset import Collator, Item
from negforge.trainer.engine import evaluate, train_one_epoch
from negforge.trainer.evaluation import SplitMetrics, metric_row
from negforge.trainer.run_data import (
    RunData,
    data_loader,
    load_run_data,
    uses_hard_negatives,
    uses_inbatch_negative,
)
from negforge.trainer.run_log import RunPrinter, epoch_line, loss_columns, write_metrics_csv
from negforge.trainer.runtime import (
    Runtime,
    barrier,
    deterministic_algorithms,
    distributed_model,
    main_process_decides,
    restore_rng_state,
    rng_state,
    seed_everything,
    setup_runtime,
    unwrap,
)


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    epochs_run: int
    best_epoch: int | None
    best_metric: float | None
    final_metrics: dict[str, SplitMetrics]
    history: list[dict[str, Any]]
    missing: dict[str, MissingReport]


@dataclass
class _Progress:
    """What the epochs carry from one to the next (and a checkpoint restores)."""

    start_epoch: int = 0
    best_metric: float = -math.inf
    best_epoch: int | None = None
    stale: int = 0  # evaluations without improvement
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, value: float, epoch: int) -> bool:
        """An evaluation's selection value at (0-based) ``epoch``: True when best so far."""
        if value > self.best_metric:
            self.best_metric, self.best_epoch, self.stale = value, epoch + 1, 0
            return True
        self.stale += 1
        return False


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train (or resume) a run in ``run_dir``; see the module docstring for its files."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    last_path = checkpoints / "last.pt"
    resume_state = None
    if resume and last_path.is_file():
        resume_state = read_checkpoint(last_path)
        saved = TrainConfig.model_validate(resume_state["config"])
        # Only runtime settings and the epoch budget may change when resuming.
        cfg = saved.model_copy(
            update={
                "device": cfg.device,
                "progress": cfg.progress,
                "optim": saved.optim.model_copy(update={"epochs": cfg.optim.epochs}),
                "data": saved.data.model_copy(update={"num_workers": cfg.data.num_workers}),
            }
        )
    elif last_path.is_file():
        raise ConfigError(
            f"{run_dir} already holds a run (checkpoints/last.pt); pass --resume to continue "
            "it or choose another output folder"
        )
    cfg = cfg.with_absolute_paths()
    if cfg.select_on != VALIDATION_SPLIT and cfg.select_on not in {s.name for s in cfg.data.eval}:
        raise ConfigError(f"--select-on {cfg.select_on}: no evaluation split has that name")
    if cfg.cpu_threads is not None:
        torch.set_num_threads(cfg.cpu_threads)
    runtime = setup_runtime(cfg.device)
    printer = RunPrinter(runtime.is_main, cfg.progress)
    seed_everything(cfg.seed)
    with deterministic_algorithms() if runtime.device.type == "cpu" else contextlib.nullcontext():
        return _train(cfg, run_dir, resume_state, runtime, printer)


def _resolved_config(cfg: TrainConfig, data: RunData, hard: bool) -> TrainConfig:
    """``cfg`` with what the data decides: feature sizes and the hard-negative levels."""
    model = ModelSettings.model_validate(cfg.model.resolve(data.v_dim, data.t_dim).model_dump())
    loss = cfg.loss
    if hard and data.levels is not None:
        shine = loss.shine.with_levels(data.levels.levels, source=cfg.data.train)
        loss = loss.model_copy(update={"shine": shine})
    return cfg.model_copy(update={"model": model, "loss": loss})


def _announce(cfg: TrainConfig, data: RunData, hard: bool, printer: RunPrinter) -> None:
    """What was skipped, level mismatches, and how best.pt will be chosen."""
    for name, report in data.reports.items():
        if report.skipped_queries or report.dropped_negatives:
            printer.print(f"{name}: {report.summary()}")
    if data.levels is not None and data.levels.off_level:
        printer.print(f"train: {data.levels.summary()}")
    if uses_hard_negatives(cfg) and not hard:
        printer.print("no training query has valid hard negatives: training without L_fr")
    if cfg.select_on == VALIDATION_SPLIT and VALIDATION_SPLIT not in data.evals:
        printer.print("no validation part (val_fraction 0): best.pt is the last evaluated epoch")
    elif cfg.select_on != VALIDATION_SPLIT:
        printer.print(
            f"note: best.pt is selected on '{cfg.select_on}' as asked (--select-on); "
            "numbers on that split are then no longer held-out test results"
        )


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None,
    runtime: Runtime,
    printer: RunPrinter,
) -> TrainResult:
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    data = load_run_data(cfg)
    assert data.train is not None
    hard = uses_hard_negatives(cfg) and any(s.negatives_valid for s in data.train.samples)
    cfg = _resolved_config(cfg, data, hard)
    _announce(cfg, data, hard, printer)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))

    torch.manual_seed(cfg.seed)
    model: nn.Module = build_model(cfg.model.resolve(data.v_dim, data.t_dim)).to(runtime.device)
    criterion = build_criterion(cfg.loss, cfg.model.backbone).to(runtime.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=cfg.optim.lr_drop, gamma=cfg.optim.lr_gamma
    )
    progress = _Progress()
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        progress = _Progress(
            start_epoch=int(resume_state["epoch"]) + 1,
            best_metric=resume_state["best_metric"],
            best_epoch=resume_state["best_epoch"],
            stale=int(resume_state.get("stale", 0)),
            history=list(resume_state["history"]),
        )
        restore_rng_state(resume_state["rng"])
        printer.print(f"resuming {run_dir} after epoch {progress.start_epoch}")
    if runtime.distributed:
        backend = dist.get_backend()
        printer.print(f"DistributedDataParallel: {runtime.world_size} processes ({backend})")
    model = distributed_model(model, runtime)

    sampler: DistributedSampler[Item] = DistributedSampler(
        data.train, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=cfg.seed
    )
    collator = Collator(
        cfg.seed, levels=data.train.levels if hard else 0, inbatch=cfg.data.inbatch_negative
    )
    loader = data_loader(
        data.train,
        batch_size=cfg.optim.batch_size,
        collator=collator,
        num_workers=cfg.data.num_workers,
        sampler=sampler,
    )
    use_bf16 = cfg.bf16 and runtime.device.type == "cuda"
    epochs_run = 0
    for epoch in range(progress.start_epoch, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        collator.epoch = epoch
        lr = optimizer.param_groups[0]["lr"]
        losses = train_one_epoch(
            model,
            criterion,
            loader,
            optimizer,
            runtime=runtime,
            epoch=epoch,
            epochs=cfg.optim.epochs,
            grad_clip=cfg.optim.grad_clip,
            bf16=use_bf16,
            hard_negatives=hard,
            inbatch=uses_inbatch_negative(cfg),
            printer=printer,
        )
        scheduler.step()
        epochs_run += 1
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, **loss_columns(losses)}
        evaluate_now = (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.optim.epochs - 1
        improved = False
        if evaluate_now and runtime.is_main:
            results = evaluate(
                unwrap(model),
                data.evals,
                batch_size=cfg.optim.batch_size,
                device=runtime.device,
                bf16=use_bf16,
                postprocess_mode=cfg.postprocess,
            )
            split_metrics = {name: r[0] for name, r in results.items()}
            row.update(metric_row(split_metrics))
            if cfg.select_on in split_metrics:
                value = _selection_value(split_metrics[cfg.select_on], cfg.select_metric)
            else:  # no validation part: the latest evaluation is the best
                value = float(epoch)
            improved = progress.record(value, epoch)
        progress.history.append(row)
        stop = (
            cfg.patience is not None
            and progress.stale >= cfg.patience
            and evaluate_now
            and runtime.is_main
        )
        if runtime.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "config": cfg.model_dump(mode="json"),
                "best_metric": progress.best_metric,
                "best_epoch": progress.best_epoch,
                "select_on": cfg.select_on,
                "select_metric": cfg.select_metric,
                "stale": progress.stale,
                "history": progress.history,
                "rng": rng_state(),
            }
            if improved:
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, state)
            write_metrics_csv(run_dir / "metrics.csv", progress.history)
            printer.print(epoch_line(row, cfg, improved))
        if main_process_decides(stop, runtime):
            printer.print(f"stopping: no improvement in {cfg.patience} evaluations")
            break

    final: dict[str, SplitMetrics] = {}
    if runtime.is_main and best_path.is_file() and data.evals:
        final = evaluate_checkpoint_of_run(best_path, data.evals, run_dir, runtime.device, printer)
    barrier(runtime)
    return TrainResult(
        run_dir=run_dir,
        epochs_run=epochs_run,
        best_epoch=progress.best_epoch,
        best_metric=None if progress.best_metric == -math.inf else progress.best_metric,
        final_metrics=final,
        history=progress.history,
        missing=data.reports,
    )


def _selection_value(metrics: SplitMetrics, name: str) -> float:
    value = metrics.metrics.get(name, float("nan"))
    return value if not math.isnan(value) else -math.inf
