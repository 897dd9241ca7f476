"""negforge's L_base equals the originals' SetCriterion, term for term.

The same random outputs (final + two auxiliary decoder layers, mixed padding, 1-3 windows
per video) and targets (sampled hinge pairs, 0/1 or QVHighlights-graded saliency labels) go
through Moment-DETR's and QD-DETR's ``SetCriterion`` (../shared/reference_code) and
negforge's criterion. Every loss term, the auxiliary ones and the weighted total agree within
1e-5; QD-DETR's single saliency term is also split into its three parts. Run with ``-s`` to
see the differences.
"""

from __future__ import annotations

import pytest
import torch

from negforge.trainer.base_losses import build_criterion
from negforge.trainer.model_config import LossConfig
from tests.support.reference import original_args, reference_root, reference_tree

B, Q, L, LAYERS = 5, 10, 20, 3
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def root():
    return reference_root()


def original_criterion(root, tree: str, **overrides):
    with reference_tree(root, tree) as ref:
        module = ref.load(f"{tree}.model")
        torch.manual_seed(0)
        _, criterion = module.build_model(original_args(dec_layers=LAYERS, **overrides))
    return criterion


def make_case(seed: int, graded: bool):
    generator = torch.Generator().manual_seed(seed)
    lengths = [20, 14, 20, 9, 17]
    video_mask = torch.zeros(B, L)
    for row, length in enumerate(lengths):
        video_mask[row, :length] = 1

    def layer():
        return {
            "pred_logits": torch.randn(B, Q, 2, generator=generator),
            "pred_spans": torch.sigmoid(torch.randn(B, Q, 2, generator=generator)),
        }

    layers = [layer() for _ in range(LAYERS)]
    outputs = {
        **layers[-1],
        "aux_outputs": layers[:-1],
        "saliency_scores": torch.randn(B, L, generator=generator) * 2,
        "saliency_scores_neg": torch.randn(B, L, generator=generator) * 2,
        "video_mask": video_mask,
    }
    spans, window, pos, neg = [], torch.zeros(B, L), [], []
    for row, length in enumerate(lengths):
        count = int(torch.randint(1, 4, (1,), generator=generator))
        centres = torch.rand(count, generator=generator) * 0.6 + 0.2
        widths = torch.rand(count, generator=generator) * 0.3 + 0.05
        spans.append(torch.stack((centres, widths), dim=1))
        first, last = int(0.2 * length), int(0.6 * length)
        window[row, first : last + 1] = 1
        pos.append([first, last])
        neg.append([0, length - 1])
    labels = window.clone()
    if graded:  # QVHighlights: summed scores of three annotators, 0-12
        labels = window * torch.randint(1, 13, (B, L), generator=generator).float()
    targets = {
        "span_labels": [{"spans": s} for s in spans],
        "saliency_pos_labels": torch.tensor(pos),
        "saliency_neg_labels": torch.tensor(neg),
        "saliency_all_labels": labels,
    }
    return outputs, targets, window


def ours_inputs(outputs, targets, window):
    out = {k: v for k, v in outputs.items() if k != "saliency_scores_neg"}
    out["saliency_scores_inbatch_neg"] = outputs["saliency_scores_neg"]
    out["inbatch_neg_valid"] = torch.ones(B, dtype=torch.bool)
    ours_targets = {
        "spans": [t["spans"] for t in targets["span_labels"]],
        "saliency_labels": window,
        "saliency_all_labels": targets["saliency_all_labels"],
        "saliency_pos_labels": targets["saliency_pos_labels"],
        "saliency_neg_labels": targets["saliency_neg_labels"],
        "video_mask": outputs["video_mask"],
    }
    return out, ours_targets


def weighted_total(criterion, losses) -> float:
    return float(sum(losses[k] * criterion.weight_dict[k] for k in losses if k in
                     criterion.weight_dict))


@pytest.mark.parametrize(
    ("tree", "graded"), [("moment_detr", False), ("qd_detr", False), ("qd_detr", True)]
)
def test_every_loss_term_equals_set_criterion(root, tree, graded):
    original = original_criterion(root, tree)
    outputs, targets, window = make_case(seed=11 + graded, graded=graded)
    reference = original(outputs, targets)
    ours = build_criterion(LossConfig(shine={"enabled": False}), tree).train()(
        *ours_inputs(outputs, targets, window)
    )
    keys = [k for k in reference if k.startswith("loss_")]
    assert {"loss_span_0", "loss_span_1", "loss_label_1", "loss_saliency"} <= set(keys)
    print(f"\n[{tree}{', graded labels' if graded else ''}] |SetCriterion - negforge|")
    worst = 0.0
    for key in keys:
        difference = abs(float(reference[key]) - float(ours[key]))
        worst = max(worst, difference)
        print(f"  {key:16s} {float(reference[key]):10.6f}  diff {difference:.2e}")
    total = abs(weighted_total(original, reference) - float(ours["loss"]))
    print(f"  {'weighted total':16s} {weighted_total(original, reference):10.6f}  "
          f"diff {total:.2e}")
    assert worst < TOLERANCE and total < TOLERANCE


def test_qd_detr_saliency_term_splits_into_the_same_three_parts(root):
    """The original's one loss_saliency = hinge + rank-contrastive + mismatched query: a huge
    negative margin zeroes its hinge, all-zero labels its rank-contrastive term."""
    outputs, targets, window = make_case(seed=5, graded=True)
    ours = build_criterion(LossConfig(shine={"enabled": False}), "qd_detr")(
        *ours_inputs(outputs, targets, window)
    )
    no_hinge = original_criterion(root, "qd_detr", saliency_margin=-1e6)
    rc_and_neg = float(no_hinge(outputs, targets)["loss_saliency"])
    unlabelled = {**targets, "saliency_all_labels": torch.zeros(B, L)}
    neg_only = float(no_hinge(outputs, unlabelled)["loss_saliency"])
    hinge = float(original_criterion(root, "moment_detr")(outputs, targets)["loss_saliency"])
    parts = {
        "loss_saliency_hinge": hinge,
        "loss_saliency_rc": rc_and_neg - neg_only,
        "loss_saliency_neg": neg_only,
    }
    print("\n[qd_detr saliency parts] |original - negforge|")
    for key, value in parts.items():
        difference = abs(value - float(ours[key]))
        print(f"  {key:20s} {value:10.6f}  diff {difference:.2e}")
        assert difference < TOLERANCE, key
