"""Import the authors' code in ../shared/reference_code from tests, one tree at a time.

Moment-DETR, QD-DETR and SHINE each ship top-level packages called ``utils`` and
``standalone_eval``: :func:`reference_tree` puts one tree first on ``sys.path`` and purges
those packages from ``sys.modules`` on entry and exit, so trees never see each other's
modules. ``standalone_eval`` imports ``sklearn.metrics`` for highlight detection only; a
stub module stands in for it (moment retrieval never calls it).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TREES = ("moment_detr", "qd_detr", "shine")
SHARED_DIR = Path(
    os.environ.get("NEGFORGE_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared")
)
_PURGED = ("utils", "standalone_eval", "sklearn", *TREES)


def reference_root(shared: Path = SHARED_DIR) -> Path:
    """``shared/reference_code``; its absence fails under NEGFORGE_REQUIRE_SHARED=1."""
    root = shared / "reference_code"
    if not all((root / tree).is_dir() for tree in TREES):
        message = f"the authors' reference code is not at {root}"
        if os.environ.get("NEGFORGE_REQUIRE_SHARED") == "1":
            pytest.fail(message + " (NEGFORGE_REQUIRE_SHARED=1)")
        pytest.skip(message)
    return root


def _purge() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _PURGED:
            del sys.modules[name]


def _sklearn_stub() -> dict[str, types.ModuleType]:
    package = types.ModuleType("sklearn")
    metrics = types.ModuleType("sklearn.metrics")
    # A spec, so importlib.util.find_spec (torch._dynamo calls it) accepts the stubs.
    package.__spec__ = importlib.machinery.ModuleSpec("sklearn", None, is_package=True)
    metrics.__spec__ = importlib.machinery.ModuleSpec("sklearn.metrics", None)

    def precision_recall_curve(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("stub: highlight detection is not compared")

    metrics.precision_recall_curve = precision_recall_curve  # type: ignore[attr-defined]
    package.metrics = metrics  # type: ignore[attr-defined]
    return {"sklearn": package, "sklearn.metrics": metrics}


@contextmanager
def reference_tree(root: Path, tree: str) -> Iterator[types.SimpleNamespace]:
    """Within the block, ``ns.load("qd_detr.model")`` imports from that tree only."""
    path = str(root / tree)
    _purge()
    sys.modules.update(_sklearn_stub())
    sys.path.insert(0, path)
    try:
        yield types.SimpleNamespace(load=importlib.import_module)
    finally:
        sys.path.remove(path)
        _purge()


def original_args(*, shine: bool = False, **overrides: object) -> types.SimpleNamespace:
    """The originals' training options at the paper's settings (Charades-CG: I3D + tef, CLIP
    text), as ``build_model(args)`` of every tree reads them (SHINE's own with ``shine``)."""
    import argparse

    args = dict(
        hidden_dim=256, nheads=8, dim_feedforward=1024, enc_layers=2, dec_layers=2,
        num_queries=10, input_dropout=0.5, dropout=0.1, n_input_proj=2, pre_norm=False,
        position_embedding="sine", max_q_l=32, max_v_l=75, v_feat_dim=1026, t_feat_dim=512,
        aux_loss=True, contrastive_align_loss=False, contrastive_hdim=64, span_loss_type="l1",
        use_txt_pos=False, set_cost_span=10, set_cost_giou=1, set_cost_class=4,
        span_loss_coef=10, giou_loss_coef=1, label_loss_coef=4, lw_saliency=1.0, eos_coef=0.1,
        temperature=0.07, saliency_margin=0.2, device="cpu", a_feat_dir=None, dset_name="hl",
        ctx_mode="video_tef", clip_length=2, seed=2018,
    )
    if shine:
        args.update(
            hn_num=3, coarse_coef=1.0, fine_coef=1.0, coarse_margin=[1.0, 2.0],
            fine_margin=[0.25] * 4, ranking_type="red", use_saliency_loss=False, q=8,
            dset_name="charades",
        )
    args.update(overrides)
    return argparse.Namespace(**args)  # type: ignore[return-value]
