"""The learning-time table across optimizer geometries: relation and subject learning times T_R, T_S, their
ratio and whether a hallucination plateau exists, over S/R from 1/8 to 32 (random tables, D = 4), for the
gradient, sign and spectral flows and for SGD, Adam, signSGD and Muon on the flow's time axis (t = k·lr);
the log–log slope of T_S/T_R against S/R for each row, and the decay exponent of the loss after recall.

``python -m analysis.geometry_table --out DIR [--rows gf,sign,spectral,sgd,adam,signsgd,muon]
[--pairs 4x32,8x16,...] [--figure PATH] [--jobs 2]`` writes ``DIR/table.csv`` and ``DIR/ratio.png`` (and
``--figure``) and prints the table and the slopes. ``factrecall sweep`` cannot express this grid (its grid
is a Cartesian product; here S and R move together) nor report the discrete runs' own learning times,
hence this script.

Each row (:data:`ROWS`) fixes its geometry or optimizer, ε, learning rate and horizon ``t_max`` (a few times
its recall time: the sign flow is very stiff after recall). Flows carry a hard step guard
(``flow.max_steps``); a flow that hits it is reported with its status, not hidden. Discrete runs take
``t_max / lr`` steps. The sign and spectral flows use ε = 1e-4 and 1e-5, not compare's 1e-8 and 1e-7:
at those the flows stop on ``max_steps`` long before recall (docs/geometry.md, measured).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynamics import resolve_config, run_flow, run_training

from .plotting import figure, save
from .stages import detect_stages, measured_times
from .stages.theory import escape_rates

# (S, R) with S/R = 1/8, 1/2, 2, 8, 32 at S·R = 128, and S/R = 64 at 128 × 2
PAIRS = ((4, 32), (8, 16), (16, 8), (32, 4), (64, 2), (128, 2))


@dataclass(frozen=True)
class Row:
    """One row of the table: a flow (``geometry``, ``eps``) or a discrete ``optimizer`` at ``lr``."""

    name: str
    t_max: float
    geometry: str = "euclidean"
    eps: float = 0.0
    optimizer: str | None = None  # None: the flow
    lr: float = 0.0
    method: str = "dopri5"
    max_steps: int = 8000  # flow: hard guard (≈ 60 s on 2 cores at the largest point)


ROWS = {
    "gf": Row("gradient flow", 8000.0),
    "sign": Row("sign flow (ε=1e-4)", 6.0, "sign", 1e-4),
    "spectral": Row("spectral flow (ε=1e-5)", 16.0, "spectral", 1e-5),
    "sgd": Row("SGD (lr 1, batch 1024)", 8000.0, optimizer="sgd", lr=1.0),
    "adam": Row("Adam (lr 1e-3, full batch)", 6.0, optimizer="adam", lr=1e-3),
    "signsgd": Row("signSGD (lr 1e-3, full batch)", 6.0, optimizer="signsgd", lr=1e-3),
    "muon": Row("Muon (lr 2e-3, full batch)", 16.0, optimizer="muon", lr=2e-3),
}


def task_config(S: int, R: int, row: Row, D: int = 4, points: int = 160):
    """The config of one run: reduced model, random table, N = 4 noise tokens, T = 8, constant start 1e-5."""
    overrides = {"task.subjects": S, "task.relations": R, "task.answers_per_relation": D,
                 "task.facts": "random", "task.noise_tokens": 4, "task.seq_len": 8, "flow.t_max": row.t_max,
                 "flow.points": points, "flow.geometry": row.geometry, "flow.geometry_eps": row.eps,
                 "flow.method": row.method, "flow.max_steps": row.max_steps}
    if row.optimizer is not None:
        overrides |= {"flow.geometry": "euclidean", "flow.geometry_eps": 0.0,
                      "train.optimizer": row.optimizer, "train.lr": row.lr,
                      "train.steps": max(1, int(round(row.t_max / row.lr)))}
    return resolve_config("figure5", overrides=overrides)


def decay_exponent(t: np.ndarray, loss: np.ndarray, t_after: float, floor: float = 1e-10) -> float:
    """Slope of log loss against log t over t ≥ ``t_after`` and loss > ``floor`` (below it the loss is
    rounding); NaN with fewer than 3 such points. −1 for a 1/t decay (1/(t log t) reads a little steeper);
    steeper, and growing with the window, for exp(−poly t)."""
    keep = (t >= t_after) & np.isfinite(loss) & (loss > floor)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(t[keep]), np.log(loss[keep]), 1)[0])


def run_point(S: int, R: int, key: str, D: int = 4, points: int = 160) -> dict:
    """One cell of the table: row ``key`` of :data:`ROWS` at S subjects, R relations."""
    import torch

    torch.set_num_threads(1)
    row = ROWS[key]
    config = task_config(S, R, row, D, points)
    start = time.perf_counter()
    if row.optimizer is None:
        traj = run_flow(config)
    elif row.optimizer == "sgd":
        traj = run_training(config)
    else:
        from .compare.compute import run_full_batch

        traj = run_full_batch(config, row.optimizer, keep_states=False)
    seconds = time.perf_counter() - start
    times = measured_times(traj)
    report = detect_stages(traj)
    sigma_r, sigma_s = escape_rates(S, R, D)
    t_R, t_S = times["t_relation"], times["t_subject"]
    recall = max(t_R, t_S)
    return {"row": key, "S": S, "R": R, "S/R": S / R, "status": traj.info.status.value,
            "t_end": float(traj.t[-1]), "T_R": t_R, "T_S": t_S, "ratio": t_S / t_R,
            "plateau": "hallucination" in report.names, "stages": " > ".join(report.names),
            "decay": decay_exponent(np.asarray(traj.t), np.asarray(traj.loss), 2 * recall)
            if math.isfinite(recall) else float("nan"),
            "final_loss": float(traj.loss[-1]), "theory_ratio": sigma_r / sigma_s,
            "evals": traj.info.cost.function_evals, "seconds": seconds}


def embedding_point(S: int, R: int, dim: int, embeddings: str, t_max: float = 10.0) -> dict:
    """The sign flow (ε = 1e-4) of the embedded model with ``embeddings`` (onehot | hadamard) at one point:
    the sign flow is not invariant to a rotation of the embedding basis."""
    row = ROWS["sign"]
    config = task_config(S, R, Row(row.name, t_max, "sign", row.eps)).override(
        {"model.kind": "embedded", "model.embeddings": embeddings, "model.dim": dim})
    start = time.perf_counter()
    traj = run_flow(config)
    times = measured_times(traj)
    return {"embeddings": embeddings, "S": S, "R": R, "dim": dim, "status": traj.info.status.value,
            "T_R": times["t_relation"], "T_S": times["t_subject"],
            "ratio": times["t_subject"] / times["t_relation"],
            "plateau": "hallucination" in detect_stages(traj).names, "seconds": time.perf_counter() - start}


def slope(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log y against log x over the finite positive pairs; None if < 2."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=True)
           if np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0]
    return float(np.polyfit(*np.array(pts).T, 1)[0]) if len(pts) >= 2 else None


def row_slope(results: list[dict], key: str) -> float | None:
    """The log–log slope of T_S/T_R against S/R over one row's cells."""
    mine = [r for r in results if r["row"] == key]
    return slope([r["S/R"] for r in mine], [r["ratio"] for r in mine])


