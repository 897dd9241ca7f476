"""Every command block of README.md and docs/*.md runs as written (issue 12).

How the pages are run:

* Each page is one test. Its fenced ``bash`` / ``sh`` / ``console`` blocks and its ``python``
  blocks run in page order, command by command, in ONE bash shell (so ``source``, ``export``
  and the files of earlier blocks carry over), in a scratch workspace that looks like a fresh
  checkout after the README's set-up: a temporary folder holding a copy of the repository's
  files except ``outputs/`` (so the repository's own outputs stay untouched) and ``.git``,
  ``.venv`` -> this interpreter's virtual environment, and a sibling ``shared`` -> the real
  ``../shared``. ``negforge`` is the venv's console script (the venv's ``bin`` leads
  ``PATH``); ``$NEGFORGE_CACHE_DIR`` starts as an empty folder of the workspace; API keys
  (``*_API_KEY``) are removed from the environment.
* A ``python`` block runs as ``.venv/bin/python`` reading the block, in the workspace.
* Unlabelled fences are output shown on the page, never run.
* A block that must not run says so in its first line, ``# (not run by the docs test:
  REASON)``; the test skips it and fails when the reason is empty.
* ``cmd &`` starts a background job (``negforge serve-local &``); the harness kills the
  page's whole process group when the page ends, passed or not.
* A failing command fails the test with the page, its line, the command and the tail of its
  output. Pages that use ``../shared`` skip without the data, and fail instead under
  ``NEGFORGE_REQUIRE_SHARED=1`` (CI).

No option is added to any command: a long step is shortened on the page itself (e.g. a
small ``--limit`` with a comment naming the full run), never by the harness.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DIR

PAGES = ["README.md", *sorted(p.relative_to(REPO_ROOT).as_posix()
                              for p in (REPO_ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "console"}
RUN_LANGS = SHELL_LANGS | {"python"}
SKIP_MARKER = re.compile(r"^#\s*\(not run by the docs test:(?P<reason>.*)\)\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
PAGE_TIMEOUT_S = 840  # under pytest-timeout's 900 s (pyproject), so this message names the command
# Top-level entries of the checkout the workspace does not link: its own outputs/ (written
# there instead), the venv (linked apart) and git/tool state.
NOT_LINKED = {"outputs", ".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, first line number (1-based) and lines."""

    lang: str
    line: int  # line of the first line inside the fence
    lines: tuple[str, ...]

    @property
    def skip_reason(self) -> str | None:
        """The marker's reason when the block's first line is the not-run marker."""
        first = self.lines[0] if self.lines else ""
        match = SKIP_MARKER.match(first.strip())
        return None if match is None else match.group("reason").strip()


@dataclass(frozen=True)
class Command:
    """One command as written on the page (continuation lines and loops kept whole)."""

    line: int
    text: str
    lang: str


def parse_blocks(text: str) -> list[Block]:
    """Fenced blocks of a Markdown page, in order."""
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence = opening.group("fence")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j])
            j += 1
        blocks.append(Block(opening.group("lang").lower(), i + 2, tuple(body)))
        i = j + 1
    return blocks


_OPENERS = re.compile(r"^(for|while|until|if|case)\b")
_CLOSERS = re.compile(r"^(done|fi|esac)\b")


def shell_commands(block: Block) -> list[Command]:
    """Split a shell block into commands: a line ending in ``\\`` continues; a ``for`` /
    ``while`` / ``if`` / ``case`` runs to its ``done`` / ``fi`` / ``esac``. Comment and blank
    lines are dropped; ``console`` blocks keep only ``$ `` lines (and their continuations)."""
    commands: list[Command] = []
    current: list[str] = []
    start = 0
    depth = 0
    continued = False
    for offset, raw in enumerate(block.lines):
        line = raw.rstrip()
        if block.lang == "console" and not current:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if not current:
            start = block.line + offset
        current.append(line)
        if _OPENERS.match(stripped):
            depth += 1
        if _CLOSERS.match(stripped):
            depth -= 1
        continued = line.endswith("\\")
        if not continued and depth <= 0:
            commands.append(Command(start, "\n".join(current), block.lang))
            current, depth = [], 0
    assert not current, f"block at line {block.line}: unterminated command {current!r}"
    return commands


