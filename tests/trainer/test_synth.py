"""negforge synth: a benchmark that needs composition, and hard negatives from the pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from negforge.trainer.config import build_config
from negforge.trainer.data import load_eval_samples, load_train_samples
from negforge.trainer.features import negative_key
from negforge.trainer.run_data import feature_stores
from negforge.trainer.synth import SynthConfig, generate
from negforge.trainer.synth_world import World, words_of

ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(
        out,
        SynthConfig(
            train_videos=60, val_videos=10, test_videos=40, novel_videos=60, novel_word_videos=40
        ),
    )
    return out


def videos(bench: Path) -> list[dict]:
    return [json.loads(line) for line in (bench / "videos.jsonl").read_text().splitlines()]


def test_held_out_pairs_and_novel_words_stay_out_of_train(bench):
    info = json.loads((bench / "synth_info.json").read_text())
    held = {tuple(p) for p in info["vocabulary"]["held_out"]}
    novel = set(info["vocabulary"]["novel_verbs"] + info["vocabulary"]["novel_nouns"])
    assert len(held) == 8 and len(novel) == 4
    for video in videos(bench):
        pairs = {(v, n) for v, n, _, _ in video["events"]}
        words = {w for pair in pairs for w in pair}
        if video["split"] in ("train", "val", "test_trivial"):
            assert not pairs & held and not words & novel
        elif video["split"] == "novel_composition":
            assert tuple(video["events"][0][:2]) in held  # the anchor
            assert not set(map(tuple, (e[:2] for e in video["events"][1:]))) & held
            assert not words & novel
        else:
            assert set(video["events"][0][:2]) & novel
    train = load_train_samples(bench / "train.jsonl")
    for sample in train:
        for text in (sample.query, *(n for n in sample.negatives if n)):
            assert not set(words_of(text)) & novel
    composition = load_eval_samples(bench / "novel_composition.jsonl")
    assert all(s.novel_types == ("v-n",) for s in composition)


def test_every_anchor_has_distractors_sharing_its_verb_and_its_noun(bench):
    for video in videos(bench):
        (verb, noun, *_), verb_twin, noun_twin = video["events"]
        assert verb_twin[0] == verb and verb_twin[1] != noun
        assert noun_twin[1] == noun and noun_twin[0] != verb
    rows = [json.loads(x) for x in (bench / "novel_composition.jsonl").read_text().splitlines()]
    by_vid = {v["vid"]: v for v in videos(bench)}
    for row in rows:  # the query is the anchor event
        verb, noun, start, end = by_vid[row["vid"]]["events"][0]
        assert row["query"].endswith(f"{verb} the {noun}.")
        assert row["relevant_windows"] == [[start, end]]


def test_video_negatives_name_the_distractors_and_change_nothing_else(bench, tmp_path):
    small = {"train_videos": 60, "val_videos": 10, "test_videos": 40, "novel_videos": 60}
    out = tmp_path / "video"
    generate(out, SynthConfig(**small, novel_word_videos=40, negatives="video"))
    for name in ("videos.jsonl", "train_queries.jsonl", "val.jsonl", "novel_composition.jsonl"):
        assert (out / name).read_bytes() == (bench / name).read_bytes()
    vid = videos(bench)[0]["vid"]
    assert (out / "video_feats" / f"{vid}.npy").read_bytes() == (
        bench / "video_feats" / f"{vid}.npy"
    ).read_bytes()
    by_vid = {v["vid"]: v for v in videos(bench)}
    swap_rows = [json.loads(x) for x in (bench / "train.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    for row, swap in zip(rows, swap_rows, strict=True):
        events = by_vid[row["vid"]]["events"]
        number = int(row["qid"].rsplit("_", 1)[1])
        verb, noun = events[number][:2]
        pairs = {tuple(words_of(n)[1:4:2]) for n in row["recomposed_queries"]}
        first, second, _ = (tuple(words_of(n)[1:4:2]) for n in row["recomposed_queries"])
        assert (verb, noun) not in pairs
        others = [tuple(e[:2]) for i, e in enumerate(events) if i != number]
        if number == 0:  # the anchor: its noun twin, then the two twins' words crossed
            assert first == tuple(events[2][:2])
            assert second == (events[2][0], events[1][1])
        assert first[1] == noun and first[0] in {v for v, _ in others}
        assert second[0] in {v for v, _ in others} and second[1] in {n for _, n in others}
        assert row["recomposed_queries"][2] == swap["recomposed_queries"][2]  # level 3: swap


def _pick(feats: np.ndarray, events: list, template: np.ndarray) -> int:
    scores = [feats[int(s) : int(e)].mean(0) @ template for _, _, s, e in events]
    return int(np.argmax(scores))


def test_one_word_alone_fails_where_both_words_succeed(bench):
    """The appearance the two words make together finds the anchor; either word's signature
    alone lands on a word-sharing distractor about half of the time."""
    config = SynthConfig.model_validate(
        json.loads((bench / "synth_info.json").read_text())["config"]
    )
    world = World(config)
    hits = {"both": 0, "verb": 0, "noun": 0}
    tests = [v for v in videos(bench) if v["split"] == "novel_composition"]
    for video in tests:
        feats = np.load(bench / "video_feats" / f"{video['vid']}.npy")
        verb, noun = video["events"][0][:2]
        templates = {
            "both": world.event_look(verb, noun),
            "verb": world.look[verb],
            "noun": world.look[noun],
        }
        for name, template in templates.items():
            hits[name] += _pick(feats, video["events"], template) == 0
    share = {k: v / len(tests) for k, v in hits.items()}
    assert share["both"] >= 0.9, share
    assert share["verb"] <= 0.75 and share["noun"] <= 0.75, share


def test_pipeline_negatives_become_training_negatives(bench, tmp_path):
    """synth -> build-dict -> mask -> generate --llm random -> synth-negatives -> train."""
    out = tmp_path / "negatives"
    done = subprocess.run(
        [sys.executable, "-m", "negforge", "run", str(ROOT / "pipelines" / "synth_negatives.yaml"),
         "--set", f"bench={bench}", "--output-dir", str(out)],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    artifact = out / "negatives.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "negforge", "synth-negatives", str(bench), str(artifact),
         "--name", "random"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = build_config(yaml_path=bench / "train_config_random.yaml")
    assert cfg.data.train == artifact.resolve()
    samples = load_train_samples(cfg.data.train)
    rows = pd.read_parquet(artifact)
    assert len(samples) == len(load_train_samples(bench / "train_queries.jsonl"))
    first = samples[0]
    assert first.negatives_valid and set(first.negatives) <= set(rows["negative"].dropna())
    _, texts = feature_stores(cfg)
    for i, negative in enumerate(first.negatives):
        key = negative_key(first.qid, i)
        assert texts._source_for(key).path == bench / "negatives" / "random"  # searched first
        assert texts.load(key).shape[0] == len(words_of(negative or ""))
    run = subprocess.run(
        [sys.executable, "-m", "negforge", "train", "--config",
         str(bench / "train_config_random.yaml"), "-o", str(tmp_path / "run"), "--epochs", "1",
         "--hidden", "16", "--heads", "2", "--ff", "32", "--no-progress", "--cpu-threads", "1"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "train/loss_fr" in (tmp_path / "run" / "metrics.csv").read_text()


def test_negatives_of_another_benchmark_exit_2(bench, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(
        json.dumps(
            {"qid": "X_1", "query": "person opens the box.", "vid": "X", "duration": 10,
             "relevant_windows": [[1, 2]], "recomposed_queries": ["a b.", "c d.", "e f."]}
        ) + "\n"
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "negforge", "synth-negatives", str(bench), str(other), "--name",
         "x"],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "X_1" in done.stderr and "Traceback" not in done.stderr
