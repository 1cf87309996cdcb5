"""The gradient flow against discrete training from the same θ(0) (docs/design.md §4.3, §4.5): the runs
and every measure of their deviation from the flow (``compute``: :func:`compare` returns a
:class:`Comparison`), the four figures (``plots``), and the ``factrecall compare`` command that writes
``compare.json``, ``compare.csv``, ``config.json`` and the figures into one directory (``command``)."""

from .command import format_summary, run_compare, save_comparison
from .compute import (
    CSV_COLUMNS,
    ComparedRun,
    CompareSpec,
    Comparison,
    Orders,
    RunSpec,
    SeedGroup,
    compare,
    deviation_measures,
    fitted_order,
    plan_runs,
    run_config,
    run_full_batch,
    stage_shifts,
    tidy_rows,
)
from .plots import FIGURES, plot_comparison, plot_loss_curves, plot_order, plot_sharpness, plot_stage_shift

__all__ = ["CSV_COLUMNS", "FIGURES", "CompareSpec", "ComparedRun", "Comparison", "Orders",
           "RunSpec", "SeedGroup", "compare", "deviation_measures", "fitted_order", "format_summary",
           "plan_runs", "plot_comparison", "plot_loss_curves", "plot_order", "plot_sharpness",
           "plot_stage_shift", "run_compare", "run_config", "run_full_batch", "save_comparison",
           "stage_shifts", "tidy_rows"]
