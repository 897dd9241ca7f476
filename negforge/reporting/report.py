"""Assemble a negatives report: quality figures, examples and the hierarchy check.

:func:`build_report` is the library entry point behind ``negforge report``; the result is
a plain pydantic model that :mod:`negforge.reporting.markdown_report` and
:mod:`negforge.reporting.html_report` render.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from negforge import __version__
from negforge.progress import StepProgress
from negforge.reporting.examples import Example, sample_examples
from negforge.reporting.hierarchy import (
    Embedder,
    HierarchyResult,
    hierarchy_similarity,
    minilm_embedder,
)
from negforge.reporting.plausibility import (
    DEFAULT_LEAST,
    DEFAULT_THRESHOLD,
    ArtifactPlausibility,
    ImplausibleExample,
    RowScore,
    least_plausible,
    plausibility_of,
)
from negforge.reporting.quality import TOP_K, ArtifactQuality, DictionaryLookup, compute_quality
from negforge.reporting.sources import NegativesSource, load_negatives, unique_names

DEFAULT_EXAMPLES = 12
DEFAULT_HIERARCHY_SAMPLE = 1000


class ArtifactInfo(BaseModel):
    """Where a compared artifact came from (its file and provenance)."""

    name: str
    path: str
    created: str | None = None
    input_files: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)


class NegativesReport(BaseModel):
    """Everything a negatives report shows."""

    title: str = "negforge negatives report"
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat())
    negforge_version: str = __version__
    dictionary: str | None = None
    sources: list[ArtifactInfo]
    artifacts: list[ArtifactQuality]
    examples: list[Example] = Field(default_factory=list)
    hierarchy: list[HierarchyResult] = Field(default_factory=list)
    hierarchy_note: str | None = None
    plausibility: list[ArtifactPlausibility] = Field(default_factory=list)
    least_plausible: list[ImplausibleExample] = Field(default_factory=list)
    plausibility_note: str | None = None
    seed: int = 0


def _info(source: NegativesSource) -> ArtifactInfo:
    provenance = source.provenance
    return ArtifactInfo(
        name=source.name,
        path=str(source.path),
        created=provenance.created,
        input_files=list(provenance.input_files),
        settings=dict(provenance.settings),
        summary=dict(provenance.summary),
    )


def report_from_sources(
    sources: Sequence[NegativesSource],
    *,
    dictionary: DictionaryLookup | None = None,
    dictionary_name: str | None = None,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    embedder: Embedder | None = None,
    encoder_name: str = "minilm",
    hierarchy_note: str | None = None,
    hierarchy_sample: int | None = DEFAULT_HIERARCHY_SAMPLE,
    top_k: int = TOP_K,
    plausibility_threshold: float = DEFAULT_THRESHOLD,
    least_count: int = DEFAULT_LEAST,
    progress: StepProgress | None = None,
) -> NegativesReport:
    """Build the report over already loaded artifacts (``embedder`` None: no hierarchy check).

    Sources with plausibility scores get the plausibility section. ``progress`` advances
    once per artifact and figure set (quality, hierarchy).
    """
    progress = progress or StepProgress("", quiet=True)
    qualities = []
    for source in sources:
        progress.update(description=f"quality figures: {source.name}")
        qualities.append(compute_quality(source.name, source.rows, dictionary, top_k=top_k))
        progress.advance()
    hierarchy = []
    if embedder is not None:
        for source in sources:
            progress.update(description=f"hierarchy check: {source.name}")
            hierarchy.append(hierarchy_similarity(
                source.name, source.rows, embedder, encoder=encoder_name,
                sample=hierarchy_sample, seed=seed,
            ))  # fmt: skip
            progress.advance()
    scored = [source for source in sources if source.scores is not None]
    plausibility = [
        plausibility_of(source.name, source.rows, source.scores or [],
                        threshold=plausibility_threshold, model=source.score_model)
        for source in scored
    ]  # fmt: skip
    least: list[ImplausibleExample] = []
    for source in scored:
        least += least_plausible(source.name, source.rows, source.scores or [], least_count)
    note = None
    if not scored:
        note = ("no artifact has plausibility scores: score them with `negforge "
                "score-plausibility` or pass --score-plausibility")  # fmt: skip
    elif len(scored) < len(sources):
        missing = ", ".join(source.name for source in sources if source.scores is None)
        note = f"not scored: {missing}"
    return NegativesReport(
        dictionary=dictionary_name,
        sources=[_info(source) for source in sources],
        artifacts=qualities,
        examples=sample_examples([(s.name, s.rows) for s in sources], examples, seed),
        hierarchy=hierarchy,
        hierarchy_note=hierarchy_note,
        plausibility=plausibility,
        least_plausible=least,
        plausibility_note=note,
        seed=seed,
    )


def score_sources(
    sources: Sequence[NegativesSource],
    *,
    model_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> list[NegativesSource]:
    """The sources, those without plausibility scores scored now (through the score cache)."""
    from negforge.plausibility.cache import ScoreCache
    from negforge.plausibility.llama import LlamaSettings
    from negforge.plausibility.scorer import SentenceScorer

    missing = [source for source in sources if source.scores is None]
    if not missing:
        return list(sources)
    texts = [text for source in missing for row in source.rows
             for text in (row.query.strip(), (row.negative or "").strip()) if text]  # fmt: skip
    with ScoreCache(cache_dir) as cache, SentenceScorer(
        LlamaSettings(model_path=Path(model_path) if model_path else None), cache=cache
    ) as scorer:
        scores = dict(zip(texts, scorer.score(texts), strict=True))
        model = scorer.model_name
    scored: list[NegativesSource] = []
    for source in sources:
        if source.scores is not None:
            scored.append(source)
            continue
        row_scores: list[RowScore | None] = []
        for row in source.rows:
            negative = (row.negative or "").strip()
            if not negative:
                row_scores.append(None)
                continue
            query = scores[row.query.strip()].nll
            nll = scores[negative].nll
            row_scores.append(RowScore(nll=nll, query_nll=query, delta=nll - query))
        scored.append(dataclasses.replace(source, scores=row_scores, score_model=model))
    return scored


def build_report(
    paths: Sequence[str | Path],
    *,
    names: Sequence[str] | None = None,
    dictionary_path: str | Path | None = None,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    hierarchy: bool = True,
    hierarchy_sample: int | None = DEFAULT_HIERARCHY_SAMPLE,
    top_k: int = TOP_K,
    score_plausibility: bool = False,
    plausibility_threshold: float = DEFAULT_THRESHOLD,
    least_count: int = DEFAULT_LEAST,
    model_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    quiet: bool = True,
) -> NegativesReport:
    """Read the artifacts (and dictionary) and build their report (a progress display on
    stderr unless ``quiet``).

    The hierarchy check runs when ``hierarchy`` is set and the offline MiniLM encoder is
    installed; otherwise the report says why it is missing. The plausibility section covers
    scored artifacts, and every artifact with ``score_plausibility`` (scored now, cached).
    """
    from negforge.dictionary import load_dictionary

    resolved = [Path(p) for p in paths]
    steps = len(resolved) * (3 if hierarchy else 2) + int(score_plausibility)
    with StepProgress("report", steps, quiet=quiet, unit="steps") as progress:
        sources = []
        for path, name in zip(resolved, unique_names(resolved, names), strict=True):
            progress.update(description=f"reading {path.name}")
            sources.append(load_negatives(path, name))
            progress.advance()
        if score_plausibility:
            progress.update(description="plausibility scores")
            sources = score_sources(sources, model_path=model_path, cache_dir=cache_dir)
            progress.advance()
        progress.update(description="dictionary and encoder")
        dictionary = load_dictionary(dictionary_path) if dictionary_path is not None else None
        embedder: Embedder | None = None
        note: str | None = "hierarchy check turned off (--no-hierarchy)"
        if hierarchy:
            embedder, note = minilm_embedder()
        return report_from_sources(
            sources,
            dictionary=dictionary,
            dictionary_name=str(dictionary_path) if dictionary_path is not None else None,
            examples=examples,
            seed=seed,
            embedder=embedder,
            hierarchy_note=note,
            hierarchy_sample=hierarchy_sample,
            top_k=top_k,
            plausibility_threshold=plausibility_threshold,
            least_count=least_count,
            progress=progress,
        )
