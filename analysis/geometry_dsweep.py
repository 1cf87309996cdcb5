"""T_S/T_R against S/R for several answers per relation D, from Li et al.'s start (docs/geometry.md, "The
D-dependence"): the reduced model's full flows on balanced (structured) tables with T = 3 (no noise) and the
manifold start α₀ = β₀ = 0.01, for D = 4, 16 and S (one answer per fact) — only D changes between rows.

``factrecall study dsweep --out DIR [--quick] [--pairs 4x32,8x16,...] [--answers 4,16,S] [--geometries
euclidean,spectral,sign] [--eps-sign 1e-6] [--eps-spectral 1e-5]`` (:mod:`analysis.study.dsweep`) writes
``DIR/dsweep.csv`` and ``DIR/dsweep.png`` and prints the rows and the slopes of log(T_S/T_R) against log(S/R),
with T read two ways: the midpoint crossing of the relation and subject losses (``measured_times``) and the
first time the mean p(A_r), p(subject's answers) reach 1 − δ (δ = 0.1). Beside each gradient-flow row: the
linearised theory's σ_r/σ_s = (S/R)·√((R−1)/(D−1)); beside each D = S row: the four-scalar flow (= Li et al.'s
ODE, dynamics.manifold).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from dynamics import resolve_config, run_flow
from dynamics.manifold import manifold_flow

from .loglog import power_law
from .plotting import figure, plain_log_ticks, save
from .stages import measured_times

PAIRS = ((4, 32), (8, 16), (16, 8), (32, 4), (64, 2), (128, 2))
HORIZON = {"euclidean": 8000.0, "spectral": 32.0, "sign": 4.0}
DELTA = 0.1


def first_crossing(t: np.ndarray, p: np.ndarray, level: float) -> float:
    """The first time the probability ``p`` reaches ``level``, linear in the margin log(p/(1−p)) between
    recorded points (on Li et al.'s manifold the margin is αβ/√R − log(S−1), smooth in t), NaN if never."""
    hits = np.flatnonzero(p >= level)
    if not len(hits):
        return math.nan
    i = hits[0]
    if i == 0:
        return float(t[0])
    q0, q1, target = (math.log(x / (1 - x)) if x < 1 else math.inf for x in (p[i - 1], p[i], level))
    weight = 1.0 if not math.isfinite(q1) else (target - q0) / (q1 - q0)
    return float(t[i - 1] + weight * (t[i] - t[i - 1]))


def p_times(trajectory, level: float) -> tuple[float, float]:
    """(T_R, T_S): the first times the mean p(A_r) and the mean p(subject's answers), each weighted by the
    facts' frequencies, reach ``level`` (:func:`first_crossing`; NaN if never)."""
    weights = trajectory.fact_weights
    return tuple(first_crossing(trajectory.t, (p * weights).sum((-2, -1)), level)
                 for p in (trajectory.p_relation, trajectory.p_subject))


# Each geometry's solver: the spectral flow off the manifold (D < S) is stiff at small ε (dopri5 took 137,647
# evaluations, 409 s, at 32 × 4, D = 4, ε = 1e-5; auto, dopri5 then cvode, 6,390 and 31 s at rtol 1e-6).
METHOD = {"euclidean": ("dopri5", 1e-8), "spectral": ("auto", 1e-6), "sign": ("dopri5", 1e-8)}


def run_point(S: int, R: int, D: int | str, geometry: str, eps: float, points: int = 1000,
              max_steps: int = 40_000) -> dict:
    """One full flow at D answers per relation (a number, or 'S'); its learning times by both definitions,
    the theory's ratio and the four-scalar flow's. ``max_steps``: the solver's step guard."""
    label, D = str(D), S if D == "S" else int(D)
    config = resolve_config("li2026", overrides={
        "task.subjects": S, "task.relations": R, "task.answers_per_relation": D, "flow.geometry": geometry,
        "flow.geometry_eps": eps if geometry != "euclidean" else 0.0, "flow.t_max": HORIZON[geometry],
        "flow.t_min": 1e-3, "flow.points": points, "flow.method": METHOD[geometry][0],
        "flow.rtol": METHOD[geometry][1], "flow.atol": 1e-12, "flow.max_steps": max_steps})
    start = time.perf_counter()
    trajectory = run_flow(config)
    seconds = time.perf_counter() - start
    mid = measured_times(trajectory)
    T_R, T_S = p_times(trajectory, 1 - DELTA)
    row = {"S": S, "R": R, "D": D, "d_label": label, "S/R": S / R, "geometry": geometry,
           "eps": eps if geometry != "euclidean" else 0.0,
           "T_R_mid": mid["t_relation"], "T_S_mid": mid["t_subject"],
           "T_R_p90": T_R, "T_S_p90": T_S,
           "theory": (S / R) * math.sqrt((R - 1) / (D - 1)) if geometry == "euclidean" and D > 1
           else math.nan,
           "four_scalar": math.nan, "status": trajectory.info.status, "seconds": round(seconds, 1)}
    if D == S:
        four = manifold_flow(S, R, geometry, row["eps"], delta=DELTA)
        row["four_scalar"] = four.ratio
    row["ratio_mid"] = row["T_S_mid"] / row["T_R_mid"]
    row["ratio_p90"] = row["T_S_p90"] / row["T_R_p90"]
    return row


TEXT_COLUMNS = ("geometry", "d_label", "status")
SHIPPED = Path(__file__).resolve().parent.parent / "docs" / "geometry_dsweep.csv"


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``dsweep.csv`` with their numbers as numbers (S, R, D as int, the rest float)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key not in TEXT_COLUMNS:
                row[key] = int(value) if key in ("S", "R", "D") else float(value)
    return rows


def shipped_rows() -> list[dict]:
    """The rows of ``docs/geometry_dsweep.csv``, the full sweep as run for docs/geometry.md (about 30 min)."""
    return read_rows(SHIPPED)


def slope(rows: list[dict], key: str) -> float:
    """Least-squares slope of log(key) against log(S/R) over the rows where it is finite."""
    fit = power_law([r["S/R"] for r in rows], [r[key] for r in rows])
    return fit[0] if fit else math.nan


def groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Rows by (geometry, D label: the number, or 'S')."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["geometry"], r["d_label"]), []).append(r)
    return out


def _d_order(label: str) -> float:
    """D labels in increasing D: the numbers, then 'S'."""
    return math.inf if label == "S" else float(label)


def plot(rows: list[dict], path: Path) -> None:
    """T_S/T_R (p = 0.9) against S/R, one panel per geometry, one line per D; the theory dotted (GF)."""
    geometries = sorted({r["geometry"] for r in rows}, key=list(HORIZON).index)
    fig = figure(4.2 * len(geometries), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(geometries)))
    for ax, geometry in zip(axes, geometries, strict=True):
        theory_label = "linearised theory (S/R)·√((R−1)/(D−1))"
        for (g, label), members in sorted(groups(rows).items(), key=lambda item: _d_order(item[0][1])):
            if g != geometry:
                continue
            x = [m["S/R"] for m in members]
            line, = ax.plot(x, [m["ratio_p90"] for m in members], "o-", label=f"D = {label}")
            if geometry == "euclidean":
                ax.plot(x, [m["theory"] for m in members], ":", color=line.get_color(), label=theory_label)
                theory_label = "_nolegend_"  # one entry for the dotted lines of every D
            if label == "S":
                ax.plot(x, [m["four_scalar"] for m in members], "x", color="k",
                        label="four-scalar flow (Li et al.'s ODE)")
        _style(ax, geometry)
    fig.suptitle("T_S/T_R against S/R for D answers per relation: reduced model, balanced tables, T = 3 "
                 "(no noise),\nLi et al.'s manifold start α₀ = β₀ = 0.01; T: first time the mean p reaches "
                 "0.9; only D changes", fontsize=9)
    save(fig, path)


