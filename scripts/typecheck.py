"""mypy over every module negforge installs, under the names it installs them as.

``negforge.trainer`` and ``negforge.prompts`` live in ``trainer/`` and ``prompts/``
(setuptools ``package-dir``). mypy has no setting that maps a folder to a package name
(python/mypy#10564): run on ``trainer/`` it would check ``trainer.engine`` while the code
imports ``negforge.trainer.engine`` (missing, so silently ``Any``). This script lists the
``.py`` files of every package in ``[tool.setuptools] packages`` and hands them to mypy
with their installed module names; every other setting comes from ``[tool.mypy]``.

    .venv/bin/python scripts/typecheck.py [mypy options]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mypy import util
from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build
from mypy.modulefinder import BuildSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # the backport mypy itself depends on
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_sources(pyproject: Path) -> list[BuildSource]:
    """One source per module of the packages setuptools installs, named as installed."""
    setuptools = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    sources = []
    for package in setuptools["packages"]:
        folder = ROOT / package_dir.get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            sources.append(BuildSource(str(path.relative_to(ROOT)), module, None, str(ROOT)))
    return sources


def main(args: list[str]) -> int:
    t0 = time.time()
    fscache = FileSystemCache()
    # The targets are ours; process_options only needs one to accept the command line.
    _, options = process_options(
        [*args, "--config-file", str(ROOT / "pyproject.toml"), "-c", "pass"], fscache=fscache
    )
    sources = package_sources(ROOT / "pyproject.toml")
    _, messages, blockers = run_build(sources, options, fscache, t0, sys.stdout, sys.stderr)
    formatter = util.FancyFormatter(sys.stdout, sys.stderr, options.hide_error_codes)
    n_errors, _, n_files = util.count_stats(messages)
    if n_errors:
        print(formatter.format_error(n_errors, n_files, len(sources), blockers=blockers))
        return 2 if blockers else 1
    print(formatter.format_success(len(sources), options.color_output))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
