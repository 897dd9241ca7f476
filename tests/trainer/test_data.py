"""Samples from both TRAIN formats, saliency labels, spans, collation and in-batch negatives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from negforge.errors import ConfigError
from negforge.trainer.data import (
    GroundingSample,
    check_features,
    check_levels,
    load_eval_samples,
    load_train_samples,
    split_by_video,
)
from negforge.trainer.dataset import (
    Collator,
    GroundingDataset,
    inbatch_negative_index,
    normalized_spans,
    saliency_labels,
    saliency_pairs,
    span_targets,
    window_clips,
)
from negforge.trainer.features import (
    TextFeatureStore,
    VideoFeatureStore,
    append_tef,
    negative_key,
)
from tests.support.trainer_inputs import (
    negative_rows,
    write_jsonl,
    write_negatives_artifact,
    write_npy,
    write_npz,
)

RNG = np.random.default_rng(1)


def window_sample(windows, **extra):
    return GroundingSample(
        qid="q", query="a", vid="v", duration=60.0, windows=tuple(windows), **extra
    )


def test_saliency_labels_follow_the_originals_sub_as_query_rule():
    # Clips int(st/clip_len) .. max(0, min(int(ed/clip_len), L) - 1), first window only.
    mask, graded = saliency_labels(window_sample([(22.7, 34.0)]), 0.5, 66)
    assert np.flatnonzero(mask).tolist() == list(range(45, 66))  # 68 capped at L = 66
    assert graded.tolist() == mask.tolist()
    mask, _ = saliency_labels(window_sample([(1.0, 2.6)]), 0.5, 10)
    assert np.flatnonzero(mask).tolist() == [2, 3, 4]
    # Only the first window labels the clips (SHINE's relevant_windows[0]).
    mask, _ = saliency_labels(window_sample([(0.0, 1.0), (3.0, 4.0)]), 1.0, 6)
    assert mask.tolist() == [1, 0, 0, 0, 0, 0]
    # A window inside one clip: the range is empty and both ends become its last clip,
    # int(2.3 / 0.5) - 1 = 3, as the original computes it.
    assert window_clips((2.1, 2.3), 0.5, 10) == (3, 3)
    assert np.flatnonzero(saliency_labels(window_sample([(2.1, 2.3)]), 0.5, 10)[0]).tolist() == [3]


def test_qvhighlights_labels_and_pairs():
    sample = window_sample(
        [(26.0, 36.0)],
        relevant_clip_ids=(13, 14, 15, 16, 80),
        clip_scores=(10.0, 12.0, 7.0, 3.0, 9.0),
    )
    mask, graded = saliency_labels(sample, 2.0, 75)
    assert np.flatnonzero(mask).tolist() == [13, 14, 15, 16]  # clip 80 >= L: stop there
    assert graded[[13, 14, 15, 16]].tolist() == [10.0, 12.0, 7.0, 3.0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        pos, neg = saliency_pairs(sample, 2.0, 75, rng)
        assert pos[0] == 14 and neg[0] == 16  # best- and worst-scored relevant clips
        assert pos[1] in (13, 14, 15, 16, 74) and neg[1] not in (13, 14, 15, 16, 80)


def test_window_pairs_are_inside_and_outside():
    rng = np.random.default_rng(0)
    sample = window_sample([(1.0, 4.0)])  # clips 2..7 of 20
    for _ in range(50):
        pos, neg = saliency_pairs(sample, 0.5, 20, rng)
        assert len(set(pos)) == 2 and all(2 <= c <= 7 for c in pos)
        assert len(set(neg)) == 2 and all(c < 2 or c > 7 for c in neg)
    # One clip inside: twice the same; fewer than two outside: clips 0 and 1 (SHINE).
    assert saliency_pairs(window_sample([(0.0, 0.4)]), 0.5, 2, rng) == ([0, 0], [0, 1])
    assert saliency_pairs(window_sample([(0.0, 10.0)]), 1.0, 10, rng)[1] == [0, 1]


def test_spans_are_normalised_centre_width_without_clamping():
    spans = normalized_spans([(2.0, 6.0), (8.0, 12.0)], coverage=10.0)
    np.testing.assert_allclose(spans, [[0.4, 0.4], [1.0, 0.4]])  # the originals do not clip
    many = np.arange(14, dtype=np.float32).reshape(7, 2)
    kept = span_targets(many, np.random.default_rng(0))
    assert kept.shape == (5, 2) and len({tuple(r) for r in kept.tolist()}) == 5


def shine_jsonl_rows():
    rows = []
    for i, vid in enumerate(["V1", "V1", "V2", "V3"]):
        row = {
            "qid": f"{vid}_train_{i}",
            "query": f"person does thing {i}.",
            "vid": vid,
            "duration": 10.0,
            "relevant_windows": [[1.0, 4.0]],
        }
        if i != 3:
            row["recomposed_queries"] = [f"n{i}a", f"n{i}b", f"n{i}c"]
        rows.append(row)
    return rows


def test_shine_jsonl_train_rows(tmp_path):
    samples = load_train_samples(write_jsonl(tmp_path / "train.jsonl", shine_jsonl_rows()))
    assert [s.negatives_valid for s in samples] == [True, True, True, False]
    assert samples[0].negatives == ("n0a", "n0b", "n0c")


def test_negatives_artifact_rows_grouped_per_query(tmp_path):
    rows = [
        *negative_rows("q1", "V1", "person opens the door", ["a", "b", "c"]),
        *negative_rows("q2", "V2", "person eats food", ["a", None, "c"]),  # dropped level 2
        *negative_rows(
            "q3", "V3", "person sits down", ["a", "b", "c"], valid=[True, True, False]
        ),  # invalid level 3
        *negative_rows("q4", "V4", "person walks", ["a", "b"]),  # level 3 absent
    ]
    path = write_negatives_artifact(tmp_path / "negatives.parquet", rows)
    samples = {s.qid: s for s in load_train_samples(path)}
    assert samples["q1"].negatives == ("a", "b", "c") and samples["q1"].negatives_valid
    assert samples["q2"].negatives == ("a", None, "c") and not samples["q2"].negatives_valid
    assert samples["q3"].negatives[2] is None and not samples["q3"].negatives_valid
    assert not samples["q4"].negatives_valid
    assert samples["q1"].windows == ((1.0, 4.0),) and samples["q1"].duration == 10.0


def test_level_count_comes_from_the_data(tmp_path):
    rows = shine_jsonl_rows()  # three queries with 3 negatives, one without any
    rows[0]["recomposed_queries"] = ["x", "y"]
    rows.append({**rows[1], "qid": "V4_train_4", "vid": "V4",
                 "recomposed_queries": ["p", "q", "r", "s"]})  # fmt: skip
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    samples = load_train_samples(path)
    # Reading keeps every level as the file gives it: nothing truncated or dropped.
    assert samples[0].negatives == ("x", "y") and samples[0].negatives_valid
    assert samples[4].negatives == ("p", "q", "r", "s") and samples[4].negatives_valid
    kept, report = check_levels(samples, source=path)
    assert report.levels == 3 and report.counts == {2: 1, 3: 2, 4: 1} and report.off_level == 2
    assert [s.negatives_valid for s in kept] == [False, True, True, False, False]
    assert report.summary() == (
        "1 query has 2, 1 query has 4 hard-negative levels, not 3 like 2 other queries "
        "(e.g. qid 'V1_train_0', 'V4_train_4'): they train without L_fr"
    )
    with pytest.raises(ConfigError, match="have 3 hard-negative levels but the run expects 5"):
        check_levels(samples, 5, source=path)
    # A four-level artifact: four negatives per query, a missing level still invalidates.
    artifact = write_negatives_artifact(
        tmp_path / "four.parquet",
        [*negative_rows("q1", "V1", "person opens the door", ["a", "b", "c", "d"]),
         *negative_rows("q2", "V2", "person eats food", ["a", "b", "c"])],
    )  # fmt: skip
    four = {s.qid: s for s in load_train_samples(artifact)}
    assert four["q1"].negatives == ("a", "b", "c", "d") and four["q1"].negatives_valid
    assert four["q2"].negatives == ("a", "b", "c", None) and not four["q2"].negatives_valid
    assert check_levels(list(four.values()))[1].levels == 4


def test_eval_split_from_benchmark_json_keeps_composition_types(tmp_path):
    split = {
        "VA": {
            "sentences": ["person takes a cup.", "person opens a fridge."],
            "timestamps": [[1.0, 3.0], [4.0, 6.0]],
            "duration": 9.0,
            "novels": [{"v-n": [["take", "cup"]]}, {"p-n": [["in", "fridge"]]}],
        }
    }
    path = tmp_path / "novel_composition.json"
    path.write_text(json.dumps(split))
    samples = load_eval_samples(path)
    assert [s.qid for s in samples] == ["VA_composition_0", "VA_composition_1"]
    assert samples[0].novel_types == ("v-n",) and samples[1].windows == ((4.0, 6.0),)


def test_split_by_video_is_disjoint_and_seeded():
    samples = [
        GroundingSample(qid=f"q{i}", query="x", vid=f"v{i % 40}", duration=5.0, windows=((0, 1),))
        for i in range(200)
    ]
    train, val = split_by_video(samples, 0.05, seed=2018)
    assert len({s.vid for s in val}) == 2
    assert not {s.vid for s in train} & {s.vid for s in val}
    assert len(train) + len(val) == 200
    assert split_by_video(samples, 0.05, seed=2018)[1] == val
    assert split_by_video(samples, 0.0, seed=1) == (samples, [])


def test_next_row_inbatch_negative_reproduces_the_originals():
    index = inbatch_negative_index(["a", "a", "b"], np.random.default_rng(0), "next_row")
    assert index.tolist() == [1, 2, 0]  # row 0's negative is a query of its own video


def test_inbatch_negative_is_always_another_video():
    rng = np.random.default_rng(0)
    for _ in range(200):
        vids = [f"v{x}" for x in rng.integers(0, 4, size=int(rng.integers(1, 9)))]
        index = inbatch_negative_index(vids, rng)
        for row, neg in enumerate(index):
            if len(set(vids)) == 1:
                assert neg == -1
            else:
                assert neg >= 0 and vids[neg] != vids[row]


def build_dataset(tmp_path, *, with_negatives=True, max_v_len=None, long_videos="truncate"):
    rows = shine_jsonl_rows()
    lengths = {"V1": 20, "V2": 16, "V3": 12}
    for vid, length in lengths.items():
        write_npy(tmp_path / "video", vid, RNG.normal(size=(length, 6)))
    for row in rows:
        write_npz(tmp_path / "text", row["qid"], "last_hidden_state", RNG.normal(size=(5, 4)))
        for i, _ in enumerate(row.get("recomposed_queries", [])):
            tokens = RNG.normal(size=(3 + i, 4))
            write_npz(tmp_path / "text", negative_key(row["qid"], i), "last_hidden_state", tokens)
    samples = load_train_samples(write_jsonl(tmp_path / "train.jsonl", rows))
    videos = VideoFeatureStore([tmp_path / "video"])
    texts = TextFeatureStore([tmp_path / "text"], max_q_len=32)
    samples, _ = check_features(samples, videos, texts)
    return GroundingDataset(
        samples,
        videos,
        texts,
        clip_len=0.5,
        max_v_len=max_v_len,
        use_tef=True,
        with_negatives=with_negatives,
        long_videos=long_videos,
    )


def test_collate_pads_with_masks_and_builds_targets(tmp_path):
    dataset = build_dataset(tmp_path)
    batch = Collator(seed=3, levels=dataset.levels)([dataset[i] for i in range(4)])
    assert batch.video_feats.shape == (4, 20, 8)  # 6 dims + 2 tef, padded to the longest
    assert batch.video_mask.sum(1).tolist() == [20, 20, 16, 12]
    assert batch.video_mask.dtype == torch.float32
    assert torch.all(batch.video_feats[3, 12:] == 0)
    assert batch.text_feats.shape == (4, 5, 4) and batch.text_mask.sum().item() == 20
    assert batch.hard_neg_text_feats is not None and batch.hard_neg_text_mask is not None
    assert batch.hard_neg_text_feats.shape == (4, 3, 5, 4)
    assert batch.hard_neg_text_mask[0].sum(1).tolist() == [3, 4, 5]
    assert batch.hard_neg_valid.tolist() == [True, True, True, False]
    # A row without negatives gets finite placeholders (its own query), ignored by the loss.
    torch.testing.assert_close(batch.hard_neg_text_feats[3, 0], batch.text_feats[3])
    # Window 1-4 s at 0.5 s clips: clips 2..7; no label on padding.
    assert torch.nonzero(batch.saliency_labels[0]).flatten().tolist() == list(range(2, 8))
    assert torch.all(batch.saliency_labels * (1 - batch.video_mask) == 0)
    torch.testing.assert_close(batch.spans[2], torch.tensor([[2.5 / 8.0, 3.0 / 8.0]]))
    assert batch.coverages == [10.0, 10.0, 8.0, 6.0]
    vids = [s.vid for s in batch.samples]
    for row, neg in enumerate(batch.inbatch_neg_index.tolist()):
        assert vids[neg] != vids[row]
    targets = batch.targets()
    assert set(targets) == {
        "spans",
        "saliency_labels",
        "saliency_all_labels",
        "saliency_pos_labels",
        "saliency_neg_labels",
        "video_mask",
        "hard_neg_valid",
    }
    assert batch.saliency_pos_labels.shape == (4, 2) and batch.saliency_neg_labels.shape == (4, 2)
    for row in range(4):
        labels = batch.saliency_labels[row]
        assert all(labels[c] == 1 for c in batch.saliency_pos_labels[row].tolist())
        assert all(labels[c] == 0 for c in batch.saliency_neg_labels[row].tolist())
    inputs = batch.model_inputs(hard_negatives=True, inbatch=True)
    assert inputs["inbatch_neg_index"] is batch.inbatch_neg_index
    assert inputs["hard_neg_text_feats"] is batch.hard_neg_text_feats
    assert set(batch.model_inputs(hard_negatives=False, inbatch=False)) == {
        "video_feats",
        "video_mask",
        "text_feats",
        "text_mask",
    }


def test_inbatch_choice_is_seeded_by_epoch_not_by_worker(tmp_path):
    dataset = build_dataset(tmp_path)
    items = [dataset[i] for i in range(4)]
    collator = Collator(seed=5, levels=3)
    first = collator(items).inbatch_neg_index
    assert torch.equal(first, Collator(seed=5, levels=3)(items).inbatch_neg_index)
    draws = set()
    for epoch in range(8):
        collator.epoch = epoch
        draws.add(tuple(collator(items).inbatch_neg_index.tolist()))
    assert len(draws) > 1  # it varies over epochs


def test_long_videos_are_cut_like_the_originals(tmp_path):
    dataset = build_dataset(tmp_path, with_negatives=False, max_v_len=10)
    item = dataset[0]  # V1 has 20 clips of 0.5 s -> the first 10
    assert item.video.shape == (10, 8) and item.clip_len == 0.5 and item.coverage == 5.0
    np.testing.assert_allclose(item.video[:, -2:], append_tef(np.zeros((10, 0)))[:, -2:])
    assert np.flatnonzero(item.saliency).tolist() == [2, 3, 4, 5, 6, 7]
    torch.testing.assert_close(torch.from_numpy(item.spans), torch.tensor([[0.5, 0.6]]))


def test_pooling_long_videos_rescales_clip_length(tmp_path):
    dataset = build_dataset(tmp_path, with_negatives=False, max_v_len=10, long_videos="pool")
    item = dataset[0]  # V1 has 20 clips of 0.5 s -> 10 clips of 1 s
    assert item.video.shape == (10, 8) and item.clip_len == pytest.approx(1.0)
    assert np.flatnonzero(item.saliency).tolist() == [1, 2, 3]
    assert item.hard_negatives is None
    batch = Collator()([item])
    assert batch.hard_neg_text_feats is None and batch.inbatch_neg_index.tolist() == [-1]


@pytest.mark.shared
def test_real_charades_cg_files(shared_dir):
    """The published SHINE training file and the original split files load as samples."""
    train = load_train_samples(shared_dir / "data/charades_cg/charades_cg_gpt_train.jsonl")
    assert len(train) == 8281
    assert sum(s.negatives_valid for s in train) == 8281
    assert train[0].qid == "IGDIE_train_0" and len(train[0].negatives) == 3
    novel = load_eval_samples(shared_dir / "data/visa/charades_cg/novel_composition.json")
    published = load_eval_samples(
        shared_dir / "data/charades_cg/charades_cg_novel_composition.jsonl"
    )
    assert [s.qid for s in novel] == [s.qid for s in published]
    assert all(s.novel_types for s in novel) and not any(s.novel_types for s in published)
    types = {t for s in novel for t in s.novel_types}
    assert {"v-n", "v-adv", "p-n"} <= types
    train_part, val_part = split_by_video(train, 0.05, seed=2018)
    assert not {s.vid for s in train_part} & {s.vid for s in val_part}
    assert 0.03 < len(val_part) / len(train) < 0.07
