"""Optional test dependencies: skip locally when one is missing, fail in CI.

CI sets ``NEGFORGE_REQUIRE_SHARED=1``; there ``scripts/setup.sh`` installs every optional
package and ``../shared`` is present, so a missing one is a broken set-up, not a skip.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def required() -> bool:
    """Whether missing test dependencies must fail the test (CI)."""
    return os.environ.get("NEGFORGE_REQUIRE_SHARED") == "1"


def missing(message: str) -> NoReturn:
    """Fail (CI) or skip (locally) a test whose dependency is missing."""
    if required():
        pytest.fail(f"{message} (NEGFORGE_REQUIRE_SHARED=1)")
    pytest.skip(message)


def require_module(name: str, package: str) -> ModuleType:
    """Import ``name``; when it is absent, :func:`missing` names the ``package`` to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not importable (install {package}; scripts/setup.sh does)")