def page_commands(page_text: str) -> tuple[list[Command], list[tuple[Block, str]]]:
    """The commands to run, in page order, and the skipped blocks with their reasons."""
    commands: list[Command] = []
    skipped: list[tuple[Block, str]] = []
    for block in parse_blocks(page_text):
        if block.lang not in RUN_LANGS:
            continue
        reason = block.skip_reason
        if reason is not None:
            skipped.append((block, reason))
            continue
        if block.lang == "python":
            commands.append(Command(block.line, "\n".join(block.lines), "python"))
        else:
            commands.extend(shell_commands(block))
    return commands, skipped


def _script(commands: list[Command], logs: Path) -> str:
    """One bash script running the commands in order, each one's output in its own log,
    stopping at the first failure with its index in ``logs/failed``."""
    parts = ["set -o pipefail"]
    for index, command in enumerate(commands):
        log = shlex.quote(str(logs / f"{index}.log"))
        if command.lang == "python":
            delimiter = "NEGFORGE_DOCS_PYTHON_EOF"
            assert delimiter not in command.text
            body = f".venv/bin/python - <<'{delimiter}'\n{command.text}\n{delimiter}"
        else:
            body = command.text
        parts.append(
            f"echo {index} > {shlex.quote(str(logs / 'current'))}\n"
            f"__t0=$EPOCHREALTIME\n"
            f"{{\n{body}\n}} > {log} 2>&1 < /dev/null\n"
            f"__rc=$?\n"
            f"echo \"{index} $__rc $__t0 $EPOCHREALTIME\" >> {shlex.quote(str(logs / 'times'))}\n"
            f"times > {shlex.quote(str(logs / f'{index}.cpu'))}\n"
            f"if [ $__rc -ne 0 ]; then echo \"{index} $__rc\" > "
            f"{shlex.quote(str(logs / 'failed'))}; exit 1; fi"
        )
    return "\n".join(parts) + "\n"


