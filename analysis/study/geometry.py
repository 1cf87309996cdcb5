"""The learning-time table across optimizer geometries: relation and subject learning times T_R, T_S, their
ratio and whether a hallucination plateau exists, over S/R from 1/8 to 32 (random tables, D = 4), for the
gradient, sign and spectral flows and for SGD, Adam, signSGD and Muon on the flow's time axis (t = k·lr);
the log–log slope of T_S/T_R against S/R for each row, and the decay exponent of the loss after recall.

``factrecall study geometry --out DIR [--rows gf,sign,spectral,sgd,adam,signsgd,muon] [--pairs
4x32,8x16,...] [--answers-per-relation 4|D|S] [--start constant|manifold] [--time midpoint|p [--delta 0.1]]
[--eps-ladder 1e-4,3e-5,...] [--figure PATH] [--workers 2]`` writes ``DIR/table.csv``, ``DIR/embeddings.csv``
and ``DIR/ratio.png`` (and ``--figure``; with ``--eps-ladder`` also ``DIR/limit.csv``) and prints the table
and the slopes. The options change what every cell shares
(:class:`Setting`): D answers per relation (``S``: one answer per fact, on the structured table, Li et al.'s
setting), the start (``manifold``: Li et al.'s α₀ = β₀ = 0.01) and the definition of T (the midpoint
crossing of the relation and subject losses, or the first time the mean p(A_r), p(subject's answers) reach
1 − δ); every row of ``table.csv`` records them. ``factrecall sweep`` cannot
express this grid (here S and R move together) nor report the discrete runs' own learning times, hence
this study; its points are kept in the sweep's point store all the same.

Each row (:data:`ROWS`) fixes its geometry or optimizer, ε, learning rate and horizon ``t_max`` (a few times
its recall time: the sign flow is very stiff after recall). Flows carry a hard step guard
(``flow.max_steps``); a flow that hits it is reported with its status, not hidden. Discrete runs take
``t_max / lr`` steps. The sign and spectral flows use ε = 1e-4 and 1e-5, not compare's 1e-8 and 1e-7:
at those the flows stop on ``max_steps`` long before recall (docs/geometry.md, measured). From the constant
start (gradient entries ≤ 1e-6) these are not ε → 0 limits (T_S moves 4–16% from ε = 1e-4 to 1e-5); from
Li et al.'s start (``--start manifold``) the gradient is far above ε (on the balanced tables of ``study
dsweep`` the spectral times there are within 6e-6 of the limit). ``--eps-ladder`` runs the sign and
spectral rows at several ε and extrapolates each T to ε → 0 (:func:`limit_cells`, Richardson in ε with
the measured order and error; :mod:`analysis.richardson`).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dynamics import resolve_config, run_flow, run_training
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_csv

from ..loglog import power_law
from ..richardson import Limit, ladder_limit
from ..rundir import check_output_file
from ..stages import detect_stages, escape_rates, measured_times
from .runner import StudyPlan

# (S, R) with S/R = 1/8, 1/2, 2, 8, 32 at S·R = 128, and S/R = 64 at 128 × 2
PAIRS = ((4, 32), (8, 16), (16, 8), (32, 4), (64, 2), (128, 2))
EMBEDDINGS_POINT = "16x4x32"
# --quick: the gradient flow, the sign flow and signSGD at S/R = 1/8 and 4 (notebooks/geometry.ipynb)
QUICK_ROWS, QUICK_PAIRS = ("gf", "sign", "signsgd"), ((4, 32), (16, 4))


@dataclass(frozen=True)
class Setting:
    """What every cell of one table shares besides its row and (S, R): ``answers`` per relation (a number,
    or ``'S'``: one answer per fact), the ``start`` (``constant``: every parameter 1e-5; ``manifold``: Li et
    al.'s α₀ = β₀ = 0.01) and the definition of T (``time``: ``midpoint`` or ``p``, the first time p reaches
    1 − ``delta``; ``delta`` is None with ``midpoint``)."""

    answers: str = "4"
    start: str = "constant"
    time: str = "midpoint"
    delta: float | None = None

    def D(self, S: int) -> int:  # noqa: N802 (the paper's name)
        """The number of answers per relation at S subjects."""
        return S if self.answers == "S" else int(self.answers)

    def values(self) -> dict[str, Any]:
        """The setting as a point's values (kept in the point store and in every row of table.csv)."""
        return {"answers": self.answers, "start": self.start, "time": self.time, "delta": self.delta}


