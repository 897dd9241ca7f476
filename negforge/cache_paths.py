"""Where negforge keeps its caches: one root, one subfolder per kind of cached work.

``$NEGFORGE_CACHE_DIR`` is the root (default ``$XDG_CACHE_HOME/negforge``, else
``~/.cache/negforge``); spaCy parses go to ``docs/``, LLM answers to ``generate/`` and
plausibility scores to ``plausibility/`` under it. Each command's ``--cache-dir`` names the
folder of its own kind directly; ``$NEGFORGE_LLM_CACHE_DIR`` does the same for the LLM
answers alone.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The root folder of every negforge cache.
CACHE_DIR_ENV = "NEGFORGE_CACHE_DIR"


def cache_root() -> Path:
    """``$NEGFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/negforge``, else ``~/.cache/negforge``."""
    root = os.environ.get(CACHE_DIR_ENV)
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "negforge"


def cache_folder(kind: str) -> Path:
    """The default folder of one kind of cache (``docs``, ``generate``, ``plausibility``)."""
    return cache_root() / kind