def _run(args: tuple) -> dict:
    return run_point(*args)


def plot(results: list[dict], path: Path) -> None:
    """T_S/T_R against S/R, log–log, one line per row, with the linearised GF theory dotted."""
    fig = figure(6.4, 4.6)
    ax = fig.subplots()
    for key in dict.fromkeys(r["row"] for r in results):
        mine = [r for r in results if r["row"] == key and np.isfinite(r["ratio"])]
        k = row_slope(results, key)
        flow = ROWS[key].optimizer is None
        style = {"ls": "-" if flow else "--", "marker": "o" if flow else "s"}
        if mine:
            ax.plot([r["S/R"] for r in mine], [r["ratio"] for r in mine], **style,
                    label=ROWS[key].name + (f": slope {k:.2f}" if k is not None else ""))
    theory = sorted({(r["S/R"], r["theory_ratio"]) for r in results})
    ax.plot(*zip(*theory, strict=True), color="0.4", ls=":", label="σ_r/σ_s (linearised GF theory)")
    ax.axhline(1.0, color="0.7", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("S/R")
    ax.set_ylabel("T_S / T_R")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Run the table and write it (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.geometry_table")
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--pairs", default=",".join(f"{S}x{R}" for S, R in PAIRS), help="e.g. 4x32,64x2")
    parser.add_argument("--figure", default=None, help="also write the figure here")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--embeddings-point", default="16x4x32",
                        help="SxRxd: sign flow of the embedded model, one-hot vs Hadamard ('' to skip)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(int(v) for v in p.split("x")) for p in args.pairs.split(",")]
    keys = args.rows.split(",")
    for key in keys:
        if key not in ROWS:
            parser.error(f"--rows: {key!r} is not one of {', '.join(ROWS)}")
    jobs = [(S, R, key) for key in keys for S, R in pairs]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(_run, jobs))
    else:
        results = [_run(job) for job in jobs]
    for r in results:
        print(f"{r['row']:8s} S={r['S']:3d} R={r['R']:2d} T_R={r['T_R']:9.4g} T_S={r['T_S']:9.4g} "
              f"T_S/T_R={r['ratio']:7.3g} plateau={r['plateau']!s:5s} decay={r['decay']:6.2f} "
              f"{r['status']} t_end={r['t_end']:.4g} ({r['evals']} evals, {r['seconds']:.1f} s)")
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    for key in keys:
        k = row_slope(results, key)
        print(f"slope {key}: " + ("n/a" if k is None else f"{k:.2f}"))
    theory = sorted({(r["S/R"], r["theory_ratio"]) for r in results})
    k = slope(*map(list, zip(*theory, strict=True)))
    print("slope theory σ_r/σ_s: " + ("n/a" if k is None else f"{k:.2f}"))
    if args.embeddings_point:
        S, R, dim = (int(v) for v in args.embeddings_point.split("x"))
        for embeddings in ("onehot", "hadamard"):
            e = embedding_point(S, R, dim, embeddings)
            print(f"sign flow, embedded d={dim}, {embeddings:8s} S={S} R={R} T_R={e['T_R']:.4g} "
                  f"T_S={e['T_S']:.4g} T_S/T_R={e['ratio']:.3g} plateau={e['plateau']} {e['status']} "
                  f"({e['seconds']:.1f} s)")
    plot(results, out / "ratio.png")
    if args.figure:
        plot(results, Path(args.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
