"""``--help`` that teaches: --version, an example per command (one runs here as written),
choices as ``[a|b]`` and plain type names, help panels, option names intact at 80 columns,
shell completion."""

from __future__ import annotations

import re
import shlex
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from negforge.cli import app
from negforge.cli.examples import EXAMPLES

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]


def _help(*args: str, columns: int = 120) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"negforge {version('negforge')}"


def test_every_command_has_an_example_of_itself() -> None:
    assert sorted(EXAMPLES) == COMMANDS
    for command in COMMANDS:
        text = " ".join(_help(command, columns=400).split())
        example = EXAMPLES[command][0]
        assert "Example" in text and example in text, command
        assert shlex.split(example)[:2] == ["negforge", command]


def test_the_read_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = tmp_path / "negforge" / "sample_data"
    sample.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "negforge" / "sample_data" / "sample_queries.jsonl", sample)
    monkeypatch.chdir(tmp_path)  # a checkout's root, as the examples assume
    result = CliRunner().invoke(app, shlex.split(EXAMPLES["read"][0])[1:])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "outputs" / "queries.jsonl").is_file()


def test_plain_types_and_choices() -> None:
    for command in ["", *COMMANDS]:
        text = _help(*[command] if command else [])
        assert not re.search(r"<(bool|str|int|float|path|list\[|int range|float range)", text), (
            command, text)  # fmt: skip
    train = _help("train")
    assert "[charades_cg|anet_cg]" in train and "[moment_detr|qd_detr]" in train
    assert "INTEGER" in train and "FLOAT" in train and "PATH" in train
    assert "[raise|skip]" in _help("read")
    with_bad_choice = CliRunner().invoke(app, ["mask", "q.jsonl", "-o", "m.parquet",
                                               "--preset", "qvhighlights"])  # fmt: skip
    assert with_bad_choice.exit_code == 2 and "charades_cg" in with_bad_choice.output


def test_train_help_is_grouped_in_panels_with_whole_option_names_at_80_columns() -> None:
    text = _help("train", columns=80)
    for panel in ("Model (model.*)", "Loss (loss.*)", "SHINE (loss.shine.*)", "Data (data.*)",
                  "Optimiser (optim.*)", "Run"):
        assert f"─ {panel} ─" in text, panel
    command = get_command(app).commands["train"]  # type: ignore[attr-defined]
    words = set(re.findall(r"--[\w-]+|-\w\b", text))
    for param in command.params:
        for name in [*param.opts, *param.secondary_opts]:
            assert name in words, name  # printed whole, never cut to "--intra-replac…"
    assert "…" not in text


def test_completion_script() -> None:
    result = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0, result.output
    assert "_NEGFORGE_COMPLETE" in result.stdout and "complete " in result.stdout
