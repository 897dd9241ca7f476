"""Feature layouts (npy / npz / HDF5), concatenation, L2, tef, missing features, featurize."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from negforge.errors import InputError, MissingModelError
from negforge.trainer.data import GroundingSample, check_features
from negforge.trainer.features import (
    MissingFeatureError,
    TextFeatureStore,
    VideoFeatureStore,
    append_tef,
    fit_to_length,
    l2_normalize,
)
from tests.support.trainer_inputs import tiny_clip_dir, write_jsonl, write_npy, write_npz

RNG = np.random.default_rng(0)


def unit_rows(array):
    """The originals' l2_normalize_np_array: x / (|x| + 1e-5)."""
    return array / (np.linalg.norm(array, axis=1, keepdims=True) + 1e-5)


def test_npy_npz_and_h5_layouts_load_the_same_normalised_clips(tmp_path):
    raw = RNG.normal(size=(7, 5)).astype(np.float32)
    write_npy(tmp_path / "npy", "vidA", raw)
    write_npz(tmp_path / "npz", "vidA", "features", raw)
    with h5py.File(tmp_path / "c3d.h5", "w") as handle:
        handle.create_dataset("vidA", data=raw)
        handle.create_group("vidB").create_dataset("c3d_features", data=raw[:3])
    for path in ("npy", "npz", "c3d.h5"):
        store = VideoFeatureStore([tmp_path / path])
        np.testing.assert_allclose(store.load("vidA"), unit_rows(raw), rtol=1e-5)
    group_entry = VideoFeatureStore([tmp_path / "c3d.h5"]).load("vidB")
    np.testing.assert_allclose(group_entry, unit_rows(raw[:3]), rtol=1e-5)
    unnormalised = VideoFeatureStore([tmp_path / "npy"], normalize=False).load("vidA")
    np.testing.assert_allclose(unnormalised, raw)


def test_folders_are_cut_to_the_shortest_and_concatenated_after_l2(tmp_path):
    first = RNG.normal(size=(10, 4)) * 7
    second = RNG.normal(size=(8, 3)) * 0.1
    write_npy(tmp_path / "i3d", "v", first)
    write_npz(tmp_path / "clip", "v", "features", second)
    feats = VideoFeatureStore([tmp_path / "i3d", tmp_path / "clip"]).load("v")
    assert feats.shape == (8, 7)
    np.testing.assert_allclose(feats[:, :4], unit_rows(first[:8]), rtol=1e-5)
    np.testing.assert_allclose(feats[:, 4:], unit_rows(second), rtol=1e-5)


def test_tef_and_pooling_long_videos():
    feats = np.arange(20, dtype=np.float32).reshape(10, 2)
    with_tef = append_tef(feats)
    assert with_tef.shape == (10, 4)
    np.testing.assert_allclose(with_tef[3, 2:], [0.3, 0.4])
    np.testing.assert_allclose(with_tef[-1, 2:], [0.9, 1.0])
    pooled = fit_to_length(feats, 5)
    np.testing.assert_allclose(pooled, (feats[0::2] + feats[1::2]) / 2)
    assert fit_to_length(feats, 10) is feats and fit_to_length(feats, None) is feats
    uneven = fit_to_length(feats, 3)  # bins of 3, 3, 4 clips
    np.testing.assert_allclose(uneven[2], feats[6:].mean(axis=0))


def test_missing_video_is_named_or_skipped_with_a_count(tmp_path):
    write_npy(tmp_path / "v", "have", RNG.normal(size=(4, 3)))
    write_npz(tmp_path / "t", "q1", "last_hidden_state", RNG.normal(size=(5, 3)))
    write_npz(tmp_path / "t", "q2", "last_hidden_state", RNG.normal(size=(5, 3)))
    videos, texts = VideoFeatureStore([tmp_path / "v"]), TextFeatureStore([tmp_path / "t"])
    with pytest.raises(MissingFeatureError, match="lost"):
        videos.load("lost")
    samples = [
        GroundingSample(qid="q1", query="a", vid="have", duration=2.0, windows=((0.0, 1.0),)),
        GroundingSample(qid="q2", query="b", vid="lost", duration=2.0, windows=((0.0, 1.0),)),
        GroundingSample(qid="q3", query="c", vid="have", duration=2.0, windows=((0.0, 1.0),)),
    ]
    with pytest.raises(InputError, match="vid 'lost'"):
        check_features(samples, videos, texts)
    kept, report = check_features(samples, videos, texts, on_missing="skip")
    assert [s.qid for s in kept] == ["q1"]
    assert report.skipped_queries == 2
    assert report.missing_videos == {"lost"} and report.missing_texts == {"q3"}
    assert "skipped 2 queries" in report.summary()


