"""Shared fixtures. Tests that need ../shared fail (not skip) when NEGFORGE_REQUIRE_SHARED=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("NEGFORGE_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder; its absence fails the test when CI requires it."""
    if not (SHARED_DIR / "data").is_dir():
        message = f"../shared data not found at {SHARED_DIR}"
        if os.environ.get("NEGFORGE_REQUIRE_SHARED") == "1":
            pytest.fail(message + " (NEGFORGE_REQUIRE_SHARED=1)")
        pytest.skip(message)
    return SHARED_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
