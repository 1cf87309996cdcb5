"""``factrecall bench``'s scale section: each flow method's cost to the same accuracy as the table grows.

For every size S × R (D = 8, random table, N = S + R noise tokens, constant init 1e-5, integrated to 2.5×
the predicted subject escape so that both stages are passed) each method runs down a ladder of tolerances
until its largest loss deviation from a tight reference is at most ``target`` (1e-4). Reported: gradient
evaluations, Hessian-vector products (each counted), wall time, the tolerance that sufficed.

Beyond a few thousand facts a tolerance ladder costs too much; :func:`bench_large` runs the same problem
once per size with cvode (rtol 1e-7, atol 1e-13, the curvature blocks as its Newton preconditioner, J·v
by differences) at the default 256 record points through ``factrecall simulate`` in a fresh process and
reports what a user waits for and holds: the flow's and the whole command's seconds and the process's peak
memory, against the targets (10^5 facts: 1 minute, 2 GB; 10^6 facts: 15 minutes, 4 GB).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.config import Config, resolve_config
from dynamics.run import run_flow
from dynamics.trajectory import Trajectory

from ..stages import escape_rates
from ..study import study_config

DEFAULT_SIZES = ((12, 8), (64, 8), (125, 8))
LADDER = (1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
# A tight dopri5 reference costs tens of thousands of stability-bound steps beyond this many facts; above
# it the reference is cvode at rtol 1e-10 (its agreement with dopri5 is tested on figure5 and 64 × 8).
DOPRI_REFERENCE_MAX_FACTS = 1000
# What each benchmarked method label sets.
VARIANTS = {
    "dopri5": {"flow.method": "dopri5"},
    "cvode": {"flow.method": "cvode", "flow.jacobian": "difference"},
    "cvode+hvp": {"flow.method": "cvode", "flow.jacobian": "hvp"},
    "auto": {"flow.method": "auto"},
}


def scale_config(subjects: int, relations: int, answers: int = 8) -> Config:
    """The scale benchmark's problem: random S × R table, integrated through both escapes."""
    _, sigma_s = escape_rates(subjects, relations, answers)  # docs/design.md §5.3
    t_max = 2.5 * math.log(1 / 1e-5) / sigma_s
    return resolve_config("figure5", overrides={
        "task.subjects": subjects, "task.relations": relations, "task.answers_per_relation": answers,
        "task.noise_tokens": subjects + relations, "task.facts": "random", "flow.t_max": t_max,
        "flow.points": 128})


def _tolerances(rtol: float) -> dict[str, float]:
    # Parameters start at 1e-5: the absolute tolerance must sit far below them.
    return {"flow.rtol": rtol, "flow.atol": rtol * 1e-6}


def reference_flow(config: Config, facts: int) -> tuple[Trajectory, str]:
    """The tight reference trajectory of a scale problem and how it was made."""
    method = "dopri5" if facts <= DOPRI_REFERENCE_MAX_FACTS else "cvode"
    reference = run_flow(config.override({**_tolerances(1e-10), "flow.method": method}))
    return reference, f"{method} rtol 1e-10"


def cost_to_accuracy(config: Config, method: str, reference: Trajectory, target: float,
                     ladder: tuple[float, ...] = LADDER) -> dict[str, Any]:
    """Run ``method`` down the tolerance ladder until its loss is within ``target`` of ``reference``."""
    tried = []
    for rtol in ladder:
        traj = run_flow(config.override({**_tolerances(rtol), **VARIANTS[method]}))
        n = min(len(traj.loss), len(reference.loss))
        deviation = float(np.max(np.abs(traj.loss[:n] - reference.loss[:n])))
        info = traj.info
        row = {"method": method, "rtol": rtol, "status": info.status.value, "deviation": deviation,
               "function_evals": info.cost.function_evals, "hvp_evals": info.cost.hvp_evals,
               "wall_seconds": info.cost.wall_seconds, "final_loss": traj.final_loss}
        row["evaluations"] = row["function_evals"] + row["hvp_evals"]
        if info.flow.method_split:  # auto: what each part (dopri5, stiffness probes, cvode) cost
            row["method_split"] = {name: part.to_dict() for name, part in info.flow.method_split.items()}
        tried.append(row)
        if info.ok and n == len(reference.loss) and deviation <= target:
            return {**row, "met_target": True, "tried": tried}
    return {**tried[-1], "met_target": False, "tried": tried}


def bench_scale(sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
                methods: tuple[str, ...] = tuple(VARIANTS),
                target: float = 1e-4, log=lambda message: None) -> list[dict[str, Any]]:
    """One row per size: every method's cost to ``target``, and the ratios dopri5 / best stiff-aware method
    (the fastest of the others that met the target)."""
    rows = []
    for subjects, relations in sizes:
        config = scale_config(subjects, relations)
        facts = subjects * relations
        log(f"scale: {subjects} x {relations}: reference ...")
        reference, how = reference_flow(config, facts)
        row: dict[str, Any] = {"facts": facts, "S": subjects, "R": relations, "t_max": config.flow.t_max,
                               "reference": how, "reference_final_loss": reference.final_loss, "methods": {}}
        for method in methods:
            log(f"scale: {subjects} x {relations}: {method} ...")
            row["methods"][method] = cost_to_accuracy(config, method, reference, target)
        explicit = row["methods"].get("dopri5")
        stiff_aware = [m for name, m in row["methods"].items() if name != "dopri5" and m["met_target"]]
        if explicit and explicit["met_target"] and stiff_aware:
            best = min(stiff_aware, key=lambda m: m["wall_seconds"])
            row["best"] = best["method"]
            row["evaluation_ratio"] = explicit["evaluations"] / best["evaluations"]
            row["time_ratio"] = explicit["wall_seconds"] / best["wall_seconds"]
        rows.append(row)
    return rows


