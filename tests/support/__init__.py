"""Test-only helpers (loopback servers, fixtures shared by several test modules)."""
