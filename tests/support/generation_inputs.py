"""Inputs of ``negforge generate`` for tests: a masked artifact and a dictionary, made by the
real ``negforge build-dict`` and ``negforge mask`` commands from a jsonl of queries.

Test modules import the session fixture ``sample_generation_inputs`` (the bundled sample
queries, masked once per test session).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_QUERIES = REPO_ROOT / "negforge" / "sample_data" / "sample_queries.jsonl"


class GenerationInputs(BaseModel):
    """Paths of a masked artifact and its dictionary, plus the query texts it holds."""

    masked: Path
    dictionary: Path
    queries: dict[str, str]  # qid -> query text
    levels: int  # masking levels per query


def negforge_command(*args: str | Path) -> list[str]:
    """``python -m negforge ARGS`` with this interpreter."""
    return [sys.executable, "-m", "negforge", *(str(a) for a in args)]


def offline_env(**extra: str) -> dict[str, str]:
    """The environment for a negforge child process: offline, repo on the path."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def run_negforge(*args: str | Path, timeout_s: float = 600, **env: str) -> str:
    """Run a negforge command to completion; its stdout (fails the test on a non-zero exit)."""
    result = subprocess.run(
        negforge_command(*args), capture_output=True, text=True, timeout=timeout_s,
        cwd=REPO_ROOT, env=offline_env(**env),
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"negforge {' '.join(map(str, args))} exited {result.returncode}:\n"
                    f"{result.stdout}\n{result.stderr}")  # fmt: skip
    return result.stdout


def make_generation_inputs(
    out_dir: Path, source: Path = SAMPLE_QUERIES, limit: int | None = None
) -> GenerationInputs:
    """Build the dictionary and the masked artifact (Charades-CG preset) of ``source``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if limit is not None:
        lines = source.read_text().splitlines(keepends=True)[:limit]
        source = out_dir / "queries.jsonl"
        source.write_text("".join(lines))
    dictionary = out_dir / "dict.parquet"
    masked = out_dir / "masked.parquet"
    run_negforge("build-dict", source, "-o", dictionary)
    run_negforge("mask", source, "--preset", "charades_cg", "-o", masked)
    table = pq.read_table(masked, columns=["qid", "query", "level"])
    queries = dict(zip(table.column("qid").to_pylist(), table.column("query").to_pylist(),
                       strict=True))  # fmt: skip
    levels = len(set(table.column("level").to_pylist()))
    return GenerationInputs(masked=masked, dictionary=dictionary, queries=queries, levels=levels)


@pytest.fixture(scope="session")
def sample_generation_inputs(tmp_path_factory: pytest.TempPathFactory) -> GenerationInputs:
    """The bundled sample queries, masked with the Charades-CG preset (once per session)."""
    return make_generation_inputs(tmp_path_factory.mktemp("generation-inputs"))
