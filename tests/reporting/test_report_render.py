"""The rendered report: its numbers, its charts and its self-containedness."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from negforge.reporting.charts import (
    fill_distribution_chart,
    hierarchy_chart,
    levels_chart,
    types_chart,
)
from negforge.reporting.hierarchy import HierarchyResult, LevelSimilarity
from negforge.reporting.html_report import render_html
from negforge.reporting.markdown_report import render_markdown
from negforge.reporting.report import NegativesReport, report_from_sources
from negforge.reporting.sources import NegativesSource, load_negatives
from tests.support.negative_rows import (
    dictionary_index,
    rows_x,
    rows_y,
    write_dictionary,
    write_negatives,
)
from tests.support.png import assert_valid_png


class _Tables(HTMLParser):
    """Collects every table's rows of cell texts, and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.urls: list[str] = []
        self.section: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "action", "poster", "srcset", "data", "formaction"):
            if values.get(name):
                self.urls.append(values[name] or "")
        if values.get("style"):
            self.styles.append(values["style"] or "")
        if tag == "section":
            self.section = values.get("id")
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.section:
            self.tables.setdefault(self.section, []).append(self.row)
            self.row = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self._in_style:
            self.styles.append(data)


def parse(html_text: str) -> _Tables:
    parser = _Tables()
    parser.feed(html_text)
    return parser


def assert_self_contained(html_text: str) -> None:
    parsed = parse(html_text)
    for url in parsed.urls:
        assert url.startswith(("#", "data:image/png;base64,")), url[:80]
    for style in parsed.styles:
        assert "@import" not in style and "url(" not in style
    lowered = html_text.lower()
    for needle in ("http://", "https://", "//cdn", "<link", "<iframe", "fetch(", "xmlhttprequest"):
        assert needle not in lowered, needle
    assert "<script src" not in lowered


def _row(table: list[list[str]], *keys: str) -> list[str]:
    header = table[0]
    for row in table[1:]:
        if row[: len(keys)] == list(keys):
            return row
    raise AssertionError(f"no row {keys} in {header}")


@pytest.fixture(scope="module")
def report() -> NegativesReport:
    sources = [
        NegativesSource("x", Path("x.parquet"), _provenance(), rows_x()),
        NegativesSource("y", Path("y.parquet"), _provenance(), rows_y()),
    ]
    hierarchy_results = [_hierarchy("x", [0.9, 0.7, 0.5]), _hierarchy("y", [0.85, 0.8, 0.82])]
    built = report_from_sources(
        sources, dictionary=dictionary_index(), dictionary_name="D", examples=5, seed=3
    )
    return built.model_copy(update={"hierarchy": hierarchy_results})


def _provenance():
    from negforge.artifacts import Provenance

    return Provenance(kind="negatives", schema_version=1)


def _hierarchy(name: str, means: list[float]) -> HierarchyResult:
    return HierarchyResult(
        artifact=name,
        encoder="fake",
        queries=3,
        levels=[
            LevelSimilarity(level=i + 1, pairs=3, mean=m, std=0.05) for i, m in enumerate(means)
        ],
    )


def test_html_numbers_equal_the_hand_worked_figures(report: NegativesReport) -> None:
    tables = parse(render_html(report)).tables
    header = tables["levels"][0]
    row = dict(zip(header, _row(tables["levels"], "x", "all"), strict=True))
    assert row["rows"] == "9"
    assert row["valid"] == "33.3 %"  # 3 / 9
    assert row["template kept"] == "88.9 %"  # 8 / 9
    assert row["fills located"] == "77.8 %"  # 14 / 18
    assert row["fill = original"] == "21.4 %"  # 3 / 14
    assert row["changed: own type"] == "36.4 %"  # 4 / 11
    assert row["changed: other type"] == "9.1 %"  # 1 / 11
    assert row["changed: outside D"] == "45.5 %"  # 5 / 11
    assert row["changed: phrase"] == "9.1 %"  # 1 / 11
    assert row["duplicated level"] == "11.11 %"  # 1 / 9
    assert row["negative = query"] == "11.11 %"
    assert row["words / fill"] == "1.071"  # 15 / 14
    assert row["one-word fills"] == "92.9 %"  # 13 / 14
    level3 = dict(zip(header, _row(tables["levels"], "x", "3"), strict=True))
    assert level3["fill = original"] == "14.3 %"  # on (B3) of 7 located
    reasons = tables["reasons"]
    reason_row = dict(zip(reasons[0], _row(reasons, "x", "all"), strict=True))
    assert reason_row["copied_original"] == "33.3 %"
    assert reason_row["unmasked_changed"] == "11.1 %"
    assert reason_row["invalid"] == "66.7 %"
    y_row = dict(zip(reasons[0], _row(reasons, "y", "all"), strict=True))
    assert y_row["fallback: random"] == "16.7 %"
    queries = dict(zip(tables["queries"][0], _row(tables["queries"], "x"), strict=True))
    assert queries["all levels template kept"] == "66.7 %"
    assert queries["queries repeating a negative across levels"] == "1"
    types = tables["types"]
    verb = dict(zip(types[0], _row(types, "x", "verb"), strict=True))
    assert verb["fill = original"] == "28.6 %"  # 2 / 7
    assert verb["changed: outside D"] == "60.0 %"  # 3 / 5
    assert verb["changed: phrase"] == "20.0 %"  # 1 / 5
    assert verb["most frequent fills"].startswith("stands (2)")
    hierarchy = dict(zip(tables["hierarchy"][0], _row(tables["hierarchy"], "y"), strict=True))
    assert hierarchy["level 1"] == "0.850" and hierarchy["falls with level"] == "no"


