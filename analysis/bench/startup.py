"""The bench's start-up rows: what each command costs before it computes, and ``factrecall simulate`` on
figure5 end to end, each in a fresh process, in CPU seconds (user + system: on a quiet machine the wall
time of a one-thread process, and far steadier than wall time on a busy one) beside a bare ``import
torch`` measured in the same rounds, the floor of any command that computes."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

END_TO_END_TARGET = 3.0  # CPU seconds of figure5 end to end (docs/performance.md, start-up)
TORCH = "`import torch`"


def fresh_seconds(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one fresh process running ``argv`` to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def startup_cases(out: str) -> dict[str, list[str]]:
    """Name → command line of every measured case: the floor (``import torch``), ``--help``, ``config``,
    the import of each command's module (what the command line loads before the command runs), and
    figure5's ``simulate`` into ``out``."""
    from analysis.cli import COMMANDS  # standard library only

    script = shutil.which("factrecall")
    cli = [script] if script else [sys.executable, "-m", "analysis.cli"]
    cases = {TORCH: [sys.executable, "-c", "import torch"], "`factrecall --help`": [*cli, "--help"],
             "`factrecall config`": [*cli, "config"]}
    modules = dict.fromkeys(c.module for c in COMMANDS.values() if c.engine and c.module != "analysis.cli")
    cases.update({f"`import {module}`": [sys.executable, "-c", f"import {module}"] for module in modules})
    cases["`factrecall simulate` figure5, end to end"] = [*cli, "simulate", "--quiet", "--out", out]
    return cases


def bench_end_to_end(repeats: int = 3) -> dict[str, Any]:
    """Every case of :func:`startup_cases` ``repeats`` times in fresh processes, the cases interleaved
    round by round (a drift of the machine's speed touches them all alike): the median wall and CPU
    seconds of each, and its CPU over that of ``import torch``. figure5's row is checked against
    :data:`END_TO_END_TARGET` CPU seconds (its median)."""
    with tempfile.TemporaryDirectory() as tmp:
        cases = startup_cases(os.path.join(tmp, "run"))
        measured: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(repeats):
            for name, argv in cases.items():
                shutil.rmtree(os.path.join(tmp, "run"), ignore_errors=True)
                measured[name].append(fresh_seconds(argv))
    torch_cpu = statistics.median(cpu for _, cpu in measured[TORCH])
    rows = []
    for name, runs in measured.items():
        cpu = statistics.median(c for _, c in runs)
        rows.append({"case": name, "cpu_median": cpu, "over_torch": cpu / torch_cpu,
                     "wall_median": statistics.median(w for w, _ in runs), "cpu_all": [c for _, c in runs]})
    end = rows[-1]
    return {"rows": rows, "repeats": repeats, "cpu_median": end["cpu_median"],
            "wall_median": end["wall_median"], "target_cpu_seconds": END_TO_END_TARGET,
            "met": end["cpu_median"] <= END_TO_END_TARGET,
            # without cached bytecode every process compiles the project's modules again (~0.2 s)
            "bytecode_cached": not os.environ.get("PYTHONDONTWRITEBYTECODE")}


def format_startup_rows(result: dict[str, Any]) -> list[str]:
    """The table rows of :func:`bench_end_to_end`: figure5 end to end against its target, then one row per
    start-up case (no target)."""
    if not result.get("rows"):
        return []
    *cases, end = result["rows"]
    met = "yes" if result["met"] else "no"
    wall = f"wall {end['wall_median']:.2f} s" + ("" if result.get("bytecode_cached", True)
                                                  else "; PYTHONDONTWRITEBYTECODE set")
    lines = [f"| {end['case']}: CPU, median of {result['repeats']} ({wall}) | "
             f"**{end['cpu_median']:.2f} s** ({end['over_torch']:.2f}× {TORCH}) | "
             f"≤ {result['target_cpu_seconds']:g} s | {met} |"]
    lines += [f"| start-up: {row['case']}, CPU | {row['cpu_median']:.2f} s "
              f"({row['over_torch']:.2f}× {TORCH}) | — | — |" for row in cases]
    return lines
