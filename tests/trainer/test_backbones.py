"""Moment-DETR and QD-DETR on the CPU at tiny sizes: API, masks, negatives, training, I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from negforge.trainer.backbones import GroundingModel, build_model
from negforge.trainer.base_losses import build_criterion
from negforge.trainer.model_config import LossConfig, ModelConfig
from tests.support.trainer_inputs import single_thread  # noqa: F401 - fixture

BACKBONES = ["moment_detr", "qd_detr"]
B, L, N, DV, DT = 4, 10, 6, 12, 8


def tiny_config(backbone: str, **overrides) -> ModelConfig:
    settings = dict(backbone=backbone, v_dim=DV, t_dim=DT, hidden=16, heads=2, ff=32,
                    num_queries=4, max_q_len=8)
    settings.update(overrides)
    return ModelConfig(**settings)


def make_batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    video_mask = torch.ones(B, L)
    video_mask[1, 7:] = 0
    text_mask = torch.ones(B, N)
    text_mask[2, 4:] = 0
    hard_mask = torch.ones(B, 3, N)
    hard_mask[0, :, 5:] = 0
    hard_mask[3] = 0  # row 3 has no valid hard negatives (all tokens masked)
    saliency = torch.zeros(B, L)
    saliency[:, 2:5] = 1
    saliency[1, 5:7] = 1
    return {
        "video_feats": torch.randn(B, L, DV, generator=generator),
        "video_mask": video_mask,
        "text_feats": torch.randn(B, N, DT, generator=generator),
        "text_mask": text_mask,
        "hard_neg_text_feats": torch.randn(B, 3, N, DT, generator=generator),
        "hard_neg_text_mask": hard_mask,
        "inbatch_neg_index": torch.tensor([1, 2, 3, -1]),
        "targets": {
            "spans": [torch.tensor([[0.35, 0.3]]), torch.tensor([[0.4, 0.4], [0.8, 0.1]]),
                      torch.tensor([[0.35, 0.3]]), torch.tensor([[0.35, 0.3]])],
            "saliency_labels": saliency,
            "saliency_pos_labels": torch.tensor([[2, 3], [2, 6], [3, 4], [4, 2]]),
            "saliency_neg_labels": torch.tensor([[0, 8], [1, 0], [9, 6], [7, 1]]),
            "video_mask": video_mask,
            "hard_neg_valid": torch.tensor([True, True, True, False]),
        },
    }


def run(model: GroundingModel, batch: dict, negatives: bool = True) -> dict:
    keys = ["hard_neg_text_feats", "hard_neg_text_mask", "inbatch_neg_index"] if negatives else []
    return model(batch["video_feats"], batch["video_mask"], batch["text_feats"],
                 batch["text_mask"], **{k: batch[k] for k in keys})


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("negatives", [False, True])
def test_forward_backward_shapes_and_finite(backbone, negatives):
    torch.manual_seed(0)
    model = build_model(tiny_config(backbone))
    criterion = build_criterion(LossConfig(), backbone).train()
    batch = make_batch()
    out = run(model, batch, negatives)
    assert out["pred_logits"].shape == (B, 4, 2)
    assert out["pred_spans"].shape == (B, 4, 2)
    assert bool(((out["pred_spans"] >= 0) & (out["pred_spans"] <= 1)).all())
    assert out["saliency_scores"].shape == (B, L)
    assert len(out["aux_outputs"]) == 1  # two decoder layers
    assert out["aux_outputs"][0]["pred_spans"].shape == (B, 4, 2)
    if negatives:
        assert out["saliency_scores_hard_neg"].shape == (B, 3, L)
        assert out["saliency_scores_inbatch_neg"].shape == (B, L)
        assert out["inbatch_neg_valid"].tolist() == [True, True, True, False]
    else:
        assert "saliency_scores_hard_neg" not in out
    losses = criterion(out, batch["targets"])
    # Defect 1: the matched set losses are always part of the objective.
    for name in ("loss_span", "loss_giou", "loss_label", "loss_saliency", "loss_span_0"):
        assert name in losses
    assert ("loss_fr" in losses) and ("loss_cr" in losses)
    for name, value in losses.items():
        assert torch.isfinite(value), name
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    if negatives:
        assert losses["loss_fr"].item() > 0 and losses["loss_inter"].item() > 0
    if backbone == "qd_detr":
        assert "loss_saliency_rc" in losses and "loss_saliency_hinge" in losses
        assert ("loss_saliency_neg" in losses) == negatives
        parts = [v for k, v in losses.items() if k.startswith("loss_saliency_")]
        assert losses["loss_saliency"].item() == pytest.approx(sum(parts).item(), rel=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_bf16_autocast_forward_backward(backbone):
    """The dtype paths used with bf16 autocast on CUDA, exercised with CPU autocast."""
    torch.manual_seed(0)
    model = build_model(tiny_config(backbone))
    criterion = build_criterion(LossConfig(), backbone).train()
    batch = make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, batch)
        losses = criterion(out, batch["targets"])
    assert losses["loss"].dtype == torch.float32
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()
               if p.grad is not None)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_batched_negatives_equal_separate_passes(backbone):
    """The query-set pass scores each negative exactly as a plain forward with that text."""
    torch.manual_seed(0)
    model = build_model(tiny_config(backbone)).eval()
    batch = make_batch()
    with torch.no_grad():
        out = run(model, batch)
        plain = run(model, batch, negatives=False)
        assert torch.allclose(out["pred_spans"], plain["pred_spans"], atol=1e-5)
        assert torch.allclose(out["saliency_scores"], plain["saliency_scores"], atol=1e-5)
        for index in range(3):
            alone = model(batch["video_feats"], batch["video_mask"],
                          batch["hard_neg_text_feats"][:, index],
                          batch["hard_neg_text_mask"][:, index])
            valid_rows = [0, 1, 2]  # row 3's hard negatives are empty
            assert torch.allclose(out["saliency_scores_hard_neg"][valid_rows, index],
                                  alone["saliency_scores"][valid_rows], atol=1e-5)
        swapped = model(batch["video_feats"], batch["video_mask"],
                        batch["text_feats"][[1, 2, 3, 3]], batch["text_mask"][[1, 2, 3, 3]])
        assert torch.allclose(out["saliency_scores_inbatch_neg"][:3],
                              swapped["saliency_scores"][:3], atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_padding_is_ignored(backbone):
    torch.manual_seed(0)
    model = build_model(tiny_config(backbone)).eval()
    batch = make_batch()
    changed = dict(batch)
    changed["video_feats"] = batch["video_feats"].clone()
    changed["video_feats"][1, 7:] = 100.0
    changed["text_feats"] = batch["text_feats"].clone()
    changed["text_feats"][2, 4:] = -100.0
    with torch.no_grad():
        first, second = run(model, batch), run(model, changed)
    assert torch.allclose(first["pred_spans"], second["pred_spans"], atol=1e-5)
    assert torch.allclose(first["saliency_scores"][1, :7], second["saliency_scores"][1, :7],
                          atol=1e-5)
    valid = batch["video_mask"].bool()[:, None, :].expand(-1, 3, -1)
    assert torch.allclose(first["saliency_scores_hard_neg"][valid],
                          second["saliency_scores_hard_neg"][valid], atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_tiny_batch_overfits(backbone):
    torch.manual_seed(0)
    model = build_model(tiny_config(backbone, input_dropout=0.0, dropout=0.0))
    criterion = build_criterion(LossConfig(), backbone).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = make_batch()
    history = []
    for _ in range(25):
        losses = criterion(run(model, batch), batch["targets"])
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append(losses["loss"].item())
    assert history[-1] < 0.6 * history[0], history


@pytest.mark.parametrize("backbone", BACKBONES)
def test_seeded_training_is_deterministic(backbone):
    def train_two_steps() -> torch.Tensor:
        torch.manual_seed(2018)
        model = build_model(tiny_config(backbone))
        criterion = build_criterion(LossConfig(), backbone).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batch = make_batch()
        for _ in range(2):
            loss = criterion(run(model, batch), batch["targets"])["loss"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(train_two_steps(), train_two_steps())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_state_dict_round_trip_gives_identical_predictions(backbone, tmp_path: Path):
    torch.manual_seed(0)
    cfg = tiny_config(backbone)
    model = build_model(cfg)
    criterion = build_criterion(LossConfig(), backbone)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = make_batch()
    loss = criterion(run(model, batch), batch["targets"])["loss"]
    loss.backward()
    optimiser.step()
    path = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "config": cfg.model_dump()}, path)
    torch.manual_seed(123)  # a different initialisation, overwritten by the load
    saved = torch.load(path, weights_only=True)
    restored = build_model(ModelConfig(**saved["config"]))
    restored.load_state_dict(saved["model"])
    model.eval()
    restored.eval()
    with torch.no_grad():
        first, second = run(model, batch, False), run(restored, batch, False)
    for key in ("pred_logits", "pred_spans", "saliency_scores"):
        assert torch.equal(first[key], second[key]), key


def test_criterion_eval_skips_shine_and_intra_can_replace_hinge():
    torch.manual_seed(0)
    model = build_model(tiny_config("qd_detr"))
    batch = make_batch()
    out = run(model, batch)
    criterion = build_criterion(LossConfig(), "qd_detr")
    criterion.eval()
    evaluated = criterion(out, batch["targets"])
    assert not any(name.startswith(("loss_cr", "loss_fr", "loss_intra")) for name in evaluated)
    criterion.train()
    trained = criterion(out, batch["targets"])
    shine = LossConfig().shine
    expected_extra = shine.alpha * trained["loss_cr"] + shine.beta * trained["loss_fr"]
    assert trained["loss"].item() == pytest.approx(
        evaluated["loss"].item() + expected_extra.item(), rel=1e-5)
    replaced_cfg = LossConfig(shine={"intra_replaces_base_saliency": True})
    replaced = build_criterion(replaced_cfg, "qd_detr").train()(out, batch["targets"])
    # As SHINE without --use_saliency_loss: the hinge goes, rank-contrastive and
    # mismatched-query terms stay.
    assert "loss_saliency_hinge" not in replaced and "loss_intra" in replaced
    assert "loss_saliency_rc" in replaced
    off = build_criterion(LossConfig(shine={"enabled": False}), "qd_detr").train()
    assert "loss_cr" not in off(out, batch["targets"])


def test_config_validation_and_text_length():
    with pytest.raises(ValueError):
        ModelConfig(v_dim=4, t_dim=4, hidden=30, heads=4)
    with pytest.raises(ValueError):
        build_criterion(LossConfig(), "resnet")
    model = build_model(tiny_config("moment_detr", max_q_len=4))
    batch = make_batch()
    with pytest.raises(ValueError, match="max_q_len"):
        run(model, batch, negatives=False)


def test_no_hard_coded_device_in_trainer_sources(repo_root: Path):
    """Defect 7: nothing in the model code names a device."""
    model_files = ["transformer.py", "anchor_decoder.py", "matcher.py", "base_losses.py",
                   "shine_losses.py", "span_utils.py"]
    for path in [*(repo_root / "trainer" / name for name in model_files),
                 *(repo_root / "trainer" / "backbones").glob("*.py")]:
        text = path.read_text()
        assert ".cuda(" not in text and 'device="cuda' not in text, path
