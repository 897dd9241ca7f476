"""One trial of a sweep: train in its folder (or resume it) and record its best-on-val metrics.

:func:`run_trial` is what every engine runs (a local worker process or a Ray task): it builds
the trial's config, calls :func:`negforge.trainer.run.train` on ``TRIAL_DIR`` (with
``resume`` when a killed attempt left ``checkpoints/last.pt``), and writes
``TRIAL_DIR/result.json`` last, atomically: a trial is finished exactly when that file
exists. The trainer's output goes to ``TRIAL_DIR/train.log``; a failure to
``TRIAL_DIR/error.txt``.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from negforge.atomic import atomic_write_text

RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
LOG_FILE = "train.log"
SPEC_FILE = "trial.json"


class TrialSpec(BaseModel):
    """Everything a worker needs to run a trial (picklable, JSON-able)."""

    id: str
    directory: Path
    config: Path | None
    preset: str | None
    overrides: dict[str, Any]
    cell: dict[str, str]
    seed: int
    fingerprint: str
    threads: int | None = None


class TrialResult(BaseModel):
    """A trial's outcome: ``metrics[split][metric]`` of its best checkpoint (chosen on val)."""

    id: str
    cell: dict[str, str]
    seed: int
    fingerprint: str
    status: Literal["done", "failed"]
    best_epoch: int | None = None
    epochs_run: int = 0
    wall_s: float = 0.0
    resumed: bool = False
    metrics: dict[str, dict[str, float | None]] = {}
    error: str | None = None


def read_result(directory: Path) -> TrialResult | None:
    """The finished trial's result, or None (no file, or one from an interrupted write)."""
    path = directory / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return TrialResult.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def write_result(directory: Path, result: TrialResult) -> None:
    atomic_write_text(directory / RESULT_FILE, result.model_dump_json(indent=2) + "\n")


def run_trial(spec: TrialSpec) -> TrialResult:
    """Train one trial (resuming a killed attempt); never raises for a failed training."""
    from negforge.trainer.config import build_config
    from negforge.trainer.run import train

    directory = spec.directory
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / SPEC_FILE, spec.model_dump_json(indent=2) + "\n")
    (directory / ERROR_FILE).unlink(missing_ok=True)
    resumed = (directory / "checkpoints" / "last.pt").is_file()
    start = time.perf_counter()
    base = TrialResult(
        id=spec.id,
        cell=spec.cell,
        seed=spec.seed,
        fingerprint=spec.fingerprint,
        status="failed",
        resumed=resumed,
    )
    try:
        with open(directory / LOG_FILE, "a", encoding="utf-8") as log, _redirected(log):
            if spec.threads is not None:
                import torch

                torch.set_num_threads(spec.threads)
            cfg = build_config(preset=spec.preset, yaml_path=spec.config, overrides=spec.overrides)
            outcome = train(cfg, directory, resume=resumed)
    except BaseException as exc:
        atomic_write_text(directory / ERROR_FILE, traceback.format_exc())
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        reason = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:500]
        return base.model_copy(update={"wall_s": time.perf_counter() - start, "error": reason})
    result = base.model_copy(
        update={
            "status": "done",
            "best_epoch": outcome.best_epoch,
            "epochs_run": outcome.epochs_run,
            "wall_s": time.perf_counter() - start,
            "metrics": {
                split: {k: None if math.isnan(v) else float(v) for k, v in metrics.metrics.items()}
                for split, metrics in outcome.final_metrics.items()
            },
        }
    )
    write_result(directory, result)
    return result


@contextlib.contextmanager
def _redirected(log: Any) -> Any:
    """Send this process's stdout / stderr (Python level) to ``log`` inside the block."""
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield
