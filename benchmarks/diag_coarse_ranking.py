"""Why does L_cr hurt QD-DETR? Loss scale, gradient share and saliency scale over training.

Trains a base run and a SHINE run (same seed) on a synth benchmark and, after epochs 0 (init),
E1, E2, ..., measures on fixed training batches:

* every loss part's value (L_base parts, L_intra, L_inter, L_fr);
* the gradient norm each part puts on the *shared* parameters (input projections, text-to-
  video layers, encoder: everything the span head and the saliency head both read), and
  the cosine between the L_cr gradient and the span losses' gradient there;
* the share of the update the span losses keep after gradient clipping (``grad_clip``);
* the saliency scale: S_p^+ (top-k in the window), S_p^- (max outside), S_n^+ (in-batch
  negative in the window), and the share of rows whose L_intra / L_inter hinge is active.

    .venv/bin/python benchmarks/diag_coarse_ranking.py --bench outputs/synth --epochs 2,6,12,20

Prints one table per run; ``--json OUT`` also writes the figures. ``--checkpoint LABEL=CKPT``
(repeatable) measures existing checkpoints instead (e.g. a sweep's trials), on the batches of
the benchmark they were trained on; ``--init`` adds an untrained model of the same seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from negforge.trainer.base_losses import build_criterion
from negforge.trainer.checkpoints import read_checkpoint
from negforge.trainer.config import build_config
from negforge.trainer.dataset import Collator
from negforge.trainer.run import train
from negforge.trainer.run_data import load_run_data
from negforge.trainer.shine_losses import coarse_ranking_terms, topk_window_mean

SPAN_PARTS = ("loss_span", "loss_giou", "loss_label")
NOT_SHARED = ("decoder", "class_head", "anchors", "span_head", "saliency_")


def use_neg_pair_clip_mean() -> None:
    """Emulate negforge's normalisation of QD-DETR's mismatched-query loss before the trainer-
    parity merge: -log(1 - sigma(s_neg)) averaged over a row's valid clips, then over rows
    (the released code and negforge today sum over the clips). Patched in this process only."""
    import torch.nn.functional as F

    from negforge.trainer import base_losses

    def clip_mean(neg_scores, valid_mask, rows=None):
        valid = valid_mask.to(neg_scores.dtype)
        per_row = (F.softplus(neg_scores) * valid).sum(1) / valid.sum(1).clamp(min=1)
        eligible = valid_mask.to(torch.bool).any(dim=1)
        if rows is not None:
            eligible = eligible & rows.to(torch.bool)
        total = torch.where(eligible, per_row, torch.zeros_like(per_row)).sum()
        return total / eligible.sum().clamp(min=1).to(per_row.dtype)

    base_losses.mismatched_query_loss = clip_mean


def shared_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [
        p
        for name, p in model.named_parameters()
        if p.requires_grad and not any(part in name for part in NOT_SHARED)
    ]


def flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, params, strict=True)
        ]
    )


def measure(model, criterion, run_criterion, batches, cfg) -> dict[str, float]:
    """Mean over ``batches`` of the figures in the module docstring (``criterion`` computes
    every SHINE part; ``run_criterion`` is the objective the run trains on)."""
    model.train()
    criterion.train()
    run_criterion.train()
    weights = {
        "loss_span": cfg.loss.span_l1,
        "loss_giou": cfg.loss.giou,
        "loss_label": cfg.loss.cls,
    }
    sums: dict[str, float] = {}
    shared = shared_parameters(model)
    everything = [p for p in model.parameters() if p.requires_grad]
    shine = cfg.loss.shine
    for batch in batches:
        torch.manual_seed(0)
        out = model(**batch.model_inputs(hard_negatives=True, inbatch=True))
        targets = batch.targets()
        losses = criterion(out, targets)
        window, valid = targets["saliency_labels"], targets["video_mask"]
        pos = out["saliency_scores"].float()
        neg = out["saliency_scores_inbatch_neg"].float()
        terms = coarse_ranking_terms(
            pos, neg, window, valid, q=shine.q, h1=shine.h1, h2=shine.h2,
            inbatch_row_mask=out["inbatch_neg_valid"],
        )  # fmt: skip
        span = sum(weights[k] * losses[k] for k in SPAN_PARTS)
        cr = terms.intra + terms.inter
        g_span = flat_grad(span, shared)
        g_cr = flat_grad(cr, shared)
        g_inter = flat_grad(terms.inter, shared)
        fine = losses.get("loss_fr")
        g_fr = flat_grad(fine, shared) if fine is not None else torch.zeros_like(g_span)
        base_sal = sum(v for k, v in losses.items() if k.startswith("loss_saliency"))
        g_sal = flat_grad(base_sal, shared)
        g_total = flat_grad(run_criterion(out, targets)["loss"], everything)
        total_norm = float(g_total.norm())
        clip = cfg.optim.grad_clip
        scale = min(1.0, clip / total_norm) if clip > 0 and total_norm > 0 else 1.0
        inside = window.bool() & valid.bool()
        outside = valid.bool() & ~inside
        s_plus = topk_window_mean(pos, inside, shine.q)
        s_minus = torch.where(outside, pos, torch.full_like(pos, -math.inf)).max(1).values
        n_plus = topk_window_mean(neg, inside, shine.q)
        figures = {
            "loss": float(losses["loss"].detach()),
            "span_parts": float(span),
            "loss_intra": float(terms.intra),
            "loss_inter": float(terms.inter),
            "loss_fr": float(losses.get("loss_fr", torch.tensor(float("nan")))),
            "base_saliency": float(base_sal),
            "|g_span|": float(g_span.norm()),
            "|g_cr|": float(g_cr.norm()),
            "|g_inter|": float(g_inter.norm()),
            "|g_fr|": float(g_fr.norm()),
            "|g_base_saliency|": float(g_sal.norm()),
            "cos(g_cr,g_span)": float(torch.nn.functional.cosine_similarity(g_cr, g_span, dim=0)),
            "|g_total|": total_norm,
            "clip_scale": scale,
            "S_p+": float(s_plus.mean()),
            "S_p-": float(s_minus.mean()),
            "S_n+": float(n_plus.mean()),
            "|S| (all)": float(pos[valid.bool()].abs().mean()),
            "intra_active": float((shine.h1 + s_minus - s_plus > 0).float().mean()),
            "inter_active": float((shine.h2 + n_plus - s_plus > 0).float().mean()),
        }
        for key, value in figures.items():
            sums[key] = sums.get(key, 0.0) + value / len(batches)
    return sums


def fixed_batches(cfg, count: int) -> list[Any]:
    data = load_run_data(cfg)
    collator = Collator(cfg.seed, levels=data.train.levels)
    items = [data.train[i] for i in range(min(len(data.train), count * 32))]
    return [collator(items[i : i + 32]) for i in range(0, len(items), 32)]


def run(bench: Path, label: str, overrides: dict[str, Any], epochs: list[int], seed: int,
        batches: int, keep: Path | None = None) -> list[dict[str, float]]:  # fmt: skip
    from negforge.trainer.backbones import build_model

    settings = {**overrides, "seed": seed, "progress": False, "cpu_threads": 1}
    measure_cfg = build_config(
        yaml_path=bench / "train_config.yaml", overrides={**settings, "loss.shine.enabled": True}
    )
    fixed = fixed_batches(measure_cfg, batches)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = (keep or Path(tmp)) / label
        for index, epoch in enumerate(epochs):
            if epoch == 0:
                data = load_run_data(measure_cfg)
                v_dim, t_dim = data.v_dim, data.t_dim
                torch.manual_seed(seed)
                model = build_model(measure_cfg.model.resolve(v_dim, t_dim))
            else:
                cfg = build_config(
                    yaml_path=bench / "train_config.yaml",
                    overrides={**settings, "optim.epochs": epoch},
                )
                train(cfg, run_dir, resume=index > 0 and epochs[index - 1] > 0)
                state = read_checkpoint(run_dir / "checkpoints" / "last.pt")
                model = build_model(measure_cfg.model.resolve(
                    state["config"]["model"]["v_dim"], state["config"]["model"]["t_dim"]
                ))  # fmt: skip
                model.load_state_dict(state["model"])
            criterion = build_criterion(measure_cfg.loss, measure_cfg.model.backbone)
            run_cfg = build_config(yaml_path=bench / "train_config.yaml", overrides=settings)
            run_criterion = build_criterion(run_cfg.loss, run_cfg.model.backbone)
            figures = measure(model, criterion, run_criterion, fixed, measure_cfg)
            figures["epoch"] = epoch
            rows.append(figures)
    return rows


def measure_checkpoints(args: argparse.Namespace) -> int:
    """Figures of existing checkpoints (their own config, with every SHINE part computed)."""
    from negforge.trainer.backbones import build_model
    from negforge.trainer.config import TrainConfig

    rows: dict[str, dict[str, float]] = {}
    for item in args.checkpoint:
        label, _, path = item.partition("=")
        state = read_checkpoint(path)
        run_cfg = TrainConfig.model_validate(state["config"])
        measure_cfg = run_cfg.model_copy(
            update={
                "loss": run_cfg.loss.model_copy(
                    update={"shine": run_cfg.loss.shine.model_copy(update={"enabled": True})}
                )
            }
        )
        batches = fixed_batches(measure_cfg, args.batches)
        model = build_model(measure_cfg.model.resolve(run_cfg.model.v_dim, run_cfg.model.t_dim))
        criterion = build_criterion(measure_cfg.loss, run_cfg.model.backbone)
        run_criterion = build_criterion(run_cfg.loss, run_cfg.model.backbone)
        if args.init and not rows:
            torch.manual_seed(run_cfg.seed)
            fresh = build_model(measure_cfg.model.resolve(run_cfg.model.v_dim, run_cfg.model.t_dim))
            rows["init"] = measure(fresh, criterion, criterion, batches, measure_cfg)
        model.load_state_dict(state["model"])
        rows[label] = measure(model, criterion, run_criterion, batches, measure_cfg)
    keys = list(next(iter(rows.values())))
    print("| figure | " + " | ".join(rows) + " |")
    print("| --- | " + " | ".join("---" for _ in rows) + " |")
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{r[key]:.4g}" for r in rows.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def landing(bench: Path, run_dirs: list[str], split: str) -> None:
    """Where each run's top-1 window lands on a synth split: the anchor (IoU >= 0.5), a
    distractor sharing the verb / the noun, elsewhere; and its width against the truth."""
    videos = {
        v["vid"]: v for v in map(json.loads, (bench / "videos.jsonl").read_text().splitlines())
    }
    print(f"| run ({split}) | anchor | verb twin | noun twin | elsewhere | width pred/gt |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run_dir in run_dirs:
        counts = {"anchor": 0, "verb": 0, "noun": 0, "else": 0}
        ratios = []
        path = Path(run_dir) / "predictions" / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            start, end = row["pred_relevant_windows"][0][:2]
            events = videos[row["vid"]]["events"]

            def iou(event: list, start: float = start, end: float = end) -> float:
                inter = max(0.0, min(end, event[3]) - max(start, event[2]))
                return inter / (max(end, event[3]) - min(start, event[2]))

            best = max(range(len(events)), key=lambda i: iou(events[i]))
            anchor = events[0]
            if best == 0 and iou(anchor) >= 0.5:
                counts["anchor"] += 1
            elif best > 0 and iou(events[best]) >= 0.5 and events[best][0] == anchor[0]:
                counts["verb"] += 1
            elif best > 0 and iou(events[best]) >= 0.5 and events[best][1] == anchor[1]:
                counts["noun"] += 1
            else:
                counts["else"] += 1
            ratios.append((end - start) / (anchor[3] - anchor[2]))
        share = {k: 100 * v / len(rows) for k, v in counts.items()}
        median = sorted(ratios)[len(ratios) // 2]
        print(
            f"| {run_dir} | {share['anchor']:.0f} % | {share['verb']:.0f} % | "
            f"{share['noun']:.0f} % | {share['else']:.0f} % | {median:.2f} |"
        )


def print_table(label: str, rows: list[dict[str, float]]) -> None:
    keys = [k for k in rows[0] if k != "epoch"]
    print(f"\n## {label}\n")
    print("| figure | " + " | ".join(f"epoch {int(r['epoch'])}" for r in rows) + " |")
    print("| --- | " + " | ".join("---" for _ in rows) + " |")
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{r[key]:.4g}" for r in rows) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("outputs/synth"))
    parser.add_argument("--epochs", default="0,2,6,12,20")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--backbone", default="qd_detr")
    parser.add_argument(
        "--variant",
        action="append",
        help="LABEL:key=value,key=value (default: base and shine)",
    )
    parser.add_argument("--checkpoint", action="append", help="LABEL=PATH of a .pt to measure")
    parser.add_argument("--init", action="store_true", help="with --checkpoint: also at init")
    parser.add_argument(
        "--neg-pair-clip-mean",
        action="store_true",
        help="average QD-DETR's mismatched-query loss over clips (negforge before the parity "
        "merge) instead of summing it (the released code, negforge today)",
    )
    parser.add_argument("--keep", type=Path, help="keep the trained runs in this folder")
    parser.add_argument("--landing", nargs="+", help="run folders: where top-1 windows land")
    parser.add_argument("--split", default="novel_composition")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.landing:
        landing(args.bench, args.landing, args.split)
        return 0
    if args.neg_pair_clip_mean:
        use_neg_pair_clip_mean()
    if args.checkpoint:
        return measure_checkpoints(args)
    epochs = [int(e) for e in args.epochs.split(",")]
    variants: dict[str, dict[str, Any]] = {
        "base": {"loss.shine.enabled": False},
        "shine": {},
    }
    if args.variant:
        variants = {}
        for text in args.variant:
            label, _, rest = text.partition(":")
            settings = {}
            for item in filter(None, rest.split(",")):
                key, _, value = item.partition("=")
                settings[key] = json.loads(value)
            variants[label] = settings
    results = {}
    for label, overrides in variants.items():
        overrides = {"model.backbone": args.backbone, **overrides}
        results[label] = run(
            args.bench, label, overrides, epochs, args.seed, args.batches, args.keep
        )
        print_table(f"{label} ({args.backbone}, seed {args.seed})", results[label])
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
