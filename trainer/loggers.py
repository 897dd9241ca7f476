"""Experiment trackers: every epoch's ``metrics.csv`` row also goes to TensorBoard (default),
Weights & Biases or MLflow (``--log``).

The engine calls one interface, :class:`RunLogger` (``log(row, step)``, ``close()``), built by
:func:`open_logger` on rank 0 only (other ranks get :class:`NullLogger`). A row's numeric
cells become scalars named as the CSV columns -- ``lr``, ``train/<loss part>`` (every term the
criterion returns, SHINE's included) and ``<split>/<metric>`` -- at ``step`` = the epoch
(1-based); NaN cells (epochs without evaluation) are left out.

* ``tensorboard``: event files in ``RUN_DIR/tb/`` through ``torch.utils.tensorboard``'s
  ``SummaryWriter`` (``tensorboard --logdir RUN_DIR/tb``). A resumed run purges events logged
  after its checkpoint, so a crash between logging and saving leaves no duplicate steps.
* ``wandb``: offline (``WANDB_MODE=offline``) unless the user set ``WANDB_MODE``; files in
  ``RUN_DIR/wandb/``; upload later with ``wandb sync``.
* ``mlflow``: a local file store ``RUN_DIR/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set.

TensorBoard is the ``tensorboard`` extra (in ``dev``); wandb and mlflow are optional extras
imported only when chosen. A missing package stops the run before training with exit code 2.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, Protocol

from negforge.errors import ConfigError

LogBackend = Literal["tensorboard", "wandb", "mlflow", "none"]
LOG_BACKENDS: tuple[LogBackend, ...] = ("tensorboard", "wandb", "mlflow", "none")
TENSORBOARD_DIR = "tb"
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class RunLogger(Protocol):
    """Where a run's epoch rows go besides metrics.csv."""

    def log(self, row: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's numeric, finite cells except ``epoch`` (the step)."""
    values = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isnan(value):
            values[key] = float(value)
    return values


class NullLogger:
    """``--log none`` and ranks other than 0."""

    def log(self, row: dict[str, Any], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars into ``RUN_DIR/tb/`` event files."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        writer_class = _summary_writer_class()
        self.log_dir = log_dir
        self.writer = writer_class(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, row: dict[str, Any], step: int) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A wandb run (offline unless ``WANDB_MODE`` says otherwise) in ``RUN_DIR/wandb``."""

    def __init__(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        wandb = _import("wandb")
        mode = os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(
            dir=str(run_dir),
            mode=mode,
            name=run_dir.name,
            config=config,
            id=_run_id(run_dir),
            resume="allow" if resume else None,
        )

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    """An MLflow run in ``RUN_DIR/mlruns`` (a file store) unless ``MLFLOW_TRACKING_URI`` is set."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.mlflow = _import("mlflow")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            self.mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        self.mlflow.start_run(run_name=run_dir.name)
        self.mlflow.log_params(_flatten(config))

    def log(self, row: dict[str, Any], step: int) -> None:
        # MLflow metric names allow '/', '.', '-', ' ' and alphanumerics: '@' becomes '_at_'.
        self.mlflow.log_metrics(
            {k.replace("@", "_at_"): v for k, v in scalars(row).items()}, step=step
        )

    def close(self) -> None:
        self.mlflow.end_run()


def check_backend(backend: LogBackend) -> None:
    """Stop (exit 2) before training when the chosen tracker's package is not installed."""
    if backend == "none":
        return
    if backend == "tensorboard":
        _summary_writer_class()
    else:
        _import(backend)


def open_logger(
    backend: LogBackend,
    run_dir: Path,
    *,
    config: dict[str, Any],
    is_main: bool = True,
    start_epoch: int = 0,
) -> RunLogger:
    """The tracker of ``backend`` on the main process, :class:`NullLogger` elsewhere.

    ``start_epoch`` (0-based) > 0 marks a resumed run: steps from ``start_epoch + 1`` on are
    logged again.
    """
    if not is_main or backend == "none":
        return NullLogger()
    if backend == "tensorboard":
        purge = start_epoch + 1 if start_epoch > 0 else None
        return TensorBoardLogger(run_dir / TENSORBOARD_DIR, purge_step=purge)
    if backend == "wandb":
        return WandbLogger(run_dir, config, resume=start_epoch > 0)
    return MlflowLogger(run_dir, config)


def _summary_writer_class() -> Any:
    """torch's SummaryWriter (it needs the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise _missing("tensorboard") from exc
    return SummaryWriter


def _import(backend: str) -> Any:
    import importlib

    try:
        return importlib.import_module(backend)
    except ImportError as exc:
        raise _missing(backend) from exc


def _missing(backend: str) -> ConfigError:
    package = _PACKAGES[backend]
    return ConfigError(
        f"--log {backend} needs the '{package}' package: pip install {package}, "
        "or pass --log none"
    )


def _run_id(run_dir: Path) -> str:
    """A stable wandb run id per run folder, so --resume continues the same run."""
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optim.lr": "0.001", ...}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat
