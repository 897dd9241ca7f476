"""Trainer benchmark: SHINE losses vectorised vs a per-sample loop, and QD-DETR step costs.

    .venv/bin/python benchmarks/bench_train.py                 # (a) and (b) on the CPU
    .venv/bin/python benchmarks/bench_train.py --device cuda --epoch   # (c) on a GPU

(a) L_cr + L_fr (Eq. 1-4) at B=32, T=75: the library's batched functions against a plain
    per-sample Python loop of the same equations written here; values must agree to 1e-5,
    target >= 20x faster (forward + backward).
(b) QD-DETR train step (forward + full criterion + backward + AdamW step) at Charades-CG
    sizes (B=32, 75 clips x 1026 dims, 32 tokens x 512 dims): QD-DETR's own step (with its
    mismatched-query pass) vs the SHINE step (+3 hard negatives through the encoder, in-batch
    negative, L_cr + L_fr). Target: SHINE <= 1.8x base. Also prints the FLOPs of both steps
    (torch's FlopCounterMode), which do not depend on machine load.
(c) --epoch: one epoch of 8,281 synthetic samples (Charades-CG's training set size) at those
    sizes with SHINE, fp32 and bf16 autocast, samples/s.
(d) Hungarian matching at B=32, 10 queries, 1-5 windows per video: negforge's previous
    hand-written numpy solver (kept here as the baseline) against
    scipy.optimize.linear_sum_assignment, which the matcher now uses as the originals do; the
    same cost blocks, alternating, the same number of runs; both must reach the same costs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from negforge.trainer import matcher as matcher_module
from negforge.trainer.backbones import build_model
from negforge.trainer.base_losses import build_criterion
from negforge.trainer.model_config import LossConfig, ModelConfig
from negforge.trainer.shine_losses import coarse_ranking_loss, fine_ranking_loss
from negforge.trainer.span_utils import generalized_temporal_iou, span_cxw_to_xx

BATCH, CLIPS, V_DIM, TOKENS, T_DIM = 32, 75, 1024 + 2, 32, 512
EPOCH_SAMPLES = 8281


# ----------------------------------------------------------------------------- (a)
def loop_shine_loss(pos, hard, inbatch, window, valid, q=8, h1=1.0, h2=2.0,
                    margins=(0.25, 0.25, 0.25, 0.25)):
    """Eq. 1-4 one sample at a time, written as directly as possible."""
    intra_terms, inter_terms, fine_terms = [], [], []
    for b in range(pos.shape[0]):
        keep = valid[b].bool()
        inside_mask = window[b].bool()[keep]
        scores = pos[b][keep]
        inside, outside = scores[inside_mask], scores[~inside_mask]
        k = max(1, len(inside) // q)
        s_pos_plus = torch.sort(inside, descending=True).values[:k].mean()
        if len(outside) > 0:
            intra_terms.append(torch.clamp(h1 + outside.max() - s_pos_plus, min=0))
        else:
            intra_terms.append(torch.zeros(()))
        neg_inside = inbatch[b][keep][inside_mask]
        s_neg_plus = torch.sort(neg_inside, descending=True).values[:k].mean()
        inter_terms.append(torch.clamp(h2 + s_neg_plus - s_pos_plus, min=0))
        n = len(scores)
        teacher = torch.sigmoid(scores).detach()
        d = [-(inside_mask.float() * torch.log(torch.sigmoid(scores))).sum() / n]
        for i in range(3):
            d.append(-(teacher * torch.log(torch.sigmoid(hard[b, i][keep]))).sum() / n)
        d.append(-(teacher * torch.log(torch.sigmoid(inbatch[b][keep]))).sum() / n)
        fine_terms.append(sum(torch.clamp(margins[i] + d[i] - d[i + 1], min=0)
                              for i in range(4)))
    mean = lambda values: torch.stack(values).mean()  # noqa: E731
    return mean(intra_terms) + mean(inter_terms) + mean(fine_terms)


def vectorised_shine_loss(pos, hard, inbatch, window, valid):
    return (coarse_ranking_loss(pos, inbatch, window, valid)
            + fine_ranking_loss(pos, hard, inbatch, window, valid))


def median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_losses(repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(40, CLIPS + 1, (BATCH,), generator=generator)
    valid = (torch.arange(CLIPS)[None] < lengths[:, None]).float()
    starts = (torch.rand(BATCH, generator=generator) * 0.6 * lengths).long()
    widths = torch.randint(2, 25, (BATCH,), generator=generator)
    clip = torch.arange(CLIPS)[None]
    window = ((clip >= starts[:, None]) & (clip < starts[:, None] + widths[:, None])).float()
    window = window * valid
    pos = torch.randn(BATCH, CLIPS, generator=generator, dtype=torch.float64)
    hard = torch.randn(BATCH, 3, CLIPS, generator=generator, dtype=torch.float64)
    inbatch = torch.randn(BATCH, CLIPS, generator=generator, dtype=torch.float64)

    def run(fn):
        leaves = [t.clone().requires_grad_(True) for t in (pos, hard, inbatch)]
        loss = fn(leaves[0], leaves[1], leaves[2], window, valid)
        loss.backward()
        return loss.detach(), [leaf.grad for leaf in leaves]

    loop_value, loop_grads = run(loop_shine_loss)
    vec_value, vec_grads = run(vectorised_shine_loss)
    value_diff = abs(loop_value.item() - vec_value.item())
    grad_diff = max((a - b).abs().max().item() for a, b in zip(loop_grads, vec_grads,
                                                             strict=True))
    loop_s = median_time(lambda: run(loop_shine_loss), repeats, lambda: None)
    vec_s = median_time(lambda: run(vectorised_shine_loss), repeats, lambda: None)
    print(f"(a) L_cr + L_fr, B={BATCH}, T={CLIPS}, forward+backward, median of {repeats}")
    print(f"    per-sample loop : {loop_s * 1e3:9.3f} ms   value {loop_value.item():.8f}")
    print(f"    vectorised      : {vec_s * 1e3:9.3f} ms   value {vec_value.item():.8f}")
    print(f"    |value diff| {value_diff:.2e}, max |grad diff| {grad_diff:.2e} "
          f"({'OK' if max(value_diff, grad_diff) < 1e-5 else 'MISMATCH'} at 1e-5)")
    print(f"    speed-up {loop_s / vec_s:.1f}x (target >= 20x)")


# ----------------------------------------------------------------------------- (b), (c)
def synthetic_batch(device: torch.device, generator: torch.Generator, size: int = BATCH
                    ) -> dict[str, Any]:
    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    lengths = torch.randint(40, CLIPS + 1, (size,), generator=generator)
    video_mask = (torch.arange(CLIPS)[None] < lengths[:, None]).float()
    centres = torch.rand(size, generator=generator) * 0.6 + 0.2
    widths = torch.rand(size, generator=generator) * 0.3 + 0.05
    start = ((centres - widths / 2) * lengths).long()
    end = ((centres + widths / 2) * lengths).long().clamp(min=start + 1)
    clip = torch.arange(CLIPS)[None]
    saliency = ((clip >= start[:, None]) & (clip < end[:, None])).float()
    return {
        "video_feats": F.normalize(rand(size, CLIPS, V_DIM), dim=-1),
        "video_mask": video_mask.to(device),
        "text_feats": F.normalize(rand(size, TOKENS, T_DIM), dim=-1),
        "text_mask": torch.ones(size, TOKENS, device=device),
        "hard_neg_text_feats": F.normalize(rand(size, 3, TOKENS, T_DIM), dim=-1),
        "hard_neg_text_mask": torch.ones(size, 3, TOKENS, device=device),
        "inbatch_neg_index": ((torch.arange(size) + 1) % size).to(device),
        "targets": {
            "spans": [torch.stack((c, w))[None].to(device)
                      for c, w in zip(centres, widths, strict=True)],
            "saliency_labels": saliency.to(device),
            "saliency_pos_labels": torch.stack((start, end - 1), dim=1).to(device),
            "saliency_neg_labels": torch.stack(
                (torch.where(start > 0, 0, end), torch.where(end < lengths, lengths - 1, 0)),
                dim=1,
            ).to(device),
            "video_mask": video_mask.to(device),
            "hard_neg_valid": torch.ones(size, dtype=torch.bool, device=device),
        },
    }


class Stepper:
    """One optimisation step of QD-DETR with or without the SHINE query set."""

    def __init__(self, device: torch.device, backbone: str = "qd_detr"):
        torch.manual_seed(2018)
        self.model = build_model(ModelConfig(backbone=backbone, v_dim=V_DIM,
                                             t_dim=T_DIM)).to(device)
        self.base = build_criterion(LossConfig(shine={"enabled": False}), backbone).train()
        self.shine = build_criterion(LossConfig(), backbone).train()
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=1e-4)
        self.device = device

    def loss(self, batch: dict[str, Any], shine: bool) -> torch.Tensor:
        negatives = {"inbatch_neg_index": batch["inbatch_neg_index"]}
        if shine:
            negatives["hard_neg_text_feats"] = batch["hard_neg_text_feats"]
            negatives["hard_neg_text_mask"] = batch["hard_neg_text_mask"]
        out = self.model(batch["video_feats"], batch["video_mask"], batch["text_feats"],
                         batch["text_mask"], **negatives)
        criterion = self.shine if shine else self.base
        return criterion(out, batch["targets"])["loss"]

    def step(self, batch: dict[str, Any], shine: bool, bf16: bool = False) -> float:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = self.loss(batch, shine)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.1)
        self.optimiser.step()
        return float(loss.detach())


def count_flops(stepper: Stepper, batch: dict[str, Any], shine: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        stepper.loss(batch, shine).backward()
    stepper.optimiser.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def bench_steps(repeats: int, device: torch.device) -> None:
    stepper = Stepper(device)
    batch = synthetic_batch(device, torch.Generator().manual_seed(1))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stepper.step(batch, False)
    stepper.step(batch, True)
    base_times, shine_times = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        base_times.append(median_time(lambda: stepper.step(batch, False), 1, sync))
        shine_times.append(median_time(lambda: stepper.step(batch, True), 1, sync))
    base_s, shine_s = statistics.median(base_times), statistics.median(shine_times)
    base_flops = count_flops(stepper, batch, False)
    shine_flops = count_flops(stepper, batch, True)
    print(f"(b) QD-DETR train step on {device}, B={BATCH}, {CLIPS} clips x {V_DIM}, "
          f"{TOKENS} tokens x {T_DIM}, median of {repeats} interleaved steps")
    print(f"    base  (QD-DETR, its mismatched-query pass) : {base_s:8.3f} s   "
          f"{base_flops / 1e9:7.1f} GFLOP")
    print(f"    SHINE (+3 hard negatives, L_cr + L_fr)      : {shine_s:8.3f} s   "
          f"{shine_flops / 1e9:7.1f} GFLOP")
    print(f"    ratio: time {shine_s / base_s:.2f}x, FLOPs {shine_flops / base_flops:.2f}x "
          f"(target <= 1.8x)")
    print(f"    all steps (s): base {[round(t, 3) for t in base_times]}, "
          f"SHINE {[round(t, 3) for t in shine_times]}")


def bench_epoch(device: torch.device) -> None:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(3)
    pool = [synthetic_batch(device, generator) for _ in range(4)]
    last = EPOCH_SAMPLES % BATCH
    tail = synthetic_batch(device, generator, last) if last else None
    sizes = [BATCH] * (EPOCH_SAMPLES // BATCH) + ([last] if last else [])
    print(f"(c) one epoch of {EPOCH_SAMPLES} synthetic samples on {device} "
          f"(QD-DETR + SHINE, batch {BATCH}, {len(sizes)} steps)")
    for bf16 in (False, True):
        stepper = Stepper(device)
        stepper.step(pool[0], True, bf16)  # warm-up
        sync()
        start = time.perf_counter()
        loss = 0.0
        for index, size in enumerate(sizes):
            batch = pool[index % len(pool)] if size == BATCH else tail
            assert batch is not None
            loss = stepper.step(batch, True, bf16)
        sync()
        seconds = time.perf_counter() - start
        print(f"    {'bf16 autocast' if bf16 else 'fp32         '}: {seconds:8.2f} s, "
              f"{EPOCH_SAMPLES / seconds:9.1f} samples/s, last loss {loss:.3f}")


# ----------------------------------------------------------------------------- (d)
# negforge's previous hand-written Hungarian solver (before scipy's), kept here unchanged as
# the baseline of (d).
def _legacy_assign_rows_le_cols(cost: np.ndarray) -> np.ndarray:
    """Column assigned to each row of an (n, m) cost matrix with n <= m (minimum total)."""
    n_rows, n_cols = cost.shape
    # 1-based arrays; index 0 is the virtual start column of each augmenting path.
    row_potential = np.zeros(n_rows + 1)
    col_potential = np.zeros(n_cols + 1)
    row_of_col = np.zeros(n_cols + 1, dtype=np.int64)  # 0 = column free
    previous_col = np.zeros(n_cols + 1, dtype=np.int64)
    for row in range(1, n_rows + 1):
        row_of_col[0] = row
        current_col = 0
        min_slack = np.full(n_cols + 1, np.inf)
        visited = np.zeros(n_cols + 1, dtype=bool)
        while True:
            visited[current_col] = True
            current_row = row_of_col[current_col]
            free = ~visited[1:]
            reduced = cost[current_row - 1] - row_potential[current_row] - col_potential[1:]
            improve = free & (reduced < min_slack[1:])
            min_slack[1:][improve] = reduced[improve]
            previous_col[1:][improve] = current_col
            candidates = np.where(free, min_slack[1:], np.inf)
            next_col = int(np.argmin(candidates)) + 1
            delta = candidates[next_col - 1]
            # Shift potentials so the tight edges stay tight and the new edge becomes tight.
            row_potential[row_of_col[visited]] += delta
            col_potential[visited] -= delta
            min_slack[~visited] -= delta
            current_col = next_col
            if row_of_col[current_col] == 0:
                break
        # Augment along the alternating path back to the virtual column 0.
        while current_col != 0:
            back = previous_col[current_col]
            row_of_col[current_col] = row_of_col[back]
            current_col = back
    col_of_row = np.empty(n_rows, dtype=np.int64)
    for col in range(1, n_cols + 1):
        if row_of_col[col] != 0:
            col_of_row[row_of_col[col] - 1] = col - 1
    return col_of_row


def legacy_linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment for a rectangular (n, m) cost matrix.

    Same contract as ``scipy.optimize.linear_sum_assignment``: returns ``(rows, cols)`` with
    ``min(n, m)`` pairs, rows in increasing order, each row and column used at most once and
    the summed cost minimal. Raises ``ValueError`` on non-finite costs.
    """
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"cost matrix must be 2-d, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("cost matrix contains NaN or infinite entries")
    n_rows, n_cols = matrix.shape
    if n_rows == 0 or n_cols == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    if n_rows <= n_cols:
        return np.arange(n_rows, dtype=np.int64), _legacy_assign_rows_le_cols(matrix)
    row_of_col = _legacy_assign_rows_le_cols(matrix.T)
    order = np.argsort(row_of_col)
    return row_of_col[order], np.arange(n_cols, dtype=np.int64)[order]


