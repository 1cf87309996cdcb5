"""``factrecall bench``'s newton section: cvode with and without its Newton preconditioner, side by side.

For each size S × R of the scale problem (:func:`~analysis.bench.scale.scale_config`) one tight reference
(:func:`~analysis.bench.scale.reference_flow`), then cvode at the same tolerance with
``flow.newton_preconditioner`` none and blocks, and blocks with the blocks' own J·v
(``flow.jacobian=blocks``), interleaved ``repeats`` times. The counts do not depend on the machine: field
evaluations, J·v products, preconditioner setups (about a gradient each), accepted steps, and their sum, the
gradient-equivalent evaluations (the blocks' products cost no gradient: counted apart); wall time is
reported as the ratio of the medians only.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from dynamics.run import run_flow

from .scale import reference_flow, scale_config

SIZES = ((500, 20),)  # 10^4 facts
QUICK_SIZES = ((16, 4),)
# what each choice sets besides the section's flow.jacobian
CHOICES = {"none": {"flow.newton_preconditioner": "none"},
           "blocks": {"flow.newton_preconditioner": "blocks"},
           "blocks_jacobian": {"flow.newton_preconditioner": "blocks", "flow.jacobian": "blocks"}}


def bench_newton(sizes: tuple[tuple[int, int], ...] = SIZES, rtol: float = 1e-7, jacobian: str = "difference",
                 repeats: int = 3, log=lambda message: None) -> list[dict[str, Any]]:
    """One row per size: each choice's counts, largest loss deviation from the reference and median flow
    seconds, and the ratios none / blocks and none / blocks_jacobian of the gradient-equivalent evaluations
    and of the seconds."""
    rows = []
    for subjects, relations in sizes:
        config = scale_config(subjects, relations)
        log(f"newton: {subjects} x {relations}: reference ...")
        reference, how = reference_flow(config, subjects * relations)
        run = config.override({"flow.method": "cvode", "flow.rtol": rtol, "flow.atol": rtol * 1e-6,
                               "flow.jacobian": jacobian})
        seconds: dict[str, list[float]] = {choice: [] for choice in CHOICES}
        row: dict[str, Any] = {"facts": subjects * relations, "S": subjects, "R": relations, "rtol": rtol,
                               "jacobian": jacobian, "reference": how, "choices": {}}
        for repeat in range(repeats):
            for choice in CHOICES:
                log(f"newton: {subjects} x {relations}: {choice} ({repeat + 1}/{repeats}) ...")
                traj = run_flow(run.override(CHOICES[choice]))
                seconds[choice].append(traj.info.cost.wall_seconds)
                cost = traj.info.cost
                n = min(len(traj.loss), len(reference.loss))
                row["choices"][choice] = {
                    "status": traj.info.status.value, "function_evals": cost.function_evals,
                    "hvp_evals": cost.hvp_evals, "preconditioner_setups": cost.preconditioner_setups,
                    "accepted_steps": cost.accepted_steps, "block_products": cost.block_products,
                    "evaluations": cost.function_evals + cost.hvp_evals + cost.preconditioner_setups,
                    "deviation": float(np.max(np.abs(traj.loss[:n] - reference.loss[:n])))}
        for choice in CHOICES:
            row["choices"][choice]["median_seconds"] = statistics.median(seconds[choice])
        none = row["choices"]["none"]
        for choice, name in (("blocks", ""), ("blocks_jacobian", "jacobian_")):
            row[f"{name}evaluation_ratio"] = none["evaluations"] / row["choices"][choice]["evaluations"]
            row[f"{name}seconds_ratio"] = none["median_seconds"] / row["choices"][choice]["median_seconds"]
        rows.append(row)
    return rows


def format_newton_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of the bench table: gradient-equivalent evaluations none / blocks and none / blocks with the
    blocks' J·v at each size (target ≥ 2×)."""
    lines = []
    for row in rows:
        none = row["choices"]["none"]
        for choice, name, what in (("blocks", "", "flow.newton_preconditioner=blocks"),
                                   ("blocks_jacobian", "jacobian_", "it and flow.jacobian=blocks")):
            other, ratio = row["choices"][choice], row[f"{name}evaluation_ratio"]
            lines.append(
                f"| cvode ({row['jacobian']}, rtol {row['rtol']:g}) at {row['facts']:,} facts: evaluations "
                f"without / with {what} ({none['evaluations']:,} / {other['evaluations']:,}; deviation "
                f"{none['deviation']:.1e} / {other['deviation']:.1e}; seconds "
                f"{row[f'{name}seconds_ratio']:.2f}×) | {ratio:.2f}× | ≥ 2× | "
                f"{'yes' if ratio >= 2 else 'no'} |")
    return lines
