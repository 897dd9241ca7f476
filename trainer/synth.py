"""``negforge synth``: a synthetic compositional grounding benchmark in the real layouts.

The benchmark is built so that grounding needs *both* words of a query:

* **Words carry meaning.** Every verb and noun has a latent meaning vector (``latent_dim``
  dimensions). Its text vector and its visual signature are two fixed random projections of
  that meaning plus a word-specific part (``word_noise``). A model that learns how text maps
  to vision on the training words can ground a word it has never seen (``novel_word``),
  as CLIP text features let real models do.
* **Events are compositions.** An event (verb, noun) shown in a window adds
  ``signal * (verb signature + noun signature + interaction * verb x noun term)`` to the
  clips there (on top of noise and a per-video scene vector). The interaction term is a
  fixed elementwise product, so a pair is more than the sum of its words.
* **Distractors share a word.** Every video is a *triangle* around an anchor event
  (verb, noun): one distractor event keeps the verb with another noun, one keeps the noun
  with another verb ("person opens the box" next to "person opens the door" and "person
  closes the box"), plus ``extra_events`` unrelated events. A model keyed on one word picks
  a distractor about half the time.
* **Co-occurrence priors.** Each seen verb has a preferred noun (and that noun the verb);
  ``pair_skew`` of the seen events use it, the rest are uniform over the seen pairs. A
  model that leans on these priors instead of reading both words picks the preferred-pair
  distractor next to a novel composition, as real grounding models follow dataset biases.
* **Held-out pairs and words.** ``held_out_pairs`` verb-noun pairs never occur in train,
  val or test_trivial (each of their words does, with other partners); they are the anchors
  of ``novel_composition`` (rows carry ``novels: {"v-n": [[verb, noun]]}``).
  ``novel_verbs`` / ``novel_nouns`` words occur in no other split at all; each
  ``novel_word`` anchor holds one of them (its distractors share the novel word and the
  seen word).

Train and val query every event of a video (so each query has word-sharing distractors);
the three test splits query the anchor only, so ``test_trivial`` and ``novel_composition``
differ only in whether the anchor pair was seen. ``val`` (videos of its own, same
distribution as train) selects checkpoints; ``train_config.yaml`` sets ``val_fraction: 0``.

Written under DIR (the layouts of Moment-DETR / SHINE users):

* ``train.jsonl`` -- SHINE jsonl with ``masked_queries`` and ``recomposed_queries`` (the
  built-in swaps: verb; verb and noun; verb, noun and subject); ``train_queries.jsonl`` --
  the same rows without negatives (input of the negatives pipeline, see
  :func:`featurize_negatives`); ``val.jsonl``, ``test_trivial.jsonl``,
  ``novel_composition.jsonl``, ``novel_word.jsonl``;
* ``video_feats/{vid}.npy`` -- (clips, ``video_dim``) float32, one clip per ``clip_len`` s;
* ``text_feats/{qid}.npz`` and ``{qid}_recomposed_gpt_{i}.npz`` -- ``last_hidden_state``;
* ``videos.jsonl`` -- every video's events ``[verb, noun, start, end]``, the anchor first;
* ``train_config.yaml`` -- a config for ``negforge train --config`` sized for a CPU run;
* ``synth_info.json`` -- the config, sizes, vocabulary, held-out pairs and novel words.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, Field, model_validator

from negforge.atomic import atomic_path, atomic_write_text
from negforge.errors import InputError
from negforge.template import render
from negforge.trainer.features import negative_key, query_key

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
#: Seeds of the fixed world (word meanings, projections) and of the split contents.
_WORLD_STREAM, _DATA_STREAM = 0, 1


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


class SynthReport(BaseModel):
    """What ``synth`` wrote."""

    output: str
    queries: dict[str, int]
    videos: int
    held_out_pairs: list[tuple[str, str]]
    novel_words: list[str]
    train_config: str


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


def _windows(
    count: int, duration: float, rng: np.random.Generator, clip_len: float
) -> list[tuple[float, float]]:
    """``count`` disjoint windows on whole clips, each 2+ clips and 8-25 % of the video,
    in random order."""
    for _ in range(1000):
        lengths = rng.uniform(0.08, 0.25, size=count) * duration
        spare = duration - lengths.sum()
        if spare <= (count + 1) * clip_len:
            continue
        gaps = np.diff(np.concatenate(([0.0], np.sort(rng.uniform(0, spare, size=count)))))
        windows, cursor = [], 0.0
        for gap, length in zip(gaps, lengths, strict=True):
            start = cursor + gap
            windows.append((start, start + length))
            cursor = start + length
        rounded = [
            (round(s / clip_len) * clip_len, min(round(e / clip_len) * clip_len, duration))
            for s, e in windows
        ]
        disjoint = all(rounded[i][1] <= rounded[i + 1][0] for i in range(count - 1))
        if disjoint and all(e - s >= 2 * clip_len for s, e in rounded):
            return [rounded[i] for i in rng.permutation(count)]
    raise ValueError(f"cannot place {count} events in {duration} s: lengthen the videos")


def _choice(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _partner(
    rng: np.random.Generator,
    candidates: Sequence[str],
    preferred: str | None,
    skew: float,
) -> str:
    """A candidate word; the preferred one with probability ``skew`` when it is allowed."""
    if preferred in candidates and rng.random() < skew:
        return str(preferred)
    return str(_choice(rng, candidates))


def _triangle(
    anchor: tuple[str, str],
    verbs: Sequence[str],
    nouns: Sequence[str],
    allowed: set[tuple[str, str]],
    config: SynthConfig,
    vocab: Vocabulary,
    rng: np.random.Generator,
) -> list[tuple[str, str]]:
    """The anchor, its word-sharing distractors and unrelated extra events (all distinct).

    Distractors follow the training prior: a verb keeps its preferred noun (and a noun its
    preferred verb) with probability ``pair_skew``.
    """
    verb, noun = anchor
    skew = config.pair_skew
    events = [anchor]
    if config.distractors >= 1:
        candidates = [n for n in nouns if n != noun and (verb, n) in allowed]
        events.append((verb, _partner(rng, candidates, vocab.preferred_noun(verb), skew)))
    if config.distractors >= 2:
        candidates = [v for v in verbs if v != verb and (v, noun) in allowed]
        events.append((_partner(rng, candidates, vocab.preferred_verb(noun), skew), noun))
    unrelated = [
        (v, n) for (v, n) in sorted(allowed) if v != verb and n != noun and (v, n) not in events
    ]
    for _ in range(config.extra_events):
        events.append(_choice(rng, [p for p in unrelated if p not in events]))
    return events


def _seen_anchor(
    vocab: Vocabulary, seen: Sequence[tuple[str, str]], skew: float, rng: np.random.Generator
) -> tuple[str, str]:
    """A seen pair from the training prior: a verb with its preferred noun w.p. ``skew``."""
    if rng.random() < skew:
        verb = str(_choice(rng, vocab.verbs))
        return verb, str(vocab.preferred_noun(verb))
    return _choice(rng, seen)


def _builtin_negatives(
    verb: str, noun: str, subject: str, vocab: Vocabulary, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Masked queries and three negatives: swap the verb; verb + noun; verb + noun + subject."""
    tokens = [subject, verb, "the", noun, "."]
    masked = [render(tokens, [1]), render(tokens, [1, 3]), render(tokens, [0, 1, 3])]
    other_verbs = [v for v in vocab.verbs if v != verb]
    other_nouns = [n for n in vocab.nouns if n != noun]
    other_subject = next(s for s in SUBJECTS if s != subject)
    recomposed = [
        sentence(_choice(rng, other_verbs), noun, subject),
        sentence(_choice(rng, other_verbs), _choice(rng, other_nouns), subject),
        sentence(_choice(rng, other_verbs), _choice(rng, other_nouns), other_subject),
    ]
    return masked, recomposed


