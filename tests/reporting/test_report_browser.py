"""The HTML report in headless Chromium: no console error, scripts ran, charts decoded.

A probe copy of the report gets one extra inline script at the top of <head> that records
every error event (script errors and failed resource loads, in the capture phase) and
every console.error call, then, after the page loaded, checks that the report's own script
ran (it sets data-report-ready), that every chart image decoded, and that clicking a table
header sorts the table. The result is written into the DOM, which ``--dump-dom`` prints.
Chromium's own console log (``--enable-logging=stderr``) must show no message either.
A screenshot of the unmodified report is saved to outputs/test-artifacts/ for people to
look at.

At 1280 and 800 px a second probe checks the layout: nothing wider than the window, no
section scrolling sideways (wide tables wrap, or below 1000 px collapse into one card per
row), every cut long cell has its whole text as a tooltip; screenshots at both widths are
saved beside the first one (report-1280.png, report-800.png).

Needs Debian's ``chromium`` (scripts/setup.sh installs it). Without it the test skips,
unless NEGFORGE_REQUIRE_BROWSER=1 or NEGFORGE_REQUIRE_SHARED=1 (CI), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from negforge.artifacts import Provenance
from negforge.reporting.hierarchy import HierarchyResult, LevelSimilarity
from negforge.reporting.html_report import render_html
from negforge.reporting.report import report_from_sources
from negforge.reporting.sources import NegativesSource
from tests.support.negative_rows import dictionary_index, rows_x, rows_y
from tests.support.png import assert_valid_png

ARTIFACT_DIR = Path(__file__).resolve().parents[2] / "outputs" / "test-artifacts"
WINDOW = (1400, 2400)

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (event) {
    var target = event.target || {};
    errors.push(event.message || ("failed to load " + (target.src || target.href || "?")));
  }, true);
  window.addEventListener("unhandledrejection", function () {
    errors.push("unhandled rejection");
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    setTimeout(function () {
      var images = Array.prototype.slice.call(document.images);
      var broken = images.filter(function (img) {
        return !(img.complete && img.naturalWidth > 0);
      });
      var table = document.querySelector("#levels table");
      var header = table.querySelectorAll("thead th")[2];
      var before = table.tBodies[0].rows[0].cells[2].getAttribute("data-value");
      header.click();
      var after = table.tBodies[0].rows[0].cells[2].getAttribute("data-value");
      var probe = document.createElement("pre");
      probe.id = "probe";
      probe.textContent = JSON.stringify({
        errors: errors,
        ready: document.documentElement.getAttribute("data-report-ready"),
        images: images.length,
        broken: broken.length,
        sorted: header.getAttribute("data-sorted"),
        firstRowsBefore: before,
        firstRowsAfter: after
      });
      document.body.appendChild(probe);
    }, 50);
  });
})();
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    required = "1" in (
        os.environ.get("NEGFORGE_REQUIRE_BROWSER"),
        os.environ.get("NEGFORGE_REQUIRE_SHARED"),
    )
    message = "headless chromium not installed (apt-get install chromium)"
    if required:
        pytest.fail(message)
    pytest.skip(message)


def run_chromium(page: Path, profile: Path, *extra: str, window: tuple[int, int] = WINDOW
                 ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        f"--window-size={window[0]},{window[1]}",
        *extra,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _report_html(long_cells: bool = False) -> str:
    provenance = Provenance(kind="negatives", schema_version=1)
    sources = [
        NegativesSource("gpt-like", Path("x.parquet"), provenance, rows_x()),
        NegativesSource("random", Path("y.parquet"), provenance, rows_y()),
    ]
    report = report_from_sources(
        sources, dictionary=dictionary_index(), dictionary_name="dict.parquet", examples=3
    )
    if long_cells:  # fills as long as real runs have them, to be cut with a tooltip
        verbs = report.artifacts[0].types[0]
        verbs.top_fills = [(f"carefully{word}", 40 - i) for i, word in enumerate(
            ["opens", "closes", "pours", "washes", "holds", "sneezes", "laughs", "takes"])]
    hierarchy = [
        HierarchyResult(
            artifact=name,
            encoder="minilm",
            queries=3,
            levels=[
                LevelSimilarity(level=i + 1, pairs=3, mean=m, std=0.05) for i, m in enumerate(means)
            ],
        )
        for name, means in (("gpt-like", [0.86, 0.71, 0.55]), ("random", [0.8, 0.6, 0.42]))
    ]
    return render_html(report.model_copy(update={"hierarchy": hierarchy}))


def test_report_renders_in_chromium_without_errors(tmp_path: Path) -> None:
    html_text = _report_html()
    page = tmp_path / "report.html"
    page.write_text(html_text, encoding="utf-8")
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(html_text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")

    dumped = run_chromium(probe_page, tmp_path / "profile-probe", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.DOTALL)
    assert match, "the probe never reported (page did not finish loading?)"
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["errors"] == []
    assert result["ready"] == "1"  # the report's own script ran to its end
    assert result["images"] == 5 and result["broken"] == 0
    assert result["sorted"] == "asc"
    assert float(result["firstRowsAfter"]) <= float(result["firstRowsBefore"])
    console = [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []

    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACT_DIR / "report-chromium.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(page, tmp_path / "profile-shot", f"--screenshot={screenshot}")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert_valid_png(screenshot.read_bytes(), WINDOW)
    (ARTIFACT_DIR / "report-chromium.html").write_text(html_text, encoding="utf-8")


LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var wide = [];
    document.querySelectorAll("section").forEach(function (section) {
      if (section.scrollWidth > section.clientWidth + 1) {
        wide.push(section.id + " " + section.scrollWidth + " > " + section.clientWidth);
      }
    });
    var clipped = 0, untitled = 0;
    document.querySelectorAll("div.clip").forEach(function (clip) {
      if (clip.scrollWidth > clip.clientWidth) {
        clipped += 1;
        if (!clip.parentElement.getAttribute("title")) { untitled += 1; }
      }
    });
    var probe = document.createElement("pre");
    probe.id = "probe";
    probe.textContent = JSON.stringify({
      page: document.documentElement.scrollWidth,
      window: document.documentElement.clientWidth,
      wide: wide, clipped: clipped, untitled: untitled
    });
    document.body.appendChild(probe);
  }, 50);
});
</script>"""


@pytest.mark.parametrize("width", [1280, 800])
def test_report_fits_the_window(tmp_path: Path, width: int) -> None:
    html_text = _report_html(long_cells=True)
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(html_text.replace("<head>", "<head>" + LAYOUT_PROBE, 1),
                          encoding="utf-8")  # fmt: skip
    window = (width, 2400)
    dumped = run_chromium(probe_page, tmp_path / "profile-probe", "--dump-dom", window=window)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.DOTALL)
    assert match, "the probe never reported (page did not finish loading?)"
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["window"] == width
    assert result["page"] <= width, result  # no sideways scrolling of the page
    assert result["wide"] == []  # nor of any section (tables wrap or collapse)
    assert result["clipped"] >= 1 and result["untitled"] == 0  # cut cells have a tooltip

    page = tmp_path / "report.html"
    page.write_text(html_text, encoding="utf-8")
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACT_DIR / f"report-{width}.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(page, tmp_path / "profile-shot", f"--screenshot={screenshot}",
                        window=(width, 4000))  # fmt: skip
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert_valid_png(screenshot.read_bytes(), (width, 4000))