STARTS = {"constant": {}, "manifold": {"init.kind": "manifold", "init.alpha": 0.01, "init.beta": 0.01}}
TIMES = ("midpoint", "p")


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
# the rows whose ε --eps-ladder varies: the flows of a geometry with an ε
LADDER_ROWS = tuple(key for key, row in ROWS.items() if row.optimizer is None and row.eps > 0)


def task_config(S: int, R: int, row: Row, setting: Setting = Setting(), points: int = 160):
    """The config of one run: reduced model, N = 4 noise tokens, T = 8; a random table with D answers per
    relation (D = S: the structured table, one answer per fact), the setting's start (constant 1e-5, or
    Li et al.'s manifold start)."""
    one_per_fact = setting.answers == "S"
    overrides = {"task.subjects": S, "task.relations": R, "task.answers_per_relation": setting.D(S),
                 "task.facts": "structured" if one_per_fact else "random", "task.noise_tokens": 4,
                 "task.seq_len": 8, **STARTS[setting.start], "flow.t_max": row.t_max,
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
    fit = power_law(t[keep], loss[keep]) if keep.sum() >= 3 else None
    return fit[0] if fit else float("nan")


def learning_times(traj, setting: Setting) -> tuple[float, float]:
    """(T_R, T_S) of a trajectory by the setting's definition: the midpoint crossings of the relation and
    subject losses (``measured_times``), or the first times the mean p(A_r), p(subject's answers) reach
    1 − δ (:func:`analysis.geometry_dsweep.p_times`)."""
    if setting.time == "p":
        from ..geometry_dsweep import p_times

        return p_times(traj, 1 - setting.delta)
    times = measured_times(traj)
    return times["t_relation"], times["t_subject"]


LADDER_MARGIN = 10.0  # the ladder's step guard over the 1/ε growth of the steps (ladder_row)


def ladder_row(row: Row, eps: float | None) -> Row:
    """``row`` at ε = ``eps`` (None: unchanged), its step guard LADDER_MARGIN·max(1, row.eps/eps) times the
    row's: the field's stiffness grows as 1/ε from the constant start (its gradient is below ε), and the
    pace stop projects a stretch of small steps over the whole run (with the row's guard times row.eps/eps,
    the spectral flow at ε = 1e-6, 16 × 8, stopped at t = 2.84, long before its T_S; at ε = 1e-4, 128 × 2,
    at t = 2.15). The time limit (``FACTRECALL_TIME_LIMIT``) still bounds each flow."""
    if eps is None:
        return row
    return replace(row, eps=eps, max_steps=int(row.max_steps * LADDER_MARGIN * max(1.0, row.eps / eps)))


def run_point(S: int, R: int, key: str, setting: Setting = Setting(), points: int = 160,
              eps: float | None = None) -> dict:
    """One cell of the table: row ``key`` of :data:`ROWS` at S subjects, R relations, in ``setting``;
    ``eps``: the sign or spectral row at that ε instead of its own (:func:`ladder_row`)."""
    import torch

    torch.set_num_threads(1)
    row = ladder_row(ROWS[key], eps)
    config = task_config(S, R, row, setting, points)
    start = time.perf_counter()
    if row.optimizer is None:
        traj = run_flow(config)
    elif row.optimizer == "sgd":
        traj = run_training(config)
    else:
        from ..compare import run_full_batch

        traj = run_full_batch(config, row.optimizer, keep_states=False)
    seconds = time.perf_counter() - start
    report = detect_stages(traj)
    sigma_r, sigma_s = escape_rates(S, R, setting.D(S))
    t_R, t_S = learning_times(traj, setting)
    recall = max(t_R, t_S)
    return {"row": key, "S": S, "R": R, "S/R": S / R, **setting.values(), "D": setting.D(S), "eps": row.eps,
            "status": traj.info.status.value,
            "t_end": float(traj.t[-1]), "T_R": t_R, "T_S": t_S, "ratio": t_S / t_R,
            "plateau": "hallucination" in report.names, "stages": " > ".join(report.names),
            "decay": decay_exponent(np.asarray(traj.t), np.asarray(traj.loss), 2 * recall)
            if math.isfinite(recall) else float("nan"),
            "final_loss": float(traj.loss[-1]), "theory_ratio": sigma_r / sigma_s,
            "evals": traj.info.cost.function_evals, "seconds": seconds}


def embedding_config(S: int, R: int, dim: int, embeddings: str, setting: Setting = Setting(),
                     t_max: float = 10.0):
    """The config of :func:`embedding_point`: the sign row's flow on the embedded model of width ``dim``."""
    row = ROWS["sign"]
    return task_config(S, R, Row(row.name, t_max, "sign", row.eps), setting).override(
        {"model.kind": "embedded", "model.embeddings": embeddings, "model.dim": dim})


def embedding_point(S: int, R: int, dim: int, embeddings: str, setting: Setting = Setting(),
                    t_max: float = 10.0) -> dict:
    """The sign flow (ε = 1e-4) of the embedded model with ``embeddings`` (onehot | hadamard) at one point,
    in ``setting``: the sign flow is not invariant to a rotation of the embedding basis."""
    config = embedding_config(S, R, dim, embeddings, setting, t_max)
    start = time.perf_counter()
    traj = run_flow(config)
    t_R, t_S = learning_times(traj, setting)
    return {"embeddings": embeddings, "S": S, "R": R, "dim": dim, **setting.values(),
            "status": traj.info.status.value, "T_R": t_R, "T_S": t_S, "ratio": t_S / t_R,
            "plateau": "hallucination" in detect_stages(traj).names, "seconds": time.perf_counter() - start}


def slope(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log y against log x over the finite positive pairs; None if < 2."""
    fit = power_law(x, y)
    return fit[0] if fit else None


def row_slope(results: list[dict], key: str) -> float | None:
    """The log–log slope of T_S/T_R against S/R over one row's cells."""
    mine = [r for r in results if r["row"] == key]
    return slope([r["S/R"] for r in mine], [r["ratio"] for r in mine])


def plot(results: list[dict], path: Path, rows: dict[str, Row] | None = None) -> None:
    """T_S/T_R against S/R, log–log, one line per row, with the linearised GF theory dotted
    (:func:`analysis.study.plots.plot_geometry_table`), titled with the task the rows ran on."""
    from ..plotting import setting_line
    from .plots import plot_geometry_table

    slopes = {key: row_slope(results, key) for key in dict.fromkeys(r["row"] for r in results)}
    title, setting = "", setting_of(results[0]) if results else Setting()
    if results:
        config = task_config(int(results[0]["S"]), int(results[0]["R"]), ROWS["gf"], setting)
        pairs = ", ".join(dict.fromkeys(f"{int(r['S'])}×{int(r['R'])}" for r in results))
        table = ("structured S×R tables, one answer per fact" if setting.answers == "S"
                 else "random S×R tables")
        title = (f"{table} ({pairs}), D={setting.answers} N={config.task.noise_tokens} "
                 f"T={config.task.seq_len}\n{setting_line(config)}")
    plot_geometry_table(results, path, rows or ROWS, slopes, title, time_title(setting))


def time_title(setting: Setting) -> str:
    """What T_R and T_S are, for the figure's title."""
    if setting.time == "p":
        return (f"T_R, T_S: when the mean p(relation's answers), p(subject's answers) first reach "
                f"{1 - setting.delta:g}")
    return "T_R, T_S: when the relation-only and the subject-only loss cross halfway down"


def setting_of(values: dict[str, Any]) -> Setting:
    """The :class:`Setting` of a point's values or a stored row (a row without them: the defaults)."""
    delta = values.get("delta")
    return Setting(str(values.get("answers", "4")), values.get("start", "constant"),
                   values.get("time", "midpoint"),
                   None if delta is None or not math.isfinite(delta) else float(delta))


def chosen_setting(args: argparse.Namespace) -> Setting:
    """The setting of ``--answers-per-relation``, ``--start``, ``--time`` and ``--delta``; one ConfigError
    naming a value that is not allowed (``--delta`` is read only with ``--time p``)."""
    answers = str(args.answers_per_relation).strip()
    if answers != "S" and not (answers.isdigit() and int(answers) >= 2):
        raise ConfigError(f"--answers-per-relation={args.answers_per_relation!r}: allowed: an integer >= 2, "
                          "or S (one answer per fact)")
    if args.start not in STARTS:
        raise ConfigError(f"--start={args.start!r}: allowed: {', '.join(STARTS)}")
    if args.time not in TIMES:
        raise ConfigError(f"--time={args.time!r}: allowed: midpoint (the loss's midpoint crossing) or p "
                          "(the first time p reaches 1 - delta)")
    if args.time != "p" and args.delta is not None:
        raise ConfigError(f"--delta={args.delta!r}: has no effect with --time {args.time}; allowed: --delta "
                          "with --time p only")
    delta = 0.1 if args.delta is None else args.delta
    if args.time == "p" and not (0 < delta < 1):
        raise ConfigError(f"--delta={args.delta!r}: allowed: a number in (0, 1)")
    return Setting(str(int(answers)) if answers != "S" else "S", args.start, args.time,
                   delta if args.time == "p" else None)


def parse_sizes(flag: str, text: str, parts: int) -> list[tuple[int, ...]]:
    """``SxR,...`` (``parts`` = 2) or ``SxRxd`` (3) as tuples of positive integers; one ConfigError else."""
    try:
        sizes = [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != parts or min(s) < 1 for s in sizes):
        form = "SxR,SxR,..." if parts == 2 else "SxRxd, e.g. 16x4x32, or '' to skip"
        raise ConfigError(f"{flag}={text!r}: must look like {form} (positive integers)")
    return sizes


def chosen_rows(args: argparse.Namespace) -> list[str]:
    """The ``--rows`` asked for (default: every row, :data:`QUICK_ROWS` with ``--quick``); one ConfigError
    naming an unknown one."""
    if args.rows is None:
        return list(QUICK_ROWS if args.quick else ROWS)
    keys = [key.strip() for key in args.rows.split(",") if key.strip()]
    unknown = [key for key in keys if key not in ROWS]
    if unknown or not keys:
        what = unknown[0] if unknown else "no row"
        raise ConfigError(f"--rows={args.rows!r}: {what} is not a row; allowed: a comma-separated list of "
                          f"{', '.join(ROWS)}")
    return list(dict.fromkeys(keys))


def chosen_ladder(text: str | None, keys: list[str]) -> list[float]:
    """The ε of ``--eps-ladder`` (empty without it): at least three distinct numbers in (0, 1), and a sign or
    spectral row among ``keys`` to run them; one ConfigError else."""
    if text is None:
        return []
    try:
        ladder = sorted({float(v) for v in text.split(",") if v.strip()}, reverse=True)
    except ValueError:
        ladder = []
    if len(ladder) < 3 or not all(0 < e < 1 for e in ladder):
        raise ConfigError(f"--eps-ladder={text!r}: allowed: three or more distinct numbers in (0, 1), e.g. "
                          "1e-4,3e-5,1e-5,3e-6,1e-6 (a fit T0 + c·eps^k needs three)")
    if not set(keys) & set(LADDER_ROWS):
        raise ConfigError(f"--eps-ladder={text!r}: has no effect without a sign or spectral row; allowed: "
                          f"--rows with {' or '.join(LADDER_ROWS)}")
    return ladder


def plan(args: argparse.Namespace) -> StudyPlan:
    """Every row at every ``--pairs`` point (with ``--eps-ladder``: the sign and spectral rows at each of its
    ε), then the embedded sign flow's two points (``--quick``: three rows at two points, no embedded
    flow)."""
    keys = chosen_rows(args)
    setting = chosen_setting(args)
    shared = {key: [value] for key, value in setting.values().items()}
    pairs = (parse_sizes("--pairs", args.pairs, 2) if args.pairs is not None
             else QUICK_PAIRS if args.quick else PAIRS)
    ladder = chosen_ladder(args.eps_ladder, keys)
    once = [key for key in keys if not ladder or key not in LADDER_ROWS]
    laddered = [key for key in keys if ladder and key in LADDER_ROWS]
    grids: list[dict[str, list[Any]]] = [{"row": once, "S": [S], "R": [R], **shared}
                                         for S, R in pairs if once]
    grids += [{"row": laddered, "S": [S], "R": [R], "eps": ladder, **shared} for S, R in pairs if laddered]
    embedded = args.embeddings_point if args.embeddings_point is not None else (
        "" if args.quick else EMBEDDINGS_POINT)
    if embedded:
        (S, R, dim), = parse_sizes("--embeddings-point", embedded, 3)
        try:  # before any work: the width must hold the setting's answers (D = S: S·R of them)
            for embeddings in ("onehot", "hadamard"):
                embedding_config(S, R, dim, embeddings, setting)
        except ConfigError as error:
            raise ConfigError(f"--embeddings-point={embedded!r}: {error}") from None
        grids.append({"embeddings": ["onehot", "hadamard"], "S": [S], "R": [R], "dim": [dim], **shared})
    return StudyPlan(resolve_config("figure5"), grids)


def check(out: Path, args: argparse.Namespace) -> None:
    """Refuse a ``--figure`` that cannot take a .png (an existing .png is replaced)."""
    if args.figure is not None:
        check_output_file(args.figure, "a .png path (an existing .png is replaced)", "--figure", ".png",
                          replaceable=lambda path: True)


def compute(values: dict[str, Any]) -> dict[str, Any]:
    """One cell of the table (``row``, S, R) or one embedded sign flow (``embeddings``, S, R, dim)."""
    if "embeddings" in values:
        return embedding_point(values["S"], values["R"], values["dim"], values["embeddings"],
                               setting_of(values))
    cell = (values["S"], values["R"], values["row"], setting_of(values))
    return run_point(*cell, eps=values["eps"]) if "eps" in values else run_point(*cell)


def _nan(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row with its missing numbers (NaN, stored as null) back as NaN."""
    return {k: math.nan if v is None else v for k, v in row.items()}


def laddered(results: list[dict[str, Any]]) -> set[str]:
    """The rows whose cells ran at more than one ε (``--eps-ladder``)."""
    return {key for key in LADDER_ROWS if len({r.get("eps") for r in results if r["row"] == key}) > 1}


def _limit_note(what: str, limit: Limit) -> str:
    """Why one limit is not within 2% ('' when it is)."""
    if limit.within:
        return ""
    if limit.reason:
        return f"{what}: {limit.reason}"
    return (f"{what}: changes {limit.decade:.1%} over the last decade of ε, extrapolation error "
            f"{limit.error / abs(limit.value):.1%}")


def limit_cells(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One cell per laddered row and (S, R): T_R, T_S at ε → 0 by Richardson extrapolation
    (:func:`analysis.richardson.ladder_limit`; a run that stopped before T gives NaN and is left out), their
    errors, orders k, last-decade changes and the times at the smallest ε; ``within``: both converged or
    extrapolated within 2%, else ``note`` says why not."""
    cells = []
    for key in sorted(laddered(results)):
        for S, R in dict.fromkeys((r["S"], r["R"]) for r in results if r["row"] == key):
            mine = sorted((r for r in results if (r["row"], r["S"], r["R"]) == (key, S, R)),
                          key=lambda r: -r["eps"])
            eps = [r["eps"] for r in mine]
            # a run stopped early has its loss midpoint (not p's crossing) measured against a later loss
            usable = [r["status"] == "ok" or r.get("time") == "p" for r in mine]
            limits = {what: ladder_limit(eps, [r[what] if ok else math.nan for r, ok in zip(mine, usable,
                                                                                          strict=True)])
                      for what in ("T_R", "T_S")}
            t_R, t_S = limits["T_R"], limits["T_S"]
            ratio = t_S.value / t_R.value
            stopped = [f"ε={r['eps']:g} {r['status']} at t={r['t_end']:.3g}"
                       for r in mine if r["status"] != "ok"]
            notes = [n for n in (_limit_note(w, lim) for w, lim in limits.items()) if n]
            cell = {"row": f"{key}→0", "S": S, "R": R, "S/R": S / R,
                    **{k: mine[0].get(k) for k in ("answers", "start", "time", "delta", "D")},
                    "eps": " ".join(f"{e:g}" for e in eps), "ratio": ratio,
                    "ratio_err": abs(ratio) * (t_S.error / abs(t_S.value) + t_R.error / abs(t_R.value)),
                    "theory_ratio": mine[0]["theory_ratio"], "within": not notes,
                    "note": "; ".join(notes + stopped)}
            for what, lim in limits.items():
                cell |= {what: lim.value, f"{what}_err": lim.error, f"{what}_order": lim.order,
                         f"{what}_decade": lim.decade, f"{what}_smallest_eps": lim.last}
            cells.append(cell)
    return cells


def limit_lines(limits: list[dict[str, Any]]) -> list[str]:
    """The ε → 0 cells as text, then each limit row's slope."""
    lines = [f"{c['row']:10s} S={c['S']:3d} R={c['R']:2d} T_R={c['T_R']:.4g}±{c['T_R_err']:.1g} "
             f"(k {c['T_R_order']:.2f}) T_S={c['T_S']:.4g}±{c['T_S_err']:.1g} (k {c['T_S_order']:.2f}) "
             f"T_S/T_R={c['ratio']:.3g}±{c['ratio_err']:.1g} "
             + ("within 2%" if c["within"] else "NOT within 2%") + (f" ({c['note']})" if c["note"] else "")
             for c in limits]
    for key in dict.fromkeys(c["row"] for c in limits):
        k = row_slope(limits, key)
        lines.append(f"slope {key}: " + ("n/a" if k is None else f"{k:.2f}"))
    return lines


def series(results: list[dict[str, Any]], limits: list[dict[str, Any]]) -> tuple[list[dict], dict[str, Row]]:
    """What the slopes and the figure group by: every row's cells, a laddered row's per ε (``sign@1e-05``),
    and the ε → 0 cells; with the :class:`Row` each series is drawn as."""
    rows, cells, ladder = dict(ROWS), [], laddered(results)
    for r in results:
        key = f"{r['row']}@{r['eps']:g}" if r["row"] in ladder else r["row"]
        if key not in rows:
            base = ROWS[r["row"]]
            rows[key] = replace(base, name=f"{base.name.split(' (')[0]} (ε={r['eps']:g})", eps=r["eps"])
        cells.append({**r, "row": key})
    for key in dict.fromkeys(c["row"] for c in limits):
        base = ROWS[key.removesuffix("→0")]
        rows[key] = Row(f"{base.name.split(' (')[0]} (ε → 0, Richardson)", 0.0, base.geometry)
    return cells + limits, rows


def finish(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    """Write ``table.csv``, ``embeddings.csv``, ``ratio.png`` (and ``--figure``) and, with ``--eps-ladder``,
    ``limit.csv`` (:func:`limit_cells`); returns the table, the slopes, the limits and the embedded points
    as text."""
    results = [_nan(r) for r in rows if "row" in r]
    embedded = [_nan(r) for r in rows if "embeddings" in r]
    atomic_write_csv(out / "table.csv", results)
    limits = limit_cells(results)
    if limits:
        atomic_write_csv(out / "limit.csv", limits)
    shown, drawn_rows = series(results, limits)
    setting = setting_of(results[0] if results else embedded[0] if embedded else {})
    lines = [f"D={setting.answers} answers per relation, {setting.start} start; " + time_title(setting)]
    lines += [f"{r['row']:8s} S={r['S']:3d} R={r['R']:2d} T_R={r['T_R']:9.4g} T_S={r['T_S']:9.4g} "
              f"T_S/T_R={r['ratio']:7.3g} plateau={r['plateau']!s:5s} decay={r['decay']:6.2f} "
              f"{r['status']} t_end={r['t_end']:.4g} ({r['evals']} evals, {r['seconds']:.1f} s)"
              for r in shown if "plateau" in r]
    for key in dict.fromkeys(r["row"] for r in shown if "plateau" in r):
        k = row_slope(shown, key)
        lines.append(f"slope {key}: " + ("n/a" if k is None else f"{k:.2f}"))
    theory = sorted({(r["S/R"], r["theory_ratio"]) for r in results})
    k = slope(*map(list, zip(*theory, strict=True)))
    lines.append("slope theory σ_r/σ_s: " + ("n/a" if k is None else f"{k:.2f}"))
    lines += limit_lines(limits)
    if embedded:
        atomic_write_csv(out / "embeddings.csv", embedded)
    for e in embedded:
        lines.append(f"sign flow, embedded d={e['dim']}, {e['embeddings']:8s} S={e['S']} R={e['R']} "
                     f"T_R={e['T_R']:.4g} T_S={e['T_S']:.4g} T_S/T_R={e['ratio']:.3g} plateau={e['plateau']} "
                     f"{e['status']} ({e['seconds']:.1f} s)")
    plot(shown, out / "ratio.png", drawn_rows)
    if args.figure:
        plot(shown, Path(args.figure), drawn_rows)
    return "\n".join(lines)