def _save_npz(folder: Path, name: str, array: np.ndarray) -> None:
    np.savez(folder / f"{name}.npz", last_hidden_state=array)


_PREFIX = {
    "train": ("TR", "train"),
    "val": ("VA", "val"),
    "test_trivial": ("TE", "test"),
    "novel_composition": ("NC", "composition"),
    "novel_word": ("NW", "word"),
}


def generate(output: str | Path, config: SynthConfig | None = None) -> SynthReport:
    """Write the benchmark under ``output`` (see the module docstring)."""
    config = config or SynthConfig()
    out = Path(output)
    video_dir, text_dir = out / "video_feats", out / "text_feats"
    video_dir.mkdir(parents=True, exist_ok=True)
    text_dir.mkdir(parents=True, exist_ok=True)
    world = World(config)
    vocab = world.vocab
    rng = np.random.default_rng([config.seed, _DATA_STREAM])
    seen = vocab.seen_pairs()
    seen_set = set(seen)
    novel_words = [*vocab.novel_verbs, *vocab.novel_nouns]
    all_verbs = [*vocab.verbs, *vocab.novel_verbs]
    all_nouns = [*vocab.nouns, *vocab.novel_nouns]
    # Novel-word events: one novel word with a seen partner (never two novel words).
    novel_pairs = [(v, n) for v in vocab.novel_verbs for n in vocab.nouns] + [
        (v, n) for v in vocab.verbs for n in vocab.novel_nouns
    ]
    plan = (
        ("train", config.train_videos),
        ("val", config.val_videos),
        ("test_trivial", config.test_videos),
        ("novel_composition", config.novel_videos),
        ("novel_word", config.novel_word_videos),
    )
    splits: dict[str, list[dict[str, Any]]] = {}
    videos: list[dict[str, Any]] = []
    for split, count in plan:
        if count == 0:
            continue
        rows: list[dict[str, Any]] = []
        prefix, infix = _PREFIX[split]
        for index in range(count):
            vid = f"{prefix}{index:05d}"
            if split == "novel_composition":
                anchor = _choice(rng, vocab.held_out)
                allowed = seen_set
            elif split == "novel_word":
                anchor = _choice(rng, novel_pairs)
                allowed = seen_set | set(novel_pairs)
            else:
                anchor = _seen_anchor(vocab, seen, config.pair_skew, rng)
                allowed = seen_set
            pairs = _triangle(anchor, all_verbs, all_nouns, allowed, config, vocab, rng)
            duration = round(float(rng.uniform(config.min_duration, config.max_duration)), 2)
            windows = _windows(len(pairs), duration, rng, config.clip_len)
            events = [(v, n, s, e) for (v, n), (s, e) in zip(pairs, windows, strict=True)]
            np.save(video_dir / f"{vid}.npy", world.video(events, duration, rng))
            videos.append({"vid": vid, "split": split, "duration": duration, "events": events})
            queried = events if split in ("train", "val") else events[:1]
            for number, (verb, noun, start, end) in enumerate(queried):
                qid = f"{vid}_{infix}_{number}"
                subject = _choice(rng, SUBJECTS)
                text = sentence(verb, noun, subject)
                row: dict[str, Any] = {
                    "qid": qid,
                    "query": text,
                    "duration": duration,
                    "vid": vid,
                    "relevant_windows": [[start, end]],
                }
                _save_npz(text_dir, query_key(qid), world.text_tokens(text, rng))
                if split == "train":
                    masked, recomposed = _builtin_negatives(verb, noun, subject, vocab, rng)
                    row["masked_queries"] = masked
                    row["recomposed_queries"] = recomposed
                    for i, negative in enumerate(recomposed):
                        _save_npz(text_dir, negative_key(qid, i), world.text_tokens(negative, rng))
                if split == "novel_composition":
                    row["novels"] = {"v-n": [[verb, noun]]}
                rows.append(row)
        splits[split] = rows
    for split, rows in splits.items():
        _write_jsonl(out / f"{split}.jsonl", rows)
    plain = [
        {k: v for k, v in r.items() if k not in ("masked_queries", "recomposed_queries")}
        for r in splits["train"]
    ]
    _write_jsonl(out / "train_queries.jsonl", plain)
    _write_jsonl(out / "videos.jsonl", videos)
    config_path = out / "train_config.yaml"
    atomic_write_text(config_path, yaml.safe_dump(train_config_for(config), sort_keys=False))
    report = SynthReport(
        output=str(out),
        queries={k: len(v) for k, v in splits.items()},
        videos=sum(count for _, count in plan),
        held_out_pairs=vocab.held_out,
        novel_words=novel_words,
        train_config=str(config_path),
    )
    info = {
        "config": config.model_dump(),
        "report": report.model_dump(),
        "vocabulary": vocab.model_dump(),
    }
    atomic_write_text(out / "synth_info.json", json.dumps(info, indent=2) + "\n")
    return report


