"""``factrecall compare``: run a comparison and write its directory atomically: ``config.json``,
``compare.json``, ``compare.csv`` and the figures; print a summary table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_csv, atomic_write_json

from ..arguments import config_from_args, parse_count, parse_list
from ..rundir import check_target, staged_run_dir
from .compute import (
    CSV_COLUMNS,
    CompareSpec,
    Comparison,
    check_budget,
    compare,
    fresh_batch_names,
    full_batch_names,
    full_batch_optimizers,
    plan_runs,
    refuse_full_batch_settings,
    tidy_rows,
)
from .plots import plot_comparison


def command(args: argparse.Namespace) -> int:
    """The ``compare`` subcommand: the spec from the flags, then :func:`run_compare`."""
    config = config_from_args(args)
    given = {}  # the options given whose values CompareSpec would otherwise take from its defaults
    if args.batch_sizes is not None:
        given["batch_sizes"] = parse_list("--batch-sizes", args.batch_sizes, int)
    if args.seeds is not None:
        given["seeds"] = parse_count("--seeds", args.seeds)
    spec = CompareSpec(lrs=parse_list("--lrs", args.lrs, float),
                       optimizers=tuple(s.strip() for s in args.optimizers.split(",") if s.strip()),
                       modified_flow=not args.no_modified, full_batch=args.full_batch, **given)
    refuse_unused_options(spec, [*given, *(["full_batch"] if args.full_batch else []),
                                 *(["modified_flow"] if args.no_modified else [])])
    too_large = [lr for lr in spec.lrs if not 0 < lr <= config.flow.t_max]
    if too_large:  # one step would already pass the flow's horizon: nothing to compare along the way
        raise ConfigError(f"--lrs={args.lrs!r}: {too_large[0]:g} is not in (0, flow.t_max = "
                          f"{config.flow.t_max:g}]; allowed: learning rates whose steps lie within the flow")
    full_batch = full_batch_optimizers(config, spec)
    if full_batch:
        refuse_full_batch_settings(config, full_batch)
    check_budget(config, spec)
    run_compare(config, spec, Path(args.out), quiet=args.quiet)
    return 0


def refuse_unused_options(spec: CompareSpec, given: list[str]) -> None:
    """One ConfigError for an option ``given`` (a CompareSpec field set on the command line) that no run of
    ``spec`` reads: batch sizes or seeds without a fresh-batch run, ``--full-batch`` without an optimizer it
    moves to the flow's loss (adam, signsgd, muon: :func:`full_batch_names`), ``--no-modified`` without
    gd."""
    named = f"--optimizers {','.join(spec.optimizers)}" + (" --full-batch" if spec.full_batch else "")
    batched = any(run.batch_size is not None for run in plan_runs(Config(), spec))
    movable = full_batch_names()
    no_batches = (f"no run of {named} takes batches (gd and muon_svd step on the flow's loss, and so do "
                  f"{', '.join(movable)} with --full-batch); allowed: leave it out, or add a fresh-batch "
                  f"optimizer ({fresh_batch_names()}; without --full-batch)")
    unused = {
        "batch_sizes": (not batched, f"--batch-sizes={','.join(map(str, spec.batch_sizes))!r}", no_batches),
        "seeds": (not batched, f"--seeds={spec.seeds}", no_batches),
        "full_batch": (not set(spec.optimizers) & set(movable), "--full-batch",
                       f"it steps {', '.join(movable)} on the flow's loss, and {named} has none of them; "
                       f"allowed: leave it out, or add {' or '.join(movable)}"),
        "modified_flow": ("gd" not in spec.optimizers, "--no-modified",
                          f"it skips GD's modified flow, and {named} has no gd; allowed: leave it out, or "
                          "add gd"),
    }
    for name in given:
        refused, shown, why = unused[name]
        if refused:
            raise ConfigError(f"{shown}: has no effect: {why}")


def run_compare(config: Config, spec: CompareSpec, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Compare the flow of ``config`` with the discrete runs of ``spec``; write ``out`` and print a summary
    (:func:`save_comparison`). Returns what ``compare.json`` holds."""
    def log(message: str) -> None:
        if not quiet:
            print(f"compare: {message}", file=sys.stderr, flush=True)

    check_target(out, config, "compare")  # before the runs, not after them
    return save_comparison(compare(config, spec, log=log), out)


def save_comparison(comparison: Comparison, out: Path) -> dict[str, Any]:
    """Write ``out/config.json``, ``out/compare.json``, ``out/compare.csv`` and the figures in one rename;
    print the summary table. Returns what ``compare.json`` holds."""
    payload = comparison.to_dict()
    with staged_run_dir(out, comparison.config, "compare") as staging:
        atomic_write_json(staging / "compare.json", payload)
        atomic_write_csv(staging / "compare.csv", tidy_rows(comparison), CSV_COLUMNS)
        plot_comparison(comparison, staging)
    print(format_summary(payload))
    print(f"wrote {out}")
    return payload


def format_summary(result: dict[str, Any]) -> str:
    """A plain-text table of what ``compare.json`` holds: one line per discrete run, then the fitted orders,
    the stability bound and the seed groups."""
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
    for name, o in orders.get("by_optimizer", {}).items():
        batches = "full batch" if o["full_batch"] else "fresh batches"
        lines.append(f"  {name} against the {o['geometry']} flow ({batches}): order {fmt(o['order_loss'])} "
                     f"in max |ΔL|, {fmt(o['order_params'])} in max |Δθ|/|θ| (lrs {o['lrs']})")
    for g in result["groups"]:
        if g["mean_max_loss_deviation"] is not None:
            lines.append(f"  {g['optimizer']} lr={g['lr']:g} batch={g['batch_size']}: max |ΔL| mean "
                         f"{g['mean_max_loss_deviation']:.3g} [{g['min_max_loss_deviation']:.3g}, "
                         f"{g['max_max_loss_deviation']:.3g}] over {g['runs'] - g['diverged']} seed"
                         + ("s" if g['runs'] - g['diverged'] != 1 else ""))
    return "\n".join(lines)