def test_text_layouts_cut_and_normalise(tmp_path):
    tokens = RNG.normal(size=(40, 6)).astype(np.float32)
    write_npz(tmp_path / "npz", "Q_train_0", "last_hidden_state", tokens)
    write_npz(tmp_path / "npz", "Q_train_0_recomposed_gpt_1", "last_hidden_state", tokens[:3])
    write_npz(tmp_path / "mdetr", "qid17", "last_hidden_state", tokens[:9])  # Moment-DETR name
    with h5py.File(tmp_path / "packed.h5", "w") as handle:
        handle.create_dataset("Q_test_0", data=tokens[:12])
    store = TextFeatureStore(
        [tmp_path / "npz", tmp_path / "mdetr", tmp_path / "packed.h5"], max_q_len=32
    )
    first = store.load("Q_train_0")
    assert first.shape == (32, 6)
    np.testing.assert_allclose(first, l2_normalize(tokens[:32]), rtol=1e-5)
    assert store.load("Q_train_0_recomposed_gpt_1").shape == (3, 6)
    assert store.load("17").shape == (9, 6)
    assert store.load("Q_test_0").shape == (12, 6)
    assert not store.has("nope")
    with pytest.raises(MissingFeatureError, match="nope"):
        store.load("nope")


def test_bad_npz_key_and_missing_path_are_input_errors(tmp_path):
    write_npz(tmp_path / "v", "x", "wrong_key", np.ones((2, 2)))
    with pytest.raises(InputError, match="features"):
        VideoFeatureStore([tmp_path / "v"]).load("x")
    with pytest.raises(InputError, match="does not exist"):
        VideoFeatureStore([tmp_path / "absent"])


def shine_rows():
    return [
        {
            "qid": "AAA_train_0",
            "query": "person opens the door.",
            "vid": "AAA",
            "duration": 10.0,
            "relevant_windows": [[1.0, 4.0]],
            "recomposed_queries": [
                "person closes the door.",
                "person closes the box.",
                "dog eats the box.",
            ],
        },
        {
            "qid": "BBB_train_0",
            "query": "a person sits.",
            "vid": "BBB",
            "duration": 8.0,
            "relevant_windows": [[0.0, 2.0]],
        },
    ]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return tiny_clip_dir(tmp_path_factory.mktemp("tiny_clip"))


def test_featurize_with_a_tiny_clip_writes_query_and_negative_keys(tmp_path, tiny_clip):
    from negforge.trainer.featurize import featurize, read_text_features

    model_dir = tiny_clip
    queries = write_jsonl(tmp_path / "train.jsonl", shine_rows())
    out = tmp_path / "text.h5"
    report = featurize([queries], out, encoder="clip", model_path=model_dir, batch_size=2)
    assert report.queries == 2 and report.negatives == 3 and report.dim == 32
    with h5py.File(out) as handle:
        keys = sorted(handle.keys())
        # <sot> + one token per character of "person" etc. + <eot>: lengths differ per text.
        lengths = {k: handle[k].shape[0] for k in keys}
    assert keys == [
        "AAA_train_0",
        "AAA_train_0_recomposed_gpt_0",
        "AAA_train_0_recomposed_gpt_1",
        "AAA_train_0_recomposed_gpt_2",
        "BBB_train_0",
    ]
    assert lengths["AAA_train_0"] > lengths["BBB_train_0"]
    assert read_text_features(out)["encoder"] == "clip"
    store = TextFeatureStore([out], max_q_len=8)
    assert store.load("AAA_train_0_recomposed_gpt_2").shape == (8, 32)
    # Same text, same vector: featurize is deterministic and batch-independent.
    again = featurize([queries], tmp_path / "again.h5", encoder="clip", model_path=model_dir)
    assert again.keys == report.keys
    with h5py.File(out) as a, h5py.File(tmp_path / "again.h5") as b:
        np.testing.assert_allclose(a["BBB_train_0"][()], b["BBB_train_0"][()], atol=1e-5)


def test_clip_without_local_weights_is_a_clear_error(tmp_path, monkeypatch):
    from negforge.trainer.text_encoders import load_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(MissingModelError, match="clip-vit-base-patch32"):
        load_clip(None)


def test_featurize_with_minilm_and_sentence_embeddings(tmp_path):
    from negforge.trainer.featurize import featurize
    from negforge.trainer.text_encoders import sentence_embeddings

    queries = write_jsonl(tmp_path / "q.jsonl", shine_rows())
    report = featurize([queries], tmp_path / "minilm.h5", encoder="minilm", dtype="float16")
    assert report.dim == 384 and report.keys == 5
    with h5py.File(tmp_path / "minilm.h5") as handle:
        assert handle["AAA_train_0"].dtype == np.float16
        assert handle["AAA_train_0"].shape[1] == 384
    vectors = sentence_embeddings(
        ["a person opens the door.", "someone is opening a door.", "the stock market fell."]
    )
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_featurize_a_negatives_artifact_keeps_only_usable_negatives(tmp_path, tiny_clip):
    from negforge.trainer.featurize import featurize
    from tests.support.trainer_inputs import negative_rows, write_negatives_artifact

    rows = [
        *negative_rows("q1", "V1", "person opens the door", ["a b", "c d", "e f"]),
        *negative_rows("q2", "V2", "person eats", ["x", None, "z"], valid=[True, False, False]),
    ]
    artifact = write_negatives_artifact(tmp_path / "negatives.parquet", rows)
    report = featurize([artifact], tmp_path / "t.h5", encoder="clip", model_path=tiny_clip)
    with h5py.File(tmp_path / "t.h5") as handle:
        keys = set(handle.keys())
    assert keys == {
        "q1",
        "q1_recomposed_gpt_0",
        "q1_recomposed_gpt_1",
        "q1_recomposed_gpt_2",
        "q2",
        "q2_recomposed_gpt_0",
    }
    assert report.negatives == 4 and report.queries == 2