def _style(ax, geometry: str) -> None:
    """Log–log axes, the line T_S = T_R, plain tick labels, the panel's title and legend."""
    ax.axhline(1.0, color="0.7", lw=0.8, label="_nolegend_")
    ax.set(xscale="log", yscale="log", xlabel="S/R", ylabel="T_S / T_R (p = 0.9)",
           title=f"{geometry} flow" if geometry != "euclidean" else "gradient flow")
    plain_log_ticks(ax.yaxis)
    low, high = ax.get_ylim()
    if high < 4 * low:  # (the sign panel) a range with one labelled major tick: label the minor ones
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    ax.legend(fontsize=7)


def theory_ratio(row: dict) -> tuple[float, str | None]:
    """The theory's T_S/T_R for a row of a D line (``d_label``) and its legend, where there is one: the
    gradient flow's linearised σ_r/σ_s at any D; on the D = S line the four-scalar flow (Li et al.'s ODE,
    exact there); the sign flow at a number D the four-scalar flow with the subject time of D subjects,
    T_S(D, R)/T_R(S, R) (within 0.1% of the full flow: docs/geometry.md); the spectral flow at a number D
    none (NaN, None)."""
    S, R, D, geometry, eps = row["S"], row["R"], row["D"], row["geometry"], row["eps"]
    if geometry == "euclidean":
        return (S / R) * math.sqrt((R - 1) / (D - 1)), "σ_r/σ_s (linearised)"
    if row["d_label"] == "S":
        return manifold_flow(S, R, geometry, eps, delta=DELTA).ratio, "four-scalar flow (Li et al.)"
    if geometry == "sign":
        return (manifold_flow(D, R, geometry, eps, delta=DELTA).T_S
                / manifold_flow(S, R, geometry, eps, delta=DELTA).T_R), "four-scalar, T_S at S = D"
    return math.nan, None


