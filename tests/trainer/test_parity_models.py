"""negforge's Moment-DETR / QD-DETR / SHINE forward equals the authors' models.

Each original is built from ../shared/reference_code at the paper's settings (hidden 256,
8 heads, feed-forward 1024, 2 + 2 layers, 10 queries, I3D + tef video, CLIP text), its
``state_dict`` goes through the checkpoint converter, and both run in eval mode on the same
random batch with mixed video and text padding. Run with ``-s`` to see the differences.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from negforge.trainer.backbones import GroundingModel, build_model
from negforge.trainer.convert import convert_state_dict, rename_key
from negforge.trainer.model_config import ModelConfig
from tests.support.reference import original_args, reference_root, reference_tree
from tests.support.trainer_inputs import single_thread  # noqa: F401 - fixture

B, L, N, DV, DT = 4, 12, 8, 1026, 512
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def root():
    return reference_root()


def build_original(root, tree: str) -> torch.nn.Module:
    with reference_tree(root, tree) as ref:
        module = ref.load(f"{tree}.model")
        torch.manual_seed(0)
        model, _ = module.build_model(original_args(shine=tree == "shine"))
    return model.eval()


def converted(original: torch.nn.Module, backbone: str, **overrides: Any) -> GroundingModel:
    cfg = ModelConfig(backbone=backbone, v_dim=DV, t_dim=DT, **overrides)
    model = build_model(cfg)
    model.load_state_dict(convert_state_dict(original.state_dict(), backbone, model.state_dict()))
    return model.eval()


def make_batch(text_padding: bool = True) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    video_mask = torch.ones(B, L)
    video_mask[1, 9:] = 0
    video_mask[3, 5:] = 0
    text_mask = torch.ones(B, N)
    hard_mask = torch.ones(3, B, N)  # SHINE's layout: negative-major
    if text_padding:
        text_mask[1, 5:] = 0
        text_mask[2, 3:] = 0
        hard_mask[0, 0, 6:] = 0
        hard_mask[1, 2, 2:] = 0
        hard_mask[2, 3, 4:] = 0
    return {
        "video": torch.randn(B, L, DV, generator=generator),
        "video_mask": video_mask,
        "text": torch.randn(B, N, DT, generator=generator),
        "text_mask": text_mask,
        "hard": torch.randn(3, B, N, DT, generator=generator),
        "hard_mask": hard_mask,
    }


def ours_forward(model: GroundingModel, batch: dict, *, negatives: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if negatives:
        # The originals' mismatched query is the next row's (torch.roll by one).
        kwargs["inbatch_neg_index"] = (torch.arange(B) + 1) % B
        kwargs["hard_neg_text_feats"] = batch["hard"].transpose(0, 1)
        kwargs["hard_neg_text_mask"] = batch["hard_mask"].transpose(0, 1)
    return model(batch["video"], batch["video_mask"], batch["text"], batch["text_mask"], **kwargs)


def differences(original: dict, ours: dict, video_mask: torch.Tensor) -> dict[str, float]:
    """Max |difference| per output tensor (saliency at valid clips only)."""
    valid = video_mask.bool()
    found = {
        "pred_logits": (original["pred_logits"] - ours["pred_logits"]).abs().max().item(),
        "pred_spans": (original["pred_spans"] - ours["pred_spans"]).abs().max().item(),
        "saliency_scores": (original["saliency_scores"] - ours["saliency_scores"])[valid]
        .abs()
        .max()
        .item(),
    }
    for i, aux in enumerate(original["aux_outputs"]):
        for key in ("pred_logits", "pred_spans"):
            found[f"aux{i}.{key}"] = (aux[key] - ours["aux_outputs"][i][key]).abs().max().item()
    if "saliency_scores_neg" in original:
        neg = original["saliency_scores_neg"] - ours["saliency_scores_inbatch_neg"]
        found["saliency_scores_neg"] = neg[valid].abs().max().item()
    if "saliency_scores_hn" in original:
        hard = original["saliency_scores_hn"].reshape(3, B, L).transpose(0, 1)
        diff = (hard - ours["saliency_scores_hard_neg"])[valid[:, None].expand(-1, 3, -1)]
        found["saliency_scores_hard_neg"] = diff.abs().max().item()
    return found


def report(name: str, found: dict[str, float]) -> None:
    print(f"\n[{name}] max |original - negforge|")
    for key, value in found.items():
        print(f"  {key:28s} {value:.2e}")


@pytest.mark.parametrize(
    ("tree", "backbone", "overrides"),
    [
        ("moment_detr", "moment_detr", {}),
        ("qd_detr", "qd_detr", {"t2v_mask": "head_major"}),
        ("shine", "qd_detr", {"t2v_mask": "head_major"}),
    ],
)
def test_forward_equals_the_original(root, tree, backbone, overrides):
    """Outputs (and QD-DETR's mismatched-query / SHINE's hard-negative saliency) within 1e-5,
    with the original's head-major text-to-video mask switched on for the comparison."""
    original = build_original(root, tree)
    ours = converted(original, backbone, **overrides)
    count = sum(p.numel() for p in original.parameters())
    assert count == sum(p.numel() for p in ours.parameters())
    print(f"\n[{tree}] parameters: original {count:,}, negforge {count:,}")
    batch = make_batch()
    with torch.no_grad():
        if tree == "shine":
            original.training = True  # its hard-negative pass runs in training mode only;
            # every submodule (dropout) stays in eval mode
            out = original(
                batch["text"], batch["text_mask"], batch["video"], batch["video_mask"],
                src_hn_txt=batch["hard"], src_hn_txt_mask=batch["hard_mask"],
            )
        else:
            out = original(batch["text"], batch["text_mask"], batch["video"], batch["video_mask"])
        if tree == "moment_detr":
            # Moment-DETR has no negative pass of its own: a negative's saliency is the
            # original's saliency with that text as the query.
            roll = (torch.arange(B) + 1) % B
            out["saliency_scores_neg"] = original(
                batch["text"][roll], batch["text_mask"][roll], batch["video"], batch["video_mask"]
            )["saliency_scores"]
            out["saliency_scores_hn"] = torch.cat([
                original(batch["hard"][i], batch["hard_mask"][i], batch["video"],
                         batch["video_mask"])["saliency_scores"]
                for i in range(3)
            ])
        mine = ours_forward(ours, batch, negatives=True)
    found = differences(out, mine, batch["video_mask"])
    report(tree, found)
    expected = {"pred_logits", "pred_spans", "saliency_scores", "saliency_scores_neg"}
    assert expected <= set(found)
    if tree != "qd_detr":
        assert "saliency_scores_hard_neg" in found
    assert max(found.values()) < TOLERANCE, found


