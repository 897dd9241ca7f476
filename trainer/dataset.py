"""The feature-backed dataset, its labels and the batch collator.

Labels are the originals' (``start_end_dataset.py``): spans are the windows divided by the
time the clips span, as ``(cx, w)`` (at most 5 windows, a seeded random 5 when there are
more); saliency labels come from QVHighlights' ``relevant_clip_ids`` / ``saliency_scores``
when a row has them, else from the first window (SHINE's ``sub_as_query`` labels). Collation
pads videos and texts with masks, stacks every row's hard negatives (one per level), samples
the hinge's (inside, outside) clip pairs and picks every row's in-batch negative among the
rows of *another* video (never the same video or sentence; see "Deliberate differences" in
docs/trainer_model.md), all from a generator seeded by (seed, epoch, the batch's qids).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from negforge.errors import InputError
from negforge.trainer.data import GroundingSample, most_common_levels
from negforge.trainer.features import (
    TextFeatureStore,
    VideoFeatureStore,
    append_tef,
    fit_to_length,
    negative_key,
    query_key,
)

#: At most this many windows per query become span targets (the originals' --max_windows).
MAX_WINDOWS = 5
#: (inside, outside) clip pairs of Moment-DETR's hinge per query.
SALIENCY_PAIRS = 2
LongVideos = Literal["truncate", "pool"]
InbatchNegative = Literal["other_video", "next_row"]


def window_clips(window: tuple[float, float], clip_len: float, length: int) -> tuple[int, int]:
    """First and last clip (inclusive) of a window, as the originals' ``sub_as_query`` labels.

    ``int(st / clip_len)`` .. ``max(0, min(int(ed / clip_len), L) - 1)``; when that range is
    empty (a window inside one clip) both ends become the last clip.
    """
    first = int(window[0] / clip_len)
    last = max(0, min(int(window[1] / clip_len), length) - 1)
    return min(first, last), last


def saliency_labels(
    sample: GroundingSample, clip_len: float, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(L,) 0/1 window mask and (L,) graded labels of the rank-contrastive loss.

    QVHighlights rows: 1 / the summed annotator score at the relevant clips (those before the
    first id >= L, as the original stops there). Other rows: 1 on the clips of the first
    window (:func:`window_clips`) in both.
    """
    mask = np.zeros(length, dtype=np.float32)
    graded = np.zeros(length, dtype=np.float32)
    if sample.relevant_clip_ids is not None and sample.clip_scores is not None:
        for clip, score in zip(sample.relevant_clip_ids, sample.clip_scores, strict=True):
            if clip >= length:
                break
            mask[clip] = 1.0
            graded[clip] = score
        return mask, graded
    first, last = window_clips(sample.windows[0], clip_len, length)
    mask[first : last + 1] = 1.0
    return mask, mask.copy()


