"""Training and evaluation loops, checkpoints, resume, DDP and the metrics log.

A run directory holds:

* ``config.yaml`` -- the resolved :class:`~negforge.trainer.config.TrainConfig`;
* ``checkpoints/last.pt`` (every epoch) and ``checkpoints/best.pt`` (best ``select_metric``
  on ``select_on``: the validation part held out from train by video, never a test split
  unless named) -- model, optimiser, scheduler, epoch, config, best metric, RNG states;
* ``metrics.csv`` -- one row per epoch: ``epoch``, ``lr``, ``train/<loss part>`` and
  ``<split>/{R1@0.5,R1@0.7,mIoU,mAP}`` for every evaluated split (``val`` included);
* ``predictions/<split>.jsonl`` and ``metrics.json`` -- the best checkpoint on every split.

``--resume`` restores everything from ``last.pt`` and continues as if never stopped: data
order, in-batch negatives and dropout are seeded per epoch / restored from the checkpoint.
Under ``torchrun`` the model runs in DistributedDataParallel (gloo on CPU, nccl on CUDA);
only rank 0 evaluates and writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from negforge.atomic import atomic_path, atomic_write_text
from negforge.errors import ConfigError, InputError, NegforgeError
from negforge.trainer.backbones import build_model
from negforge.trainer.base_losses import build_criterion
from negforge.trainer.config import (
    VALIDATION_SPLIT,
    EvalSplit,
    ModelSettings,
    TrainConfig,
    config_to_yaml,
)
from negforge.trainer.data import (
    Collator,
    GroundingDataset,
    GroundingSample,
    MissingReport,
    check_features,
    load_eval_samples,
    load_train_samples,
    split_by_video,
)
from negforge.trainer.evaluation import (
    Postprocess,
    Prediction,
    SplitMetrics,
    evaluate,
    format_table,
    format_type_table,
    metric_row,
    postprocess,
    write_metrics,
    write_predictions,
)
from negforge.trainer.features import TextFeatureStore, VideoFeatureStore, query_key

#: Version 2: the backbones equal the originals module for module (issue 8); version-1
#: checkpoints (the earlier, different architecture) do not load.
CHECKPOINT_FORMAT = "negforge-checkpoint/2"


class TrainingDiverged(NegforgeError):
    """The loss became NaN or infinite."""


# --- processes and devices ---------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: device and distributed rank."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available (the local rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but CUDA is not available")
    return device


def setup_runtime(device: str) -> Runtime:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size <= 1:
        return Runtime(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend)
    return Runtime(resolved, dist.get_rank(), dist.get_world_size())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels inside the block (warn where an op has none)."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- data -----------------------------------------------------------------------------------


@dataclass
class RunData:
    """The datasets of a run and what was skipped."""

    train: GroundingDataset | None
    evals: dict[str, GroundingDataset]
    reports: dict[str, MissingReport] = field(default_factory=dict)
    v_dim: int = 0
    t_dim: int = 0


def feature_stores(cfg: TrainConfig) -> tuple[VideoFeatureStore, TextFeatureStore]:
    data = cfg.data
    videos = VideoFeatureStore(
        data.video_feats, normalize=data.normalize_video, cache=data.cache_features
    )
    texts = TextFeatureStore(
        data.text_feats,
        max_q_len=cfg.model.max_q_len,
        normalize=data.normalize_text,
        cache=data.cache_features,
    )
    return videos, texts


def make_dataset(
    samples: Sequence[GroundingSample],
    cfg: TrainConfig,
    stores: tuple[VideoFeatureStore, TextFeatureStore],
    *,
    with_negatives: bool = False,
) -> GroundingDataset:
    """A dataset with the clip settings of ``cfg``."""
    return GroundingDataset(
        samples,
        stores[0],
        stores[1],
        clip_len=cfg.data.clip_len,
        max_v_len=cfg.model.max_v_len,
        use_tef=cfg.data.use_tef,
        with_negatives=with_negatives,
        long_videos=cfg.data.long_videos,
    )


def uses_hard_negatives(cfg: TrainConfig) -> bool:
    return cfg.loss.shine.enabled


def uses_inbatch_negative(cfg: TrainConfig) -> bool:
    return cfg.loss.shine.enabled or cfg.model.backbone == "qd_detr"


def load_run_data(
    cfg: TrainConfig, splits: Sequence[EvalSplit] | None = None, *, train: bool = True
) -> RunData:
    """Train / validation / evaluation datasets, features checked up front."""
    stores = feature_stores(cfg)
    evals: dict[str, GroundingDataset] = {}
    reports: dict[str, MissingReport] = {}
    train_set = None
    if train:
        if cfg.data.train is None:
            raise ConfigError("no training file given (--train)")
        # Split by video before any feature check: the validation part depends only on
        # the TRAIN file, the seed and the fraction.
        train_samples, val_samples = split_by_video(
            load_train_samples(cfg.data.train), cfg.data.val_fraction, cfg.seed
        )
        train_samples, reports["train"] = check_features(
            train_samples,
            *stores,
            on_missing=cfg.data.on_missing,
            with_negatives=uses_hard_negatives(cfg),
            source=cfg.data.train,
        )
        if not train_samples:
            raise ConfigError(f"no training queries left in {cfg.data.train}")
        train_set = make_dataset(
            train_samples, cfg, stores, with_negatives=uses_hard_negatives(cfg)
        )
        if val_samples:
            val_samples, reports[VALIDATION_SPLIT] = check_features(
                val_samples,
                *stores,
                on_missing=cfg.data.on_missing,
                with_negatives=False,
                source=cfg.data.train,
            )
            if val_samples:
                evals[VALIDATION_SPLIT] = make_dataset(val_samples, cfg, stores)
    for split in cfg.data.eval if splits is None else splits:
        if split.name in evals:
            raise ConfigError(f"two evaluation splits are called '{split.name}'")
        samples, reports[split.name] = check_features(
            load_eval_samples(split.path),
            *stores,
            on_missing=cfg.data.on_missing,
            with_negatives=False,
            source=split.path,
        )
        evals[split.name] = make_dataset(samples, cfg, stores)
    reference = train_set if train_set is not None else next(iter(evals.values()), None)
    if reference is None or len(reference) == 0:
        raise ConfigError("no queries with features to run on")
    first = reference.samples[0]
    v_dim = make_dataset([first], cfg, stores)[0].video.shape[1]
    t_dim = stores[1].load(query_key(first.qid)).shape[1]
    return RunData(train_set, evals, reports, v_dim, t_dim)


def dataset_for(
    cfg: TrainConfig,
    path: str | Path,
    *,
    negatives: bool = False,
    video_feats: Sequence[Path] | None = None,
    text_feats: Sequence[Path] | None = None,
) -> GroundingDataset:
    """A query file as a dataset with ``cfg``'s clip settings (e.g. a checkpoint's config).

    With ``negatives`` the file is read as TRAIN (negatives artifact or SHINE jsonl) and
    each item carries its hard negatives; features default to the run's.
    """
    update: dict[str, Any] = {}
    if video_feats:
        update["video_feats"] = list(video_feats)
    if text_feats:
        update["text_feats"] = list(text_feats)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})
    stores = feature_stores(cfg)
    samples = load_train_samples(path) if negatives else load_eval_samples(path)
    samples, _ = check_features(
        samples, *stores, on_missing=cfg.data.on_missing, with_negatives=negatives, source=path
    )
    return make_dataset(samples, cfg, stores, with_negatives=negatives)


def data_loader(
    dataset: GroundingDataset,
    *,
    batch_size: int,
    collator: Collator,
    num_workers: int = 0,
    sampler: Any = None,
) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        collate_fn=collator,
        num_workers=num_workers,
        persistent_workers=False,
    )


# --- prediction -----------------------------------------------------------------------------


@dataclass
class SamplePrediction:
    """A query's predicted windows and the saliency of its query set (valid clips only)."""

    prediction: Prediction
    saliency: np.ndarray  # (L,) positive query
    hard_neg_saliency: np.ndarray | None = None  # (3, L)
    inbatch_neg_saliency: np.ndarray | None = None  # (L,)
    inbatch_neg_qid: str | None = None


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: GroundingDataset,
    *,
    qids: Sequence[str] | None = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    negatives: bool = False,
    bf16: bool = False,
    seed: int = 0,
    postprocess_mode: Postprocess = "round_to_clips",
) -> list[SamplePrediction]:
    """Run ``model`` (eval mode) over ``dataset`` (or the given ``qids``).

    Predictions are composed as the originals' inference does (``postprocess_mode``: see
    :func:`~negforge.trainer.evaluation.postprocess`). With ``negatives`` the saliency of
    each query's three hard negatives (when the dataset has them) and of an in-batch negative
    query of another video is returned too; a batch with one video borrows a sample of
    another video for that.
    """
    model = unwrap(model)
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    indices = [dataset.index_of(q) for q in qids] if qids is not None else list(range(len(dataset)))
    collator = Collator(seed, with_negatives=negatives and dataset.with_negatives)
    results: list[SamplePrediction] = []
    try:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            items = [dataset[i] for i in chunk]
            if negatives and len({it.sample.vid for it in items}) == 1:
                extra = next(
                    (i for i, s in enumerate(dataset.samples) if s.vid != items[0].sample.vid),
                    None,
                )
                if extra is not None:
                    items.append(dataset[extra])
            batch = collator(items).to(device)
            with autocast(device, bf16):
                out = model(
                    **batch.model_inputs(hard_negatives=collator.with_negatives, inbatch=negatives)
                )
            predictions = postprocess(
                out, batch, mode=postprocess_mode, clip_len=dataset.clip_len
            )
            mask = batch.video_mask.bool().cpu()
            hard = out.get("saliency_scores_hard_neg")
            inbatch = out.get("saliency_scores_inbatch_neg")
            for row in range(len(chunk)):
                valid = mask[row]
                neg_row = int(batch.inbatch_neg_index[row]) if negatives else -1
                results.append(
                    SamplePrediction(
                        prediction=predictions[row],
                        saliency=out["saliency_scores"][row].float().cpu()[valid].numpy(),
                        hard_neg_saliency=(
                            hard[row].float().cpu()[:, valid].numpy()
                            if hard is not None and batch.hard_neg_valid[row]
                            else None
                        ),
                        inbatch_neg_saliency=(
                            inbatch[row].float().cpu()[valid].numpy()
                            if inbatch is not None and neg_row >= 0
                            else None
                        ),
                        inbatch_neg_qid=batch.samples[neg_row].qid if neg_row >= 0 else None,
                    )
                )
    finally:
        model.train(was_training)
    return results


