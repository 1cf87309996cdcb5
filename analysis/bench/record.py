"""The ``record`` section of ``factrecall bench``: the per-fact record held in memory against the record held
on disk as the flow goes (:class:`dynamics.rundir.Spool`), the same flow in two fresh processes, one after
the other: each process's own peak resident memory above its imports (VmHWM), its seconds to integrate,
record and save, and whether the two saved ``trajectory.npz`` hold the same arrays."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# One flow, the record in memory (SPOOL_BYTES beyond any record) or on disk; prints its measures as JSON.
MEASURE = """
import json, sys, time
import dynamics.rundir as rundir
from dynamics import resolve_config
from dynamics.run import run_flow

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024

overrides, spool_bytes, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rundir.SPOOL_BYTES = spool_bytes
config = resolve_config("figure5", overrides=overrides)
base, start = peak(), time.perf_counter()
run_flow(config).save(out, config)
print(json.dumps({"peak_above_imports": peak() - base, "seconds": time.perf_counter() - start}))
"""

# 10^5 facts (docs/performance.md's table) at the default 256 record points, over a short horizon: what
# grows with the record is its points × facts, not the flow's length.
FULL = {"task.subjects": 2000, "task.relations": 50, "task.noise_tokens": 2050, "task.facts": "random",
        "flow.method": "cvode", "flow.rtol": 1e-7, "flow.atol": 1e-13, "flow.t_max": 200.0,
        "flow.points": 256}
QUICK = {**FULL, "task.subjects": 500, "task.relations": 20, "task.noise_tokens": 520}  # 10^4 facts
IN_MEMORY = 2**62  # SPOOL_BYTES beyond any record: every per-fact array in memory


def bench_record(quick: bool) -> dict[str, Any]:
    """Peak memory and seconds of one flow with its per-fact record in memory and on disk (at --quick: 10^4
    facts, every array on disk; else 10^5 facts at the default threshold), and whether both save the same
    arrays."""
    import numpy as np

    from dynamics.rundir import SPOOL_BYTES

    overrides = QUICK if quick else FULL
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spool_bytes in (("in_memory", IN_MEMORY), ("on_disk", 0 if quick else SPOOL_BYTES)):
            done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(overrides), str(spool_bytes),
                                   str(Path(tmp) / name)], check=True, capture_output=True, text=True)
            runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(Path(tmp) / "in_memory" / "trajectory.npz") as a, \
                np.load(Path(tmp) / "on_disk" / "trajectory.npz") as b:
            same = sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    facts = overrides["task.subjects"] * overrides["task.relations"]
    memory, disk = runs["in_memory"], runs["on_disk"]
    return {"facts": facts, "points": overrides["flow.points"], "in_memory": memory, "on_disk": disk,
            "same_arrays": same, "met": same and disk["peak_above_imports"] < memory["peak_above_imports"]}


def format_record_row(result: dict[str, Any], row) -> str:
    """The section's table row (``row``: the suite's row formatter)."""
    memory, disk = result["in_memory"], result["on_disk"]

    def shown(run: dict[str, float]) -> str:
        return f"{run['peak_above_imports'] / 2**30:.2f} GB ({run['seconds']:.0f} s)"

    return row(f"per-fact record at {result['facts']:,} facts × {result['points']} points, peak above "
               f"imports in memory {shown(memory)} / on disk {shown(disk)}"
               + ("" if result["same_arrays"] else ", arrays differ"),
               f"{memory['peak_above_imports'] / max(disk['peak_above_imports'], 1):.1f}×",
               "on disk below in memory, same arrays", result["met"])
