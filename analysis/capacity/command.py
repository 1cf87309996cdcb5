"""``factrecall capacity``: a grid run into a directory: ``trials.csv`` (every trial, rewritten atomically
after each model size), ``summary.json`` (capacities, fitted exponent with its confidence interval) and
the figures."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.budget import check_steps
from dynamics.config import check_device
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_csv, atomic_write_json

from ..arguments import parse_count, require_device
from ..loglog import fit_power_law
from ..rundir import check_kind, check_output_dir, check_writable
from .grids import KINDS, Experiment, Point, build_experiment
from .plots import plot_capacity, plot_tradeoff
from .search import TrialRecord, bisect_largest, guarded, min_sufficient_attention
from .trials import linear_trial

COLUMNS = ("kind", "variant", "point", "seed", "params", "size", "facts", "stored", "status", "accuracy",
           "steps", "wall_seconds", "lr", "message")


def command(args: argparse.Namespace) -> int:
    """The ``capacity`` subcommand: run the grid of KIND into ``--out`` and print the fitted exponent (or the
    trade-off's minimum attention size)."""
    if args.kind not in KINDS:
        raise ConfigError(f"KIND={args.kind!r}: allowed " + ", ".join(KINDS))
    seeds = (1 if args.quick else 5) if args.seeds is None else parse_count("--seeds", args.seeds)
    check_device(args.device, "--device")
    require_device(args.device)
    check_steps("--seeds", seeds, seeds * planned_steps(build_experiment(args.kind, args.quick, args.device)))
    default = Path("runs") / f"capacity-{args.kind}{'-quick' if args.quick else ''}"
    out = Path(args.out) if args.out else default
    check_output_dir(out)
    check_kind(out, "capacity", "a new or empty directory, or one holding a capacity run")
    check_writable(out)
    summary = run_capacity(args.kind, out, quick=args.quick, seeds=seeds, device=args.device,
                           progress=not args.quiet)
    if args.kind == "tradeoff":
        info = summary["tradeoff"]
        print(f"tradeoff: minimum attention parameters {info['min_attention_params']} "
              f"(all smaller fail: {info['below_all_fail']})")
    else:
        fit = summary["fit"]
        print(f"{args.kind}: exponent {fit['exponent']:.3f} (95% CI {fit['ci_low']:.3f}.."
              f"{fit['ci_high']:.3f}, {fit['points']} points) against {summary['x_label']}")
        if "fit_vs_d" in summary:
            print(f"linear: exponent {summary['fit_vs_d']['exponent']:.3f} against d "
                  f"(95% CI {summary['fit_vs_d']['ci_low']:.3f}..{summary['fit_vs_d']['ci_high']:.3f})")
    print(f"wrote {out / 'trials.csv'}, {out / 'summary.json'}, " + ", ".join(summary["figures"]) +
          f" in {summary['wall_seconds']:.0f} s")
    return 0


def planned_steps(experiment: Experiment) -> int:
    """An upper estimate of the training steps of one seed of ``experiment``: per point, the bisection's
    calls (at most 2 + log₂ of its range) × the learning rates tried × the steps of a trial."""
    settings = experiment.settings
    calls = sum(search_calls(p) for p in experiment.points)
    return calls * len(settings.lrs) * settings.steps


def _say(progress: bool, text: str) -> None:
    if progress:
        from tqdm.std import tqdm

        tqdm.write(text, file=sys.stderr)  # above the bar, which stays at the bottom


def search_calls(point: Point) -> int:
    """At most how many trials the bisection over ``point``'s range runs (2 + log₂ of its size)."""
    return 2 + math.ceil(math.log2(point.high - point.low + 1))


def run_capacity(kind: str, out: Path, *, quick: bool = False, seeds: int = 1, device: str = "cpu",
                 progress: bool = True, experiment: Experiment | None = None) -> dict[str, Any]:
    """Run the grid of ``kind`` for ``seeds`` seeds into ``out``; return the summary (also summary.json).

    Capacity kinds: for every point and seed, :func:`bisect_largest` over the point's size range; the
    fitted exponent is that of facts stored against parameters over all (point, seed) pairs whose search
    ended inside the range. ``tradeoff``: one trial per cell and seed; accuracy averaged over seeds.
    """
    experiment = experiment or build_experiment(kind, quick, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    from tqdm.std import tqdm  # plain text on stderr, also in notebooks (no ipywidgets)

    # k/N in trials at their most (a search that ends early jumps to its planned count): the ETA then
    # errs long, never short
    bar = tqdm(total=seeds * sum(search_calls(p) for p in experiment.points), desc=f"capacity {kind}",
               unit="trial", disable=not progress, leave=False, file=sys.stderr, dynamic_ncols=True)

    def record(label: str, seed: int, rec: TrialRecord) -> None:
        _report_trial(progress, kind, label, seed, rec)
        bar.update(1)

    for point in experiment.points:
        for seed in range(seeds):
            log: list[TrialRecord] = []
            bar.set_postfix_str(f"{point.label} seed {seed}", refresh=False)
            oracle = guarded(partial(_call_trial, point.trial, seed=seed), log,
                             on_record=partial(record, point.label, seed))
            found = bisect_largest(oracle, point.low, point.high, experiment.rel_tol)
            bar.update(max(0, search_calls(point) - len(log)))
            rows.extend({"kind": kind, "variant": "main", "point": point.label, "seed": seed,
                         "params": point.params, "facts": point.facts(rec.size), **rec.as_row()}
                        for rec in log)
            results.append({"point": point.label, "seed": seed, "params": point.params, **point.shape,
                            "capacity": found.capacity, "facts": (None if found.capacity is None
                                                                  else point.facts(found.capacity)),
                            "status": found.status, "first_failure": found.low_fail,
                            "accuracy": log[-1].accuracy if log else math.nan})
            if kind == "linear":
                rows.append(_orthonormal_row(point, seed, experiment, device, results[-1], progress))
            atomic_write_csv(out / "trials.csv", rows, COLUMNS)
    bar.close()
    summary = summarise(kind, experiment, results, quick, seeds)
    summary["wall_seconds"] = time.perf_counter() - start
    figures = (plot_tradeoff(summary, out / "tradeoff.png") if kind == "tradeoff"
               else plot_capacity(summary, out / "capacity.png"))
    summary["figures"] = [p.name for p in figures]
    atomic_write_json(out / "summary.json", summary)
    return summary


def _report_trial(progress: bool, kind: str, label: str, seed: int, rec: TrialRecord) -> None:
    _say(progress, f"[{kind}] {label} seed={seed} size={rec.size} -> {rec.status} acc={rec.accuracy:.3f} "
                   f"steps={rec.steps} {rec.wall_seconds:.1f}s")


def _call_trial(trial: Callable[[int, int], Any], size: int, *, seed: int) -> Any:
    return trial(size, seed)


def _orthonormal_row(point: Point, seed: int, experiment: Experiment, device: str, result: dict[str, Any],
                     progress: bool) -> dict[str, Any]:
    """Linear memory with orthonormal embeddings at N = d (capacity ≥ d exactly)."""
    d = point.shape["d"]
    log: list[TrialRecord] = []
    guarded(lambda n: linear_trial(n, d=d, seed=seed, settings=experiment.settings,
                                   embeddings="orthonormal", device=device), log)(d)
    rec = log[0]
    result["orthonormal_at_d"] = rec.stored
    _say(progress, f"[linear] {point.label} seed={seed} orthonormal N=d={d} -> {rec.status}")
    return {"kind": "linear", "variant": "orthonormal", "point": point.label, "seed": seed,
            "params": point.params, "facts": d, **rec.as_row()}


MODELS = {"linear": "linear associative memory, Gaussian embeddings",
          "mlp": "one-hidden-layer MLP memory, M = 32 classes",
          "transformer": "one-layer transformer, 8 heads, on S = R facts",
          "tradeoff": "one-layer transformer: attention heads × MLP width"}  # what a figure's title names


def summarise(kind: str, experiment: Experiment, results: list[dict[str, Any]], quick: bool, seeds: int
              ) -> dict[str, Any]:
    """The summary of a finished grid: per-point results, the power-law fit and kind-specific checks."""
    summary: dict[str, Any] = {"kind": kind, "quick": quick, "seeds": seeds, "x_label": experiment.x_label,
                               "model": MODELS.get(kind, kind), "points": len(experiment.points),
                               "reference_trend": experiment.reference,
                               "settings": asdict(experiment.settings), "rel_tol": experiment.rel_tol,
                               "results": results}
    if kind == "tradeoff":
        cells: dict[str, dict[str, Any]] = {}
        for r in results:
            cell = cells.setdefault(r["point"], {"attention_params": r["attention_params"],
                                                 "mlp_params": r["mlp_params"], "H": r["H"], "m": r["m"],
                                                 "accuracies": []})
            cell["accuracies"].append(r["accuracy"])
        for cell in cells.values():
            cell["accuracy"] = float(np.mean(cell["accuracies"]))
        attention = sorted({c["attention_params"] for c in cells.values()})
        mlp = sorted({c["mlp_params"] for c in cells.values()})
        grid = np.full((len(attention), len(mlp)), np.nan)
        for c in cells.values():
            grid[attention.index(c["attention_params"]), mlp.index(c["mlp_params"])] = c["accuracy"]
        summary["tradeoff"] = {"attention_params": attention, "mlp_params": mlp, "accuracy": grid.tolist(),
                               **min_sufficient_attention(np.asarray(attention, float), grid,
                                                          experiment.settings.threshold)}
        return summary
    inside = [r for r in results if r["status"] == "ok"]
    summary["fit"] = fit_power_law(np.array([r["params"] for r in inside], float),
                                   np.array([r["facts"] for r in inside], float))
    summary["excluded"] = {s: sum(r["status"] == s for r in results) for s in ("below_range", "at_upper")}
    if kind == "linear":  # the acceptance is stated against d: log N = α_d log d, α_d = 2 α
        summary["fit_vs_d"] = fit_power_law(np.array([r["d"] for r in inside], float),
                                            np.array([r["facts"] for r in inside], float))
        summary["orthonormal_capacity_at_least_d"] = all(r.get("orthonormal_at_d", False) for r in results)
    return summary
