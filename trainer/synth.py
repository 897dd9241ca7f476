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
  built-in swaps: verb; verb and noun; verb, noun and subject; with ``negatives: video`` the
  first two take the words of the video's other events); ``train_queries.jsonl`` --
  the same rows without negatives (input of the negatives pipeline, see
  :func:`negforge.trainer.synth_negatives.featurize_negatives`); ``val.jsonl``,
  ``test_trivial.jsonl``, ``novel_composition.jsonl``, ``novel_word.jsonl``;
* ``video_feats/{vid}.npy`` -- (clips, ``video_dim``) float32, one clip per ``clip_len`` s;
* ``text_feats/{qid}.npz`` and ``{qid}_recomposed_gpt_{i}.npz`` -- ``last_hidden_state``;
* ``videos.jsonl`` -- every video's events ``[verb, noun, start, end]``, the anchor first;
* ``train_config.yaml`` -- a config for ``negforge train --config`` sized for a CPU run;
* ``synth_info.json`` -- the config, sizes, vocabulary, held-out pairs and novel words.

The words, their meanings and features live in :mod:`negforge.trainer.synth_world`; pipeline
negatives become features of a benchmark in :mod:`negforge.trainer.synth_negatives`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel

from negforge.atomic import atomic_path, atomic_write_text
from negforge.errors import InputError
from negforge.template import render
from negforge.trainer.features import negative_key, query_key
from negforge.trainer.synth_world import (
    _DATA_STREAM,
    _NEGATIVE_STREAM,
    SUBJECTS,
    SynthConfig,
    Vocabulary,
    World,
    sentence,
)


class SynthReport(BaseModel):
    """What ``synth`` wrote."""

    output: str
    queries: dict[str, int]
    videos: int
    held_out_pairs: list[tuple[str, str]]
    novel_words: list[str]
    train_config: str


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


def _video_negatives(
    verb: str,
    noun: str,
    subject: str,
    others: Sequence[tuple[str, str, float, float]],
    recomposed: list[str],
    rng: np.random.Generator,
) -> list[str]:
    """The built-in negatives with the words the video shows elsewhere (``negatives: video``).

    Same levels as the swaps (verb; verb + noun; + subject, the paper's masking order), but
    levels 1 and 2 take their words from the video's other events: level 1 is the event
    that shares the query's noun ("person closes the box" beside "person opens the box")
    when there is one, level 2 crosses the other events' verb and noun ("person closes the
    door": both are in the video, never together). A level without such words, and level 3
    (random words, the other subject: nothing of the video), keep the swap.
    """
    verbs = sorted({v for v, _, _, _ in others if v != verb})
    nouns = sorted({n for _, n, _, _ in others if n != noun})
    twins = sorted({v for v, n, _, _ in others if n == noun and v != verb})
    negatives = list(recomposed)
    if twins or verbs:
        negatives[0] = sentence(str(_choice(rng, twins or verbs)), noun, subject)
    if verbs and nouns:
        negatives[1] = sentence(str(_choice(rng, verbs)), str(_choice(rng, nouns)), subject)
    return negatives


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
    negative_rng = np.random.default_rng([config.seed, _NEGATIVE_STREAM])
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
                    if config.negatives == "video":
                        others = [e for i, e in enumerate(events) if i != number]
                        recomposed = _video_negatives(
                            verb, noun, subject, others, recomposed, negative_rng
                        )
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


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
