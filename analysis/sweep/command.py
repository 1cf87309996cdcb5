"""``factrecall sweep`` (run a grid into a resumable directory, then draw its phase diagrams) and
``factrecall sweep-plot`` (redraw one figure from a sweep's ``results.csv``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamics.errors import ConfigError

from ..arguments import config_from_args, parse_count
from .grid import parse_grid
from .plots import plot_heatmap, plot_lines, plot_sweep, read_results
from .run import SweepOptions, run_sweep


def command(args: argparse.Namespace) -> int:
    """The ``sweep`` subcommand: run every unfinished point, rebuild ``results.csv``, draw the figures."""
    config = config_from_args(args)
    grid = parse_grid(args.grid, config)
    workers = parse_count("--workers", args.workers)
    if args.backend not in ("local", "dask"):
        raise ConfigError(f"--backend={args.backend!r}: must be local or dask")
    options = SweepOptions(train=args.train, keep_trajectories=args.keep_trajectories,
                           batch=not args.no_batch)
    out = Path(args.out)
    rows = run_sweep(config, grid, out, options, workers=workers, backend=args.backend,
                     scheduler=args.scheduler, progress=not args.quiet)
    figures = plot_sweep(out, list(grid))
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} points in {out / 'results.csv'} ({failed} not ok); figures: "
          + ", ".join(p.name for p in figures))
    return 0


def plot_command(args: argparse.Namespace) -> int:
    """The ``sweep-plot`` subcommand: a heatmap over ``--x`` and ``--y``, or a line plot over ``--x``."""
    directory = Path(args.dir)
    rows = read_results(directory / "results.csv")
    if args.y:
        path = directory / f"phase_{args.value}_{args.x}_{args.y}.png"
        plot_heatmap(rows, args.x, args.y, args.value, path)
    else:
        path = directory / f"sweep_{args.value}_{args.x}.png"
        plot_lines(rows, args.x, [args.value], path)
    print(f"wrote {path}")
    return 0