def evaluate_datasets(
    model: nn.Module,
    datasets: dict[str, GroundingDataset],
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
    postprocess_mode: Postprocess = "round_to_clips",
) -> dict[str, tuple[SplitMetrics, list[Prediction]]]:
    """Predictions and metrics of every split."""
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
        results[name] = (evaluate(predictions, dataset.samples), predictions)
    return results


# --- checkpoints ------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temp file + rename."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A negforge checkpoint's state; anything else is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a checkpoint" if path.is_dir() else "checkpoint not found"
        raise InputError(reason, path=path)
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except OSError as exc:
        raise InputError(f"cannot read the checkpoint ({exc})", path=path) from exc
    except Exception as exc:  # pickle, zip, EOF, torch's own: all mean "not a checkpoint"
        raise InputError(
            f"not a negforge checkpoint ({type(exc).__name__}: {str(exc)[:120]})", path=path
        ) from exc
    if not isinstance(state, dict):
        raise InputError("not a negforge checkpoint", path=path)
    found = state.get("format")
    if found == CHECKPOINT_FORMAT:
        return state
    if isinstance(found, str) and found.startswith("negforge-checkpoint/"):
        raise InputError(
            f"written by an earlier negforge ({found}; this one reads {CHECKPOINT_FORMAT}): "
            "the backbones changed to equal the originals, retrain the run",
            path=path,
            field="format",
        )
    if "model" in state and "opt" in state:
        raise InputError(
            "an original Moment-DETR / QD-DETR / SHINE checkpoint: convert it first with "
            "negforge convert-checkpoint CKPT --backbone moment_detr|qd_detr -o model.pt",
            path=path,
            field="format",
        )
    raise InputError(
        "not a negforge checkpoint (no negforge format marker)", path=path, field="format"
    )


