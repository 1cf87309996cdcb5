"""``factrecall stages RUN_DIR``: detect the stages of a run directory in place and print them."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamics.errors import ConfigError

from .report import FIGURES, analyse_run_directory, format_stage_table


def command(args: argparse.Namespace) -> int:
    """Analyse ``args.run_dir`` (a directory written by ``factrecall simulate``); print one table per run."""
    path = Path(args.run_dir)
    if not path.is_dir():
        raise ConfigError(f"RUN_DIR={args.run_dir!r}: not a directory; allowed: a run directory written by "
                          "factrecall simulate")
    for name, payload in analyse_run_directory(path):
        print(format_stage_table(name, payload))
    print(f"wrote stages.json, stages.npz, {', '.join(FIGURES)} in {path}")
    return 0
