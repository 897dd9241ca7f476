"""Train config: presets, YAML, precedence, generated CLI flags, errors at the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from negforge.cli import app
from negforge.cli.train_commands import TRAIN_FLAGS
from negforge.errors import ConfigError
from negforge.overrides import checked, parse_assignment
from negforge.trainer.config import (
    EvalSplit,
    TrainConfig,
    build_config,
    config_to_yaml,
    leaf_fields,
)


def test_presets_carry_the_papers_settings():
    qd = build_config(preset="charades_cg", backbone="qd_detr")
    md = build_config(preset="charades_cg", backbone="moment_detr")
    assert qd.optim.lr == 1e-4 and md.optim.lr == 2e-4
    assert qd.data.clip_len == 0.5 and qd.model.max_q_len == 32
    assert qd.loss.saliency_margin == 0.2 and qd.model.enc_layers == 2
    shine = qd.loss.shine
    assert (shine.h1, shine.h2, shine.q, shine.alpha, shine.beta) == (1.0, 2.0, 8, 1.0, 1.0)
    assert shine.margins == (0.25,)  # one margin for every hinge term: m0..mK = 0.25
    assert qd.optim.batch_size == 32 and qd.optim.epochs == 200 and qd.seed == 2018
    assert qd.optim.grad_clip == 0.1 and qd.optim.weight_decay == 1e-4
    for backbone in ("qd_detr", "moment_detr"):
        anet = build_config(preset="anet_cg", backbone=backbone)
        assert anet.optim.lr == 2e-4 and anet.data.clip_len == 1.0
        assert anet.model.enc_layers == 3 and anet.model.dec_layers == 3
        assert anet.model.max_q_len == 50 and anet.loss.saliency_margin == 1.0
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config(preset="qvhighlights")


def test_defaults_then_preset_then_yaml_then_flags(tmp_path):
    config = tmp_path / "cfg" / "run.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump(
            {
                "preset": "charades_cg",
                "optim": {"lr": 5e-4, "epochs": 7},
                "data": {
                    "train": "train.jsonl",
                    "video_feats": ["i3d", "/abs/clip"],
                    "eval": ["test_trivial=test.jsonl", {"name": "nc", "path": "nc.jsonl"}],
                },
            }
        )
    )
    cfg = build_config(yaml_path=config, overrides={"optim.epochs": 3, "loss.shine.q": 4})
    assert cfg.preset == "charades_cg" and cfg.data.clip_len == 0.5  # from the preset
    assert cfg.optim.lr == 5e-4  # YAML beats the preset
    assert cfg.optim.epochs == 3 and cfg.loss.shine.q == 4  # flags beat the YAML
    # Relative paths in a YAML file are relative to that file.
    assert cfg.data.train == config.parent / "train.jsonl"
    assert [str(p) for p in cfg.data.video_feats] == [str(config.parent / "i3d"), "/abs/clip"]
    assert cfg.data.eval == [
        EvalSplit(name="test_trivial", path=config.parent / "test.jsonl"),
        EvalSplit(name="nc", path=config.parent / "nc.jsonl"),
    ]
    # The saved form loads back to the same config.
    saved = tmp_path / "saved.yaml"
    saved.write_text(config_to_yaml(cfg))
    assert build_config(yaml_path=saved) == cfg


def test_invalid_settings_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        build_config(overrides={"optim.lr": -1})
    with pytest.raises(ConfigError, match="fine_ranking"):
        build_config(overrides={"loss.shine.fine_ranking": "spiral"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {hiden: 3}\n")
    with pytest.raises(ConfigError, match="hiden"):
        build_config(yaml_path=bad)


def test_eval_split_names():
    assert EvalSplit.parse("a=x/b.jsonl") == EvalSplit(name="a", path="x/b.jsonl")
    assert EvalSplit.parse("data/charades_cg_novel_composition.jsonl").name == "novel_composition"
    assert EvalSplit.parse("visa/novel_word.json").name == "novel_word"
    assert EvalSplit.parse("charades_cg_test.jsonl").name == "test_trivial"
    assert EvalSplit.parse("mine.jsonl").name == "mine"


def test_every_config_field_is_a_train_flag():
    assert {flag.key for flag in TRAIN_FLAGS} == set(leaf_fields(TrainConfig))
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in (
        "--alpha",
        "--beta",
        "--q ",
        "--h1",
        "--h2",
        "--margins",
        "--no-use-intra",
        "--no-use-inter",
        "--fine-terms",
        "--intra-replaces-base-saliency",
        "--fine-ranking",
        "--no-shine",
        "--lr ",
        "--epochs",
        "--clip-len",
        "--max-v-len",
        "--resume",
        "--val-fraction",
        "--select-on",
        "--on-missing",
        "--preset",
        "--config",
    ):
        assert flag in result.output, flag


def test_list_flags_are_parsed():
    def value(text: str) -> object:
        return next(iter(checked(TrainConfig, [parse_assignment(text)]).values()))

    assert value("loss.shine.margins=0.1,0.2,0.3,0.4") == [0.1, 0.2, 0.3, 0.4]
    terms = value("loss.shine.fine_terms=1,0,true,false")
    cfg = build_config(overrides={"loss.shine.fine_terms": terms})
    assert cfg.loss.shine.fine_terms == (True, False, True, False)


def test_missing_features_exit_2_naming_the_video(tmp_path):
    from negforge.trainer.synth import SynthConfig, generate

    data = tmp_path / "synth"
    generate(
        data,
        SynthConfig(
            train_videos=6, val_videos=2, test_videos=2, novel_videos=2, novel_word_videos=2
        ),
    )
    (data / "video_feats" / "TR00003.npy").unlink()
    command = [
        sys.executable,
        "-m",
        "negforge",
        "train",
        "--config",
        str(data / "train_config.yaml"),
        "-o",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "TR00003" in done.stderr and "--on-missing skip" in done.stderr
    skipped = CliRunner().invoke(
        app,
        [
            *command[3:],
            "--on-missing",
            "skip",
            "--hidden",
            "32",
            "--heads",
            "4",
            "--ff",
            "64",
            "--cpu-threads",
            "1",
        ],
    )
    assert skipped.exit_code == 0, skipped.output[-2000:]
    assert "skipped 3 queries (missing: 1 videos" in skipped.output


def test_train_without_inputs_is_a_config_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "negforge", "train", "-o", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--train" in done.stderr and "--video-feats" in done.stderr
