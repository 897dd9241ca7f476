"""``negforge synth``: a small synthetic compositional grounding benchmark in the real layouts.

Each video holds two events, each a (verb, noun) pair shown in its own window: the clips
inside a window carry the verb's and the noun's visual signature on top of noise and a
per-video scene vector. Every event gets a query "person <verb> the <noun>." whose token
features come from a fixed word table. Some verb-noun pairs are held out: they never occur
in train (each of their verbs and nouns does, with other partners) and make up the
novel-composition split, whose rows carry ``novels: {"v-n": [[verb, noun]]}``.

Written under DIR (the layouts of Moment-DETR / SHINE users):

* ``train.jsonl`` -- SHINE jsonl with ``masked_queries`` and ``recomposed_queries``
  (three hierarchical negatives: verb swapped; verb and noun; verb, noun and subject);
  ``train_queries.jsonl`` -- the same rows without negatives (input of the negatives
  pipeline); ``test_trivial.jsonl``, ``novel_composition.jsonl``;
* ``video_feats/{vid}.npy`` -- (clips, ``video_dim``) float32, one clip per ``clip_len`` s;
* ``text_feats/{qid}.npz`` and ``{qid}_recomposed_gpt_{i}.npz`` -- ``last_hidden_state``;
* ``train_config.yaml`` -- a config for ``negforge train --config`` sized for a CPU run;
* ``synth_info.json`` -- sizes, vocabulary and the held-out pairs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, Field

from negforge.atomic import atomic_path, atomic_write_text
from negforge.trainer.features import negative_key, query_key

VERBS = ("opens", "closes", "holds", "throws", "washes", "takes")
NOUNS = ("door", "box", "cup", "book", "phone", "towel")
SUBJECTS = ("person", "someone")
FILLER = ("the", ".")


class SynthConfig(BaseModel):
    """Size and difficulty of the synthetic benchmark."""

    train_videos: int = Field(200, ge=4)
    test_videos: int = Field(60, ge=2)
    novel_videos: int = Field(40, ge=2)
    video_dim: int = Field(32, ge=4)
    text_dim: int = Field(32, ge=4)
    clip_len: float = Field(1.0, gt=0)
    min_duration: float = Field(16.0, gt=0)
    max_duration: float = Field(32.0, gt=0)
    signal: float = Field(4.0, gt=0, description="strength of an event's signature")
    noise: float = Field(0.5, ge=0)
    seed: int = 0


class SynthReport(BaseModel):
    """What ``synth`` wrote."""

    output: str
    queries: dict[str, int]
    videos: int
    held_out_pairs: list[tuple[str, str]]
    train_config: str


def held_out_pairs() -> list[tuple[str, str]]:
    """One pair per verb and per noun (a shifted diagonal): every word stays seen in train."""
    return [(VERBS[i], NOUNS[(i + 1) % len(NOUNS)]) for i in range(len(VERBS))]


def seen_pairs() -> list[tuple[str, str]]:
    held = set(held_out_pairs())
    return [(v, n) for v in VERBS for n in NOUNS if (v, n) not in held]


def sentence(verb: str, noun: str, subject: str = "person") -> str:
    return f"{subject} {verb} the {noun}."


class _World:
    """The fixed visual signatures and word vectors of one benchmark."""

    def __init__(self, config: SynthConfig, rng: np.random.Generator) -> None:
        def unit(n: int, dim: int) -> np.ndarray:
            vectors = rng.normal(size=(n, dim))
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        self.config = config
        self.verb_look = dict(zip(VERBS, unit(len(VERBS), config.video_dim), strict=True))
        self.noun_look = dict(zip(NOUNS, unit(len(NOUNS), config.video_dim), strict=True))
        words = [*VERBS, *NOUNS, *SUBJECTS, *FILLER]
        self.word_vec = dict(zip(words, unit(len(words), config.text_dim), strict=True))

    def text_tokens(self, text: str, rng: np.random.Generator) -> np.ndarray:
        words = text.replace(".", " .").split()
        tokens = np.stack([self.word_vec[w] for w in words])
        return (tokens + 0.05 * rng.normal(size=tokens.shape)).astype(np.float32)

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
            look = self.verb_look[verb] + self.noun_look[noun]
            feats[first:last] += cfg.signal * look
        return feats.astype(np.float32)


def _two_windows(
    duration: float, rng: np.random.Generator, clip_len: float
) -> list[tuple[float, float]]:
    """Two disjoint windows, each 15-40 % of the video, on whole clips."""
    while True:
        lengths = rng.uniform(0.15, 0.4, size=2) * duration
        gap_total = duration - lengths.sum()
        if gap_total <= 2 * clip_len:
            continue
        cuts = np.sort(rng.uniform(0, gap_total, size=2))
        first_start = cuts[0]
        second_start = first_start + lengths[0] + (cuts[1] - cuts[0])
        windows = [
            (first_start, first_start + lengths[0]),
            (second_start, second_start + lengths[1]),
        ]
        rounded = [
            (round(s / clip_len) * clip_len, round(e / clip_len) * clip_len) for s, e in windows
        ]
        if all(e - s >= 2 * clip_len for s, e in rounded) and rounded[0][1] <= rounded[1][0]:
            order = rng.permutation(2)
            return [rounded[i] for i in order]


def _negatives(verb: str, noun: str, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Masked queries and three negatives: swap the verb; verb + noun; verb + noun + subject."""
    other_verb = str(rng.choice([v for v in VERBS if v != verb]))
    other_noun = str(rng.choice([n for n in NOUNS if n != noun]))
    masked = [
        "person <mask> the " + noun + ".",
        "person <mask> the <mask>.",
        "<mask> <mask> the <mask>.",
    ]
    recomposed = [
        sentence(other_verb, noun),
        sentence(str(rng.choice([v for v in VERBS if v != verb])), other_noun),
        sentence(str(rng.choice([v for v in VERBS if v != verb])), other_noun, "someone"),
    ]
    return masked, recomposed