def eval_splits(config: SynthConfig) -> list[str]:
    """``NAME=PATH`` of the evaluation splits a benchmark with ``config`` has."""
    names = ["val", "test_trivial", "novel_composition", "novel_word"]
    if config.val_videos == 0:
        names.remove("val")
    if config.novel_word_videos == 0:
        names.remove("novel_word")
    return [f"{name}={name}.jsonl" for name in names]


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
            "eval": eval_splits(config),
            "video_feats": ["video_feats"],
            "text_feats": ["text_feats"],
            "clip_len": config.clip_len,
            # val.jsonl (its own videos) selects checkpoints; none is taken from train.
            "val_fraction": 0.0 if config.val_videos else 0.05,
        },
        "optim": {"lr": 1e-3, "batch_size": 16, "epochs": 24, "lr_drop": 20},
        "eval_every": 2,
    }


def read_info(benchmark: str | Path) -> SynthConfig:
    """The :class:`SynthConfig` a benchmark folder was written with."""
    path = Path(benchmark) / "synth_info.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return SynthConfig.model_validate(info["config"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"not a negforge synth benchmark ({exc.__class__.__name__})", path=path
        ) from exc


class NegativeFeaturesReport(BaseModel):
    """What :func:`featurize_negatives` wrote."""

    output: str
    queries: int
    negatives: int
    unknown_words: list[str]
    train_config: str


