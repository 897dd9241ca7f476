"""``negforge sweep``: grids over training settings x seeds, run locally or on Ray, resumable,
with one results table, a mean ± std summary per cell and Fig. 5 style plots.

Library use::

    from negforge.sweep import load_sweep, run_and_report

    sweep = load_sweep("sweeps/table3_coarse.yaml")
    report = run_and_report(sweep, "outputs/sweeps/table3", workers=2)
    report.summary.read_text()

Modules: :mod:`~negforge.sweep.spec` (the sweep file, trials), :mod:`~negforge.sweep.trial`
(one training), :mod:`~negforge.sweep.runner` (engines, resume),
:mod:`~negforge.sweep.results` (table, summary), :mod:`~negforge.sweep.plot` (figures).
None imports torch at module level.
"""

from __future__ import annotations

from negforge.sweep.report import SweepReport, report_sweep, run_and_report
from negforge.sweep.spec import Sweep, load_sweep

__all__ = ["Sweep", "SweepReport", "load_sweep", "report_sweep", "run_and_report"]
