"""Build a negatives report and write its HTML (and optional Markdown) atomically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from negforge.atomic import atomic_files
from negforge.reporting.html_report import render_html
from negforge.reporting.markdown_report import render_markdown
from negforge.reporting.plausibility import DEFAULT_LEAST, DEFAULT_THRESHOLD
from negforge.reporting.report import (
    DEFAULT_EXAMPLES,
    DEFAULT_HIERARCHY_SAMPLE,
    NegativesReport,
    build_report,
)


@dataclass(frozen=True)
class WrittenReport:
    """What ``negforge report`` wrote."""

    report: NegativesReport
    html: Path
    markdown: Path | None
    markdown_text: str

    def summary_lines(self) -> list[str]:
        """What ``negforge report`` prints: a line per artifact and where the files went."""
        lines = []
        for quality in self.report.artifacts:
            overall = quality.overall
            valid = f"{100 * overall.valid / overall.rows:.1f} %" if overall.rows else "-"
            lines.append(
                f"{quality.name}: {quality.queries.queries} queries, {overall.rows} rows, "
                f"{valid} valid, {overall.with_negative} with a negative"
            )
        if self.report.hierarchy_note:
            lines.append(f"hierarchy: {self.report.hierarchy_note}")
        lines.append(f"wrote {self.html}" + (f" and {self.markdown}" if self.markdown else ""))
        return lines


def write_negatives_report(
    paths: Sequence[str | Path],
    output: str | Path,
    *,
    markdown: str | Path | None = None,
    names: Sequence[str] | None = None,
    dictionary_path: str | Path | None = None,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    hierarchy: bool = True,
    hierarchy_sample: int | None = DEFAULT_HIERARCHY_SAMPLE,
    score_plausibility: bool = False,
    plausibility_threshold: float = DEFAULT_THRESHOLD,
    least_count: int = DEFAULT_LEAST,
    model_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    quiet: bool = True,
) -> WrittenReport:
    """Report on ``paths``: write the HTML page to ``output`` and the Markdown to ``markdown``
    (a progress display on stderr unless ``quiet``)."""
    report = build_report(
        paths,
        names=names,
        dictionary_path=dictionary_path,
        examples=examples,
        seed=seed,
        hierarchy=hierarchy,
        hierarchy_sample=hierarchy_sample,
        score_plausibility=score_plausibility,
        plausibility_threshold=plausibility_threshold,
        least_count=least_count,
        model_path=model_path,
        cache_dir=cache_dir,
        quiet=quiet,
    )
    markdown_text = render_markdown(report)
    html_path = Path(output)
    markdown_path = Path(markdown) if markdown is not None else None
    with atomic_files() as group:  # the page and its summary appear together
        group.write_text(html_path, render_html(report))
        if markdown_path is not None:
            group.write_text(markdown_path, markdown_text)
    return WrittenReport(report, html_path, markdown_path, markdown_text)