def _workspace(root: Path) -> Path:
    """A folder that looks like a checkout (see the module docstring); returns its root.

    The checkout's files are copied (2 MB), not linked: a path such as a sweep file's
    ``../outputs/synth`` must resolve inside the workspace, not in the repository."""
    checkout = root / "negforge"
    checkout.mkdir()
    for entry in REPO_ROOT.iterdir():
        if entry.name in NOT_LINKED:
            continue
        if entry.is_dir():
            shutil.copytree(entry, checkout / entry.name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(entry, checkout / entry.name)
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    (checkout / "outputs").mkdir()
    (root / "shared").symlink_to(SHARED_DIR)
    return checkout


def _environment(checkout: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.endswith("_API_KEY") and key not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = f"{checkout / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["NEGFORGE_CACHE_DIR"] = str(checkout / ".cache" / "negforge")
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", COLUMNS="100")
    return env


def _tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no output)"
    text = path.read_text(errors="replace").rstrip().split("\n")
    return "\n".join(text[-lines:])


def _children_cpu_s(path: Path) -> float:
    """User + system CPU seconds of the shell's finished children (bash ``times``)."""
    if not path.exists():
        return 0.0
    lines = path.read_text().strip().split("\n")
    total = 0.0
    for field in lines[-1].split():
        minutes, seconds = field.rstrip("s").split("m")
        total += 60 * float(minutes) + float(seconds)
    return total


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the page's shell and everything it started (background servers included)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _needs_shared(commands: list[Command]) -> None:
    if any("../shared" in command.text for command in commands) and not (
        SHARED_DIR / "data"
    ).is_dir():
        message = f"../shared data not found at {SHARED_DIR}"
        if os.environ.get("NEGFORGE_REQUIRE_SHARED") == "1":
            pytest.fail(message + " (NEGFORGE_REQUIRE_SHARED=1)")
        pytest.skip(message)


def test_skip_markers_give_a_reason() -> None:
    """Every not-run marker names why; a block is not half-marked (marker not first)."""
    for page in PAGES:
        for block in parse_blocks((REPO_ROOT / page).read_text()):
            if block.lang not in RUN_LANGS:
                continue
            reason = block.skip_reason
            assert reason is None or reason, f"{page}:{block.line}: marker without a reason"
            for offset, line in enumerate(block.lines[1:], start=1):
                assert SKIP_MARKER.match(line.strip()) is None, (
                    f"{page}:{block.line + offset}: the not-run marker must be the block's "
                    "first line"
                )


def test_command_splitting() -> None:
    block = Block("bash", 10, (
        "# a comment", "negforge a \\", "    --b", "", "for x in 1 2; do", "  echo $x",
        "done", "negforge c &      # background",
    ))
    assert [(c.line, c.text) for c in shell_commands(block)] == [
        (11, "negforge a \\\n    --b"),
        (14, "for x in 1 2; do\n  echo $x\ndone"),
        (17, "negforge c &      # background"),
    ]
    marked = parse_blocks("```bash\n# (not run by the docs test: needs a GPU)\nx\n```\n")
    assert marked[0].skip_reason == "needs a GPU"
    assert parse_blocks("```bash\n#(not run by the docs test: )\n```")[0].skip_reason == ""


def _page_params() -> list[object]:
    """One case per page; ``slow`` (still run in CI), plus ``shared`` where it reads
    ``../shared``."""
    params: list[object] = []
    for page in PAGES:
        commands, _ = page_commands((REPO_ROOT / page).read_text())
        marks = [pytest.mark.slow]
        if any("../shared" in command.text for command in commands):
            marks.append(pytest.mark.shared)
        params.append(pytest.param(page, marks=marks, id=page))
    return params


@pytest.mark.parametrize("page", _page_params())
def test_page_commands_run_as_written(page: str, tmp_path: Path) -> None:
    commands, _skipped = page_commands((REPO_ROOT / page).read_text())
    if not commands:
        pytest.skip(f"{page}: every block is marked not to run")
    _needs_shared(commands)
    checkout = _workspace(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "page.sh"
    script.write_text(_script(commands, logs))
    process = subprocess.Popen(
        ["bash", str(script)], cwd=checkout, env=_environment(checkout),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    timed_out = False
    try:
        process.wait(timeout=PAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(process)
        process.wait()
    times = (logs / "times").read_text().split("\n") if (logs / "times").exists() else []
    cpu_before = 0.0
    for row in filter(None, times):
        index, _rc, start, end = row.split()
        command = commands[int(index)]
        cpu = _children_cpu_s(logs / f"{index}.cpu")
        first = command.text.split("\n")[0][:80]
        print(f"{page}:{command.line}  wall {float(end) - float(start):6.1f} s  "
              f"cpu {cpu - cpu_before:6.1f} s  {first}")
        cpu_before = cpu
    failed_index: int | None = None
    if (logs / "failed").exists():
        failed_index = int((logs / "failed").read_text().split()[0])
    elif timed_out and (logs / "current").exists():
        failed_index = int((logs / "current").read_text())
    if failed_index is not None:
        command = commands[failed_index]
        what = (f"timed out after {PAGE_TIMEOUT_S} s" if timed_out else
                f"exit code {(logs / 'failed').read_text().split()[1]}")
        pytest.fail(f"{page}:{command.line}: {what}:\n{command.text}\n--- output tail ---\n"
                    f"{_tail(logs / f'{failed_index}.log')}", pytrace=False)
    assert not timed_out, f"{page}: timed out after {PAGE_TIMEOUT_S} s"
    assert process.returncode == 0, f"{page}: the page's shell exited {process.returncode}"