def saliency_pairs(
    sample: GroundingSample, clip_len: float, length: int, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Two clips inside and two outside the moment for Moment-DETR's hinge, as the originals
    sample them.

    QVHighlights rows: the best- and worst-scored relevant clips plus one random relevant
    clip and one random clip outside them (the worst relevant clip is the "hard" outside
    one). Other rows: two distinct clips of the first window (the same clip twice if it has
    one) and two distinct clips outside it (clips 0 and 1 when fewer than two are outside,
    as SHINE does).
    """
    last_clip = length - 1
    if sample.relevant_clip_ids is not None and sample.clip_scores is not None:
        ids = list(sample.relevant_clip_ids)
        order = np.argsort(np.asarray(sample.clip_scores))
        hard_pos, hard_neg = min(ids[order[-1]], last_clip), min(ids[order[0]], last_clip)
        outside = sorted(set(range(length)) - set(ids))
        if outside:
            easy_pos = min(ids[int(rng.integers(len(ids)))], last_clip)
            easy_neg = outside[int(rng.integers(len(outside)))]
            return [hard_pos, easy_pos], [hard_neg, easy_neg]
        return [hard_pos, hard_pos], [hard_neg, hard_neg]
    first, last = window_clips(sample.windows[0], clip_len, length)
    if first != last:
        pos = [int(c) for c in rng.choice(np.arange(first, last + 1), 2, replace=False)]
    else:
        pos = [first, first]
    pool = np.array([*range(first), *range(last + 1, length)], dtype=np.int64)
    if len(pool) < SALIENCY_PAIRS:
        neg = [0, min(1, last_clip)]
    else:
        neg = [int(c) for c in rng.choice(pool, 2, replace=False)]
    return pos, neg


def normalized_spans(windows: Sequence[tuple[float, float]], coverage: float) -> np.ndarray:
    """Windows in seconds -> (n, 2) ``(centre, width)`` divided by the features' time span
    (L x clip_len), as the originals compute span targets (not clamped)."""
    spans = [((start + end) / 2 / coverage, (end - start) / coverage) for start, end in windows]
    return np.asarray(spans, dtype=np.float32).reshape(-1, 2)


@dataclass
class Item:
    """One prepared sample: features, labels and the time scale of its clips."""

    sample: GroundingSample
    video: np.ndarray  # (L, Dv)
    text: np.ndarray  # (N, Dt)
    hard_negatives: list[np.ndarray] | None  # K x (N_i, Dt): the row's valid negatives
    spans: np.ndarray  # (n, 2) normalised (cx, w), every window
    saliency: np.ndarray  # (L,) 0/1 window mask
    saliency_graded: np.ndarray  # (L,) labels of the rank-contrastive loss
    clip_len: float  # effective seconds per clip (grows when long videos are pooled)
    coverage: float  # seconds the clips span (L * clip_len)


class GroundingDataset(torch.utils.data.Dataset[Item]):
    """Samples joined with their video and text features.

    With ``with_negatives`` an item carries the text features of its ``levels`` hard
    negatives (default: the level count of most samples) when its negatives are valid and
    have that many levels.
    """

    def __init__(
        self,
        samples: Sequence[GroundingSample],
        video_store: VideoFeatureStore,
        text_store: TextFeatureStore,
        *,
        clip_len: float,
        max_v_len: int | None = None,
        use_tef: bool = True,
        with_negatives: bool = False,
        levels: int | None = None,
        long_videos: LongVideos = "truncate",
    ) -> None:
        self.samples = list(samples)
        self.video_store = video_store
        self.text_store = text_store
        self.clip_len = clip_len
        self.max_v_len = max_v_len
        self.long_videos = long_videos
        self.use_tef = use_tef
        self.with_negatives = with_negatives
        if not with_negatives:
            levels = 0
        elif levels is None:
            levels = most_common_levels(self.samples)
        #: Hard negatives per item (0: none).
        self.levels = levels
        self._index = {s.qid: i for i, s in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def index_of(self, qid: str) -> int:
        """Position of a qid (KeyError-free: raises InputError naming it)."""
        if qid not in self._index:
            raise InputError(f"qid '{qid}' is not in this split", field=qid)
        return self._index[qid]

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        raw = self.video_store.load(sample.vid)
        if self.long_videos == "pool":  # mean-pooled into max_v_len longer clips
            video = fit_to_length(raw, self.max_v_len)
            clip_len = self.clip_len * raw.shape[0] / video.shape[0]
        else:  # the originals: features[:max_v_l]
            video = raw[: self.max_v_len] if self.max_v_len else raw
            clip_len = self.clip_len
        if self.use_tef:
            video = append_tef(video)
        length = video.shape[0]
        coverage = length * clip_len
        negatives = None
        if self.levels and sample.negatives_valid and len(sample.negatives) == self.levels:
            negatives = [
                self.text_store.load(negative_key(sample.qid, i)) for i in range(self.levels)
            ]
        mask, graded = saliency_labels(sample, clip_len, length)
        return Item(
            sample=sample,
            video=video,
            text=self.text_store.load(query_key(sample.qid)),
            hard_negatives=negatives,
            spans=normalized_spans(sample.windows, coverage),
            saliency=mask,
            saliency_graded=graded,
            clip_len=clip_len,
            coverage=coverage,
        )


@dataclass
class Batch:
    """Padded model inputs, criterion targets and the samples they came from."""

    video_feats: torch.Tensor  # (B, L, Dv)
    video_mask: torch.Tensor  # (B, L) float
    text_feats: torch.Tensor  # (B, N, Dt)
    text_mask: torch.Tensor  # (B, N) float
    hard_neg_text_feats: torch.Tensor | None  # (B, K, N', Dt), K levels
    hard_neg_text_mask: torch.Tensor | None  # (B, K, N') float
    hard_neg_valid: torch.Tensor  # (B,) bool
    inbatch_neg_index: torch.Tensor  # (B,) long, -1 = no other video in the batch
    spans: list[torch.Tensor]  # (n_i, 2) normalised (cx, w), at most MAX_WINDOWS
    saliency_labels: torch.Tensor  # (B, L) 0/1 window mask
    saliency_all_labels: torch.Tensor  # (B, L) graded labels (rank-contrastive loss)
    saliency_pos_labels: torch.Tensor  # (B, 2) long: clips inside (hinge)
    saliency_neg_labels: torch.Tensor  # (B, 2) long: clips outside (hinge)
    samples: list[GroundingSample]
    clip_lens: list[float]
    coverages: list[float]

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor moved to ``device``."""

        def move(t: torch.Tensor | None) -> Any:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            video_feats=move(self.video_feats),
            video_mask=move(self.video_mask),
            text_feats=move(self.text_feats),
            text_mask=move(self.text_mask),
            hard_neg_text_feats=move(self.hard_neg_text_feats),
            hard_neg_text_mask=move(self.hard_neg_text_mask),
            hard_neg_valid=move(self.hard_neg_valid),
            inbatch_neg_index=move(self.inbatch_neg_index),
            spans=[move(s) for s in self.spans],
            saliency_labels=move(self.saliency_labels),
            saliency_all_labels=move(self.saliency_all_labels),
            saliency_pos_labels=move(self.saliency_pos_labels),
            saliency_neg_labels=move(self.saliency_neg_labels),
            samples=self.samples,
            clip_lens=self.clip_lens,
            coverages=self.coverages,
        )

    def model_inputs(self, *, hard_negatives: bool, inbatch: bool) -> dict[str, Any]:
        """Keyword arguments of the model's forward (negatives only when asked for)."""
        inputs: dict[str, Any] = {
            "video_feats": self.video_feats,
            "video_mask": self.video_mask,
            "text_feats": self.text_feats,
            "text_mask": self.text_mask,
        }
        if hard_negatives and self.hard_neg_text_feats is not None:
            inputs["hard_neg_text_feats"] = self.hard_neg_text_feats
            inputs["hard_neg_text_mask"] = self.hard_neg_text_mask
        if inbatch:
            inputs["inbatch_neg_index"] = self.inbatch_neg_index
        return inputs

    def targets(self) -> dict[str, Any]:
        """The criterion's targets."""
        return {
            "spans": self.spans,
            "saliency_labels": self.saliency_labels,
            "saliency_all_labels": self.saliency_all_labels,
            "saliency_pos_labels": self.saliency_pos_labels,
            "saliency_neg_labels": self.saliency_neg_labels,
            "video_mask": self.video_mask,
            "hard_neg_valid": self.hard_neg_valid,
        }


