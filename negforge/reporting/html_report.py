"""Render a negatives report as one self-contained HTML file.

Everything is inline: the stylesheet, a small table-sorting script and the charts as
base64 PNG ``data:`` URIs. The page references nothing outside itself (no network, no
external scripts, styles or fonts), so it opens the same offline, in CI artefacts and mail.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from negforge.reporting.charts import (
    ChartImage,
    fill_distribution_chart,
    hierarchy_chart,
    levels_chart,
    plausibility_chart,
    types_chart,
)
from negforge.reporting.examples import Example
from negforge.reporting.report import NegativesReport
from negforge.reporting.tables import (
    Table,
    hierarchy_table,
    least_plausible_table,
    overview_table,
    plausibility_table,
    queries_table,
    reasons_table,
    replacements_table,
    types_table,
)
from negforge.template import MASK

_STYLE = """
:root { --ink: #1d2330; --muted: #5b6476; --line: #d9dee7; --bg: #f6f7fa; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #1d2330; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9cfdb; }
nav { padding: 8px 28px; background: #fff; border-bottom: 1px solid var(--line);
      position: sticky; top: 0; z-index: 1; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none;
        display: inline-block; white-space: nowrap; }
main { padding: 8px 28px 40px; max-width: 1600px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 14px 18px; margin: 18px 0; overflow-x: auto; }
h2 { font-size: 18px; margin: 0 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.note { color: var(--muted); margin: 0 0 10px; max-width: 1100px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 13px;
        max-width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 6px; text-align: right;
         vertical-align: top; }
td { white-space: nowrap; }
th { background: #eef1f6; position: relative; cursor: pointer; user-select: none;
     vertical-align: bottom; max-width: 96px; }
th[data-sorted="asc"]::after { content: " ▲"; font-size: 10px; }
th[data-sorted="desc"]::after { content: " ▼"; font-size: 10px; }
td.text, th.text { text-align: left; }
td.wide { text-align: left; }
/* Long cells: one line cut with an ellipsis; the whole text is the cell's tooltip. */
td.wide div.clip { max-width: 26em; overflow: hidden; text-overflow: ellipsis; }
/* Narrow windows: each table row becomes a card of "header: value" lines. */
@media (max-width: 1000px) {
  main { padding: 8px 10px 30px; }
  section { padding: 10px; }
  table.sortable, table.sortable tbody, table.sortable tr, table.sortable td { display: block; }
  table.sortable thead { display: none; }
  table.sortable tr { border: 1px solid var(--line); border-radius: 6px; margin: 0 0 8px;
                      padding: 4px 8px; }
  table.sortable td { display: flex; justify-content: space-between; gap: 12px;
                      border-bottom: 1px dotted var(--line); padding: 2px 0; }
  table.sortable td::before { content: attr(data-label); color: var(--muted);
                              text-align: left; white-space: normal; }
  td.wide div.clip { max-width: 60vw; }
}
tr.all td { font-weight: 600; background: #fafbfd; }
img.chart { max-width: 100%; height: auto; display: block; margin: 8px 0;
            border: 1px solid var(--line); border-radius: 4px; }
mark { background: #ffe08a; padding: 0 2px; border-radius: 3px; }
span.mask { color: #8a1c7c; font-weight: 600; }
span.ok { color: #11772d; font-weight: 600; }
span.bad { color: #b42318; font-weight: 600; }
table.examples td { text-align: left; white-space: normal; }
table.examples td.level { text-align: center; }
div.example { margin-bottom: 18px; }
code { background: #eef1f6; padding: 0 4px; border-radius: 3px; }
"""

# Click a header to sort its table (numbers by their data-value, text alphabetically).
_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-value");
    return v === null ? cell.textContent.trim().toLowerCase() : parseFloat(v);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, column) {
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("data-sorted") !== "asc";
        headers.forEach(function (other) { other.removeAttribute("data-sorted"); });
        th.setAttribute("data-sorted", ascending ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[column]), y = key(b.cells[column]);
          if (x === y) { return 0; }
          return (x < y ? -1 : 1) * (ascending ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.documentElement.setAttribute("data-report-ready", "1");
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table_html(table: Table, wide_columns: Sequence[str] = ()) -> str:
    """One sortable table with its title and note."""
    text_columns = {0, 1} | {i for i, h in enumerate(table.headers) if h in wide_columns}
    # <wbr> lets long reason codes (unmasked_changed) break after an underscore.
    head = "".join(
        f'<th class="{"text" if i in text_columns else ""}">{_e(h).replace("_", "_<wbr>")}</th>'
        for i, h in enumerate(table.headers)
    )
    body_rows = []
    for row in table.rows:
        is_total = len(row) > 1 and row[1].text == "all"
        cells = []
        for i, cell in enumerate(row):
            classes = []
            if table.headers[i] in wide_columns:
                classes.append("wide")
            elif i in text_columns:
                classes.append("text")
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            if cell.value is not None:
                attrs += f' data-value="{cell.value!r}"'
            attrs += f' data-label="{_e(table.headers[i])}"'
            content = _e(cell.text)
            title = cell.title
            if table.headers[i] in wide_columns:  # cut to one line, the whole text on hover
                content = f'<div class="clip">{content}</div>'
                title = f"{cell.text} ({cell.title})" if cell.title else cell.text
            if title:
                attrs += f' title="{_e(title)}"'
            cells.append(f"<td{attrs}>{content}</td>")
        row_class = ' class="all"' if is_total else ""
        body_rows.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    note = f'<p class="note">{_e(table.note)}</p>' if table.note else ""
    return (
        f'<section id="{_e(table.key)}"><h2>{_e(table.title)}</h2>{note}'
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body_rows)}</tbody></table></section>"
    )


def chart_html(chart: ChartImage) -> str:
    return (
        f'<img class="chart" alt="{_e(chart.title)}" width="{chart.width}" '
        f'height="{chart.height}" src="{png_data_uri(chart.png)}">'
    )


def _masked_html(masked_query: str) -> str:
    return f'<span class="mask">{_e(MASK)}</span>'.join(
        _e(part) for part in masked_query.split(MASK)
    )


def _negative_html(words: list[tuple[str, bool]]) -> str:
    return " ".join(f"<mark>{_e(w)}</mark>" if changed else _e(w) for w, changed in words)


def examples_html(examples: Sequence[Example]) -> str:
    """Sampled examples: the query, each level's masked form and every artifact's negative."""
    blocks = []
    for example in examples:
        rows = []
        for level in example.levels:
            span = max(len(level.negatives), 1)
            for index, negative in enumerate(level.negatives):
                lead = ""
                if index == 0:
                    lead = (
                        f'<td class="level" rowspan="{span}">{level.level}</td>'
                        f'<td rowspan="{span}">{_masked_html(level.masked_query)}</td>'
                    )
                text = _negative_html(negative.words) if negative.words else "<em>none</em>"
                if negative.valid:
                    verdict = '<span class="ok">valid</span>'
                else:
                    verdict = '<span class="bad">invalid</span> ' + _e(", ".join(negative.reasons))
                if negative.fallback:
                    verdict += f" (fallback: {_e(negative.fallback)})"
                rows.append(
                    f"<tr>{lead}<td>{_e(negative.artifact)}</td><td>{text}</td>"
                    f"<td>{verdict}</td></tr>"
                )
        blocks.append(
            f'<div class="example"><h3>{_e(example.query)} '
            f'<small style="color:#5b6476">({_e(example.qid)})</small></h3>'
            '<table class="examples"><thead><tr><th>level</th><th>masked query</th>'
            "<th>artifact</th><th>negative</th><th>verdict</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    return (
        '<section id="examples"><h2>Examples</h2><p class="note">Sampled queries; words of a '
        "negative that differ from the positive query are <mark>marked</mark>.</p>"
        + "".join(blocks)
        + "</section>"
    )


def _sources_html(report: NegativesReport) -> str:
    rows = []
    for info, quality in zip(report.sources, report.artifacts, strict=True):
        rows.append(
            f'<tr><td class="text" data-label="artifact">{_e(info.name)}</td>'
            f'<td class="wide" data-label="file" title="{_e(info.path)}"><div class="clip">'
            f'<code>{_e(info.path)}</code></div></td>'
            f'<td data-label="rows" data-value="{quality.overall.rows}">'
            f'{quality.overall.rows:,}</td>'
            f'<td data-label="queries" data-value="{quality.queries.queries}">'
            f'{quality.queries.queries:,}</td>'
            f'<td class="text" data-label="backend">{_e(", ".join(quality.backends))}</td>'
            f'<td class="text" data-label="model">{_e(", ".join(quality.models))}</td>'
            f'<td class="text" data-label="created">{_e(info.created or "")}</td></tr>'
        )
    dictionary = (
        f"<code>{_e(report.dictionary)}</code>"
        if report.dictionary
        else "none given (<code>--dict</code>): the dictionary columns stay empty"
    )
    return (
        '<section id="artifacts"><h2>Artifacts</h2>'
        f'<p class="note">Dictionary D: {dictionary}.</p>'
        '<table class="sortable"><thead><tr><th class="text">artifact</th>'
        '<th class="text">file</th><th>rows</th><th>queries</th><th class="text">backend</th>'
        '<th class="text">model</th><th class="text">created</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def render_charts(report: NegativesReport) -> list[ChartImage]:
    """Every chart of the report, in page order."""
    if not report.artifacts:
        return []
    charts = [levels_chart(report.artifacts), types_chart(report.artifacts)]
    charts += [fill_distribution_chart(artifact) for artifact in report.artifacts]
    if report.hierarchy:
        charts.append(hierarchy_chart(report.hierarchy))
    if report.plausibility:
        charts.append(plausibility_chart(report.plausibility))
    return charts


def render_html(report: NegativesReport, charts: Sequence[ChartImage] | None = None) -> str:
    """The whole report as one self-contained HTML page."""
    charts = list(render_charts(report) if charts is None else charts)
    by_key = {chart.key: chart for chart in charts}
    fill_charts = "".join(chart_html(c) for c in charts if c.key.startswith("fills-"))
    sections = [
        _sources_html(report),
        '<section id="charts"><h2>At a glance</h2>'
        + "".join(chart_html(by_key[k]) for k in ("levels", "types") if k in by_key)
        + "</section>",
        table_html(overview_table(report.artifacts)),
        table_html(reasons_table(report.artifacts)),
        table_html(queries_table(report.artifacts)),
        table_html(types_table(report.artifacts), wide_columns=("most frequent fills",)),
        '<section id="fills"><h2>Fill-word distributions</h2><p class="note">The most '
        "frequent changed fills of each type (lower-cased), and how many words the located "
        "fills have.</p>" + fill_charts + "</section>",
        table_html(
            replacements_table(report.artifacts), wide_columns=("masked word → fill (count)",)
        ),
    ]
    if report.hierarchy:
        hierarchy = table_html(hierarchy_table(report.hierarchy))
        if "hierarchy" in by_key:
            hierarchy = hierarchy.replace(
                "</section>", chart_html(by_key["hierarchy"]) + "</section>"
            )
        sections.append(hierarchy)
    elif report.hierarchy_note:
        sections.append(
            '<section id="hierarchy"><h2>Hierarchy check</h2>'
            f'<p class="note">Skipped: {_e(report.hierarchy_note)}.</p></section>'
        )
    if report.plausibility:
        section = table_html(plausibility_table(report.plausibility))
        if "plausibility" in by_key:
            section = section.replace(
                "</section>", chart_html(by_key["plausibility"]) + "</section>"
            )
        if report.plausibility_note:
            section = section.replace(
                "</section>", f'<p class="note">{_e(report.plausibility_note)}.</p></section>'
            )
        sections.append(section)
        sections.append(
            table_html(least_plausible_table(report.least_plausible),
                       wide_columns=("query", "negative"))
        )
    elif report.plausibility_note:
        sections.append(
            '<section id="plausibility"><h2>Plausibility</h2>'
            f'<p class="note">Not shown: {_e(report.plausibility_note)}.</p></section>'
        )
    if report.examples:
        sections.append(examples_html(report.examples))
    nav = "".join(
        f'<a href="#{key}">{_e(label)}</a>'
        for key, label in (
            ("artifacts", "Artifacts"),
            ("charts", "At a glance"),
            ("levels", "Levels"),
            ("reasons", "Reasons"),
            ("queries", "Queries"),
            ("types", "Types"),
            ("fills", "Fill words"),
            ("replacements", "Replacements"),
            ("hierarchy", "Hierarchy"),
            ("plausibility", "Plausibility"),
            ("examples", "Examples"),
        )
    )
    names = ", ".join(a.name for a in report.artifacts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(report.title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{_e(report.title)}</h1><p>{_e(names)} · negforge "
        f"{_e(report.negforge_version)} · {_e(report.created)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(sections)}</main>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