def featurize_negatives(
    benchmark: str | Path,
    negatives: str | Path,
    name: str,
) -> NegativeFeaturesReport:
    """Text features of hard negatives made by the pipeline, for the benchmark's trainer.

    ``negatives`` is a negatives artifact (``negforge generate``) or a SHINE jsonl over the
    benchmark's ``train_queries.jsonl``. Writes ``BENCH/negatives/NAME/{qid}_recomposed_gpt_
    {i}.npz`` with the benchmark's own word vectors (a word outside the vocabulary gets a
    fixed random vector) and ``BENCH/train_config_NAME.yaml``: the benchmark's config with
    ``train`` set to ``negatives`` and that folder searched first for text features.
    """
    from negforge.trainer.data import load_train_samples

    bench = Path(benchmark)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InputError(f"negatives name '{name}' must be letters, digits, '_', '.', '-'")
    config = read_info(bench)
    world = World(config)
    known = set(world.word_vec)
    samples = load_train_samples(negatives)
    train_qids = {row["qid"] for row in _read_jsonl(bench / "train_queries.jsonl")}
    foreign = [s.qid for s in samples if s.qid not in train_qids]
    if foreign:
        raise InputError(
            f"{len(foreign)} queries are not in {bench / 'train_queries.jsonl'} "
            f"(first: {foreign[0]})",
            path=negatives,
        )
    folder = bench / "negatives" / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, zlib.crc32(name.encode())])
    unknown: set[str] = set()
    written = with_negatives = 0
    for sample in samples:
        if any(n is not None for n in sample.negatives):
            with_negatives += 1
        for i, text in enumerate(sample.negatives):
            if text is None or not words_of(text):
                continue
            unknown.update(w for w in words_of(text) if w not in known)
            _save_npz(folder, negative_key(sample.qid, i), world.text_tokens(text, rng))
            written += 1
    base = yaml.safe_load((bench / "train_config.yaml").read_text(encoding="utf-8"))
    data = base.setdefault("data", {})
    source = Path(negatives).resolve()
    try:
        data["train"] = str(source.relative_to(bench.resolve()))
    except ValueError:
        data["train"] = str(source)
    data["text_feats"] = [f"negatives/{name}", *data.get("text_feats", ["text_feats"])]
    config_path = bench / f"train_config_{name}.yaml"
    atomic_write_text(config_path, yaml.safe_dump(base, sort_keys=False))
    return NegativeFeaturesReport(
        output=str(folder),
        queries=with_negatives,
        negatives=written,
        unknown_words=sorted(unknown),
        train_config=str(config_path),
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