def test_qd_detr_default_mask_differs_only_through_the_defect(root):
    """batch_major (default) equals the original when no text is padded; with mixed text
    padding the original's head-major layout gives other rows' masks to some heads."""
    original = build_original(root, "qd_detr")
    ours = converted(original, "qd_detr")
    assert ours.cfg.t2v_mask == "batch_major"
    unpadded, padded = make_batch(text_padding=False), make_batch(text_padding=True)
    with torch.no_grad():
        same = differences(
            original(unpadded["text"], unpadded["text_mask"], unpadded["video"],
                     unpadded["video_mask"]),
            ours_forward(ours, unpadded, negatives=True),
            unpadded["video_mask"],
        )
        other = differences(
            original(padded["text"], padded["text_mask"], padded["video"], padded["video_mask"]),
            ours_forward(ours, padded, negatives=True),
            padded["video_mask"],
        )
    report("qd_detr, batch_major, no text padding", same)
    report("qd_detr, batch_major, mixed text padding (the original's defect)", other)
    assert max(same.values()) < TOLERANCE
    assert other["saliency_scores"] > 1e-3


@pytest.mark.parametrize(("tree", "backbone"), [("moment_detr", "moment_detr"),
                                                ("qd_detr", "qd_detr")])
def test_gradients_equal_the_original(root, tree, backbone):
    """Backpropagating the same function of the outputs gives every weight the original's
    gradient (e.g. QD-DETR's anchor refinement learns through the next layer's spans)."""
    original = build_original(root, tree)
    ours = converted(original, backbone, t2v_mask="head_major")
    batch = make_batch()
    generator = torch.Generator().manual_seed(3)
    weights = {k: torch.randn(s, generator=generator)
               for k, s in (("logits", (B, 10, 2)), ("spans", (B, 10, 2)), ("sal", (B, L)))}

    def objective(out: dict, neg_key: str) -> torch.Tensor:
        value = (weights["logits"] * out["pred_logits"]).sum()
        value = value + (weights["spans"] * out["pred_spans"]).sum()
        value = value + (weights["sal"] * out["saliency_scores"] * batch["video_mask"]).sum()
        for aux in out["aux_outputs"]:
            value = value + (weights["spans"] * aux["pred_spans"]).sum()
        if neg_key in out:
            value = value + (weights["sal"] * out[neg_key] * batch["video_mask"]).sum()
        return value

    objective(original(batch["text"], batch["text_mask"], batch["video"], batch["video_mask"]),
              "saliency_scores_neg").backward()
    objective(ours_forward(ours, batch, negatives=backbone == "qd_detr"),
              "saliency_scores_inbatch_neg").backward()
    ours_params = dict(ours.named_parameters())
    worst = 0.0
    for key, parameter in original.named_parameters():
        mine = ours_params[rename_key(key, backbone) or key]
        if parameter.grad is None:
            assert mine.grad is None or not mine.requires_grad or float(mine.grad.abs().max()) == 0
            continue
        assert mine.grad is not None, key
        scale = max(1.0, float(parameter.grad.abs().max()))
        worst = max(worst, float((parameter.grad - mine.grad).abs().max()) / scale)
    print(f"\n[{tree}] max |grad difference| / max(1, |grad|): {worst:.2e}")
    assert worst < 1e-4
