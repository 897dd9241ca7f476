"""The training progress line fits the terminal: whole labels and values at 80 and 120
columns, lower-priority loss parts dropped rather than cut."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from negforge.trainer.run_log import RunPrinter, loss_summary

LOSSES = {
    "loss": 12.3456,
    "loss_span": 0.4321,
    "loss_giou": 0.6543,
    "loss_label": 0.7654,
    "loss_saliency": 0.1234,
    "loss_cr": 1.2345,
    "loss_intra": 0.5,
    "loss_inter": 0.7,
    "loss_fr": 2.3456,
    "loss_fr_0": 0.1,
    "loss_span_0": 0.5,
}


def progress_line(width: int) -> str:
    """The progress display of epoch 12/200 at step 123/456, as the terminal shows it."""
    printer = RunPrinter(enabled=True, progress=True)
    buffer = io.StringIO()
    printer.console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    progress = printer.progress()
    task = progress.add_task("epoch 12/200", total=456, losses={})
    progress.update(task, completed=123, losses=LOSSES)
    printer.console.print(progress.get_renderable())
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("width", [80, 120])
def test_progress_line_is_whole_at_the_terminal_width(width):
    line = progress_line(width)
    assert len(line) <= width
    assert "…" not in line and "..." not in line
    assert line.startswith("epoch 12/200 ")
    assert "123/456" in line
    # The total and SHINE's two terms come first; every value shown is whole.
    assert "loss 12.346 cr 1.234 fr 2.346" in line
    shown = line[line.index("loss 12.346"):].split()
    assert len(shown) % 2 == 0
    for value in shown[1::2]:
        assert len(value.split(".")[1]) == 3


def test_wider_terminals_show_more_parts():
    narrow, wide = progress_line(80), progress_line(120)
    assert len(wide.split()) > len(narrow.split())
    assert "span 0.432" in wide  # the next priority after the SHINE terms


def test_loss_summary_keeps_whole_pairs_in_order():
    assert loss_summary(LOSSES, width=None).split()[::2] == [
        "loss", "cr", "fr", "span", "giou", "label", "saliency", "intra", "inter"
    ]  # fmt: skip
    assert loss_summary(LOSSES, width=30) == "loss 12.346 cr 1.234 fr 2.346"
    assert loss_summary(LOSSES, width=10) == ""
