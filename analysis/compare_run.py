"""``factrecall compare``: run a comparison and write its directory (JSON, CSV, figures) atomically."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dynamics.config import Config

from .compare import CompareSpec, compare, public, write_outputs
from .compare_plots import plot_comparison
from .rundir import staged_run_dir


def run_compare(config: Config, spec: CompareSpec, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Compare the flow of ``config`` with the discrete runs of ``spec``; write ``out/compare.json``,
    ``out/compare.csv``, ``out/config.json`` and the figures; print a summary table."""
    def log(message: str) -> None:
        if not quiet:
            print(f"compare: {message}", file=sys.stderr, flush=True)

    result = compare(config, spec, log=log)
    with staged_run_dir(out, config) as staging:
        write_outputs(result, staging)
        plot_comparison(result, staging)
    print(format_summary(public(result)))
    print(f"wrote {out}")
    return result


def format_summary(result: dict[str, Any]) -> str:
    """A plain-text table: one line per discrete run, then the fitted orders and the stability bound."""
    flow = result["flow"]
    bound = flow["stable_lr_bound"]
    stability = f"GD stable for lr < {bound:.3g}" if bound is not None else "no stability bound: λ_max ≤ 0"
    lines = [f"flow: {flow['stages']['summary']}; max sharpness λ_max = {flow['max_sharpness']:.4g} "
             f"({stability})",
             f"  {'run':26s} {'status':15s} {'max |ΔL|':>10s} {'modified':>10s} {'max |Δθ|/|θ|':>13s} "
             f"{'lr·λmax':>8s}  stage shifts"]
    for r in result["runs"]:
        modified = r.get("max_loss_deviation_modified")
        shifts = ", ".join(f"{k} {v:+.1%}" if v is not None else f"{k} missing"
                           for k, v in r["stage_shift"].items())
        status = r["status"] if r["status"] == "ok" else f"{r['status']}@{r['status_step']}"
        lines.append(f"  {r['name']:26s} {status:15s} {r['max_loss_deviation']:>10.3g} "
                     f"{'' if modified is None else f'{modified:.3g}':>10s} "
                     f"{r.get('max_param_distance', float('nan')):>13.3g} "
                     f"{r['lr_times_sharpness']:>8.3g}  {shifts}")
    orders = result["orders"]

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines.append(f"GD order of convergence: against the flow {fmt(orders['gd_vs_flow'])}, against the "
                 f"modified flow {fmt(orders['gd_vs_modified_flow'])} (lrs {orders['gd_lrs']})")
    for g in result["groups"]:
        if g["mean_max_loss_deviation"] is not None:
            lines.append(f"  {g['optimizer']} lr={g['lr']:g} batch={g['batch_size']}: max |ΔL| mean "
                         f"{g['mean_max_loss_deviation']:.3g} [{g['min_max_loss_deviation']:.3g}, "
                         f"{g['max_max_loss_deviation']:.3g}] over {g['runs'] - g['diverged']} seeds")
    return "\n".join(lines)
