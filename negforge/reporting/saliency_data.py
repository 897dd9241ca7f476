"""Collect saliency curves from trained checkpoints for :mod:`negforge.reporting.saliency_plot`.

For each chosen query of a split, every checkpoint predicts (in eval mode) the saliency of
the positive query, of its three hard negatives (when the split carries them and their text
features exist) and of a query of another video (the in-batch negative), plus its top-1
window. The split is read with the first checkpoint's configuration:

* ``train`` -- the training file (hard negatives included);
* ``val`` -- the validation part held out from it by video, as training did (negatives
  included);
* any evaluation split name of the config (``test_trivial``, ``novel_composition``, ...):
  query files without negatives, so only the positive and the other video's query appear;
* a query file (SHINE jsonl with ``recomposed_queries``, or a negatives artifact): its hard
  negatives are drawn when their text features exist in the run's text feature folders.

torch and the trainer are imported inside the functions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from negforge.errors import ConfigError, InputError
from negforge.reporting.saliency_plot import SaliencyCurves, SaliencyExample

if TYPE_CHECKING:
    from negforge.trainer.config import TrainConfig
    from negforge.trainer.data import GroundingSample

TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint to plot and the name its panels get."""

    path: Path
    label: str | None = None


def default_label(path: Path, cfg: TrainConfig) -> str:
    """``<run folder> · <backbone> · SHINE|no SHINE``."""
    run = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    shine = "SHINE" if cfg.loss.shine.enabled else "no SHINE"
    return f"{run} · {cfg.model.backbone} · {shine}"


def split_samples(cfg: TrainConfig, split: str) -> tuple[list[GroundingSample], bool]:
    """The samples of ``split`` under ``cfg``, and whether they carry hard negatives."""
    from negforge.trainer.config import VALIDATION_SPLIT
    from negforge.trainer.data import load_eval_samples, load_train_samples, split_by_video

    if split in (TRAIN_SPLIT, VALIDATION_SPLIT):
        if cfg.data.train is None:
            raise ConfigError(f"the checkpoint's config names no training file for '{split}'")
        samples = load_train_samples(cfg.data.train)
        if split == TRAIN_SPLIT:
            return samples, True
        _, held_out = split_by_video(samples, cfg.data.val_fraction, cfg.seed)
        if not held_out:
            raise ConfigError("the checkpoint's run held out no validation queries")
        return list(held_out), True
    for eval_split in cfg.data.eval:
        if eval_split.name == split:
            return load_eval_samples(eval_split.path), False
    if Path(split).is_file():
        samples = load_train_samples(split)
        return samples, any(sample.negatives_valid for sample in samples)
    names = [TRAIN_SPLIT, VALIDATION_SPLIT, *(s.name for s in cfg.data.eval)]
    raise ConfigError(
        f"unknown split '{split}' (this checkpoint knows: {', '.join(names)}; or give a query file)"
    )


def choose_qids(
    samples: Sequence[GroundingSample],
    qids: Sequence[str] | None,
    n: int | None,
    seed: int,
    prefer_negatives: bool,
) -> list[str]:
    """The given qids (checked), or ``n`` drawn with ``seed`` (queries with negatives first)."""
    known = {s.qid for s in samples}
    if qids:
        for qid in qids:
            if qid not in known:
                raise InputError(f"qid '{qid}' is not in this split (or has no features)")
        return list(qids)
    if not n:
        raise ConfigError("give --qid QID (repeatable) or --n N")
    pool = [s.qid for s in samples if s.negatives_valid] if prefer_negatives else []
    if len(pool) < n:
        pool = [s.qid for s in samples]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def collect_saliency(
    checkpoints: Sequence[Checkpoint],
    split: str,
    *,
    qids: Sequence[str] | None = None,
    n: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> list[SaliencyExample]:
    """Predict the query sets of the chosen queries with every checkpoint."""
    from negforge.trainer.checkpoints import load_model_from_checkpoint
    from negforge.trainer.data import check_features
    from negforge.trainer.prediction import predict
    from negforge.trainer.run_data import feature_stores, make_dataset

    if not checkpoints:
        raise ConfigError("no checkpoint given")
    loaded = [(c, *load_model_from_checkpoint(c.path, device)) for c in checkpoints]
    _, _, first_cfg = loaded[0]
    samples, has_negatives = split_samples(first_cfg, split)
    stores = feature_stores(first_cfg)
    samples, _ = check_features(samples, *stores, on_missing="skip", with_negatives=has_negatives)
    if not samples:
        raise InputError(f"no query of split '{split}' has features")
    chosen = choose_qids(samples, qids, n, seed, has_negatives)
    by_qid = {s.qid: s for s in samples}
    curves: dict[str, list[SaliencyCurves]] = {qid: [] for qid in chosen}
    other_text: dict[str, str | None] = {}
    for checkpoint, model, cfg in loaded:
        dataset = make_dataset(samples, cfg, feature_stores(cfg), with_negatives=has_negatives)
        predictions = predict(model, dataset, qids=chosen, negatives=True, device=device, seed=seed)
        label = checkpoint.label or default_label(checkpoint.path, cfg)
        for qid, result in zip(chosen, predictions, strict=True):
            windows = result.prediction.pred_relevant_windows
            other = by_qid[result.inbatch_neg_qid].query if result.inbatch_neg_qid else None
            other_text.setdefault(qid, other)
            suffix = "" if other == other_text[qid] else f" (other video: {other})"
            curves[qid].append(
                SaliencyCurves(
                    label=label + suffix,
                    clip_len=dataset[dataset.index_of(qid)].clip_len,
                    positive=result.saliency.tolist(),
                    hard_negatives=(
                        result.hard_neg_saliency.tolist()
                        if result.hard_neg_saliency is not None
                        else []
                    ),
                    inbatch_negative=(
                        result.inbatch_neg_saliency.tolist()
                        if result.inbatch_neg_saliency is not None
                        else None
                    ),
                    predicted_window=(windows[0][0], windows[0][1]) if windows else None,
                )
            )
    examples = []
    for qid in chosen:
        sample = by_qid[qid]
        with_negatives = any(c.hard_negatives for c in curves[qid])
        examples.append(
            SaliencyExample(
                qid=qid,
                vid=sample.vid,
                query=sample.query,
                duration=sample.duration,
                gt_windows=list(sample.windows),
                hard_negative_texts=[t or "" for t in sample.negatives] if with_negatives else [],
                inbatch_negative_text=other_text.get(qid),
                curves=curves[qid],
            )
        )
    return examples


def write_saliency_plot(
    checkpoints: Sequence[Checkpoint],
    split: str,
    output: str | Path,
    *,
    qids: Sequence[str] | None = None,
    n: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[Path, list[SaliencyExample]]:
    """Collect the curves and write the figure (PNG, atomically)."""
    from negforge.atomic import atomic_path
    from negforge.reporting.saliency_plot import plot_saliency

    examples = collect_saliency(checkpoints, split, qids=qids, n=n, seed=seed, device=device)
    png, _, _ = plot_saliency(examples)
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_bytes(png)
    return output, examples
