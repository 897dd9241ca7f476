"""Prediction: a model's windows and the saliency of each query's query set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from negforge.trainer.dataset import Collator, GroundingDataset
from negforge.trainer.evaluation import Postprocess, Prediction, postprocess
from negforge.trainer.runtime import autocast, unwrap


@dataclass
class SamplePrediction:
    """A query's predicted windows and the saliency of its query set (valid clips only)."""

    prediction: Prediction
    saliency: np.ndarray  # (L,) positive query
    hard_neg_saliency: np.ndarray | None = None  # (K, L), one row per level
    inbatch_neg_saliency: np.ndarray | None = None  # (L,)
    inbatch_neg_qid: str | None = None


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: GroundingDataset,
    *,
    qids: Sequence[str] | None = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    negatives: bool = False,
    bf16: bool = False,
    seed: int = 0,
    postprocess_mode: Postprocess = "round_to_clips",
) -> list[SamplePrediction]:
    """Run ``model`` (eval mode) over ``dataset`` (or the given ``qids``).

    Predictions are composed as the originals' inference does (``postprocess_mode``: see
    :func:`~negforge.trainer.evaluation.postprocess`). With ``negatives`` the saliency of
    each query's hard negatives (when the dataset has them, one row per level) and of an
    in-batch negative query of another video is returned too; a batch with one video
    borrows a sample of another video for that.
    """
    model = unwrap(model)
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    indices = [dataset.index_of(q) for q in qids] if qids is not None else list(range(len(dataset)))
    collator = Collator(seed, levels=dataset.levels if negatives else 0)
    results: list[SamplePrediction] = []
    try:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            items = [dataset[i] for i in chunk]
            if negatives and len({it.sample.vid for it in items}) == 1:
                extra = next(
                    (i for i, s in enumerate(dataset.samples) if s.vid != items[0].sample.vid),
                    None,
                )
                if extra is not None:
                    items.append(dataset[extra])
            batch = collator(items).to(device)
            with autocast(device, bf16):
                out = model(
                    **batch.model_inputs(hard_negatives=collator.with_negatives, inbatch=negatives)
                )
            predictions = postprocess(
                out, batch, mode=postprocess_mode, clip_len=dataset.clip_len
            )
            mask = batch.video_mask.bool().cpu()
            hard = out.get("saliency_scores_hard_neg")
            inbatch = out.get("saliency_scores_inbatch_neg")
            for row in range(len(chunk)):
                valid = mask[row]
                neg_row = int(batch.inbatch_neg_index[row]) if negatives else -1
                results.append(
                    SamplePrediction(
                        prediction=predictions[row],
                        saliency=out["saliency_scores"][row].float().cpu()[valid].numpy(),
                        hard_neg_saliency=(
                            hard[row].float().cpu()[:, valid].numpy()
                            if hard is not None and batch.hard_neg_valid[row]
                            else None
                        ),
                        inbatch_neg_saliency=(
                            inbatch[row].float().cpu()[valid].numpy()
                            if inbatch is not None and neg_row >= 0
                            else None
                        ),
                        inbatch_neg_qid=batch.samples[neg_row].qid if neg_row >= 0 else None,
                    )
                )
    finally:
        model.train(was_training)
    return results
