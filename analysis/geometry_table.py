"""The learning-time table across flow geometries: relation and subject learning times T_R, T_S, their
ratio and whether a hallucination plateau exists, over S/R from 1/8 to 64 (random tables), for the
gradient, sign and spectral flows; the log–log slope of T_S/T_R against S/R for each.

``python -m analysis.geometry_table --out DIR [--geometries euclidean,sign,spectral] [--t-max T]``
writes ``DIR/table.csv`` and ``DIR/ratio.png`` and prints the table and the slopes. ``factrecall sweep``
cannot express this grid (its grid is a Cartesian product; here S and R move together) nor report the
discrete runs' own learning times, hence this script.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from dynamics import resolve_config, run_flow

from .plotting import figure, save
from .stages import detect_stages, measured_times
from .stages.theory import escape_rates

# (S, R) with S/R = 1/8 … 64 on a factor-2 grid, S·R ≤ 256
PAIRS = ((4, 32), (8, 32), (8, 16), (16, 16), (16, 8), (32, 8), (32, 4), (64, 4), (64, 2), (128, 2))
EPS = {"euclidean": 0.0, "sign": 1e-8, "spectral": 1e-6}


def row_for(S: int, R: int, geometry: str, t_max: float, D: int = 4) -> dict:
    """One flow of the table: S subjects, R relations, D answers per relation, random table."""
    config = resolve_config("figure5", overrides={
        "task.subjects": S, "task.relations": R, "task.answers_per_relation": D, "task.facts": "random",
        "task.noise_tokens": 4, "task.seq_len": 8, "flow.geometry": geometry,
        "flow.geometry_eps": EPS[geometry], "flow.t_max": t_max, "flow.points": 160,
        "flow.max_steps": 100000})
    start = time.perf_counter()
    flow = run_flow(config)
    times = measured_times(flow)
    report = detect_stages(flow)
    sigma_r, sigma_s = escape_rates(S, R, D)
    return {"S": S, "R": R, "S/R": S / R, "geometry": geometry, "status": flow.info.status.value,
            "T_R": times["t_relation"], "T_S": times["t_subject"],
            "ratio": times["t_subject"] / times["t_relation"],
            "plateau": "hallucination" in report.names, "stages": " > ".join(report.names),
            "theory_ratio": sigma_r / sigma_s, "evals": flow.info.cost.function_evals,
            "seconds": time.perf_counter() - start}


def slope(rows: list[dict], geometry: str) -> float | None:
    """Least-squares slope of log(T_S/T_R) against log(S/R) over the finite rows of one geometry."""
    pts = [(math.log(r["S/R"]), math.log(r["ratio"])) for r in rows
           if r["geometry"] == geometry and np.isfinite(r["ratio"]) and r["ratio"] > 0]
    return float(np.polyfit(*np.array(pts).T, 1)[0]) if len(pts) >= 2 else None


def main(argv: list[str] | None = None) -> int:
    """Run the table and write it (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.geometry_table")
    parser.add_argument("--out", required=True)
    parser.add_argument("--geometries", default="euclidean,sign,spectral")
    parser.add_argument("--t-max", type=float, default=20000.0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for geometry in args.geometries.split(","):
        for S, R in PAIRS:
            row = row_for(S, R, geometry, args.t_max)
            rows.append(row)
            print(f"{geometry:9s} S={S:3d} R={R:2d} T_R={row['T_R']:10.4g} T_S={row['T_S']:10.4g} "
                  f"T_S/T_R={row['ratio']:8.3g} plateau={row['plateau']!s:5s} {row['stages']} "
                  f"({row['evals']} evals, {row['seconds']:.1f} s)", flush=True)
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig = figure(6.0, 4.4)
    ax = fig.subplots()
    for geometry in dict.fromkeys(r["geometry"] for r in rows):
        pts = [(r["S/R"], r["ratio"]) for r in rows if r["geometry"] == geometry and np.isfinite(r["ratio"])]
        k = slope(rows, geometry)
        label = f"{geometry} flow" + (f": slope {k:.2f}" if k is not None else "")
        print(label)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    theory = [(r["S/R"], r["theory_ratio"]) for r in rows if r["geometry"] == rows[0]["geometry"]]
    ax.plot(*zip(*theory, strict=True), color="0.4", ls=":", label="σ_r/σ_s (linearised GF theory)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("S/R")
    ax.set_ylabel("T_S / T_R")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    save(fig, out / "ratio.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
