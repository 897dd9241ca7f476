"""Running a sweep's trials: local worker processes (default) or Ray tasks; resumable.

Each trial trains in ``OUT/trials/<id>/``. A trial whose ``result.json`` exists (with the
same config fingerprint) is finished and skipped; one that a killed sweep left with
``checkpoints/last.pt`` resumes from there (:mod:`negforge.sweep.trial`). A trial folder
whose recorded config differs from the sweep's is refused rather than mixed in.

Engines:

* ``local`` -- ``--workers N`` spawned worker processes on this machine
  (``concurrent.futures.ProcessPoolExecutor``); each trial gets ``cores // N`` torch threads
  unless its config sets ``cpu_threads``. Workers die with the sweep (Linux:
  ``PR_SET_PDEATHSIG``); a worker that dies (killed, out of memory) fails only the trials it
  was running, the rest go on in a fresh pool.
* ``ray`` -- plain Ray tasks (one per trial, ``num_cpus``/``num_gpus`` per task), on the
  cluster at ``--address`` or on a local instance. Ray is imported only here
  (``pip install 'negforge[ray]'``). On a cluster the output folder must be on a file
  system every node sees, for checkpoints and resume; results also travel back to the
  driver, which writes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from negforge.errors import ConfigError
from negforge.sweep.spec import Sweep
from negforge.sweep.trial import (
    SPEC_FILE,
    TrialResult,
    TrialSpec,
    read_result,
    run_trial,
    write_result,
)

Engine = Literal["local", "ray"]
TRIALS_DIR = "trials"


class SweepRun(BaseModel):
    """What one invocation of a sweep did."""

    output: Path
    trials: int
    skipped: list[str]
    ran: list[str]
    failed: dict[str, str]
    wall_s: float


def trial_specs(sweep: Sweep, output: Path, threads: int | None) -> list[TrialSpec]:
    """A spec per trial, its folder under ``output/trials``."""
    return [
        TrialSpec(
            id=trial.id,
            directory=(output / TRIALS_DIR / trial.id).resolve(),
            config=sweep.config,
            preset=sweep.preset,
            overrides=trial.overrides,
            cell=trial.cell,
            seed=trial.seed,
            fingerprint=trial.fingerprint,
            threads=threads,
        )
        for trial in sweep.trials
    ]


def _recorded_fingerprint(directory: Path) -> str | None:
    result = read_result(directory)
    if result is not None:
        return result.fingerprint
    path = directory / SPEC_FILE
    if path.is_file():
        try:
            return TrialSpec.model_validate_json(path.read_text(encoding="utf-8")).fingerprint
        except ValueError:
            return None
    return None


def split_finished(specs: Sequence[TrialSpec]) -> tuple[list[TrialSpec], list[TrialSpec]]:
    """(finished, to run); a folder recorded with another config is a :class:`ConfigError`."""
    finished: list[TrialSpec] = []
    pending: list[TrialSpec] = []
    for spec in specs:
        recorded = _recorded_fingerprint(spec.directory)
        if recorded is not None and recorded != spec.fingerprint:
            raise ConfigError(
                f"trial {spec.id} in {spec.directory} was run with another config (the sweep "
                "file or its base config changed): delete that folder or use another -o"
            )
        result = read_result(spec.directory)
        (finished if result is not None and result.status == "done" else pending).append(spec)
    return finished, pending


def run_sweep(
    sweep: Sweep,
    output: str | Path,
    *,
    engine: Engine = "local",
    workers: int = 1,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    echo: Callable[[str], None] = print,
) -> SweepRun:
    """Run every unfinished trial of ``sweep`` under ``output``; see the module docstring."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    output = Path(output)
    start = time.perf_counter()
    cores = os.cpu_count() or 1
    threads = max(1, round(cpus_per_trial)) if engine == "ray" else max(1, cores // workers)
    specs = trial_specs(sweep, output, threads)
    finished, pending = split_finished(specs)
    echo(
        f"sweep {sweep.name}: {len(specs)} trials ({len(finished)} finished, "
        f"{len(pending)} to run) in {output}"
    )
    failed: dict[str, str] = {}
    ran: list[str] = []

    def record(result: TrialResult) -> None:
        progress = f"[{len(ran) + len(failed) + 1}/{len(pending)}]"
        if result.status == "done":
            ran.append(result.id)
            summary = _headline(result)
            echo(f"{progress} {result.id}: done in {result.wall_s:.0f} s{summary}")
        else:
            failed[result.id] = result.error or "failed"
            echo(f"{progress} {result.id}: FAILED ({result.error})")

    if pending:
        if engine == "local":
            _run_local(pending, workers, record)
        elif engine == "ray":
            _run_ray(pending, address, workers, cpus_per_trial, gpus_per_trial, record)
        else:
            raise ConfigError(f"unknown engine '{engine}' (local or ray)")
    return SweepRun(
        output=output,
        trials=len(specs),
        skipped=[s.id for s in finished],
        ran=ran,
        failed=failed,
        wall_s=time.perf_counter() - start,
    )


def _headline(result: TrialResult) -> str:
    val = result.metrics.get("val", {})
    shown = ", ".join(f"val/{k} {val[k]:.2f}" for k in ("R1@0.5", "mIoU") if k in val)
    return f" (best epoch {result.best_epoch}; {shown})" if shown else ""


def _failed(spec: TrialSpec, reason: str) -> TrialResult:
    return TrialResult(
        id=spec.id,
        cell=spec.cell,
        seed=spec.seed,
        fingerprint=spec.fingerprint,
        status="failed",
        error=reason,
    )


# --- local worker processes -------------------------------------------------------------------


def _init_worker() -> None:
    """In each worker: die with the sweep process (Linux), quiet offline libraries."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: workers exit when the pool shuts down
        pass


def _run_local(
    specs: Sequence[TrialSpec], workers: int, record: Callable[[TrialResult], None]
) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = list(specs)
    while queue:
        started_after = time.time()
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(queue)), mp_context=context, initializer=_init_worker
        )
        retry: list[TrialSpec] = []
        try:
            futures: dict[Future[TrialResult], TrialSpec] = {
                pool.submit(run_trial, spec): spec for spec in queue
            }
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    spec = futures[future]
                    try:
                        record(future.result())
                    except BrokenProcessPool:
                        if _started_since(spec, started_after):
                            record(_failed(spec, _DIED))
                        else:  # never started: run it in the next pool
                            retry.append(spec)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        queue = retry


_DIED = "its worker process died (killed or out of memory); rerun the sweep to resume it"


def _started_since(spec: TrialSpec, moment: float) -> bool:
    marker = spec.directory / SPEC_FILE
    return marker.is_file() and marker.stat().st_mtime >= moment - 1.0


# --- Ray --------------------------------------------------------------------------------------


def _run_ray(
    specs: Sequence[TrialSpec],
    address: str | None,
    workers: int,
    cpus_per_trial: float,
    gpus_per_trial: float,
    record: Callable[[TrialResult], None],
) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--engine ray needs Ray: pip install 'negforge[ray]' (or pip install ray)"
        ) from exc
    started_here = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            # A local instance sized for --workers trials at a time.
            options["num_cpus"] = max(1, round(workers * cpus_per_trial))
            options["object_store_memory"] = 256 * 1024 * 1024
        ray.init(address=address, **options)
        started_here = True
    try:
        task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)(
            run_trial
        )
        refs = {task.remote(spec): spec for spec in specs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                spec = refs[ref]
                try:
                    result: TrialResult = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    record(_failed(spec, f"Ray task failed: {str(exc).splitlines()[0][:300]}"))
                    continue
                if result.status == "done":
                    # Without a shared file system the worker's copy stays on its node.
                    spec.directory.mkdir(parents=True, exist_ok=True)
                    write_result(spec.directory, result)
                record(result)
    finally:
        if started_here:
            ray.shutdown()
