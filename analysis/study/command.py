"""``factrecall study NAME``: the named studies of many runs (:mod:`analysis.study.registry`), each into a
resumable directory. This module imports only the standard library at its top: ``factrecall --help``
builds its parser without loading the engine."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from .registry import STUDIES


def add_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    """One subparser per registered study: the common options, then the study's own; its ``--help``
    ends with the files it writes."""
    studies = parser.add_subparsers(dest="study", metavar="STUDY", title="studies", required=True,
                                    parser_class=type(parser))
    for study in STUDIES.values():
        files = "; ".join(f"{name}: {what}" for name, what in study.outputs.items())
        sub = studies.add_parser(study.name, help=study.summary, description=study.summary,
                                 epilog=f"It writes into --out: {files}; study.json, and the point store "
                                        "(sweep.json, points/, results.csv) that a rerun resumes from.")
        sub.add_argument("--out", metavar="DIR",
                         help=f"study directory, resumable (default: runs/study-{study.name}[-quick])")
        sub.add_argument("--quick", action="store_true", help="small sizes (seconds to minutes on a CPU)")
        sub.add_argument("--workers", default="1", help="worker processes (default: 1)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        study.options(sub)


def command(args: argparse.Namespace) -> int:
    """Run the study named on the command line (see :func:`analysis.study.runner.run_parsed`)."""
    from pathlib import Path

    from ..arguments import parse_count
    from ..cli import Terminated, exit_status
    from ..sweep import SweepDirectory
    from .runner import run_parsed

    workers = parse_count("--workers", args.workers)
    out = Path(args.out) if args.out is not None else Path("runs") / (
        f"study-{args.study}" + ("-quick" if args.quick else ""))
    try:
        text = run_parsed(args.study, out, args, workers=workers, progress=not args.quiet,
                          report=lambda line: print(f"factrecall: {line}", file=sys.stderr))
    except KeyboardInterrupt as err:  # the finished points are kept: say so, and how to go on
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        kept = len(SweepDirectory(out).finished()) if (out / "sweep.json").is_file() else 0
        print(f"factrecall: {how}; {kept} finished point{'' if kept == 1 else 's'} kept in {out}; rerun the "
              "same command to resume", file=sys.stderr)
        return exit_status(err)
    if text:
        print(text)
    return 0
