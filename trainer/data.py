"""Grounding samples: what the query files say, read and checked before any tensor exists.

TRAIN is a negforge ``negatives`` artifact (Parquet; one row per query and masking level) or
a SHINE jsonl with ``recomposed_queries``; evaluation splits are query jsonl files or the
original benchmark json (``{vid: {sentences, timestamps, duration[, novels]}}``), whose
``novels`` give the per-composition-type metrics.

A query's hard negatives are its levels, closest first, as many as the file gives (the
pipeline's masking levels; SHINE's release has three). :func:`check_levels` takes the run's
level count from the data and reports the queries that have another count; the dataset,
labels and collation are in :mod:`negforge.trainer.dataset`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from negforge.errors import ConfigError, InputError
from negforge.query_view import by_query
from negforge.records import QueryRecord
from negforge.trainer.features import (
    TextFeatureStore,
    VideoFeatureStore,
    negative_key,
    query_key,
)

PARQUET_MAGIC = b"PAR1"
OnMissing = Literal["error", "skip"]


@dataclass(frozen=True)
class GroundingSample:
    """One (video, query) pair with its ground-truth windows and optional hard negatives."""

    qid: str
    query: str
    vid: str
    duration: float
    windows: tuple[tuple[float, float], ...]
    #: Hard negative queries, one per level, closest first (``None``: a missing negative).
    negatives: tuple[str | None, ...] = ()
    #: True when every level's negative exists and none was flagged invalid.
    negatives_valid: bool = False
    #: Composition types (``v-n``, ``p-n``, ...) of a novel-composition query.
    novel_types: tuple[str, ...] = ()
    #: QVHighlights rows: relevant clip ids and their summed annotator scores (0-12).
    relevant_clip_ids: tuple[int, ...] | None = None
    clip_scores: tuple[float, ...] | None = None
    #: The file gave the qid as a number: predictions write it back as one.
    numeric_qid: bool = False

    @property
    def qid_json(self) -> str | int:
        """The qid as the query file wrote it (a number for QVHighlights)."""
        return int(self.qid) if self.numeric_qid else self.qid


def sample_from_record(record: QueryRecord) -> GroundingSample:
    """A sample from a validated query record (SHINE ``recomposed_queries`` become negatives)."""
    negatives: tuple[str | None, ...] = tuple(
        (text if text and text.strip() else None) for text in (record.recomposed_queries or [])
    )
    clip_ids = clip_scores = None
    if record.relevant_clip_ids is not None and record.saliency_scores is not None:
        clip_ids = tuple(record.relevant_clip_ids)
        clip_scores = tuple(float(sum(row)) for row in record.saliency_scores)
    return GroundingSample(
        qid=record.qid,
        query=record.query,
        vid=record.vid,
        duration=record.duration,
        windows=tuple((float(s), float(e)) for s, e in record.relevant_windows),
        negatives=negatives,
        negatives_valid=bool(negatives) and all(n is not None for n in negatives),
        novel_types=tuple(record.novel_types),
        relevant_clip_ids=clip_ids,
        clip_scores=clip_scores,
        numeric_qid=record.numeric_qid,
    )


def is_negatives_artifact(path: str | Path) -> bool:
    """Whether ``path`` is a Parquet file carrying negforge provenance metadata."""
    import pyarrow.parquet as pq

    from negforge.artifacts import METADATA_KEY

    with open(path, "rb") as handle:
        if handle.read(4) != PARQUET_MAGIC:
            return False
    try:
        return METADATA_KEY in (pq.read_schema(path).metadata or {})
    except OSError:
        return False


def read_query_records(path: str | Path) -> list[QueryRecord]:
    """Query records of a jsonl / benchmark json / csv / parquet query file."""
    from negforge.readers import read_queries

    path = Path(path)
    if not path.is_file():
        raise InputError("query file does not exist", path=path)
    return list(read_queries(path, on_error="raise").records)


def read_negatives_artifact(path: str | Path) -> list[GroundingSample]:
    """Samples of a negforge negatives artifact: levels 1..n of a qid become its negatives.

    ``n`` is the artifact's level count (its highest level). A level that is absent, ``None``
    or flagged invalid marks the query's negatives invalid: the row still trains on L_base +
    L_cr, not on L_fr.
    """
    from negforge.artifacts import read_artifact

    table, _ = read_artifact(path, "negatives")
    columns = ["qid", "query", "vid", "duration", "relevant_windows", "level", "negative", "valid"]
    rows = table.select(columns).to_pylist()
    levels = max((int(row["level"]) for row in rows), default=0)
    samples = []
    for query in by_query(rows):
        first, by_level = query.first, query.by_level()
        negatives: list[str | None] = []
        for level in range(1, levels + 1):
            row = by_level.get(level)
            ok = row is not None and bool(row["valid"]) and bool(row["negative"])
            negatives.append(row["negative"] if ok and row is not None else None)
        samples.append(
            GroundingSample(
                qid=query.qid,
                query=first["query"],
                vid=first["vid"],
                duration=float(first["duration"]),
                windows=tuple((float(s), float(e)) for s, e in first["relevant_windows"]),
                negatives=tuple(negatives),
                negatives_valid=all(n is not None for n in negatives),
            )
        )
    return samples


def load_train_samples(path: str | Path) -> list[GroundingSample]:
    """TRAIN: a negatives artifact (Parquet) or a SHINE / query file (jsonl, json, csv)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("training file does not exist", path=path)
    if is_negatives_artifact(path):
        return read_negatives_artifact(path)
    return [sample_from_record(r) for r in read_query_records(path)]