def _narrow_log_ticks(ax) -> None:
    """A log y-axis spanning less than a factor 4: five plain, evenly spaced (in log) tick labels."""
    low, high = ax.get_ylim()
    ticks = [t for t in (0.5, 0.6, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3) if low <= t <= high]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_regimes(rows: list[dict], path: Path) -> None:
    """T_S/T_R (p = 0.9) against S/R at D = 4 and D = S, one panel per geometry, each measured line with its
    theory dotted (:func:`theory_ratio`; the spectral flow at D = 4 has none)."""
    geometries = sorted({r["geometry"] for r in rows}, key=list(HORIZON).index)
    fig = figure(4.4 * len(geometries), 4.3)
    axes = np.atleast_1d(fig.subplots(1, len(geometries)))
    for ax, geometry in zip(axes, geometries, strict=True):
        for label, color, dark in (("4", "C0", "navy"), ("S", "C3", "darkred")):
            members = groups(rows).get((geometry, label), [])
            if not members:
                continue
            x = [m["S/R"] for m in members]
            ax.plot(x, [m["ratio_p90"] for m in members], "o-", color=color, label=f"D = {label}, full flow")
            theory = [theory_ratio(m) for m in members]
            if theory[0][1] is not None:
                ax.plot(x, [t for t, _ in theory], ":", color=dark, lw=2,  # on top: they coincide
                        label=f"D = {label}: {theory[0][1]}")
        _style(ax, geometry)
        low, high = ax.get_ylim()
        if high < 4 * low:
            _narrow_log_ticks(ax)
        ax.legend(fontsize=7.5, loc="upper left")
    fig.suptitle("T_S/T_R against S/R at D = 4 and D = S (one answer per fact) answers per relation: "
                 "full reduced flows, balanced tables,\nT = 3, no noise, Li et al.'s start α₀ = β₀ = 0.01; "
                 "T: first time the mean p reaches 0.9; dotted: theory (none for the spectral flow at D = 4)",
                 fontsize=9)
    save(fig, path)
