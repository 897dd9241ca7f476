"""Where a run executes: device, DistributedDataParallel processes, seeding, precision.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process joins one process group (gloo on CPU,
nccl on CUDA) and the model runs in DistributedDataParallel; only rank 0 evaluates and
writes. The collectives a run needs (mean of the epoch's losses, rank 0's stop decision,
barriers) are here, so the loops never name ``torch.distributed``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from negforge.errors import ConfigError


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

    @property
    def collective_device(self) -> torch.device:
        """Where collective tensors live: the GPU under nccl, else the CPU (gloo)."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")


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


def distributed_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """``model`` in DistributedDataParallel when the run has several processes."""
    if not runtime.distributed:
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_over_processes(sums: dict[str, float], count: int, runtime: Runtime) -> dict[str, float]:
    """``sums[name] / count`` where sums and count are added up over all processes."""
    names = sorted(sums)
    if runtime.distributed:
        tensor = torch.tensor([sums[n] for n in names] + [float(count)], dtype=torch.float64)
        tensor = tensor.to(runtime.collective_device)
        dist.all_reduce(tensor)
        values = tensor.cpu().tolist()
        total = values[-1]
        return {n: v / max(total, 1.0) for n, v in zip(names, values[:-1], strict=True)}
    return {n: sums[n] / max(count, 1) for n in names}


def main_process_decides(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's ``flag`` on every process (after a barrier)."""
    if not runtime.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=runtime.collective_device)
    dist.broadcast(tensor, src=0)
    dist.barrier()
    return bool(tensor.item())


def barrier(runtime: Runtime) -> None:
    """Wait for every process (no-op in a single-process run)."""
    if runtime.distributed:
        dist.barrier()


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global generator's state (a checkpoint stores it for an exact resume)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo everything drawn since :func:`rng_state` returned ``state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda"])


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
