"""The plausibility score cache (diskcache): a hit costs no model call.

The key is a sha256 over the scoring version, the GGUF file's sha256 and the text, so
another model (or another way of scoring: bump :data:`SCORING_VERSION`) is a miss. Looking
scores up needs no model: a run whose texts are all cached never loads one. Each finished batch is
written at once, so a killed run resumes from what it had scored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel

from negforge.cache_paths import cache_folder

#: Bump when what is scored, or how, changes: every cached score is then a miss.
SCORING_VERSION = 1


class SentenceScore(BaseModel):
    """One text under one model: mean negative log-likelihood per token, and token count."""

    nll: float  # nats per token, mean over the text's tokens
    tokens: int


def default_cache_dir() -> Path:
    """``$NEGFORGE_CACHE_DIR/plausibility`` (default ``~/.cache/negforge/plausibility``)."""
    return cache_folder("plausibility")


def score_key(model_sha256: str, text: str) -> str:
    """The cache key of one text's score."""
    material = f"{SCORING_VERSION}\x1f{model_sha256}\x1f{text}"
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


class ScoreCache:
    """A diskcache-backed map from score keys to :class:`SentenceScore` (multi-process safe)."""

    def __init__(self, directory: str | Path | None = None) -> None:
        import diskcache

        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._cache = diskcache.Cache(str(self.directory), size_limit=2**32)

    def get_many(self, keys: Iterable[str]) -> dict[str, SentenceScore]:
        """The cached scores among ``keys`` (a corrupt entry is a miss)."""
        found: dict[str, SentenceScore] = {}
        for key in keys:
            raw = self._cache.get(key)
            if isinstance(raw, tuple) and len(raw) == 2:
                try:
                    found[key] = SentenceScore(nll=float(raw[0]), tokens=int(raw[1]))
                except (TypeError, ValueError):
                    continue
        return found

    def set_many(self, scores: Mapping[str, SentenceScore]) -> None:
        """Store scores in one transaction."""
        with self._cache.transact():
            for key, score in scores.items():
                self._cache.set(key, (score.nll, score.tokens))

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
