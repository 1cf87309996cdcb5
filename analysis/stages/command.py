"""``factrecall stages RUN_DIR``: detect the stages of a run directory in place and print them."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamics.errors import ConfigError
from dynamics.rundir import read_config

from ..plotting import run_title
from ..rundir import check_writable
from ..timeline import analyse_timeline, format_timeline, has_timeline
from .report import FIGURES, analyse_run_directory, format_stage_table


def command(args: argparse.Namespace) -> int:
    """Analyse ``args.run_dir`` (a directory written by ``factrecall simulate``); print one table per run."""
    path = Path(args.run_dir)
    if not path.is_dir():
        raise ConfigError(f"RUN_DIR={args.run_dir!r}: not a directory; allowed: a run directory written by "
                          "factrecall simulate")
    check_writable(path, flag="RUN_DIR")  # the analysis is written into it: refused before, not after
    for name, directory, traj, payload in analyse_run_directory(path):
        print(format_stage_table(name, payload))
        written = ["stages.json", "stages.npz", *FIGURES]
        if has_timeline(traj):  # a run whose data changed over time: its timeline too
            title = run_title(read_config(directory)[0], traj.info.kind if name == "run" else name, traj)
            print(format_timeline(name, analyse_timeline(traj, directory, title=title)))
            written.append("timeline.{json,npz,png}")
        print(f"wrote {', '.join(written)} in {directory}")  # flow/ and train/ of a --train run
    return 0
