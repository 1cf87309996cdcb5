"""The benchmark suite of ``factrecall bench``: the simulator's performance targets, measured side by side
in one run.

Each section times the flow and its competitor in the same process, one after the other, so the ratios
hold even when the machine's absolute speed drifts. Results are printed as a table and saved as JSON.
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.config import Config, resolve_config
from dynamics.io import atomic_write_json
from dynamics.run import run_flow, run_training

from .gradient import SIZES as GRADIENT_SIZES
from .gradient import bench_gradient, format_gradient_rows
from .newton import QUICK_SIZES as NEWTON_QUICK_SIZES
from .newton import SIZES as NEWTON_SIZES
from .newton import bench_newton, format_newton_rows
from .plots import plot_scale
from .record import bench_record, format_record_row
from .scale import (
    DEFAULT_SIZES,
    HUGE_SIZES,
    LARGE_SIZES,
    QUICK_LARGE_SIZES,
    bench_large,
    bench_scale,
    format_large_rows,
    format_scale_table,
)
from .startup import bench_end_to_end, format_startup_rows


def max_deviation_from_flow(config: Config, lr: float, t_max: float) -> tuple[float, int]:
    """GD at ``lr`` to ``t_max`` against the flow at the same times: (largest loss deviation, GD steps)."""
    steps = int(round(t_max / lr))
    overrides = {"train.optimizer": "gd", "train.lr": lr, "train.steps": steps, "flow.t_max": t_max}
    gd_config = config.override(overrides)
    gd = run_training(gd_config)
    exact = run_flow(gd_config.override({"flow.rtol": 1e-9, "flow.atol": 1e-13}), times=gd.t)
    return float(np.abs(gd.loss - exact.loss).max()), steps


def bench_sgd_vs_flow(quick: bool) -> dict[str, Any]:
    """The paper's SGD protocol (lr 0.1, batch 1024, 8192 steps) against the figure5 flow, wall time."""
    config = resolve_config("figure5")
    flow = run_flow(config)
    steps = 1024 if quick else config.train.steps
    sgd = run_training(config.override({"train.steps": steps}))
    sgd_seconds = sgd.info.cost.wall_seconds * config.train.steps / steps
    ratio = sgd_seconds / flow.info.cost.wall_seconds
    return {"flow_seconds": flow.info.cost.wall_seconds, "flow_function_evals": flow.info.cost.function_evals,
            "sgd_seconds": sgd_seconds, "sgd_steps_timed": steps, "extrapolated": steps != config.train.steps,
            "ratio": ratio, "target_ratio": 30.0, "met": ratio >= 30.0}


def bench_gd_evals(quick: bool) -> dict[str, Any]:
    """Gradient evaluations of GD at the lr matching the flow to a largest loss deviation 1e-3, against the
    flow's function evaluations over the same horizon."""
    target = 1e-3
    t_max = 300.0 if quick else 819.2
    config = resolve_config("figure5")
    dev_coarse, _ = max_deviation_from_flow(config, 0.1, t_max)
    lr = 0.1 * target / dev_coarse * 0.9  # first order: deviation ∝ lr; 10% margin
    deviation, steps = max_deviation_from_flow(config, lr, t_max)
    while deviation > target:
        lr /= 1.5
        deviation, steps = max_deviation_from_flow(config, lr, t_max)
    flow = run_flow(config.override({"flow.t_max": t_max}))
    ratio = steps / flow.info.cost.function_evals
    return {"t_max": t_max, "gd_lr": lr, "gd_deviation": deviation, "gd_gradient_evals": steps,
            "deviation_at_lr_0.1": dev_coarse, "flow_function_evals": flow.info.cost.function_evals,
            "flow_deviation_rtol": config.flow.rtol, "ratio": ratio, "target_ratio": 50.0,
            "met": ratio >= 50.0}


def bench_long_horizon() -> dict[str, Any]:
    """Cost of the figure5 flow to t = 1e6 over its cost to t = 1e3 (function evaluations and seconds)."""
    config = resolve_config("figure5")
    short = run_flow(config.override({"flow.t_max": 1e3}))
    long = run_flow(config.override({"flow.t_max": 1e6}))
    ratio = long.info.cost.function_evals / short.info.cost.function_evals
    return {"evals_1e3": short.info.cost.function_evals, "evals_1e6": long.info.cost.function_evals,
            "seconds_1e3": short.info.cost.wall_seconds, "seconds_1e6": long.info.cost.wall_seconds,
            "status_1e6": long.info.status.value, "final_loss_1e6": long.final_loss,
            "ratio": ratio, "target_ratio": 3.0, "met": ratio <= 3.0}


def bench_batched_sweep(points: int = 32) -> dict[str, Any]:
    """A ``points``-point init.scale sweep (1e-7 .. 1e-2) on figure5: one batched system against the same
    flows one by one, in this process, side by side."""
    from dynamics.run import run_flow_batch

    config = resolve_config("figure5")
    configs = [config.override({"init.scale": float(a)}) for a in np.geomspace(1e-7, 1e-2, points)]
    start = time.perf_counter()
    single = [run_flow(c) for c in configs]
    one_by_one = time.perf_counter() - start
    start = time.perf_counter()
    batched = run_flow_batch(configs)
    together = time.perf_counter() - start
    agreement = max(float(np.abs(a.loss - b.loss).max()) for a, b in zip(single, batched, strict=True))
    ratio = one_by_one / together
    return {"points": points, "one_by_one_seconds": one_by_one, "batched_seconds": together,
            "one_by_one_evals": sum(t.info.cost.function_evals for t in single),
            "batched_evals": batched[0].info.cost.function_evals, "max_loss_difference": agreement,
            "ratio": ratio, "target_ratio": 4.0, "met": ratio >= 4.0}


