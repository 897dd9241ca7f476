"""The report's plausibility figures on hand-made scores (no model): every number by hand."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from negforge.artifacts import Provenance
from negforge.reporting.charts import plausibility_chart
from negforge.reporting.html_report import render_html
from negforge.reporting.markdown_report import render_markdown
from negforge.reporting.plausibility import RowScore, least_plausible, plausibility_of
from negforge.reporting.report import report_from_sources
from negforge.reporting.sources import NegativesSource
from tests.support.negative_rows import rows_x, rows_y
from tests.support.png import assert_valid_png


def scores_for(rows, deltas):
    """RowScores with the given Delta NLL per row (None where the row has no negative)."""
    out = []
    for row, delta in zip(rows, deltas, strict=True):
        if row.negative is None or delta is None:
            out.append(None)
        else:
            out.append(RowScore(nll=5.0 + delta, query_nll=5.0, delta=delta))
    return out


def test_level_figures_by_hand():
    rows = rows_x()
    deltas = [0.5, 2.0, -1.0, 3.0, 0.0, 1.0, 2.5, 1.5, 0.25][: len(rows)]
    scores = scores_for(rows, deltas)
    result = plausibility_of("x", rows, scores, threshold=1.5, model="m.gguf")
    kept = [(row.level, s.delta) for row, s in zip(rows, scores, strict=True) if s is not None]
    for level in result.levels:
        values = [d for lv, d in kept if lv == level.level]
        assert level.negatives == len(values)
        assert level.median_delta == statistics.median(values)
        assert level.mean_delta == pytest.approx(statistics.fmean(values))
        assert level.beyond == sum(1 for d in values if d > 1.5)
        assert sum(level.histogram) == len(values)
    everything = [d for _, d in kept]
    assert result.overall.negatives == len(everything)
    assert result.overall.median_delta == statistics.median(everything)
    assert result.overall.beyond_share == pytest.approx(
        sum(1 for d in everything if d > 1.5) / len(everything)
    )
    worst = least_plausible("x", rows, scores, 2)
    assert [w.delta for w in worst] == sorted(everything, reverse=True)[:2]


def test_report_section_renders_the_numbers_and_a_chart():
    x, y = rows_x(), rows_y()
    sx = scores_for(x, [0.5, 2.0, -1.0, 3.0, 0.0, 1.0, 2.5, 1.5, 0.25][: len(x)])
    provenance = Provenance(kind="negatives", schema_version=1)
    source_x = NegativesSource("x", Path("x.parquet"), provenance, x, sx, "m.gguf")
    source_y = NegativesSource("y", Path("y.parquet"), provenance, y)
    report = report_from_sources([source_x, source_y], examples=0, plausibility_threshold=1.5,
                                 least_count=3)  # fmt: skip
    assert [r.artifact for r in report.plausibility] == ["x"]
    assert report.plausibility_note == "not scored: y"
    markdown = render_markdown(report)
    overall = report.plausibility[0].overall
    assert f"| x | all | {overall.negatives} | {overall.median_delta:+.2f} |" in markdown
    assert "Delta NLL > 1.5" in markdown and "## Least plausible negatives" in markdown
    assert len(report.least_plausible) == 3
    page = render_html(report)
    assert 'id="plausibility"' in page and 'id="least-plausible"' in page
    chart = plausibility_chart(report.plausibility)
    assert_valid_png(chart.png, (chart.width, chart.height))