def format_scale_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per size and method, then the dopri5 / best ratios."""
    lines = ["| facts S·R | S × R | method | rtol | grad evals | Hv products | seconds | max loss dev | "
             "final loss |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for name in sorted(row["methods"], key=lambda n: (n != "dopri5", n)):
            m = row["methods"][name]
            met = "" if m["met_target"] else " (target missed)"
            lines.append(f"| {row['facts']} | {row['S']} × {row['R']} | {name} | {m['rtol']:g} | "
                         f"{m['function_evals']} | {m['hvp_evals']} | {m['wall_seconds']:.2f} | "
                         f"{m['deviation']:.1e}{met} | {m['final_loss']:.3g} |")
    lines += ["", "| facts S·R | best stiff-aware | evaluations dopri5 / best | wall time dopri5 / best |",
              "|---|---|---|---|"]
    for row in rows:
        if "best" in row:
            lines.append(f"| {row['facts']} | {row['best']} | {row['evaluation_ratio']:.1f}× | "
                         f"{row['time_ratio']:.1f}× |")
    return "\n".join(lines)


# One size per decade of the large section: 10^4 and 10^5 facts by default, 10^6 with --huge; --quick: 10^3.
LARGE_SIZES = ((500, 20), (2000, 50))
HUGE_SIZES = ((10_000, 100),)
QUICK_LARGE_SIZES = ((100, 10),)
# (seconds, GB) end to end, where a target is set
LARGE_TARGETS = {10**5: (60.0, 2.0), 10**6: (900.0, 4.0)}
# The record points of every large run: the default (the record is held on disk as the flow goes).
LARGE_RECORD_POINTS = 256

# Runs `factrecall simulate` in this (fresh) process and prints its peak resident memory last.
_SIMULATE_AND_MEASURE = """
import json, resource, sys
from analysis.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def large_overrides(subjects: int, relations: int) -> dict[str, Any]:
    """The ``--set`` values of a large run: the scale study's config of that size
    (:func:`analysis.study.scale.study_config`: cvode at rtol 1e-7, atol 1e-13 with the curvature blocks, to
    2.5 t_S) at the default 256 record points at every size."""
    config = study_config(subjects, relations)
    task, flow = config.task, config.flow
    return {"task.subjects": subjects, "task.relations": relations, "task.noise_tokens": task.noise_tokens,
            "task.facts": task.facts, "flow.t_max": round(flow.t_max), "flow.method": flow.method,
            "flow.rtol": flow.rtol, "flow.atol": flow.atol,
            "flow.newton_preconditioner": flow.newton_preconditioner, "flow.jacobian": flow.jacobian,
            "flow.points": LARGE_RECORD_POINTS}


def bench_large(sizes: tuple[tuple[int, int], ...] = LARGE_SIZES, log=lambda message: None
                ) -> list[dict[str, Any]]:
    """One ``factrecall simulate`` per size in a fresh process (imports, flow, record, stages, figures):
    end-to-end seconds, the flow's seconds and evaluations, the process's peak resident memory, the final
    loss and the stages, beside the targets where one is set."""
    rows = []
    for subjects, relations in sizes:
        facts = subjects * relations
        overrides = large_overrides(subjects, relations)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            command = [sys.executable, "-c", _SIMULATE_AND_MEASURE, "simulate", "--quiet", "--out", str(out)]
            for key, value in overrides.items():
                command += ["--set", f"{key}={value}"]
            log(f"large: {subjects} x {relations} ({facts:,} facts) ...")
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"factrecall simulate at {subjects} x {relations} failed: "
                                   + (done.stderr.strip().splitlines() or ["?"])[-1])
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            summary = json.loads((out / "summary.json").read_text())
            stages = json.loads((out / "stages.json").read_text())
        seconds_target, memory_target = LARGE_TARGETS.get(facts, (None, None))
        peak_gb = measured["peak_rss_kb"] / 2**20
        rows.append({
            "facts": facts, "S": subjects, "R": relations, "params": summary["num_params"],
            "overrides": overrides, "status": summary["status"], "final_loss": summary["final_loss"],
            "function_evals": summary["cost"]["function_evals"],
            "accepted_steps": summary["cost"]["accepted_steps"],
            "flow_seconds": summary["cost"]["wall_seconds"], "seconds": seconds, "peak_gb": peak_gb,
            "stages": " > ".join(s["name"] for s in stages.get("stages", [])),
            "target_seconds": seconds_target, "target_gb": memory_target,
            "met": None if seconds_target is None else bool(seconds <= seconds_target
                                                             and peak_gb <= memory_target)})
    return rows


def format_large_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Table rows (measure | value | target | met) of the large section."""
    out = []
    for row in rows:
        target = ("—" if row["target_seconds"] is None
                  else f"≤ {row['target_seconds'] / 60:g} min, ≤ {row['target_gb']:g} GB")
        met = "—" if row["met"] is None else ("yes" if row["met"] else "no")
        out.append(f"| {row['facts']:,} facts ({row['S']} × {row['R']}, {row['params']:,} parameters) "
                   f"through both stages, `factrecall simulate` end to end (cvode rtol 1e-7, blocks; flow "
                   f"{row['flow_seconds']:.0f} s, {row['function_evals']} evals, final loss "
                   f"{row['final_loss']:.2g}, {row['stages']}) "
                   f"| {row['seconds']:.0f} s, {row['peak_gb']:.2f} GB | {target} | {met} |")
    return out
