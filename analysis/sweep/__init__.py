"""Parameter sweeps for phase diagrams: the grid of ``--grid KEY=VALUES`` and its points (``grid``), running
every point into a resumable directory, batched where only ``init.*`` differs and spread over processes
or a dask cluster, each point summarised by its stages (``run``), the phase-diagram figures from
``results.csv`` (``plots``), and the ``factrecall sweep`` and ``sweep-plot`` commands (``command``)."""

from .grid import grid_points, parse_grid, parse_values, point_id
from .plots import DEFAULT_COLUMNS, plot_heatmap, plot_lines, plot_sweep, read_results
from .run import MAX_BATCH, SweepDirectory, SweepOptions, plan_groups, run_group, run_sweep, summarise

__all__ = ["DEFAULT_COLUMNS", "MAX_BATCH", "SweepDirectory", "SweepOptions", "grid_points", "parse_grid",
           "parse_values", "plan_groups", "plot_heatmap", "plot_lines", "plot_sweep", "point_id",
           "read_results", "run_group", "run_sweep", "summarise"]