NOT_CHECKED = "not checked at --quick size"


def _row(measure: str, value: str, target: str, met: bool | None) -> str:
    """A table row; ``met`` None: the measure ran at a smaller size than its target is set for."""
    return f"| {measure} | {value} | {target} | {NOT_CHECKED if met is None else 'yes' if met else 'no'} |"


def _end_to_end_row(e2e: dict[str, Any]) -> str:
    return "\n".join(format_startup_rows(e2e))


def _sgd_row(sgd: dict[str, Any]) -> str:
    note = " (extrapolated)" if sgd["extrapolated"] else ""
    return _row(f"SGD protocol{note} {sgd['sgd_seconds']:.1f} s / flow {sgd['flow_seconds']:.2f} s",
                f"{sgd['ratio']:.0f}×", "≥ 30×", sgd["met"])


def _gd_row(gd: dict[str, Any]) -> str:
    return _row(f"GD gradient evals at max deviation 1e-3 (lr {gd['gd_lr']:.2g}: "
                f"{gd['gd_gradient_evals']}) / flow evals ({gd['flow_function_evals']}), t ≤ {gd['t_max']:g}",
                f"{gd['ratio']:.0f}×", "≥ 50×", gd["met"])


def _long_horizon_row(lh: dict[str, Any]) -> str:
    return _row(f"flow evals to t = 1e6 ({lh['evals_1e6']}) / to t = 1e3 ({lh['evals_1e3']})",
                f"{lh['ratio']:.2f}", "≤ 3", lh["met"])


def _batched_row(bs: dict[str, Any]) -> str:
    return _row(f"{bs['points']}-point init.scale sweep: one by one {bs['one_by_one_seconds']:.1f} s / "
                f"batched {bs['batched_seconds']:.1f} s", f"{bs['ratio']:.1f}×", "≥ 4×", bs["met"])


def _record_row(rec: dict[str, Any]) -> str:
    return format_record_row(rec, _row)


# The one-row sections of the table, in its order, each with its row.
TARGET_ROWS = {"end_to_end": _end_to_end_row, "sgd_vs_flow": _sgd_row, "gd_evals": _gd_row,
               "long_horizon": _long_horizon_row, "batched_sweep": _batched_row, "record": _record_row}


def format_table(results: dict[str, Any]) -> str:
    """A Markdown table of the bench results (as docs/performance.md shows it); sections not run are left
    out."""
    lines = ["| measure | value | target | met |", "|---|---|---|---|"]
    lines += [row(results[name]) for name, row in TARGET_ROWS.items() if name in results]
    lines += format_gradient_rows(results.get("gradient", []))
    lines += format_newton_rows(results.get("newton", []))
    lines += format_large_rows(results.get("large", []))
    if results.get("scale"):
        lines += ["", format_scale_table(results["scale"])]
    return "\n".join(lines)


# The sections whose --quick run is the full workload (fewer repeats at most): their targets are checked.
SAME_AT_QUICK = ("end_to_end", "long_horizon")

SECTIONS = ("end_to_end", "sgd_vs_flow", "gd_evals", "long_horizon", "batched_sweep", "record", "gradient",
            "large", "scale", "newton")


def run_bench(quick: bool = False, out: Path | None = None,
              sizes: tuple[tuple[int, int], ...] | None = None, huge: bool = False,
              only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run the sections (all of :data:`SECTIONS`, or those named in ``only``), print the table, save JSON
    to ``out`` (and the scale figure beside it, when the scale section ran).

    ``sizes``: the S × R tables of the scale section (default :data:`~analysis.bench.scale.DEFAULT_SIZES`;
    quick: 12 × 8 only). The large section runs 10^4 and 10^5 facts end to end (quick: 10^3), and
    10^6 with ``huge``.
    """
    sizes = sizes or (((12, 8),) if quick else DEFAULT_SIZES)
    large = (QUICK_LARGE_SIZES if quick else LARGE_SIZES) + (HUGE_SIZES if huge else ())
    from tqdm.std import tqdm  # plain text on stderr, also in notebooks (no ipywidgets)

    names = only or SECTIONS
    bar = tqdm(total=len(names), desc="bench", unit="section", leave=False, file=sys.stderr,
               dynamic_ncols=True)
    log = partial(tqdm.write, file=sys.stderr)  # above the bar
    sections = {"end_to_end": lambda: bench_end_to_end(2 if quick else 3),
                "sgd_vs_flow": lambda: bench_sgd_vs_flow(quick),
                "gd_evals": lambda: bench_gd_evals(quick),
                "long_horizon": bench_long_horizon,
                "batched_sweep": lambda: bench_batched_sweep(8 if quick else 32),
                "record": lambda: bench_record(quick),
                "gradient": lambda: bench_gradient(GRADIENT_SIZES[:1] if quick else GRADIENT_SIZES),
                "newton": lambda: bench_newton(NEWTON_QUICK_SIZES if quick else NEWTON_SIZES, log=log),
                "large": lambda: bench_large(large, log=log),
                "scale": lambda: bench_scale(sizes, log=log)}
    results: dict[str, Any] = {"quick": quick, "cpu_count": os.cpu_count()}
    for name in names:
        bar.set_postfix_str(name)
        log(f"bench: {name} ...")
        results[name] = sections[name]()
        if quick and name in TARGET_ROWS and name not in SAME_AT_QUICK:
            results[name]["met"] = None  # measured on a smaller workload than the target's
        bar.update(1)
    bar.close()
    table = format_table(results)
    print(table)
    if out is not None:
        atomic_write_json(Path(out), results)
        if "scale" in results:
            results["scale_figure"] = str(plot_scale(results["scale"], Path(out).with_suffix(".png")))
    return results
