"""L_cr against the authors' released ``ctf_ranking.coarse_ranking`` on the same tensors, and
the ``inter_gradient="negative"`` option (same value, gradient only into the negative)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from negforge.trainer.model_config import ShineConfig
from negforge.trainer.shine_losses import coarse_ranking_loss, coarse_ranking_terms, shine_losses


@pytest.fixture(scope="module")
def ctf_ranking(shared_dir):
    path = shared_dir / "reference_code" / "shine" / "shine" / "ctf_ranking.py"
    spec = importlib.util.spec_from_file_location("authors_ctf_ranking", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch(seed: int = 0, rows: int = 6, clips: int = 40):
    """Random scores; every row has clips inside and outside its window, padding after."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(12, clips + 1, (rows,), generator=generator)
    valid = (torch.arange(clips)[None] < lengths[:, None]).float()
    window = torch.zeros(rows, clips)
    for row, length in enumerate(lengths.tolist()):
        width = int(torch.randint(2, length // 2, (1,), generator=generator))
        start = int(torch.randint(0, length - width, (1,), generator=generator))
        window[row, start : start + width] = 1.0
    pos = (3 * torch.randn(rows, clips, generator=generator)).requires_grad_()
    neg = (3 * torch.randn(rows, clips, generator=generator)).requires_grad_()
    return pos, neg, window, valid, lengths


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("q", "h1", "h2"), [(8, 1.0, 2.0), (2, 0.5, 3.0), (1, 1.0, 2.0)])
def test_default_coarse_loss_equals_the_released_code(ctf_ranking, seed, q, h1, h2):
    pos, neg, window, valid, lengths = batch(seed)
    ours = coarse_ranking_loss(pos, neg, window, valid, q=q, h1=h1, h2=h2)
    theirs = ctf_ranking.coarse_ranking(
        {"video_length": lengths, "saliency_all_labels": window},
        {"saliency_scores": pos, "saliency_scores_neg": neg},
        h1,
        h2,
        q=q,
    )
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    ours_grads = torch.autograd.grad(ours, (pos, neg))
    theirs_grads = torch.autograd.grad(theirs, (pos, neg))
    for mine, reference in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-5)


def test_inter_gradient_negative_keeps_the_value_and_only_lowers_the_negative():
    pos, neg, window, valid, _ = batch(3)
    both = coarse_ranking_terms(pos, neg, window, valid, q=2, h2=6.0)
    negative = coarse_ranking_terms(pos, neg, window, valid, q=2, h2=6.0, inter_gradient="negative")
    assert negative.inter.item() == both.inter.item() > 0
    assert negative.intra.item() == both.intra.item()
    pos_both, neg_both = torch.autograd.grad(both.inter, (pos, neg))
    pos_neg, neg_neg = torch.autograd.grad(negative.inter, (pos, neg), allow_unused=True)
    assert pos_both.abs().sum() > 0 and pos_neg is None  # S_p^+ is out of L_inter's graph
    torch.testing.assert_close(neg_neg, neg_both)
    # L_intra still trains the positive, and the option reaches shine_losses via the config.
    cfg = ShineConfig(inter_gradient="negative", h2=6.0, q=2)
    parts = shine_losses(pos, None, neg, window, valid, cfg)
    assert parts["loss_inter"].item() == pytest.approx(both.inter.item())
    (grad_pos,) = torch.autograd.grad(parts["loss_inter"], (pos,), allow_unused=True)
    assert grad_pos is None or grad_pos.abs().sum() == 0
    with pytest.raises(ValueError, match="inter_gradient"):
        coarse_ranking_terms(pos, neg, window, valid, inter_gradient="positive")  # type: ignore[arg-type]