def _pad(arrays: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    dim = arrays[0].shape[1]
    out = np.zeros((len(arrays), length, dim), dtype=np.float32)
    mask = np.zeros((len(arrays), length), dtype=np.float32)
    for i, array in enumerate(arrays):
        out[i, : array.shape[0]] = array
        mask[i, : array.shape[0]] = 1.0
    return out, mask


def inbatch_negative_index(
    vids: Sequence[str], rng: np.random.Generator, mode: InbatchNegative = "other_video"
) -> np.ndarray:
    """For each row, a random row of another video (-1 when the batch has no other video).

    ``next_row`` reproduces the originals instead: the next row of the batch (the last row
    takes the first), which may be another query of the same video (docs/trainer_model.md,
    "Deliberate differences").
    """
    vids = list(vids)
    if mode == "next_row":
        return (np.arange(len(vids), dtype=np.int64) + 1) % max(len(vids), 1)
    index = np.full(len(vids), -1, dtype=np.int64)
    for i, vid in enumerate(vids):
        others = [j for j, other in enumerate(vids) if other != vid]
        if others:
            index[i] = others[int(rng.integers(len(others)))]
    return index


def span_targets(spans: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All windows, or a random :data:`MAX_WINDOWS` of them when there are more."""
    if len(spans) <= MAX_WINDOWS:
        return spans
    return spans[np.sort(rng.permutation(len(spans))[:MAX_WINDOWS])]


class Collator:
    """Pads a list of :class:`Item` into a :class:`Batch`.

    ``levels`` > 0 stacks that many hard negatives per row (items of the dataset's level
    count); rows without valid negatives repeat their own query, flagged invalid. The hinge's
    clip pairs, the windows kept of rows with more than five and the in-batch
    negatives are drawn from a generator seeded by (seed, epoch, the batch's qids), so they
    do not depend on DataLoader workers and a resumed run draws the same ones.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        levels: int = 0,
        inbatch: InbatchNegative = "other_video",
    ) -> None:
        self.seed = seed
        self.epoch = 0
        self.levels = levels
        self.inbatch = inbatch

    @property
    def with_negatives(self) -> bool:
        """Whether batches carry hard negatives."""
        return self.levels > 0

    def __call__(self, items: Sequence[Item]) -> Batch:
        videos, video_mask = _pad([it.video for it in items], max(len(it.video) for it in items))
        texts, text_mask = _pad([it.text for it in items], max(len(it.text) for it in items))
        samples = [it.sample for it in items]
        key = zlib.crc32("\x1f".join(s.qid for s in samples).encode())
        rng = np.random.default_rng([self.seed, self.epoch, key])
        labels = np.zeros(video_mask.shape, dtype=np.float32)
        graded = np.zeros(video_mask.shape, dtype=np.float32)
        pos_clips, neg_clips = [], []
        for i, it in enumerate(items):
            labels[i, : len(it.saliency)] = it.saliency
            graded[i, : len(it.saliency_graded)] = it.saliency_graded
            pos, neg = saliency_pairs(it.sample, it.clip_len, len(it.video), rng)
            pos_clips.append(pos)
            neg_clips.append(neg)
        spans = [torch.from_numpy(span_targets(it.spans, rng)) for it in items]
        neg_feats = neg_mask = None
        valid = np.array([it.hard_negatives is not None for it in items], dtype=bool)
        if self.levels:
            # Rows without valid negatives repeat their own query: finite inputs whose
            # scores the criterion ignores (hard_neg_valid=False).
            per_row = [
                it.hard_negatives if it.hard_negatives is not None else [it.text] * self.levels
                for it in items
            ]
            if any(len(row) != self.levels for row in per_row):
                raise ValueError(f"every item must carry {self.levels} hard negatives or none")
            flat = [t for row in per_row for t in row]
            padded, mask = _pad(flat, max(len(t) for t in flat))
            neg_feats = torch.from_numpy(
                padded.reshape(len(items), self.levels, *padded.shape[1:])
            )
            neg_mask = torch.from_numpy(mask.reshape(len(items), self.levels, -1))
        return Batch(
            video_feats=torch.from_numpy(videos),
            video_mask=torch.from_numpy(video_mask),
            text_feats=torch.from_numpy(texts),
            text_mask=torch.from_numpy(text_mask),
            hard_neg_text_feats=neg_feats,
            hard_neg_text_mask=neg_mask,
            hard_neg_valid=torch.from_numpy(valid),
            inbatch_neg_index=torch.from_numpy(
                inbatch_negative_index([s.vid for s in samples], rng, self.inbatch)
            ),
            spans=spans,
            saliency_labels=torch.from_numpy(labels),
            saliency_all_labels=torch.from_numpy(graded),
            saliency_pos_labels=torch.tensor(pos_clips, dtype=torch.long),
            saliency_neg_labels=torch.tensor(neg_clips, dtype=torch.long),
            samples=samples,
            clip_lens=[it.clip_len for it in items],
            coverages=[it.coverage for it in items],
        )
