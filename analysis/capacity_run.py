"""``factrecall capacity``: the grids of REFERENCE.md (Figures 1 and 4) and small ``--quick`` grids, run
into a directory: ``trials.csv`` (every trial, rewritten atomically after each model size),
``summary.json`` (capacities, fitted exponent with its confidence interval) and the figures.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.config import ConfigError
from dynamics.io import atomic_write, atomic_write_json

from .capacity import TrialRecord, bisect_largest, fit_power_law, guarded, min_sufficient_attention
from .capacity_trials import TrialSettings, linear_trial, mlp_trial, transformer_trial

KINDS = ("linear", "mlp", "transformer", "tradeoff")
COLUMNS = ("kind", "variant", "point", "seed", "params", "size", "facts", "stored", "status", "accuracy",
           "steps", "wall_seconds", "lr", "message")


@dataclass
class Point:
    """One model size of a capacity grid: its label, the parameter count the paper plots, the bisection
    range of the size variable, ``facts(size)`` (associations or S·R facts) and ``trial(size, seed)``."""

    label: str
    params: int
    low: int
    high: int
    trial: Callable[[int, int], Any]
    facts: Callable[[int], int] = lambda n: n
    shape: dict[str, int] = field(default_factory=dict)


@dataclass
class Experiment:
    """A capacity grid (or, for ``tradeoff``, an accuracy grid) and how to read it."""

    kind: str
    points: list[Point]
    settings: TrialSettings
    rel_tol: float
    x_label: str
    reference: str  # the paper's trend, in words


def _square(n: int) -> int:
    return n * n


def build_experiment(kind: str, quick: bool, device: str = "cpu") -> Experiment:
    """The grid of ``kind`` (quick: small sizes and budgets that run in minutes on 2 CPU cores)."""
    if kind == "linear":
        settings = TrialSettings(optimizer="adamw", lrs=(1.0,), steps=2048 if quick else 4096)
        dims = (8, 16, 32, 64) if quick else (8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256)
        points = [Point(f"d={d}", d * d, d, d * d // 2,
                        partial(_linear, d=d, settings=settings, device=device), shape={"d": d})
                  for d in dims]
        return Experiment(kind, points, settings, 0.05 if quick else 0.02, "parameters d²", "N log N ∝ d²")
    if kind == "mlp":
        settings = TrialSettings(optimizer="adamw", lrs=(3e-2,), steps=4000 if quick else 32768)
        grid = [(d, k) for d in ((8, 12, 16, 24) if quick else (8, 11, 16, 22, 32, 45, 64, 90))
                for k in ((1, 2) if quick else (1, 2, 4, 8))
                if not (quick and d * k * d < 100)]  # m·d = 64 stores fewer than M = 32 maps: below range
        points = [Point(f"d={d},m={k * d}", k * d * d, 32, 4 * k * d * d,
                        partial(_mlp, d=d, width=k * d, settings=settings, device=device),
                        shape={"d": d, "m": k * d}) for d, k in grid]
        return Experiment(kind, points, settings, 0.1 if quick else 0.02, "parameters m·d",
                          "N ∝ m·d (M = 32)")
    if kind == "transformer":
        settings = TrialSettings(optimizer="adam", lrs=(1e-2,) if quick else (1e-3, 3e-3, 1e-2),
                                 steps=4000 if quick else 16384, batch_size=1024, check_every=100)
        scales = (1.0,) if quick else (0.25, 0.5, 1.0, 2.0, 4.0)
        dims = (8, 12, 16, 24) if quick else (8, 11, 16, 22, 32, 45, 64, 90, 128, 181)
        points = []
        for d in dims:
            for c in scales:
                for c2 in scales:
                    H, dh, m = 8, max(1, int(c * d / 8)), max(1, int(c2 * d))
                    params = 4 * H * dh * d + 2 * m * d
                    high = max(3, math.ceil(math.sqrt((0.4 if quick else 1.0) * params)))
                    points.append(Point(f"d={d},H={H},dh={dh},m={m}", params, 2, high,
                                        partial(_transformer, d=d, heads=H, head_dim=dh, mlp_width=m,
                                                settings=settings, device=device),
                                        _square, {"d": d, "H": H, "dh": dh, "m": m}))
        return Experiment(kind, points, settings, 0.1 if quick else 0.02, "parameters 4·H·d_h·d + 2·m·d",
                          "facts ≈ 0.15 × parameters")
    if kind == "tradeoff":
        settings = TrialSettings(optimizer="adam", lrs=(1e-2,) if quick else (1e-3, 3e-3, 1e-2),
                                 steps=1500 if quick else 16384, batch_size=512 if quick else 1024,
                                 check_every=100)
        s, noise, d, dh = (8, 16, 16, 2) if quick else (32, 64, 32, 8)
        heads = (1, 2, 4, 8) if quick else (1, 2, 4, 8, 16, 32)
        widths = (0, 8, 32) if quick else (0, 1, 2, 4, 8, 16, 32, 64, 128)
        points = [Point(f"H={H},m={m}", 4 * H * dh * d + 2 * m * d, s, s,
                        partial(_transformer, d=d, heads=H, head_dim=dh, mlp_width=m, noise=noise,
                                settings=settings, device=device),
                        _square, {"d": d, "H": H, "dh": dh, "m": m, "attention_params": 4 * H * dh * d,
                                  "mlp_params": 2 * m * d})
                  for H in heads for m in widths]
        return Experiment(kind, points, settings, 0.0, "attention parameters 4·H·d_h·d",
                          "≈1.3k attention parameters needed at S = R = 32")
    raise ConfigError(f"KIND={kind!r}: allowed " + ", ".join(KINDS))


def _linear(n, seed, *, d, settings, device, embeddings="gaussian"):
    return linear_trial(n, d=d, seed=seed, settings=settings, embeddings=embeddings, device=device)


def _mlp(n, seed, *, d, width, settings, device):
    return mlp_trial(n, d=d, width=width, num_classes=32, seed=seed, settings=settings, device=device)


def _transformer(s, seed, *, d, heads, head_dim, mlp_width, settings, device, noise=None):
    return transformer_trial(s, d=d, heads=heads, head_dim=head_dim, mlp_width=mlp_width, seed=seed,
                             settings=settings, noise=noise, device=device)


def write_trials_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """All trials so far as CSV (columns :data:`COLUMNS`), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    atomic_write(path, lambda f: f.write(text.encode()))