def test_html_report_is_self_contained_with_valid_charts(report: NegativesReport) -> None:
    html_text = render_html(report)
    assert_self_contained(html_text)
    images = re.findall(
        r'<img [^>]*width="(\d+)" height="(\d+)" src="data:image/png;base64,'
        r'([A-Za-z0-9+/=]+)"',
        html_text,
    )
    # levels, types, one fill chart per artifact, hierarchy.
    assert len(images) == 5
    for width, height, payload in images:
        assert_valid_png(base64.b64decode(payload), (int(width), int(height)))
    # Every example marks the changed words.
    assert html_text.count('<div class="example">') == 2  # x and y share only A and B
    assert "<mark>" in html_text


def test_markdown_shows_the_same_figures(report: NegativesReport) -> None:
    text = render_markdown(report)
    line = next(ln for ln in text.splitlines() if ln.startswith("| x | all |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:7] == ["x", "all", "9", "33.3 %", "88.9 %", "77.8 %", "21.4 %"]
    assert "person **slowly** **closes** the door." in text  # example A, level 1, artifact x
    assert "## Examples" in text and "## Hierarchy check" in text


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (lambda r: levels_chart(r.artifacts), (1200, 760)),
        (lambda r: types_chart(r.artifacts), (1200, 420)),
        (lambda r: fill_distribution_chart(r.artifacts[0]), (1500, 900)),
        (lambda r: hierarchy_chart(r.hierarchy), (800, 480)),
    ],
)
def test_each_chart_is_a_png_of_its_size(report: NegativesReport, make, size) -> None:
    chart = make(report)
    assert (chart.width, chart.height) == size
    assert_valid_png(chart.png, size)


def test_report_command_writes_html_and_markdown(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from negforge.cli import app

    x = write_negatives(tmp_path / "x.parquet", rows_x())
    y = write_negatives(tmp_path / "y.parquet", rows_y())
    dictionary = write_dictionary(tmp_path / "dict.parquet")
    out = tmp_path / "out" / "report.html"
    md = tmp_path / "out" / "report.md"
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(x),
            str(y),
            "-o",
            str(out),
            "--dict",
            str(dictionary),
            "--markdown",
            str(md),
            "--examples",
            "2",
            "--no-hierarchy",
            "--name",
            "gpt",
            "--name",
            "random",
        ],
    )
    assert result.exit_code == 0, result.output
    html_text = out.read_text()
    assert_self_contained(html_text)
    tables = parse(html_text).tables
    assert _row(tables["levels"], "gpt", "all")[3] == "33.3 %"
    assert _row(tables["levels"], "random", "all")[3] == "83.3 %"  # 5 / 6
    assert "Skipped: hierarchy check turned off" in html_text
    assert md.read_text().startswith("# negforge negatives report")
    assert html_text.count('<div class="example">') == 2
    summary = result.stdout.splitlines()  # a few lines, not the Markdown
    assert summary[0] == "gpt: 3 queries, 9 rows, 33.3 % valid, 9 with a negative", summary
    assert summary[-1] == f"wrote {out} and {md}" and len(summary) == 4

    printed = CliRunner().invoke(app, ["report", str(x), "-o", str(out), "--no-hierarchy",
                                       "--markdown", "-", "--quiet"])  # fmt: skip
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith("# negforge negatives report")
    assert "wrote" not in printed.stdout and not (tmp_path / "-").exists()


def test_report_rejects_a_non_negatives_artifact(tmp_path: Path) -> None:
    from negforge.errors import InputError

    dictionary = write_dictionary(tmp_path / "dict.parquet")
    with pytest.raises(InputError, match="expected a negatives artifact"):
        load_negatives(dictionary)
    with pytest.raises(InputError, match="file not found"):
        load_negatives(tmp_path / "missing.parquet")


def test_report_cli_exit_code_2_on_bad_input(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "negforge", "report", str(bad), "-o", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert str(bad) in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_hierarchy_chart_labels_never_overlap() -> None:
    from negforge.reporting.charts import hierarchy_figure

    close = [("a", [0.861, 0.712, 0.55]), ("b", [0.858, 0.709, 0.551]),
             ("c", [0.86, 0.70, 0.549])]  # fmt: skip
    results = [
        HierarchyResult(artifact=name, encoder="minilm", queries=3, levels=[
            LevelSimilarity(level=i + 1, pairs=3, mean=m, std=0.05) for i, m in enumerate(means)
        ])
        for name, means in close
    ]  # fmt: skip
    figure = hierarchy_figure(results)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [text.get_window_extent(renderer) for text in figure.axes[0].texts]
    assert len(boxes) == 9
    for i, box in enumerate(boxes):
        for other in boxes[i + 1:]:
            assert not box.overlaps(other), (box, other)
