"""One override grammar (``--set a.b=c``) for run, generate and train: the same config via a
named flag and via ``--set``; unknown keys name the closest valid ones; bad values name the
key and the expected type (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from negforge.cli import app
from negforge.errors import ConfigError
from negforge.generation.config import GenerateConfig
from negforge.overrides import build, parse_assignment
from negforge.pipeline_spec import load_spec
from negforge.trainer.config import TrainConfig


def _invoke(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def _error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.exit_code, result.output)
    assert lines[0].startswith("negforge: error: ") and "Traceback" not in result.output
    return lines[0]


def test_values_are_read_as_yaml() -> None:
    assert parse_assignment("optim.lr=0.0002").value == 0.0002
    assert parse_assignment("a.b=[0.25, 0.5]").value == [0.25, 0.5]
    assert parse_assignment("a=true").value is True
    assert parse_assignment("a=null").value is None
    assert parse_assignment("a=gpt-4o").value == "gpt-4o"
    for bad in ("seed", "=3", "a..b=1", "a=[1, 2"):
        with pytest.raises(ConfigError, match="--set"):
            parse_assignment(bad)


def test_unknown_key_and_bad_value_messages() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr'.*closest: optim\.lr"):
        build(TrainConfig, [parse_assignment("optim.lrr=1")])
    with pytest.raises(ConfigError, match=r"loss\.shine has no setting 'qq'.*loss\.shine\.q"):
        build(TrainConfig, [parse_assignment("loss.shine.qq=1")])
    with pytest.raises(ConfigError, match=r"--set optim\.epochs=many: invalid value for "
                                          r"optim\.epochs.*\(expected an integer\)"):
        build(TrainConfig, [parse_assignment("optim.epochs=many")])
    with pytest.raises(ConfigError, match=r"expected one of error\|random\|drop"):
        build(GenerateConfig, [parse_assignment("on_failed=retry")])
    margins = build(TrainConfig, [parse_assignment("loss.shine.margins=0.25,0.5")])
    assert margins.loss.shine.margins == (0.25, 0.5)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Replace the library calls behind generate and train by recorders of their config."""
    seen: dict[str, Any] = {}

    def fake_generate(masked: Path, dictionary: Path, output: Path, config: GenerateConfig,
                      **_: Any) -> Any:  # fmt: skip
        seen.setdefault("generate", []).append(config)
        raise SystemExit(0)

    def fake_train(cfg: TrainConfig, output: Path, resume: bool = False) -> Any:
        seen.setdefault("train", []).append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr("negforge.generation.runner.generate_negatives", fake_generate)
    monkeypatch.setattr("negforge.trainer.run.train", fake_train)
    monkeypatch.chdir(tmp_path)
    return seen


def test_generate_flag_and_set_give_the_same_config(captured: dict[str, Any]) -> None:
    common = ["generate", "m.parquet", "--dict", "d.parquet", "-o", "n.parquet"]
    by_flags = ["--seed", "7", "--on-failed", "drop", "--free-fills", "--no-resume",
                "--timeout", "9", "-q"]  # fmt: skip
    by_set = ["--set", "seed=7", "--set", "on_failed=drop", "--set", "constrain_fills=false",
              "--set", "resume=false", "--set", "timeout_s=9", "--set", "quiet=true"]
    for extra in (by_flags, by_set):
        assert _invoke(*common, *extra).exit_code == 0
    flags, sets = captured["generate"]
    assert flags == sets
    assert (flags.seed, flags.on_failed, flags.constrain_fills, flags.resume) == (7, "drop",
                                                                                 False, False)
    # a setting without a flag of its own, and --set winning over a flag
    assert _invoke(*common, "--set", "max_backoff_s=5", "--seed", "1", "--set", "seed=2"
                   ).exit_code == 0  # fmt: skip
    assert captured["generate"][-1].max_backoff_s == 5 and captured["generate"][-1].seed == 2


def test_generate_keeps_the_local_defaults(captured: dict[str, Any]) -> None:
    assert _invoke("generate", "m.parquet", "--dict", "d.parquet", "-o", "n.parquet",
                   "--llm", "local").exit_code == 0  # fmt: skip
    assert captured["generate"][-1].dict_sample == 15  # not the generic default 40