def _save_npz(folder: Path, name: str, array: np.ndarray) -> None:
    np.savez(folder / f"{name}.npz", last_hidden_state=array)


def generate(output: str | Path, config: SynthConfig | None = None) -> SynthReport:
    """Write the benchmark under ``output`` (see the module docstring)."""
    config = config or SynthConfig()
    out = Path(output)
    video_dir, text_dir = out / "video_feats", out / "text_feats"
    video_dir.mkdir(parents=True, exist_ok=True)
    text_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    world = _World(config, rng)
    seen, held = seen_pairs(), held_out_pairs()
    splits: dict[str, list[dict[str, Any]]] = {
        "train": [],
        "test_trivial": [],
        "novel_composition": [],
    }
    plan = (
        ("train", "train", config.train_videos),
        ("test_trivial", "test", config.test_videos),
        ("novel_composition", "composition", config.novel_videos),
    )
    for split, infix, count in plan:
        for index in range(count):
            vid = f"{split[:2].upper()}{index:05d}"
            duration = round(float(rng.uniform(config.min_duration, config.max_duration)), 2)
            windows = _two_windows(duration, rng, config.clip_len)
            pairs = [seen[int(rng.integers(len(seen)))] for _ in range(2)]
            if split == "novel_composition":
                pairs[0] = held[int(rng.integers(len(held)))]
            while pairs[1] == pairs[0]:
                pairs[1] = seen[int(rng.integers(len(seen)))]
            events = [(v, n, s, e) for (v, n), (s, e) in zip(pairs, windows, strict=True)]
            np.save(video_dir / f"{vid}.npy", world.video(events, duration, rng))
            queried = events[:1] if split == "novel_composition" else events
            for number, (verb, noun, start, end) in enumerate(queried):
                qid = f"{vid}_{infix}_{number}"
                text = sentence(verb, noun)
                row: dict[str, Any] = {
                    "qid": qid,
                    "query": text,
                    "duration": duration,
                    "vid": vid,
                    "relevant_windows": [[start, min(end, duration)]],
                }
                _save_npz(text_dir, query_key(qid), world.text_tokens(text, rng))
                if split == "train":
                    masked, recomposed = _negatives(verb, noun, rng)
                    row["masked_queries"] = masked
                    row["recomposed_queries"] = recomposed
                    for i, negative in enumerate(recomposed):
                        _save_npz(text_dir, negative_key(qid, i), world.text_tokens(negative, rng))
                if split == "novel_composition":
                    row["novels"] = {"v-n": [[verb, noun]]}
                splits[split].append(row)
    for split, rows in splits.items():
        _write_jsonl(out / f"{split}.jsonl", rows)
    plain = [
        {k: v for k, v in r.items() if k not in ("masked_queries", "recomposed_queries")}
        for r in splits["train"]
    ]
    _write_jsonl(out / "train_queries.jsonl", plain)
    config_path = out / "train_config.yaml"
    atomic_write_text(config_path, yaml.safe_dump(train_config_for(config), sort_keys=False))
    report = SynthReport(
        output=str(out),
        queries={k: len(v) for k, v in splits.items()},
        videos=config.train_videos + config.test_videos + config.novel_videos,
        held_out_pairs=held,
        train_config=str(config_path),
    )
    info = {
        "config": config.model_dump(),
        "report": report.model_dump(),
        "verbs": VERBS,
        "nouns": NOUNS,
    }
    atomic_write_text(out / "synth_info.json", json.dumps(info, indent=2) + "\n")
    return report


def train_config_for(config: SynthConfig) -> dict[str, Any]:
    """A ``negforge train --config`` file for the benchmark, sized for a quick CPU run."""
    return {
        "model": {
            "hidden": 64,
            "heads": 4,
            "ff": 128,
            "enc_layers": 2,
            "dec_layers": 2,
            "t2v_layers": 1,
            "num_queries": 5,
            "input_dropout": 0.1,
            "max_v_len": 64,
            "max_q_len": 16,
        },
        "data": {
            "train": "train.jsonl",
            "eval": [
                "test_trivial=test_trivial.jsonl",
                "novel_composition=novel_composition.jsonl",
            ],
            "video_feats": ["video_feats"],
            "text_feats": ["text_feats"],
            "clip_len": config.clip_len,
        },
        "optim": {"lr": 1e-3, "batch_size": 32, "epochs": 20, "lr_drop": 15},
        "eval_every": 2,
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
