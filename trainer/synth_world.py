"""The world of ``negforge synth``: its words, their meanings, signatures and text vectors.

:class:`SynthConfig` sizes the benchmark; :class:`Vocabulary` says which words and pairs
exist and which are held out; :class:`World` holds every word's latent meaning, visual
signature and text vector (fixed by the config's seed), so features of new texts can be made
later for the same benchmark (:mod:`negforge.trainer.synth_negatives`). The benchmark itself
is written by :mod:`negforge.trainer.synth`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from negforge.template import render

#: Word pools; the first ``verbs + novel_verbs`` (``nouns + novel_nouns``) are used.
VERB_POOL = (
    "opens", "closes", "holds", "throws", "washes", "takes", "puts", "carries",
    "lifts", "pushes", "cleans", "drops", "fixes", "grabs", "wipes", "turns",
)  # fmt: skip
NOUN_POOL = (
    "door", "box", "cup", "book", "phone", "towel", "bag", "bottle",
    "chair", "laptop", "shoe", "plate", "pillow", "blanket", "broom", "mirror",
)  # fmt: skip
SUBJECTS = ("person", "someone")
FILLER = ("the", ".")
#: Seeds of the fixed world (word meanings, projections), of the split contents and of the
#: words of ``negatives: video`` (its own stream: the videos and queries stay the same).
_WORLD_STREAM, _DATA_STREAM, _NEGATIVE_STREAM = 0, 1, 2


class SynthConfig(BaseModel):
    """Size and difficulty of the synthetic benchmark."""

    train_videos: int = Field(150, ge=4, description="videos of train (every event queried)")
    val_videos: int = Field(40, ge=0, description="videos of val (checkpoint selection)")
    test_videos: int = Field(100, ge=1, description="test_trivial videos (anchor queried)")
    novel_videos: int = Field(100, ge=1, description="novel_composition videos")
    novel_word_videos: int = Field(100, ge=0, description="novel_word videos (0: no split)")
    verbs: int = Field(8, ge=3, description="seen verbs")
    nouns: int = Field(8, ge=3, description="seen nouns")
    novel_verbs: int = Field(2, ge=0, description="verbs that occur only in novel_word")
    novel_nouns: int = Field(2, ge=0, description="nouns that occur only in novel_word")
    held_out_pairs: int = Field(8, ge=1, description="verb-noun pairs held out of train")
    distractors: int = Field(
        2, ge=0, le=2, description="events sharing the anchor's verb (1) and noun (2)"
    )
    extra_events: int = Field(0, ge=0, description="unrelated events per video")
    pair_skew: float = Field(
        0.5, ge=0, le=1, description="share of events drawn as a word's preferred partner"
    )
    latent_dim: int = Field(6, ge=1, description="dimensions of a word's meaning")
    word_noise: float = Field(
        0.3, ge=0, description="word-specific part of a signature, not predictable from text"
    )
    interaction: float = Field(0.5, ge=0, description="weight of the verb x noun term")
    video_dim: int = Field(32, ge=4)
    text_dim: int = Field(32, ge=4)
    clip_len: float = Field(1.0, gt=0)
    min_duration: float = Field(20.0, gt=0)
    max_duration: float = Field(36.0, gt=0)
    signal: float = Field(3.0, gt=0, description="strength of an event's signature")
    noise: float = Field(0.5, ge=0)
    negatives: Literal["swap", "video"] = Field(
        "swap",
        description="words of the built-in hard negatives: random vocabulary words (swap), or "
        "the words of the video's other events (video: the distractors it shows elsewhere)",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check_sizes(self) -> SynthConfig:
        if self.verbs + self.novel_verbs > len(VERB_POOL):
            raise ValueError(f"verbs + novel_verbs must be at most {len(VERB_POOL)}")
        if self.nouns + self.novel_nouns > len(NOUN_POOL):
            raise ValueError(f"nouns + novel_nouns must be at most {len(NOUN_POOL)}")
        if self.held_out_pairs > min(self.verbs, self.nouns) * (min(self.verbs, self.nouns) - 2):
            raise ValueError("too many held-out pairs for the vocabulary")
        if self.novel_word_videos and not (self.novel_verbs or self.novel_nouns):
            raise ValueError("novel_word_videos needs novel_verbs or novel_nouns")
        if self.max_duration < self.min_duration:
            raise ValueError("max_duration must be at least min_duration")
        return self


class Vocabulary(BaseModel):
    """The words of a benchmark and which pairs / words are held out."""

    verbs: list[str]
    nouns: list[str]
    novel_verbs: list[str]
    novel_nouns: list[str]
    held_out: list[tuple[str, str]]

    @classmethod
    def of(cls, config: SynthConfig) -> Vocabulary:
        verbs = list(VERB_POOL[: config.verbs])
        nouns = list(NOUN_POOL[: config.nouns])
        # Shifted diagonals: every held-out pair's verb and noun keep other train partners.
        held = [
            (verbs[i % len(verbs)], nouns[(i + 1 + i // len(verbs)) % len(nouns)])
            for i in range(config.held_out_pairs)
        ]
        return cls(
            verbs=verbs,
            nouns=nouns,
            novel_verbs=list(VERB_POOL[config.verbs : config.verbs + config.novel_verbs]),
            novel_nouns=list(NOUN_POOL[config.nouns : config.nouns + config.novel_nouns]),
            held_out=held,
        )

    def preferred_noun(self, verb: str) -> str | None:
        """The noun a seen verb co-occurs with most in train (the diagonal; never held out)."""
        if verb not in self.verbs:
            return None
        return self.nouns[self.verbs.index(verb) % len(self.nouns)]

    def preferred_verb(self, noun: str) -> str | None:
        return next((v for v in self.verbs if self.preferred_noun(v) == noun), None)

    def seen_pairs(self) -> list[tuple[str, str]]:
        held = set(self.held_out)
        return [(v, n) for v in self.verbs for n in self.nouns if (v, n) not in held]


def held_out_pairs(config: SynthConfig | None = None) -> list[tuple[str, str]]:
    """The verb-noun pairs held out of train (the novel-composition anchors)."""
    return Vocabulary.of(config or SynthConfig()).held_out


def sentence(verb: str, noun: str, subject: str = "person") -> str:
    return render([subject, verb, "the", noun, "."])


def words_of(text: str) -> list[str]:
    """Lower-case word and '.' tokens of a query."""
    return re.findall(r"[a-z]+|\.", text.lower())


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class World:
    """The fixed meanings, visual signatures and word vectors of one benchmark.

    Built from ``config`` alone (its own seed stream), so features of new texts (negatives
    from the pipeline) can be made later for the same benchmark.
    """

    def __init__(self, config: SynthConfig) -> None:
        rng = np.random.default_rng([config.seed, _WORLD_STREAM])
        self.config = config
        self.vocab = Vocabulary.of(config)
        vocab = self.vocab
        k = config.latent_dim
        to_text = rng.normal(size=(k, config.text_dim)) / np.sqrt(k)
        to_video = rng.normal(size=(k, config.video_dim)) / np.sqrt(k)
        self.look: dict[str, np.ndarray] = {}
        self.word_vec: dict[str, np.ndarray] = {}
        for group in (
            [*vocab.verbs, *vocab.novel_verbs],
            [*vocab.nouns, *vocab.novel_nouns],
        ):
            meaning = _unit(rng, len(group), k)
            own_video = _unit(rng, len(group), config.video_dim)
            own_text = _unit(rng, len(group), config.text_dim)
            for i, word in enumerate(group):
                look = meaning[i] @ to_video + config.word_noise * own_video[i]
                self.look[word] = look / np.linalg.norm(look)
                text = meaning[i] @ to_text + config.word_noise * own_text[i]
                self.word_vec[word] = text / np.linalg.norm(text)
        for word, vector in zip(
            [*SUBJECTS, *FILLER],
            _unit(rng, len(SUBJECTS) + len(FILLER), config.text_dim),
            strict=True,
        ):
            self.word_vec[word] = vector

    def vector(self, word: str) -> np.ndarray:
        """A word's text vector; a word outside the vocabulary gets a fixed random one."""
        if word not in self.word_vec:
            rng = np.random.default_rng([self.config.seed, zlib.crc32(word.encode())])
            self.word_vec[word] = _unit(rng, 1, self.config.text_dim)[0]
        return self.word_vec[word]

    def text_tokens(self, text: str, rng: np.random.Generator) -> np.ndarray:
        tokens = np.stack([self.vector(w) for w in words_of(text)])
        return (tokens + 0.05 * rng.normal(size=tokens.shape)).astype(np.float32)

    def event_look(self, verb: str, noun: str) -> np.ndarray:
        v, n = self.look[verb], self.look[noun]
        pair = v * n * np.sqrt(self.config.video_dim)  # unit scale on average
        return v + n + self.config.interaction * pair

    def video(
        self,
        events: Sequence[tuple[str, str, float, float]],
        duration: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        cfg = self.config
        length = max(1, round(duration / cfg.clip_len))
        scene = rng.normal(size=cfg.video_dim)
        feats = cfg.noise * rng.normal(size=(length, cfg.video_dim)) + 0.5 * scene
        for verb, noun, start, end in events:
            first, last = int(start / cfg.clip_len), min(int(end / cfg.clip_len), length)
            feats[first:last] += cfg.signal * self.event_look(verb, noun)
        return feats.astype(np.float32)
