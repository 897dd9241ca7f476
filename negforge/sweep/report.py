"""Run a sweep and write its outputs: table, summary and the sweep file's plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from negforge.sweep.plot import plot_sweep
from negforge.sweep.results import collect, results_frame, write_summary, write_tables
from negforge.sweep.runner import Engine, SweepRun, run_sweep, trial_specs
from negforge.sweep.spec import Sweep


class SweepReport(BaseModel):
    """The files a sweep wrote and what its last invocation did."""

    run: SweepRun | None
    finished: int
    parquet: Path
    csv: Path
    summary: Path
    plots: list[Path]


def report_sweep(sweep: Sweep, output: str | Path, run: SweepRun | None = None) -> SweepReport:
    """(Re)write the table, the summary and the plots from the finished trials."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    dirs = {spec.id: spec.directory for spec in trial_specs(sweep, output, None)}
    frame = results_frame(sweep, collect(sweep, dirs))
    parquet, csv = write_tables(frame, output)
    summary = write_summary(sweep, frame, output)
    plots: list[Path] = []
    if len(frame):
        for index, plot in enumerate(sweep.plots):
            name = plot.name or f"{index}_{plot.x}" + (f"_{plot.y}" if plot.y else "")
            plots.append(
                plot_sweep(
                    sweep,
                    frame,
                    output / "plots" / f"{name}.png",
                    x=plot.x,
                    y=plot.y,
                    metrics=plot.metric,
                    where=plot.where,
                )
            )
    return SweepReport(
        run=run, finished=len(frame), parquet=parquet, csv=csv, summary=summary, plots=plots
    )


def run_and_report(
    sweep: Sweep,
    output: str | Path,
    *,
    engine: Engine = "local",
    workers: int = 1,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    echo: Callable[[str], None] = print,
) -> SweepReport:
    """Run the unfinished trials, then write the table, summary and plots."""
    run = run_sweep(
        sweep,
        output,
        engine=engine,
        workers=workers,
        address=address,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        echo=echo,
    )
    return report_sweep(sweep, output, run)
