"""``factrecall bench``: run the benchmark suite, print its table, save the JSON and the scale figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamics.errors import ConfigError

from .suite import SECTIONS, run_bench


def command(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand: ``--sizes SxR,...`` and ``--only NAME,...`` parsed, then
    :func:`run_bench`."""
    sizes = None
    if args.sizes is not None:
        try:
            sizes = tuple((int(a), int(b)) for a, b in (item.split("x") for item in args.sizes.split(",")))
        except ValueError:
            raise ConfigError(f"--sizes={args.sizes!r}: must be a comma-separated list of SxR, e.g. 64x8"
                              ) from None
        if not sizes or any(a < 1 or b < 1 for a, b in sizes):
            raise ConfigError(f"--sizes={args.sizes!r}: sizes must be >= 1")
    only = None
    if args.only is not None:
        only = tuple(name.strip() for name in args.only.split(","))
        unknown = [name for name in only if name not in SECTIONS]
        if unknown or not only:
            raise ConfigError(f"--only={args.only!r}: unknown section {', '.join(unknown) or '(none)'}; "
                              f"allowed: {', '.join(SECTIONS)}")
    run_bench(quick=args.quick, out=Path(args.out), sizes=sizes, huge=args.huge, only=only)
    return 0