def load_eval_samples(path: str | Path) -> list[GroundingSample]:
    """An evaluation split (query jsonl or benchmark json); negatives are ignored."""
    samples = [sample_from_record(r) for r in read_query_records(path)]
    return [dataclasses.replace(s, negatives=(), negatives_valid=False) for s in samples]


def split_by_video(
    samples: Sequence[GroundingSample], fraction: float, seed: int
) -> tuple[list[GroundingSample], list[GroundingSample]]:
    """Hold out ``fraction`` of the videos (seeded): no video is in both parts."""
    if fraction <= 0:
        return list(samples), []
    vids = sorted({s.vid for s in samples})
    if len(vids) < 2:
        raise InputError(f"cannot hold out a validation part from {len(vids)} video(s)")
    count = min(len(vids) - 1, max(1, round(fraction * len(vids))))
    order = np.random.default_rng(seed).permutation(len(vids))
    held = {vids[i] for i in order[:count]}
    return [s for s in samples if s.vid not in held], [s for s in samples if s.vid in held]


@dataclass
class MissingReport:
    """What ``on_missing=skip`` dropped."""

    skipped_queries: int = 0
    missing_videos: set[str] = field(default_factory=set)
    missing_texts: set[str] = field(default_factory=set)
    #: Queries whose negatives' text features were missing: kept, but without L_fr.
    dropped_negatives: int = 0

    def summary(self) -> str:
        return (
            f"skipped {self.skipped_queries} queries (missing: {len(self.missing_videos)} "
            f"videos, {len(self.missing_texts)} query texts); "
            f"{self.dropped_negatives} queries lost their hard negatives"
        )