def load_model_from_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, TrainConfig]:
    """The model of a checkpoint (eval mode, on ``device``) and its run's config."""
    state = read_checkpoint(path, "cpu")
    cfg = TrainConfig.model_validate(state["config"])
    if cfg.model.v_dim is None or cfg.model.t_dim is None:
        raise ConfigError(f"{path} lacks the model's input sizes")
    model = build_model(cfg.model.resolve(cfg.model.v_dim, cfg.model.t_dim))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise InputError(f"weights do not fit its config ({reason})", path=path) from exc
    return model.to(device).eval(), cfg


# --- metrics log --------------------------------------------------------------------------------


def write_metrics_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """All rows, columns in first-seen order (``epoch`` first); blank where not measured."""
    columns: list[str] = ["epoch", "lr"]
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


# --- training ---------------------------------------------------------------------------------


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


class _Printer:
    """Rank-0 console output (rich) and the progress bar."""

    def __init__(self, enabled: bool, progress: bool) -> None:
        from rich.console import Console

        self.enabled = enabled
        self.progress_enabled = enabled and progress
        self.console = Console(highlight=False)

    def print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False, soft_wrap=True)

    def progress(self) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console,
            disable=not self.progress_enabled,
            transient=True,
        )


def _loss_summary(losses: dict[str, float], limit: int = 6) -> str:
    main = [k for k in losses if k == "loss"] + [
        k for k in losses if k != "loss" and not k[-1].isdigit()
    ]
    return " ".join(f"{k.removeprefix('loss_') or 'loss'} {losses[k]:.3f}" for k in main[:limit])


