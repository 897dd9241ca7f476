"""The real SmolLM2 GGUF in process, for tests marked ``llama``.

Missing llama.cpp bindings or the GGUF skip the test locally and fail it in CI
(``NEGFORGE_REQUIRE_SHARED=1``), as ``tests/generation/test_local_llm.py`` does.
"""

from __future__ import annotations

from negforge.errors import MissingModelError
from tests.support.require import missing


def require_llama() -> None:
    """Skip (or, in CI, fail) unless llama.cpp's bindings and the SmolLM2 GGUF are there."""
    from negforge.generation.local_server import find_gguf
    from negforge.plausibility.llama import import_llama

    try:
        import_llama()
        find_gguf()
    except MissingModelError as exc:
        missing(str(exc))
