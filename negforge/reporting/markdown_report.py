"""Render a negatives report as Markdown (for terminals and CI logs)."""

from __future__ import annotations

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


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    """One table as GitHub-flavoured Markdown, with its title and note."""
    lines = [f"## {table.title}", ""]
    if table.note:
        lines += [table.note, ""]
    lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_escape(cell.text) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def _marked(words: list[tuple[str, bool]]) -> str:
    return " ".join(f"**{word}**" if changed else word for word, changed in words)


def examples_markdown(examples: list[Example]) -> str:
    """Sampled examples, changed words in bold."""
    lines = ["## Examples", "", "Words that differ from the positive query are in **bold**.", ""]
    for example in examples:
        lines.append(f"### {_escape(example.qid)}: {_escape(example.query)}")
        lines.append("")
        lines.append("| level | masked query | artifact | negative | valid |")
        lines.append("| --- | --- | --- | --- | --- |")
        for level in example.levels:
            for negative in level.negatives:
                text = _marked(negative.words) if negative.words else "–"
                verdict = "yes" if negative.valid else "no: " + ", ".join(negative.reasons)
                lines.append(
                    f"| {level.level} | {_escape(level.masked_query)} | "
                    f"{_escape(negative.artifact)} | {_escape(text)} | {_escape(verdict)} |"
                )
        lines.append("")
    return "\n".join(lines)


def render_markdown(report: NegativesReport) -> str:
    """The whole report as Markdown."""
    parts = [
        f"# {report.title}",
        "",
        f"negforge {report.negforge_version}, {report.created}. "
        f"Dictionary D: {report.dictionary or 'none given (--dict) — dictionary columns empty'}.",
        "",
        "| artifact | file | rows | backend | model |",
        "| --- | --- | --- | --- | --- |",
    ]
    for info, quality in zip(report.sources, report.artifacts, strict=True):
        backends = ", ".join(quality.backends) or "–"
        models = ", ".join(quality.models) or "–"
        parts.append(
            f"| {_escape(info.name)} | {_escape(info.path)} | {quality.overall.rows:,} | "
            f"{_escape(backends)} | {_escape(models)} |"
        )
    parts.append("")
    tables = [
        overview_table(report.artifacts),
        reasons_table(report.artifacts),
        queries_table(report.artifacts),
        types_table(report.artifacts),
        replacements_table(report.artifacts),
    ]
    parts += [table_markdown(table) for table in tables]
    if report.hierarchy:
        parts.append(table_markdown(hierarchy_table(report.hierarchy)))
    elif report.hierarchy_note:
        parts += ["## Hierarchy check", "", f"Skipped: {report.hierarchy_note}.", ""]
    if report.plausibility:
        parts.append(table_markdown(plausibility_table(report.plausibility)))
        if report.plausibility_note:
            parts += [f"Plausibility: {report.plausibility_note}.", ""]
        parts.append(table_markdown(least_plausible_table(report.least_plausible)))
    elif report.plausibility_note:
        parts += ["## Plausibility", "", f"Not shown: {report.plausibility_note}.", ""]
    if report.examples:
        parts.append(examples_markdown(report.examples))
    return "\n".join(parts).rstrip() + "\n"