def _reduce_sums(sums: dict[str, float], count: int, runtime: Runtime) -> dict[str, float]:
    """Mean of every loss part over the epoch (over all processes)."""
    names = sorted(sums)
    if runtime.distributed:
        tensor = torch.tensor([sums[n] for n in names] + [float(count)], dtype=torch.float64)
        if runtime.device.type == "cuda":
            tensor = tensor.to(runtime.device)
        dist.all_reduce(tensor)
        values = tensor.cpu().tolist()
        total = values[-1]
        return {n: v / max(total, 1.0) for n, v in zip(names, values[:-1], strict=True)}
    return {n: sums[n] / max(count, 1) for n in names}


def _selection_value(metrics: SplitMetrics, name: str) -> float:
    value = metrics.metrics.get(name, float("nan"))
    return value if not math.isnan(value) else -math.inf


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train (or resume) a run in ``run_dir``; see the module docstring for its files."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    last_path, best_path = checkpoints / "last.pt", checkpoints / "best.pt"
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
    printer = _Printer(runtime.is_main, cfg.progress)
    seed_everything(cfg.seed)
    with deterministic_algorithms() if runtime.device.type == "cpu" else contextlib.nullcontext():
        return _train(cfg, run_dir, resume_state, runtime, printer, last_path, best_path)


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None,
    runtime: Runtime,
    printer: _Printer,
    last_path: Path,
    best_path: Path,
) -> TrainResult:
    data = load_run_data(cfg)
    assert data.train is not None
    for name, report in data.reports.items():
        if report.skipped_queries or report.dropped_negatives:
            printer.print(f"{name}: {report.summary()}")
    model_cfg = cfg.model.resolve(data.v_dim, data.t_dim)
    cfg = cfg.model_copy(update={"model": ModelSettings.model_validate(model_cfg.model_dump())})
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    if cfg.select_on == VALIDATION_SPLIT and VALIDATION_SPLIT not in data.evals:
        printer.print("no validation part (val_fraction 0): best.pt is the last evaluated epoch")
    elif cfg.select_on != VALIDATION_SPLIT:
        printer.print(
            f"note: best.pt is selected on '{cfg.select_on}' as asked (--select-on); "
            "numbers on that split are then no longer held-out test results"
        )
    hard = uses_hard_negatives(cfg) and any(s.negatives_valid for s in data.train.samples)
    if uses_hard_negatives(cfg) and not hard:
        printer.print("no training query has valid hard negatives: training without L_fr")

    torch.manual_seed(cfg.seed)
    model: nn.Module = build_model(model_cfg).to(runtime.device)
    criterion = build_criterion(cfg.loss, cfg.model.backbone).to(runtime.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=cfg.optim.lr_drop, gamma=cfg.optim.lr_gamma
    )
    start_epoch, best_metric, best_epoch, stale = 0, -math.inf, None, 0
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = int(resume_state["epoch"]) + 1
        best_metric = resume_state["best_metric"]
        best_epoch = resume_state["best_epoch"]
        stale = int(resume_state.get("stale", 0))
        history = list(resume_state["history"])
        _set_rng_state(resume_state["rng"])
        printer.print(f"resuming {run_dir} after epoch {start_epoch}")
    if runtime.distributed:
        backend = dist.get_backend()
        printer.print(f"DistributedDataParallel: {runtime.world_size} processes ({backend})")
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )

    sampler = DistributedSampler(
        data.train,
        num_replicas=runtime.world_size,
        rank=runtime.rank,
        shuffle=True,
        seed=cfg.seed,
    )
    collator = Collator(cfg.seed, with_negatives=hard, inbatch=cfg.data.inbatch_negative)
    loader = data_loader(
        data.train,
        batch_size=cfg.optim.batch_size,
        collator=collator,
        num_workers=cfg.data.num_workers,
        sampler=sampler,
    )
    use_bf16 = cfg.bf16 and runtime.device.type == "cuda"
    inbatch = uses_inbatch_negative(cfg)
    epochs_run = 0
    final_epoch = cfg.optim.epochs - 1
    for epoch in range(start_epoch, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        collator.epoch = epoch
        model.train()
        criterion.train()
        sums: dict[str, float] = {}
        count = 0
        lr = optimizer.param_groups[0]["lr"]
        with printer.progress() as bar:
            task = bar.add_task(
                f"epoch {epoch + 1}/{cfg.optim.epochs}", total=len(loader), losses=""
            )
            for step, cpu_batch in enumerate(loader):
                batch = cpu_batch.to(runtime.device)
                with autocast(runtime.device, use_bf16):
                    out = model(**batch.model_inputs(hard_negatives=hard, inbatch=inbatch))
                losses = criterion(out, batch.targets())
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: "
                        "lower --lr or check the features"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                optimizer.step()
                size = len(batch.samples)
                count += size
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) * size
                bar.update(
                    task, advance=1, losses=_loss_summary({k: v / count for k, v in sums.items()})
                )
        scheduler.step()
        epochs_run += 1
        train_losses = _reduce_sums(sums, count, runtime)
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        row.update({f"train/{k}": v for k, v in sorted(train_losses.items(), key=_loss_order)})
        evaluate_now = (epoch + 1) % cfg.eval_every == 0 or epoch == final_epoch
        improved = False
        if evaluate_now and runtime.is_main:
            results = evaluate_datasets(
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
            improved = value > best_metric
            if improved:
                best_metric, best_epoch, stale = value, epoch + 1, 0
            else:
                stale += 1
        history.append(row)
        stop = (
            cfg.patience is not None and stale >= cfg.patience and evaluate_now and runtime.is_main
        )
        if runtime.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "config": cfg.model_dump(mode="json"),
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "select_on": cfg.select_on,
                "select_metric": cfg.select_metric,
                "stale": stale,
                "history": history,
                "rng": _rng_state(),
            }
            if improved:
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, state)
            write_metrics_csv(run_dir / "metrics.csv", history)
            printer.print(_epoch_line(row, cfg, improved))
        if runtime.distributed:
            flag = torch.tensor([1.0 if stop else 0.0], device=_collective_device(runtime))
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
            dist.barrier()
        if stop:
            printer.print(f"stopping: no improvement in {cfg.patience} evaluations")
            break

    final: dict[str, SplitMetrics] = {}
    if runtime.is_main:
        final = _final_evaluation(cfg, data, run_dir, best_path, runtime, printer)
    if runtime.distributed:
        dist.barrier()
    return TrainResult(
        run_dir=run_dir,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        best_metric=None if best_metric == -math.inf else best_metric,
        final_metrics=final,
        history=history,
        missing=data.reports,
    )


