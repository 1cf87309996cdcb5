"""Parameter sweeps for phase diagrams: the grid of ``--grid KEY=VALUES`` and its points (``grid``), running
every point into a resumable directory, batched where only ``init.*`` differs and spread over processes
or a dask cluster, each point summarised by its stages (``run``), the directory's files, each checked when
read (``directory``), the phase-diagram figures from ``results.csv`` (``plots``), and the ``factrecall
sweep`` and ``sweep-plot`` commands (``command``)."""

from .directory import ERROR, SweepDirectory
from .grid import canonical, grid_points, parse_grid, parse_values, point_id
from .plots import DEFAULT_COLUMNS, plot_heatmap, plot_lines, plot_sweep, read_results
from .run import (
    MAX_BATCH,
    SweepOptions,
    plan_groups,
    plan_jobs,
    run_group,
    run_sweep,
    summarise,
    worker_pool,
)

__all__ = ["DEFAULT_COLUMNS", "ERROR", "MAX_BATCH", "SweepDirectory", "SweepOptions",
           "canonical", "grid_points", "parse_grid", "parse_values", "plan_groups", "plan_jobs",
           "plot_heatmap", "plot_lines", "plot_sweep", "point_id", "read_results", "run_group", "run_sweep",
           "summarise", "worker_pool"]