def check_features(
    samples: Sequence[GroundingSample],
    video_store: VideoFeatureStore,
    text_store: TextFeatureStore,
    *,
    on_missing: OnMissing = "error",
    with_negatives: bool = True,
    source: str | Path | None = None,
) -> tuple[list[GroundingSample], MissingReport]:
    """Keep the samples whose features exist; raise on the first gap unless ``skip``."""
    report = MissingReport()
    kept: list[GroundingSample] = []
    for sample in samples:
        missing_video = not video_store.has(sample.vid)
        missing_text = not text_store.has(query_key(sample.qid))
        if missing_video or missing_text:
            if on_missing == "error":
                what = (
                    f"video features for vid '{sample.vid}'"
                    if missing_video
                    else f"text features for qid '{sample.qid}'"
                )
                where = (
                    ", ".join(map(str, video_store.missing_from(sample.vid)))
                    if missing_video
                    else ", ".join(str(s.path) for s in text_store.sources)
                )
                raise InputError(
                    f"missing {what} (looked in {where}); pass --on-missing skip to drop such "
                    "queries",
                    path=source,
                    field=sample.vid if missing_video else sample.qid,
                )
            report.skipped_queries += 1
            if missing_video:
                report.missing_videos.add(sample.vid)
            if missing_text:
                report.missing_texts.add(sample.qid)
            continue
        if with_negatives and sample.negatives_valid:
            absent = [
                negative_key(sample.qid, i)
                for i in range(len(sample.negatives))
                if not text_store.has(negative_key(sample.qid, i))
            ]
            if absent:
                if on_missing == "error":
                    raise InputError(
                        f"missing text features for hard negative '{absent[0]}' of qid "
                        f"'{sample.qid}'; pass --on-missing skip to train it without L_fr",
                        path=source,
                        field=absent[0],
                    )
                report.dropped_negatives += 1
                sample = dataclasses.replace(sample, negatives_valid=False)
        kept.append(sample)
    return kept, report


@dataclass(frozen=True)
class LevelReport:
    """How many hard-negative levels the queries of a TRAIN file carry."""

    #: The run's level count: the one given, else that of most queries (0: none has any).
    levels: int
    #: Level count -> queries with that many negatives (queries without any are not counted).
    counts: dict[int, int]
    #: A few qids whose count differs from ``levels``.
    examples: tuple[str, ...] = ()

    @property
    def off_level(self) -> int:
        """Queries whose negatives do not have ``levels`` levels (they train without L_fr)."""
        return sum(n for count, n in self.counts.items() if count != self.levels)

    def summary(self) -> str:
        """One line: which counts differ from the run's and what happens to those queries."""
        parts = [
            f"{n} {'query has' if n == 1 else 'queries have'} {count}"
            for count, n in sorted(self.counts.items())
            if count != self.levels
        ]
        return (
            f"{', '.join(parts)} hard-negative levels, not {self.levels} like "
            f"{self.counts.get(self.levels, 0)} other queries (e.g. qid "
            f"{', '.join(map(repr, self.examples))}): they train without L_fr"
        )


def most_common_levels(samples: Sequence[GroundingSample]) -> int:
    """The level count of most queries that have negatives (the larger on a tie; 0: none)."""
    counts = Counter(len(s.negatives) for s in samples if s.negatives)
    return max(counts, key=lambda count: (counts[count], count)) if counts else 0


def check_levels(
    samples: Sequence[GroundingSample],
    levels: int | None = None,
    *,
    source: str | Path | None = None,
) -> tuple[list[GroundingSample], LevelReport]:
    """The run's level count and the samples, off-level queries without valid negatives.

    ``levels`` is what the run expects (a resumed run's, or ``loss.shine.levels``); by
    default it is taken from the data (:func:`most_common_levels`). A data set in which no
    query has that many levels is an error; single queries with another count keep training
    on L_base + L_cr (see :meth:`LevelReport.summary`).
    """
    counts = Counter(len(s.negatives) for s in samples if s.negatives)
    found = most_common_levels(samples)
    if levels is None:
        levels = found
    elif counts and levels not in counts:
        raise ConfigError(
            f"{source or 'TRAIN'}: the queries have {found} hard-negative levels but the run "
            f"expects {levels} (loss.shine.levels)"
        )
    kept: list[GroundingSample] = []
    examples: list[str] = []
    for sample in samples:
        if sample.negatives and len(sample.negatives) != levels:
            if len(examples) < 3:
                examples.append(sample.qid)
            sample = dataclasses.replace(sample, negatives_valid=False)
        kept.append(sample)
    return kept, LevelReport(levels, dict(sorted(counts.items())), tuple(examples))
