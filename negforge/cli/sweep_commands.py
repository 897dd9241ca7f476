"""CLI commands of the sweep area: sweep, sweep-plot (a thin layer over negforge.sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from negforge.atomic import check_output
from negforge.cli.app import app
from negforge.errors import ConfigError


def _where(items: list[str] | None) -> dict[str, str]:
    where: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--where {item}: expected AXIS=VALUE")
        where[key] = value
    return where


@app.command("sweep")
def sweep_command(
    sweep_file: Path = typer.Argument(..., metavar="SWEEP.yaml", help="a sweep file (sweeps/)"),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="sweep folder [outputs/sweeps/NAME]"
    ),
    engine: Literal["local", "ray"] = typer.Option(
        "local", "--engine", help="local (worker processes) or ray"
    ),
    workers: int = typer.Option(
        1, "--workers", help="trials at a time (local; ray: local instance)"
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (e.g. auto, ray://HOST:10001) [local instance]"
    ),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="Ray: CPUs per trial"),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="Ray: GPUs per trial"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the trials and stop"),
) -> None:
    """Run a grid of trainings x seeds (resumable) and tabulate mean ± std per cell."""
    from negforge.sweep import load_sweep, run_and_report
    from negforge.sweep.runner import split_finished, trial_specs

    sweep = load_sweep(sweep_file)
    output = check_output(output or Path("outputs") / "sweeps" / sweep.name, folder=True)
    if dry_run:
        finished, pending = split_finished(trial_specs(sweep, output, None))
        done = {s.id for s in finished}
        for trial in sweep.trials:
            state = "finished" if trial.id in done else "to run"
            typer.echo(f"{trial.id}  [{state}]  {trial.overrides}")
        typer.echo(f"{len(sweep.trials)} trials, {len(pending)} to run, in {output}")
        return
    report = run_and_report(
        sweep,
        output,
        engine=engine,
        workers=workers,
        address=address,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        echo=typer.echo,
    )
    typer.echo(report.summary.read_text(encoding="utf-8"))
    typer.echo(f"table: {report.parquet}, {report.csv}; summary: {report.summary}")
    for plot in report.plots:
        typer.echo(f"plot: {plot}")
    if report.run is not None and report.run.failed:
        names = ", ".join(report.run.failed)
        typer.echo(
            f"{len(report.run.failed)} trials failed ({names}); see their error.txt", err=True
        )
        raise typer.Exit(3)


@app.command("sweep-plot")
def sweep_plot_command(
    sweep_file: Path = typer.Argument(..., metavar="SWEEP.yaml", help="the sweep file"),
    x: str = typer.Option(..., "--x", help="swept key on the x axis (as in the grid)"),
    metric: list[str] = typer.Option(
        ..., "--metric", help="SPLIT/METRIC, e.g. novel_composition/R1@0.5 (repeatable)"
    ),
    y: str | None = typer.Option(None, "--y", help="second swept key: a heatmap"),
    where: list[str] | None = typer.Option(
        None, "--where", help="AXIS=VALUE: fix another axis (repeatable)"
    ),
    sweep_dir: Path | None = typer.Option(
        None, "--sweep-dir", help="the sweep's folder [outputs/sweeps/NAME]"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="PNG file"),
) -> None:
    """Plot a metric against one swept key (mean ± std), or a heatmap over two (Fig. 5)."""
    from negforge.sweep import load_sweep
    from negforge.sweep.plot import plot_sweep
    from negforge.sweep.results import collect, results_frame
    from negforge.sweep.runner import trial_specs

    check_output(output, inputs=(sweep_file,))
    sweep = load_sweep(sweep_file)
    folder = sweep_dir or Path("outputs") / "sweeps" / sweep.name
    dirs = {s.id: s.directory for s in trial_specs(sweep, folder, None)}
    frame = results_frame(sweep, collect(sweep, dirs))
    if not len(frame):
        raise ConfigError(f"no finished trial in {folder}")
    path = plot_sweep(sweep, frame, output, x=x, y=y, metrics=metric, where=_where(where))
    typer.echo(f"wrote {path}")
