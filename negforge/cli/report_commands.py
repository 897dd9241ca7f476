"""CLI commands of the report area (registered on import)."""

from __future__ import annotations

from negforge.cli.app import app  # noqa: F401