def _collective_device(runtime: Runtime) -> torch.device:
    return runtime.device if runtime.device.type == "cuda" else torch.device("cpu")


def _loss_order(item: tuple[str, float]) -> tuple[int, str]:
    name = item[0]
    return (0 if name == "loss" else 1 if not name[-1].isdigit() else 2, name)


def _epoch_line(row: dict[str, Any], cfg: TrainConfig, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{cfg.optim.epochs}", f"loss {row.get('train/loss', 0.0):.4f}"]
    for key, value in row.items():
        if "/" in key and not key.startswith("train/") and key.split("/")[1] in ("R1@0.5", "mIoU"):
            parts.append(f"{key} {value:.2f}")
    if improved:
        selected = f"{cfg.select_on}/{cfg.select_metric}" in row
        parts.append(f"* best {cfg.select_on}/{cfg.select_metric}" if selected else "* saved")
    return "  ".join(parts)


def _final_evaluation(
    cfg: TrainConfig,
    data: RunData,
    run_dir: Path,
    best_path: Path,
    runtime: Runtime,
    printer: _Printer,
) -> dict[str, SplitMetrics]:
    """Evaluate best.pt on every split; write predictions, metrics.json and the tables."""
    if not best_path.is_file() or not data.evals:
        return {}
    model, _ = load_model_from_checkpoint(best_path, runtime.device)
    return write_evaluation(
        model,
        data.evals,
        run_dir,
        batch_size=cfg.optim.batch_size,
        device=runtime.device,
        bf16=cfg.bf16,
        postprocess_mode=cfg.postprocess,
        title=f"{cfg.model.backbone} (best epoch {read_checkpoint(best_path)['epoch'] + 1})",
        printer=printer,
    )


def write_evaluation(
    model: nn.Module,
    datasets: dict[str, GroundingDataset],
    out_dir: Path,
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    title: str,
    printer: _Printer | None = None,
    postprocess_mode: Postprocess = "round_to_clips",
) -> dict[str, SplitMetrics]:
    """Predict every split; write ``predictions/<split>.jsonl`` and ``metrics.json``; print the
    Tables 1-2 / 7 layouts."""
    results = evaluate_datasets(
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
    printer = printer or _Printer(True, False)
    printer.print(format_table({title: {k: v.metrics for k, v in metrics.items()}}))
    by_type = format_type_table(metrics)
    if by_type:
        printer.print("\nby composition type:\n" + by_type)
    return metrics


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
    printer = _Printer(True, False)
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