def test_generate_rejects_unknown_keys_and_bad_values(captured: dict[str, Any]) -> None:
    common = ["generate", "m.parquet", "--dict", "d.parquet", "-o", "n.parquet"]
    line = _error_line(_invoke(*common, "--set", "temprature=0.5"))
    assert "unknown key 'temprature'" in line and "closest: temperature" in line
    line = _error_line(_invoke(*common, "--set", "concurrency=many"))
    assert "invalid value for concurrency" in line and "expected an integer" in line
    line = _error_line(_invoke(*common, "--max-failed", "2"))
    assert "--max-failed 2.0: invalid value for max_failed" in line
    assert "generate" not in captured


def test_train_flag_and_set_give_the_same_config(captured: dict[str, Any]) -> None:
    common = ["train", "-o", "run", "--train", "t.jsonl", "--video-feats", "v",
              "--text-feats", "t"]  # fmt: skip
    by_flags = ["--epochs", "3", "--q", "4", "--no-shine", "--margins", "0.25,0.5",
                "--preset", "anet_cg", "--eval", "a=x.jsonl", "--backbone", "moment_detr"]
    by_set = ["--set", "optim.epochs=3", "--set", "loss.shine.q=4",
              "--set", "loss.shine.enabled=false", "--set", "loss.shine.margins=[0.25, 0.5]",
              "--set", "preset=anet_cg", "--set", "data.eval=[a=x.jsonl]",
              "--set", "model.backbone=moment_detr"]  # fmt: skip
    for extra in (by_flags, by_set):
        result = _invoke(*common, *extra)
        assert result.exit_code == 0, result.output
    flags, sets = captured["train"]
    assert flags == sets
    assert flags.optim.epochs == 3 and flags.loss.shine.q == 4 and not flags.loss.shine.enabled
    assert flags.preset == "anet_cg" and flags.data.clip_len == 1.0  # the preset applied
    assert flags.backbone == "moment_detr" and flags.data.eval[0].name == "a"


def test_train_rejects_unknown_keys_and_bad_values(captured: dict[str, Any]) -> None:
    line = _error_line(_invoke("train", "-o", "run", "--set", "optim.lrr=0.1"))
    assert "--set optim.lrr=0.1: unknown key 'optim.lrr'" in line and "optim.lr" in line
    line = _error_line(_invoke("train", "-o", "run", "--set", "optim.epochs=zero"))
    assert "invalid value for optim.epochs" in line and "expected an integer" in line
    line = _error_line(_invoke("train", "-o", "run", "--epochs", "0"))
    assert "--epochs 0: invalid value for optim.epochs" in line
    assert "train" not in captured and not Path("run").exists()


def _pipeline(folder: Path, generate: str = "") -> Path:
    path = folder / "p.yaml"
    path.write_text("name: p\ninputs: {train: q.jsonl}\nstages:\n  - {stage: read}\n"
                    f"  - {{stage: build-dict}}\n  - {{stage: mask}}\n"
                    f"  - {{stage: generate{generate}}}\n")  # fmt: skip
    return path


def test_run_set_is_the_same_as_the_pipeline_file(tmp_path: Path) -> None:
    written = load_spec(_pipeline(tmp_path, ", seed: 3, on_failed: drop"))
    overridden = load_spec(_pipeline(tmp_path), overrides=["generate.seed=3",
                                                           "generate.on_failed=drop"])
    assert written.stages[-1] == overridden.stages[-1]
    assert overridden.stages[-1].config() == {"seed": 3, "on_failed": "drop"}


def test_run_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    path = _pipeline(tmp_path)
    line = _error_line(_invoke("run", path, "--set", "generate.temprature=0.5"))
    assert str(path) in line and "closest: temperature" in line
    line = _error_line(_invoke("run", path, "--set", "mask.preset=[1"))
    assert "the value is not YAML" in line
    line = _error_line(_invoke("run", path, "--set", "mask.ratio=0.5"))
    assert "unknown key 'ratio'" in line and "closest: ratios" in line
    line = _error_line(_invoke("run", path, "--set", "generate.concurrency=many"))
    assert "key 'concurrency'" in line and "integer" in line
