"""scripts/typecheck.py gives mypy every module negforge installs, under its installed name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_typecheck_checks_every_installed_module_by_its_import_name():
    spec = importlib.util.spec_from_file_location("typecheck", ROOT / "scripts" / "typecheck.py")
    assert spec is not None and spec.loader is not None
    typecheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(typecheck)
    sources = typecheck.package_sources(ROOT / "pyproject.toml")
    folders = ("negforge", "trainer", "prompts")
    on_disk = {path for folder in folders for path in (ROOT / folder).rglob("*.py")}
    assert {ROOT / s.path for s in sources} == on_disk  # no module left out, none twice
    assert len({s.module for s in sources}) == len(sources)
    for source in sources:  # the name mypy checks is the name Python imports the file as
        found = importlib.util.find_spec(source.module)
        assert found is not None and Path(found.origin or "") == ROOT / source.path, source.module
