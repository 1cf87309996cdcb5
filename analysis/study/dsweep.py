"""``factrecall study dsweep``: T_S/T_R against S/R for several answers per relation D from Li et al.'s
start, per geometry (the science in :mod:`analysis.geometry_dsweep`; docs/geometry.md). Each point is one
full flow (geometry, D, S, R); ``dsweep.csv`` holds every row, ``dsweep.png`` the figure, and the command
prints the rows and the log–log slopes of each (geometry, D) line."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from dynamics import resolve_config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_csv

from ..geometry_dsweep import HORIZON, PAIRS, groups, plot, run_point, slope
from .geometry import parse_sizes
from .runner import StudyPlan

# --quick: the gradient flow at D = 4 and D = S, at S/R = 1/8 and 8
QUICK = {"pairs": "4x32,32x4", "answers": "4,S", "geometries": "euclidean"}
FULL = {"pairs": ",".join(f"{S}x{R}" for S, R in PAIRS), "answers": "4,16,S",
        "geometries": ",".join(HORIZON)}


def _choice(args: argparse.Namespace, name: str) -> str:
    given = getattr(args, name)
    return given if given is not None else (QUICK if args.quick else FULL)[name]


def plan(args: argparse.Namespace) -> StudyPlan:
    """Every geometry × D × (S, R) with D ≤ S (D = S appears in its number's line and in the S line)."""
    geometries = [g.strip() for g in _choice(args, "geometries").split(",") if g.strip()]
    unknown = [g for g in geometries if g not in HORIZON]
    if unknown or not geometries:
        raise ConfigError(f"--geometries={_choice(args, 'geometries')!r}: allowed: a comma-separated list of "
                          f"{', '.join(HORIZON)}")
    labels = [d.strip() for d in _choice(args, "answers").split(",") if d.strip()]
    if not labels or any(d != "S" and not (d.isdigit() and int(d) >= 2) for d in labels):
        raise ConfigError(f"--answers={_choice(args, 'answers')!r}: allowed: a comma-separated list of "
                          "integers >= 2 or S")
    for flag, eps in (("--eps-sign", args.eps_sign), ("--eps-spectral", args.eps_spectral)):
        if not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"{flag}={eps!r}: allowed: a finite number > 0")
    epsilon = {"sign": args.eps_sign, "spectral": args.eps_spectral}
    grids = [{"geometry": [g], "d_label": [d], "S": [S], "R": [R], "eps": [epsilon.get(g, 0.0)]}
             for g in geometries for d in labels for S, R in parse_sizes("--pairs", _choice(args, "pairs"), 2)
             if d == "S" or int(d) <= S]
    return StudyPlan(resolve_config("li2026"), grids)


def compute(values: dict[str, Any]) -> dict[str, Any]:
    """One flow's row (:func:`analysis.geometry_dsweep.run_point`), its status as its name."""
    row = run_point(values["S"], values["R"], values["d_label"], values["geometry"], values["eps"])
    return {**row, "status": str(getattr(row["status"], "value", row["status"]))}


def finish(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    """Write ``dsweep.csv`` and ``dsweep.png``; returns the rows and the slopes as text."""
    rows = [{k: math.nan if v is None else v for k, v in r.items()} for r in rows]  # stored NaN is null
    atomic_write_csv(out / "dsweep.csv", rows)
    lines = [f"{r['geometry']:9s} D={r['d_label']:>3s} S={r['S']:3d} R={r['R']:2d} T_R={r['T_R_p90']:9.4g} "
             f"T_S={r['T_S_p90']:9.4g} ratio p90={r['ratio_p90']:7.3g} mid={r['ratio_mid']:7.3g} "
             f"theory={r['theory']:7.3g} four-scalar={r['four_scalar']:7.3g} {r['status']} {r['seconds']} s"
             for r in rows]
    for (geometry, label), members in sorted(groups(rows).items()):
        lines.append(f"slope {geometry} D={label}: p90 {slope(members, 'ratio_p90'):.3f} "
                     f"mid {slope(members, 'ratio_mid'):.3f}"
                     + (f" theory {slope(members, 'theory'):.3f}" if geometry == "euclidean" else "")
                     + (f" four-scalar {slope(members, 'four_scalar'):.3f}" if label == "S" else ""))
    plot(rows, out / "dsweep.png")
    return "\n".join(lines)
