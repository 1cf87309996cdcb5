"""``factrecall sweep`` (run a grid into a resumable directory, then draw its phase diagrams) and
``factrecall sweep-plot`` (redraw one figure from a sweep's ``results.csv``)."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from dynamics.budget import check_memory
from dynamics.errors import ConfigError

from ..arguments import config_from_args, parse_count, refuse_unread_settings
from ..cli import Terminated, exit_status
from .grid import grid_points, parse_grid, point_id
from .plots import plot_heatmap, plot_lines, plot_sweep, read_results, sweep_title
from .run import ERROR, SweepDirectory, SweepOptions, counted, run_sweep


def command(args: argparse.Namespace) -> int:
    """The ``sweep`` subcommand: run every unfinished point, rebuild ``results.csv``, draw the figures.
    Exit status 1 when a point of the grid failed with an error (recorded with its message), else 0;
    130 on Ctrl-C and 143 on SIGTERM, after saying how many finished points are kept."""
    config = config_from_args(args)
    grid = parse_grid(args.grid, config)
    refuse_unread_settings(args, config, grid)
    for point in grid_points(grid):  # memory is estimated from the config alone: refuse before any work
        try:
            point_config = config.override(point)
        except ConfigError:
            continue  # an invalid combination of values: the sweep records it as an error row
        check_memory(point_config, train=args.train)
    workers = parse_count("--workers", args.workers)
    if args.backend not in ("local", "dask"):
        raise ConfigError(f"--backend={args.backend!r}: must be local or dask")
    options = SweepOptions(train=args.train, keep_trajectories=args.keep_trajectories,
                           batch=not args.no_batch)
    out = Path(args.out)
    try:
        rows = run_sweep(config, grid, out, options, workers=workers, backend=args.backend,
                         scheduler=args.scheduler, progress=not args.quiet)
    except KeyboardInterrupt as err:
        gc.collect()  # the stopped worker pool's queues: freed now, not reported as leaked at exit
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(interrupted_message(out, how), file=sys.stderr)
        return exit_status(err)
    figures = plot_sweep(out, list(grid))
    ids = {point_id(p) for p in grid_points(grid)}
    mine = [r for r in rows if point_id({k: r.get(k) for k in grid}) in ids]
    failed = sum(r["status"] != "ok" for r in mine)
    errors = sum(r["status"] == ERROR for r in mine)
    detail = f"{failed} not ok" + (f", of which {errors} failed with an error (see the message column; a "
                                   "rerun tries again)" if errors else "")
    print(f"{counted(len(rows))} in {out / 'results.csv'}, {len(mine)} of this grid: {detail}; figures: "
          + (", ".join(p.name for p in figures) or "none"))
    return 1 if errors else 0


def interrupted_message(out: Path, how: str = "interrupted") -> str:
    """The one line for a sweep stopped by Ctrl-C (or SIGTERM, ``how``): how many finished points it keeps,
    and how to resume."""
    try:
        kept = len(SweepDirectory(out).finished())
    except OSError:
        kept = 0
    if not kept:
        return (f"factrecall: {how}; no point had finished, so none is kept; rerun the same command "
                "to start again")
    return (f"factrecall: {how}; {counted(kept)} finished and kept in {out} (listed in results.csv); "
            "rerun the same command to resume")


def plot_command(args: argparse.Namespace) -> int:
    """The ``sweep-plot`` subcommand: a heatmap over ``--x`` and ``--y``, or a line plot over ``--x``."""
    directory = Path(args.dir)
    rows = read_results(directory / "results.csv")
    if args.y:
        path = directory / f"phase_{args.value}_{args.x}_{args.y}.png"
        plot_heatmap(rows, args.x, args.y, args.value, path, sweep_title(directory))
    else:
        path = directory / f"sweep_{args.value}_{args.x}.png"
        plot_lines(rows, args.x, [args.value], path, sweep_title(directory))
    print(f"wrote {path}")
    return 0
