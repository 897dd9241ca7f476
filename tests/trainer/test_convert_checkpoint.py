"""An original checkpoint, converted, runs through ``negforge eval`` and predicts what the
original model's own inference predicts on the same features.

The originals' layouts are written to disk: two video feature folders of ``{vid}.npz``
(key ``features``, lengths that differ by a clip and videos longer than ``max_v_l``),
``qid{qid}.npz`` text features of varying length, a QVHighlights-style jsonl (integer qids,
``relevant_clip_ids``, ``saliency_scores``). The original model is saved as its
``train.py`` saves it and run through its ``compute_mr_results`` (dataset, collate,
post-processing and all); the same checkpoint goes through ``negforge convert-checkpoint``
and ``negforge eval``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.cli import run_cli
from tests.support.reference import original_args, reference_root, reference_tree

VIDEO_DIMS = (6, 4)
TEXT_DIM = 8
BATCH = 4


@pytest.fixture(scope="module")
def root():
    return reference_root()


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict:
    """Features and ground truth in the originals' layouts."""
    base = tmp_path_factory.mktemp("original_layout")
    rng = np.random.default_rng(0)
    video_dirs = [base / "slowfast_features", base / "clip_features"]
    text_dir = base / "clip_text_features"
    for folder in (*video_dirs, text_dir):
        folder.mkdir()
    rows = []
    clips_per_video = {"vidA": 75, "vidB": 40, "vidC": 80, "vidD": 61}
    for index in range(10):
        vid = list(clips_per_video)[index % 4]
        clips = clips_per_video[vid]
        duration = 2.0 * clips
        start = float(2 * rng.integers(0, clips // 2))
        end = min(duration, start + float(2 * rng.integers(1, 10)))
        ids = list(range(int(start // 2), int(end // 2)))
        rows.append(
            {
                "qid": 1000 + index,
                "query": f"someone does thing {index}.",
                "duration": duration,
                "vid": vid,
                "relevant_windows": [[start, end]],
                "relevant_clip_ids": ids,
                "saliency_scores": [[int(v) for v in rng.integers(0, 5, 3)] for _ in ids],
            }
        )
        tokens = int(rng.integers(4, 14))
        np.savez(text_dir / f"qid{1000 + index}.npz",
                 last_hidden_state=rng.normal(size=(tokens, TEXT_DIM)).astype(np.float32))
    for vid, clips in clips_per_video.items():
        for folder, dim, extra in zip(video_dirs, VIDEO_DIMS, (1, 0), strict=True):
            features = rng.normal(size=(clips + extra, dim)).astype(np.float32)
            np.savez(folder / f"{vid}.npz", features=features)
    gt = base / "highlight_val_release.jsonl"
    gt.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"base": base, "video_dirs": video_dirs, "text_dir": text_dir, "gt": gt}


def options(layout: dict) -> argparse.Namespace:
    args = original_args(
        v_feat_dim=sum(VIDEO_DIMS) + 2,
        t_feat_dim=TEXT_DIM,
        v_feat_dirs=[str(p) for p in layout["video_dirs"]],
        t_feat_dir=str(layout["text_dir"]),
        dim_feedforward=256, n_epoch=200, bsz=32, lr=1e-4, wd=1e-4, lr_drop=400, grad_clip=0.1,
        no_norm_vfeat=False, no_norm_tfeat=False,
    )
    return args  # type: ignore[return-value]


def save_original(ref, tree: str, layout: dict, ckpt: Path) -> torch.nn.Module:
    """An untrained original model, moved off its structured initialisation (zero last
    layers), saved as its train.py saves checkpoints."""
    args = options(layout)
    torch.manual_seed(0)
    model, _ = ref.load(f"{tree}.model").build_model(args)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    saved = argparse.Namespace(**{**vars(args), "device": torch.device("cpu")})
    optimizer = {"state": {0: {"step": torch.tensor(7.0)}}, "param_groups": [{"lr": args.lr}]}
    torch.save({"model": model.state_dict(), "optimizer": optimizer, "epoch": 7, "opt": saved},
               ckpt)
    return model


def original_run(root, tree: str, layout: dict, ckpt: Path) -> list[dict]:
    """Save the original model as train.py does and run its own inference."""
    args = options(layout)
    with reference_tree(root, tree) as ref:
        model = save_original(ref, tree, layout, ckpt)
        inference = ref.load(f"{tree}.inference")
        data = ref.load(f"{tree}.start_end_dataset")
        extra = {"dset_domain": None} if tree == "qd_detr" else {}
        dataset = data.StartEndDataset(
            dset_name="hl", data_path=str(layout["gt"]), v_feat_dirs=args.v_feat_dirs,
            q_feat_dir=args.t_feat_dir, q_feat_type="last_hidden_state", max_q_l=args.max_q_l,
            max_v_l=args.max_v_l, ctx_mode=args.ctx_mode, data_ratio=1.0, normalize_v=True,
            normalize_t=True, clip_len=args.clip_length, max_windows=5, load_labels=False,
            span_loss_type="l1", txt_drop_ratio=0, **extra,
        )
        loader = torch.utils.data.DataLoader(
            dataset, collate_fn=data.start_end_collate, batch_size=BATCH, shuffle=False
        )
        run_opt = argparse.Namespace(device=torch.device("cpu"), pin_memory=False,
                                     span_loss_type="l1", no_sort_results=False, debug=False,
                                     a_feat_dir=None, max_v_l=args.max_v_l, clip_length=2)
        with torch.no_grad():
            predictions, _ = inference.compute_mr_results(model.eval(), loader, run_opt)
    return predictions


@pytest.mark.parametrize(
    ("tree", "backbone", "extra"),
    [("moment_detr", "moment_detr", []), ("qd_detr", "qd_detr", ["--t2v-mask", "head_major"])],
)
def test_converted_checkpoint_predicts_what_the_original_predicts(
    root, layout, tmp_path, monkeypatch, capsys, tree, backbone, extra
):
    ckpt = tmp_path / "model_best.ckpt"
    expected = original_run(root, tree, layout, ckpt)
    capsys.readouterr()  # the original's progress bars
    converted = tmp_path / "converted.pt"
    code, _, err = run_cli(monkeypatch, capsys, "convert-checkpoint", ckpt, "--backbone",
                           backbone, "-o", converted, *extra)
    assert code == 0, err
    # Feature folders come from the checkpoint's opt (v_feat_dirs, t_feat_dir).
    code, _, err = run_cli(monkeypatch, capsys, "eval", converted, "--eval", layout["gt"],
                           "--device", "cpu", "--batch-size", BATCH, "-o", tmp_path / "eval")
    assert code == 0, err
    lines = (tmp_path / "eval" / "predictions" / "highlight_val_release.jsonl").read_text()
    ours = [json.loads(line) for line in lines.splitlines()]
    assert len(ours) == len(expected) == 10
    worst_score = worst_saliency = 0.0
    for mine, theirs in zip(ours, expected, strict=True):
        for key in ("qid", "query", "vid"):
            assert mine[key] == theirs[key], key
        assert isinstance(mine["qid"], int)
        mine_windows = np.asarray(mine["pred_relevant_windows"])
        their_windows = np.asarray(theirs["pred_relevant_windows"])
        np.testing.assert_array_equal(mine_windows[:, :2], their_windows[:, :2])
        worst_score = max(worst_score, float(np.abs(mine_windows[:, 2] - their_windows[:, 2])
                                             .max()))
        assert len(mine["pred_saliency_scores"]) == len(theirs["pred_saliency_scores"])
        worst_saliency = max(worst_saliency, float(np.abs(
            np.asarray(mine["pred_saliency_scores"]) - np.asarray(theirs["pred_saliency_scores"])
        ).max()))
    print(f"\n[{tree}] windows identical; max |score diff| {worst_score:.1e} (4 decimals), "
          f"max |saliency diff| {worst_saliency:.1e} (float16)")
    assert worst_score <= 1e-4 + 1e-9  # at most one unit of the 4th decimal
    assert worst_saliency <= 2e-3
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "MR-full-mAP" in metrics["highlight_val_release"]["brief"]
    if backbone == "qd_detr":  # plot-saliency takes converted checkpoints too
        code, _, err = run_cli(monkeypatch, capsys, "plot-saliency", converted, "--split",
                               layout["gt"], "--n", 2, "-o", tmp_path / "saliency.png")
        assert code == 0, err
        assert (tmp_path / "saliency.png").read_bytes()[:4] == b"\x89PNG"


def test_conversion_errors_name_file_and_field(root, layout, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "model_best.ckpt"
    with reference_tree(root, "moment_detr") as ref:
        save_original(ref, "moment_detr", layout, ckpt)
    code, _, err = run_cli(monkeypatch, capsys, "convert-checkpoint", ckpt, "--backbone",
                           "qd_detr", "-o", tmp_path / "x.pt")
    assert code == 2 and str(ckpt) in err and "moment_detr checkpoint" in err
    assert "field 'model.saliency_proj.weight'" in err and "\n" not in err.strip()
    state = torch.load(ckpt, weights_only=False)
    state["model"]["extra_head.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.ckpt")
    code, _, err = run_cli(monkeypatch, capsys, "convert-checkpoint", tmp_path / "extra.ckpt",
                           "--backbone", "moment_detr", "-o", tmp_path / "x.pt")
    assert code == 2 and "field 'model.extra_head.weight'" in err and "no place for" in err
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(monkeypatch, capsys, "convert-checkpoint", tmp_path / "junk.ckpt",
                           "--backbone", "moment_detr", "-o", tmp_path / "x.pt")
    assert code == 2 and "not a readable torch checkpoint" in err
    code, _, err = run_cli(monkeypatch, capsys, "eval", ckpt, "--eval", layout["gt"])
    assert code == 2 and "convert-checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()


def test_shine_options_become_negforge_settings(tmp_path):
    """A SHINE ``opt`` (ActivityNet-CG, anchored fine ranking, no hinge) maps onto negforge."""
    from negforge.trainer.config import TrainConfig
    from negforge.trainer.convert import train_config_from_options

    opt = original_args(
        shine=True, dset_name="anet", ranking_type="abd", max_v_l=-1, coarse_coef=0.5,
        fine_margin=[0.1, 0.2, 0.3, 0.4], coarse_margin=[1.0, 3.0], enc_layers=3, dec_layers=3,
        clip_length=1, max_q_l=50, saliency_margin=1.0,
    )
    cfg = TrainConfig.model_validate(
        train_config_from_options(vars(opt), "qd_detr", tmp_path / "shine.ckpt")
    )
    shine = cfg.loss.shine
    assert shine.enabled and shine.fine_ranking == "anchored" and shine.alpha == 0.5
    assert shine.margins == (0.1, 0.2, 0.3, 0.4) and (shine.h1, shine.h2) == (1.0, 3.0)
    assert shine.intra_replaces_base_saliency  # SHINE without --use_saliency_loss
    assert cfg.model.max_v_len is None and cfg.model.text_to_video_layers == 3
    assert cfg.postprocess == "none" and cfg.data.clip_len == 1.0 and not cfg.bf16
    assert cfg.loss.saliency_margin == 1.0 and cfg.model.max_q_len == 50
    plain = TrainConfig.model_validate(
        train_config_from_options(vars(original_args()), "qd_detr", tmp_path / "qd.ckpt")
    )
    assert not plain.loss.shine.enabled and plain.postprocess == "round_to_clips"
    assert plain.model.max_v_len == 75 and plain.data.use_tef
