"""One DistributedDataParallel training step; every rank saves what the test compares.

    torchrun --standalone --nproc_per_node 2 tests/support/ddp_step.py CONFIG_YAML OUT_DIR

Each rank takes its own share of 8 training queries (one batch of 4), records the gradient
its batch alone gives (an undistributed copy of the model), then runs one step of
:func:`negforge.trainer.engine.train_one_epoch` on the DDP model and saves
``OUT_DIR/rank<r>.pt``: its qids, that local gradient, the initial and the final weights
and the epoch's losses.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from negforge.trainer.backbones import build_model
from negforge.trainer.base_losses import build_criterion
from negforge.trainer.config import build_config
from negforge.trainer.dataset import Collator
from negforge.trainer.engine import train_one_epoch
from negforge.trainer.run_data import data_loader, feature_stores, load_run_data, make_dataset
from negforge.trainer.runtime import distributed_model, setup_runtime, unwrap

TINY = {
    "model.hidden": 32,
    "model.heads": 4,
    "model.ff": 64,
    "model.enc_layers": 1,
    "model.dec_layers": 2,
    "model.num_queries": 4,
    "data.val_fraction": 0.0,
    "cpu_threads": 1,
}


def main(config: Path, out: Path) -> None:
    cfg = build_config(yaml_path=config, overrides=TINY)
    torch.set_num_threads(1)
    runtime = setup_runtime("cpu")
    data = load_run_data(cfg, splits=[])
    assert data.train is not None and data.levels is not None
    dataset = make_dataset(
        data.train.samples[:8],
        cfg,
        feature_stores(cfg),
        with_negatives=True,
        levels=data.levels.levels,
    )
    loss_cfg = cfg.loss.model_copy(
        update={"shine": cfg.loss.shine.with_levels(dataset.levels)}
    )
    torch.manual_seed(0)
    model = build_model(cfg.model.resolve(data.v_dim, data.t_dim))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    criterion = build_criterion(loss_cfg, cfg.model.backbone)
    sampler: DistributedSampler[object] = DistributedSampler(
        dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=False
    )
    loader = data_loader(
        dataset, batch_size=4, collator=Collator(cfg.seed, levels=dataset.levels), sampler=sampler
    )
    (batch,) = list(loader)  # this rank's one batch

    local = copy.deepcopy(model).train()  # the gradient of this rank's batch alone
    criterion.train()
    inputs = batch.model_inputs(hard_negatives=True, inbatch=True)
    criterion(local(**inputs), batch.targets())["loss"].backward()
    local_grads = {n: p.grad.clone() for n, p in local.named_parameters() if p.grad is not None}

    ddp = distributed_model(model, runtime)
    optimizer = torch.optim.AdamW([p for p in ddp.parameters() if p.requires_grad], lr=1e-3)
    losses = train_one_epoch(
        ddp,
        criterion,
        loader,
        optimizer,
        runtime=runtime,
        epoch=0,
        epochs=1,
        hard_negatives=True,
        inbatch=True,
    )
    torch.save(
        {
            "world_size": runtime.world_size,
            "qids": [s.qid for s in batch.samples],
            "local_grads": local_grads,
            "initial": initial,
            "weights": unwrap(ddp).state_dict(),
            "losses": losses,
        },
        out / f"rank{runtime.rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
