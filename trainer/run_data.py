"""The datasets of a run: TRAIN (and its validation part), the evaluation splits, loaders.

Every file is read and every feature checked before the first step, so a missing feature
or a bad row stops the run up front (``on_missing=skip`` drops such queries and reports
them); the run's hard-negative level count is taken from TRAIN here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Sampler

from negforge.errors import ConfigError
from negforge.trainer.config import VALIDATION_SPLIT, EvalSplit, TrainConfig
from negforge.trainer.data import (
    GroundingSample,
    LevelReport,
    MissingReport,
    check_features,
    check_levels,
    load_eval_samples,
    load_train_samples,
    split_by_video,
)
from negforge.trainer.dataset import Collator, GroundingDataset, Item
from negforge.trainer.features import TextFeatureStore, VideoFeatureStore, query_key


@dataclass
class RunData:
    """The datasets of a run and what was skipped."""

    train: GroundingDataset | None
    evals: dict[str, GroundingDataset]
    reports: dict[str, MissingReport] = field(default_factory=dict)
    v_dim: int = 0
    t_dim: int = 0
    #: TRAIN's hard-negative levels (None: the run does not train on hard negatives).
    levels: LevelReport | None = None


def feature_stores(cfg: TrainConfig) -> tuple[VideoFeatureStore, TextFeatureStore]:
    """The video and text feature stores of ``cfg``'s data settings."""
    data = cfg.data
    videos = VideoFeatureStore(
        data.video_feats, normalize=data.normalize_video, cache=data.cache_features
    )
    texts = TextFeatureStore(
        data.text_feats,
        max_q_len=cfg.model.max_q_len,
        normalize=data.normalize_text,
        cache=data.cache_features,
    )
    return videos, texts


def make_dataset(
    samples: Sequence[GroundingSample],
    cfg: TrainConfig,
    stores: tuple[VideoFeatureStore, TextFeatureStore],
    *,
    with_negatives: bool = False,
    levels: int | None = None,
) -> GroundingDataset:
    """A dataset with the clip settings of ``cfg``."""
    return GroundingDataset(
        samples,
        stores[0],
        stores[1],
        clip_len=cfg.data.clip_len,
        max_v_len=cfg.model.max_v_len,
        use_tef=cfg.data.use_tef,
        with_negatives=with_negatives,
        levels=levels,
        long_videos=cfg.data.long_videos,
    )


def uses_hard_negatives(cfg: TrainConfig) -> bool:
    """SHINE's L_fr: the hard negatives are scored in training."""
    return cfg.loss.shine.enabled


def uses_inbatch_negative(cfg: TrainConfig) -> bool:
    """L_inter / QD-DETR's mismatched query: a query of another video is scored."""
    return cfg.loss.shine.enabled or cfg.model.backbone == "qd_detr"


def load_run_data(
    cfg: TrainConfig, splits: Sequence[EvalSplit] | None = None, *, train: bool = True
) -> RunData:
    """Train / validation / evaluation datasets, features checked up front."""
    stores = feature_stores(cfg)
    evals: dict[str, GroundingDataset] = {}
    reports: dict[str, MissingReport] = {}
    train_set = None
    levels = None
    if train:
        if cfg.data.train is None:
            raise ConfigError("no training file given (--train)")
        # Split by video before any feature check: the validation part depends only on
        # the TRAIN file, the seed and the fraction.
        train_samples, val_samples = split_by_video(
            load_train_samples(cfg.data.train), cfg.data.val_fraction, cfg.seed
        )
        hard = uses_hard_negatives(cfg)
        if hard:
            train_samples, levels = check_levels(
                train_samples, cfg.loss.shine.levels, source=cfg.data.train
            )
        train_samples, reports["train"] = check_features(
            train_samples,
            *stores,
            on_missing=cfg.data.on_missing,
            with_negatives=hard,
            source=cfg.data.train,
        )
        if not train_samples:
            raise ConfigError(f"no training queries left in {cfg.data.train}")
        train_set = make_dataset(
            train_samples,
            cfg,
            stores,
            with_negatives=hard,
            levels=levels.levels if levels is not None else None,
        )
        if val_samples:
            val_samples, reports[VALIDATION_SPLIT] = check_features(
                val_samples,
                *stores,
                on_missing=cfg.data.on_missing,
                with_negatives=False,
                source=cfg.data.train,
            )
            if val_samples:
                evals[VALIDATION_SPLIT] = make_dataset(val_samples, cfg, stores)
    for split in cfg.data.eval if splits is None else splits:
        if split.name in evals:
            raise ConfigError(f"two evaluation splits are called '{split.name}'")
        samples, reports[split.name] = check_features(
            load_eval_samples(split.path),
            *stores,
            on_missing=cfg.data.on_missing,
            with_negatives=False,
            source=split.path,
        )
        evals[split.name] = make_dataset(samples, cfg, stores)
    reference = train_set if train_set is not None else next(iter(evals.values()), None)
    if reference is None or len(reference) == 0:
        raise ConfigError("no queries with features to run on")
    first = reference.samples[0]
    v_dim = make_dataset([first], cfg, stores)[0].video.shape[1]
    t_dim = stores[1].load(query_key(first.qid)).shape[1]
    return RunData(train_set, evals, reports, v_dim, t_dim, levels)


def dataset_for(
    cfg: TrainConfig,
    path: str | Path,
    *,
    negatives: bool = False,
    video_feats: Sequence[Path] | None = None,
    text_feats: Sequence[Path] | None = None,
) -> GroundingDataset:
    """A query file as a dataset with ``cfg``'s clip settings (e.g. a checkpoint's config).

    With ``negatives`` the file is read as TRAIN (negatives artifact or SHINE jsonl) and
    each item of the file's level count carries its hard negatives; features default to
    the run's.
    """
    update: dict[str, Any] = {}
    if video_feats:
        update["video_feats"] = list(video_feats)
    if text_feats:
        update["text_feats"] = list(text_feats)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})
    stores = feature_stores(cfg)
    samples = load_train_samples(path) if negatives else load_eval_samples(path)
    if negatives:
        samples, _ = check_levels(samples, source=path)
    samples, _ = check_features(
        samples, *stores, on_missing=cfg.data.on_missing, with_negatives=negatives, source=path
    )
    return make_dataset(samples, cfg, stores, with_negatives=negatives)


def data_loader(
    dataset: GroundingDataset,
    *,
    batch_size: int,
    collator: Collator,
    num_workers: int = 0,
    sampler: Sampler[Any] | None = None,
) -> DataLoader[Item]:
    """Batches of ``dataset`` in ``sampler``'s order (no shuffling of its own)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        collate_fn=collator,
        num_workers=num_workers,
        persistent_workers=False,
    )