def read_trials_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a ``trials.csv``."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


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
    for point in experiment.points:
        for seed in range(seeds):
            log: list[TrialRecord] = []
            oracle = guarded(partial(_call_trial, point.trial, seed=seed), log,
                             on_record=partial(_report_trial, progress, kind, point.label, seed))
            found = bisect_largest(oracle, point.low, point.high, experiment.rel_tol)
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
            write_trials_csv(out / "trials.csv", rows)
    summary = summarise(kind, experiment, results, quick, seeds)
    summary["wall_seconds"] = time.perf_counter() - start
    from .capacity_plots import plot_capacity, plot_tradeoff

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
    guarded(lambda n: _linear(n, seed, d=d, settings=experiment.settings, device=device,
                              embeddings="orthonormal"), log)(d)
    rec = log[0]
    result["orthonormal_at_d"] = rec.stored
    _say(progress, f"[linear] {point.label} seed={seed} orthonormal N=d={d} -> {rec.status}")
    return {"kind": "linear", "variant": "orthonormal", "point": point.label, "seed": seed,
            "params": point.params, "facts": d, **rec.as_row()}


def summarise(kind: str, experiment: Experiment, results: list[dict[str, Any]], quick: bool, seeds: int
              ) -> dict[str, Any]:
    """The summary of a finished grid: per-point results, the power-law fit and kind-specific checks."""
    summary: dict[str, Any] = {"kind": kind, "quick": quick, "seeds": seeds, "x_label": experiment.x_label,
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