def bench_matcher(repeats: int) -> None:
    generator = torch.Generator().manual_seed(4)
    queries = 10
    logits = torch.randn(BATCH, queries, 2, generator=generator)
    spans = torch.sigmoid(torch.randn(BATCH, queries, 2, generator=generator))
    targets = [torch.rand(int(n), 2, generator=generator) * 0.4 + 0.1
               for n in torch.randint(1, 6, (BATCH,), generator=generator)]
    # The per-video cost blocks the matcher solves: 10 L1 - gIoU - 4 p_fg, as its forward.
    flat, all_targets = spans.flatten(0, 1), torch.cat(targets)
    cost = (10 * torch.cdist(flat, all_targets, p=1)
            - generalized_temporal_iou(span_cxw_to_xx(flat), span_cxw_to_xx(all_targets))
            - 4 * logits.flatten(0, 1).softmax(-1)[:, :1])
    split = cost.view(BATCH, queries, -1).split([len(t) for t in targets], -1)
    blocks = [split[row][row].numpy() for row in range(BATCH)]
    for block in blocks:
        mine, theirs = legacy_linear_sum_assignment(block), linear_sum_assignment(block)
        assert abs(block[mine].sum() - block[theirs].sum()) < 1e-9

    def solve(solver) -> None:
        for block in blocks:
            solver(block)

    legacy_s, scipy_s, legacy_full, scipy_full = [], [], [], []
    matcher = matcher_module.HungarianMatcher()
    for _ in range(repeats):  # alternating, so load changes hit both alike
        legacy_s.append(median_time(lambda: solve(legacy_linear_sum_assignment), 1, lambda: None))
        scipy_s.append(median_time(lambda: solve(linear_sum_assignment), 1, lambda: None))
        matcher_module.linear_sum_assignment = legacy_linear_sum_assignment  # type: ignore
        legacy_full.append(median_time(lambda: matcher(logits, spans, targets), 1, lambda: None))
        matcher_module.linear_sum_assignment = linear_sum_assignment
        scipy_full.append(median_time(lambda: matcher(logits, spans, targets), 1, lambda: None))
    legacy, scipy_time = statistics.median(legacy_s), statistics.median(scipy_s)
    full_legacy, full_scipy = statistics.median(legacy_full), statistics.median(scipy_full)
    print(f"(d) Hungarian matching, B={BATCH}, {queries} queries, 1-5 windows, median of "
          f"{repeats} alternating runs (same minimum costs)")
    print(f"    solver only : hand-written {legacy * 1e3:8.3f} ms, scipy {scipy_time * 1e3:8.3f} ms"
          f"  -> {legacy / scipy_time:.1f}x")
    print(f"    matcher call: hand-written {full_legacy * 1e3:8.3f} ms, scipy "
          f"{full_scipy * 1e3:8.3f} ms  -> {full_legacy / full_scipy:.1f}x "
          f"(per train step x dec_layers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps of (b)")
    parser.add_argument("--loss-repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for (b) and (c) (0: torch's default)")
    parser.add_argument("--loss-threads", type=int, default=1,
                        help="torch CPU threads for (a): tiny tensors, per-op overhead")
    parser.add_argument("--epoch", action="store_true", help="(c): one synthetic epoch")
    parser.add_argument("--skip-steps", action="store_true", help="skip (b)")
    parser.add_argument("--matcher-repeats", type=int, default=50, help="runs of (d)")
    args = parser.parse_args()
    default_threads = args.threads or torch.get_num_threads()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}")
    torch.set_num_threads(args.loss_threads)
    print(f"[{torch.get_num_threads()} CPU thread(s)]")
    bench_losses(args.loss_repeats)
    bench_matcher(args.matcher_repeats)
    torch.set_num_threads(default_threads)
    print(f"[{torch.get_num_threads()} CPU thread(s)]")
    if not args.skip_steps:
        bench_steps(args.repeats, device)
    if args.epoch:
        bench_epoch(device)


if __name__ == "__main__":
    main()
