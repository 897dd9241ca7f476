"""L_cr and L_fr against the authors' released ``ctf_ranking`` (``coarse_ranking``,
``fine_ranking``) on the same tensors (values and gradients)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from negforge.trainer.shine_losses import coarse_ranking_loss, fine_ranking_loss


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


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("mode", "released"), [("chain", "red"), ("anchored", "abd")])
def test_default_fine_loss_equals_the_released_code(ctf_ranking, seed, mode, released):
    """Three levels (the default): L_fr equals ``ctf_ranking.fine_ranking`` in both modes."""
    pos, neg, window, valid, lengths = batch(seed)
    generator = torch.Generator().manual_seed(100 + seed)
    hard = (3 * torch.randn(pos.shape[0], 3, pos.shape[1], generator=generator)).requires_grad_()
    margins = [0.1, 0.25, 0.4, 0.3]
    ours = fine_ranking_loss(pos, hard, neg, window, valid, margins=margins, mode=mode)
    theirs = ctf_ranking.fine_ranking(
        {"video_length": lengths, "saliency_all_labels": window},
        {
            "saliency_scores": pos,
            "saliency_scores_hn1": hard[:, 0],
            "saliency_scores_hn2": hard[:, 1],
            "saliency_scores_hn3": hard[:, 2],
            "saliency_scores_neg": neg,
        },
        hn_num=3,
        fine_margin=margins,
        rt=released,
    )
    # The released code adds 1e-9 inside log(sigmoid(s)); negforge uses logsigmoid (exact).
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    ours_grads = torch.autograd.grad(ours, (pos, hard, neg))
    theirs_grads = torch.autograd.grad(theirs, (pos, hard, neg))
    for mine, reference in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-4)
