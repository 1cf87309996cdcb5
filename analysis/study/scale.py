"""Escape times and the hallucination plateau against the number of facts (S at fixed R, R at fixed S).

For every size S × R: a random table, D = 8 answers per relation, N = S + R noise tokens, constant init
α = 1e-5, the exact population gradient flow (cvode, rtol 1e-7, atol 1e-13, the curvature blocks as its
Newton preconditioner) to 2.5 times the predicted subject escape. Measured: the relation and
subject escape times (the midpoint crossings of the relation-only and subject-only losses), the
hallucination plateau's detected start and end (the stage detector's transitions) and its length; beside
them the first-order theory's

    t_R = log(1/α)/σ_r,   σ_r = (1/R)·sqrt(1/D − 1/(RD)),
    t_S = log(1/α)/σ_s,   σ_s = (1/S)·sqrt(1/R − 1/(RD))

(:func:`analysis.stages.escape_rates`; derived for a balanced table, which a random table is on average).
The plateau's end is fitted as c·(S·R)^β by least squares in log–log, one fit per series.

Run as ``factrecall study scale --out DIR [--quick] [--import RUN_DIR ...]``: each finished size is kept
at once in the point store of ``DIR`` (a rerun skips it; ``--import`` takes a size from a ``factrecall
simulate`` run of exactly its config), then ``DIR/scale.json`` (rows and fits), ``DIR/scale.csv`` and the
figure ``DIR/scale.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from dynamics.config import Config, resolve_config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_csv, atomic_write_json, finite_or_none
from dynamics.run import run_flow
from dynamics.trajectory import Trajectory

from ..loglog import power_law
from ..plotting import figure, plain_log_ticks, save
from ..stages import detect_stages, escape_rates, measured_times
from ..sweep import SweepDirectory, point_id
from .runner import StudyPlan

ALPHA = 1e-5  # init.scale
ANSWERS = 8  # D
# S at fixed R (R = 5: about the 6 attributes per individual of Zucchet et al. 2025; R = 50: through the
# 10^5-fact run of docs/performance.md), both to 10^6 facts, and R at fixed S = 100 to 10^5 facts (beyond,
# the value rows grow as R·|A| = R²·D: 8·10^8 parameters at 10^6 facts). The hallucination plateau needs
# σ_r > σ_s, i.e. S·sqrt(R − 1) > R·sqrt(D − 1): at R = 50 that is S > 19, so that series starts at 2,000.
SERIES = {"subjects, R = 5": ((20, 5), (200, 5), (2000, 5), (20000, 5), (200000, 5)),
          "subjects, R = 50": ((40, 50), (200, 50), (2000, 50), (20000, 50)),
          "relations, S = 100": ((100, 2), (100, 20), (100, 200), (100, 1000))}
QUICK_SERIES = {"subjects, R = 4": ((12, 4), (48, 4), (192, 4)),
                "relations, S = 48": ((48, 2), (48, 4), (48, 8))}
# The record grid: the default 256 points up to 10^5 facts, 96 beyond. The 96 date from when the per-fact
# record was held in memory (about 41 bytes per fact and point: 10.5 GB at 10^6 facts and 256 points); it
# is now written to disk as the flow goes (a 10^6-fact run at 256 points peaks at 3.5 GB), and the study
# keeps 96 so that its shipped rows and the runs made for it (--import) keep their config.
RECORD_POINTS = 256
LARGE_RECORD_POINTS = 96
LARGE_RECORD_FACTS = 10**5
# The full study as run for docs/scale.md (SERIES, 10^2–10^6 facts), shipped with the package.
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "scale.json"
# Zucchet et al. 2025 (arXiv 2503.21676): plateau end ≈ 0.43·N^0.81 steps, N individuals, 4k–256k
ZUCCHET = {"prefactor": 0.43, "exponent": 0.81}


def theory_times(subjects: int, relations: int, answers: int = ANSWERS, alpha: float = ALPHA
                 ) -> tuple[float, float]:
    """The first-order escape times (t_R, t_S) = log(1/α)/σ (module docstring); inf where σ = 0."""
    sigma_r, sigma_s = escape_rates(subjects, relations, answers)
    scale = math.log(1.0 / alpha)
    return (scale / sigma_r if sigma_r > 0 else math.inf, scale / sigma_s if sigma_s > 0 else math.inf)


def record_points(facts: int) -> int:
    """Points of the record grid at this many facts: 256 (the default) up to 10^5 facts, 96 beyond."""
    return RECORD_POINTS if facts <= LARGE_RECORD_FACTS else LARGE_RECORD_POINTS


def study_config(subjects: int, relations: int, answers: int = ANSWERS) -> Config:
    """The flow of one size: random table, N = S + R noise tokens, cvode (rtol 1e-7, atol 1e-13) with the
    model's curvature blocks as its Newton preconditioner and J·v by differences (the cheapest end to end
    at 10^5 and 10^6 facts, as cheap at 10^4: docs/performance.md) to 2.5 t_S rounded to an integer,
    :func:`record_points` grid points: at 2000 × 50 exactly the 10^5-fact ``factrecall simulate`` command
    of docs/performance.md."""
    _, t_s = theory_times(subjects, relations, answers)
    return resolve_config("figure5", overrides={
        "task.subjects": subjects, "task.relations": relations, "task.answers_per_relation": answers,
        "task.noise_tokens": subjects + relations, "task.facts": "random", "init.scale": ALPHA,
        "flow.t_max": float(round(2.5 * t_s)), "flow.method": "cvode", "flow.rtol": 1e-7, "flow.atol": 1e-13,
        "flow.newton_preconditioner": "blocks",
        "flow.points": record_points(subjects * relations)})


def measure(subjects: int, relations: int, answers: int = ANSWERS) -> dict[str, Any]:
    """One size's row: measured escape times, the plateau, the theory's times, the run's cost."""
    config = study_config(subjects, relations, answers)
    start = time.perf_counter()
    traj = run_flow(config)
    return summarise(traj, config, time.perf_counter() - start)


def summarise(traj: Trajectory, config: Config, seconds: float | None) -> dict[str, Any]:
    """The row of a flow of :func:`study_config` (``seconds``: what running it took, when known)."""
    subjects, relations = config.task.subjects, config.task.relations
    answers = config.task.answers_per_relation
    report = detect_stages(traj)
    plateau = next((s for s in report.stages if s.name == "hallucination"), None)
    measured = measured_times(traj)
    t_r, t_s = theory_times(subjects, relations, answers)
    info = traj.info
    return finite_or_none({
        "S": subjects, "R": relations, "D": answers, "facts": subjects * relations,
        "params": info.num_params, "status": info.status.value, "stages": " > ".join(report.names),
        "t_relation": measured["t_relation"], "t_subject": measured["t_subject"],
        "plateau_start": plateau.t_start if plateau else None,
        "plateau_end": plateau.t_end if plateau else None,
        "plateau_length": (plateau.t_end - plateau.t_start) if plateau and plateau.t_end else None,
        "plateau_level": plateau.level if plateau else None,
        "theory_t_R": t_r, "theory_t_S": t_s, "theory_plateau_length": t_s - t_r,
        "final_loss": traj.final_loss, "function_evals": info.cost.function_evals,
        "flow_seconds": info.cost.wall_seconds, "seconds": seconds, "t_max": config.flow.t_max})


IMPORT_ALLOWED = "a factrecall simulate run of the scale study's config of one size"


def imported_config(directory: Path) -> Config:
    """The config of a run ``--import`` names, refused (one ConfigError) unless it is exactly
    :func:`study_config` of its size."""
    try:
        config = Config.from_dict(json.loads((Path(directory) / "config.json").read_text()))
    except (OSError, ValueError) as err:
        raise ConfigError(f"--import={str(directory)!r}: holds no readable run config ({err}); allowed: "
                          f"{IMPORT_ALLOWED}") from None
    task = config.task
    if config.to_dict() != study_config(task.subjects, task.relations, task.answers_per_relation).to_dict():
        raise ConfigError(f"--import={str(directory)!r}: not the scale study's config for {task.subjects} x "
                          f"{task.relations}; allowed: {IMPORT_ALLOWED}")
    return config


def import_run(store: SweepDirectory, directory: Path) -> dict[str, Any]:
    """Take the row of one size from a ``factrecall simulate`` run directory whose config is exactly
    :func:`study_config` of its size (e.g. the 10^5-fact run of docs/performance.md) instead of running it
    again; kept in the point store like a measured one."""
    config = imported_config(directory)
    row = summarise(Trajectory.load(directory), config, None)
    row["imported_from"] = str(directory)
    store.save_point(point_id({"S": config.task.subjects, "R": config.task.relations}), row)
    return row


def shipped_study() -> dict[str, Any]:
    """What ``scale.json`` holds for the full study (:data:`SERIES`) as run for docs/scale.md: its rows and
    fits, without running it again (the 10^6-fact sizes take about 18 minutes each)."""
    return json.loads(SHIPPED.read_text())


def _fit(x: list[float], y: list[float]) -> dict[str, float] | None:
    """y ≈ c·x^β (:func:`analysis.loglog.power_law`) as the study records it; None without a fit."""
    fit = power_law(x, y)
    return None if fit is None else {"exponent": fit[0], "prefactor": fit[1], "points": fit[2]}


def fits(rows: list[dict[str, Any]], series: dict[str, tuple[tuple[int, int], ...]]) -> dict[str, Any]:
    """Per series: power-law fits against the number of facts of the measured plateau end, subject and
    relation escapes, and of the theory's t_S and t_R."""
    out = {}
    for name, sizes in series.items():
        chosen = [r for r in rows if (r["S"], r["R"]) in set(sizes)]
        facts = [r["facts"] for r in chosen]
        out[name] = {column: _fit(facts, [r[column] for r in chosen])
                     for column in ("plateau_end", "t_subject", "t_relation", "theory_t_S", "theory_t_R")}
    return out


def series_grids(series: dict[str, tuple[tuple[int, int], ...]]) -> list[dict[str, list[int]]]:
    """Each series as a grid of the point store: S over its sizes at one R, or R at one S."""
    grids = []
    for name, sizes in series.items():
        grid = {"S": list(dict.fromkeys(s for s, _ in sizes)), "R": list(dict.fromkeys(r for _, r in sizes))}
        if len(grid["S"]) * len(grid["R"]) != len(sizes):
            raise ValueError(f"series {name!r}: its sizes must vary S at one R or R at one S")
        grids.append(grid)
    return grids


def chosen_series(args: argparse.Namespace) -> dict[str, tuple[tuple[int, int], ...]]:
    """The series of a run: :data:`QUICK_SERIES` with ``--quick``, else :data:`SERIES`."""
    return QUICK_SERIES if args.quick else SERIES


def plan(args: argparse.Namespace) -> StudyPlan:
    """The study's points: every size of the chosen series, run in order of the number of facts."""
    return StudyPlan(resolve_config("figure5"), series_grids(chosen_series(args)),
                     order=lambda p: (p["S"] * p["R"], p["S"]))


def check(out: Path, args: argparse.Namespace) -> None:
    """Refuse an ``--import`` that is not a run of the study's config (before any work)."""
    for directory in args.imports:
        imported_config(Path(directory))


def prepare(out: Path, args: argparse.Namespace, store: SweepDirectory) -> None:
    """Keep the sizes of the ``--import`` runs in the point store."""
    for directory in args.imports:
        import_run(store, Path(directory))


def compute(values: dict[str, Any]) -> dict[str, Any]:
    """One size's row (:func:`measure`)."""
    return measure(values["S"], values["R"])


def finish(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    """Write ``scale.json`` (rows, series, fits), ``scale.csv`` and ``scale.png``; returns the table."""
    series = chosen_series(args)
    rows = sorted(rows, key=lambda r: (r["facts"], r["S"]))
    result = {"rows": rows, "series": {k: [list(s) for s in v] for k, v in series.items()},
              "fits": fits(rows, series), "zucchet": ZUCCHET}
    atomic_write_json(out / "scale.json", result)
    atomic_write_csv(out / "scale.csv", rows)
    plot_study(result, out / "scale.png")
    return format_rows(result)


def plot_study(result: dict[str, Any], path: Path) -> Path:
    """Two panels (S at fixed R, R at fixed S): measured escape times and plateau end (points) and the
    theory's t_R, t_S (dashed) against the number of facts, log–log, with the fitted exponent."""
    fig = figure(5.2 * len(result["series"]), 4.2)
    axes = fig.subplots(1, len(result["series"]), squeeze=False)[0]
    rows = result["rows"]
    for ax, (name, sizes) in zip(axes, result["series"].items(), strict=True):
        chosen = sorted((r for r in rows if [r["S"], r["R"]] in sizes), key=lambda r: r["facts"])
        facts = [r["facts"] for r in chosen]
        curves = (("t_relation", "o", "relation escape"), ("t_subject", "s", "subject escape"),
                  ("plateau_end", "^", "plateau end (detected)"))
        for column, style, label in curves:
            values = [r[column] if r[column] is not None else math.nan for r in chosen]
            # the plateau ends at the subject escape: hollow and larger, so that neither hides the other
            end = {"mfc": "none", "ms": 10, "ls": ":", "zorder": 1} if column == "plateau_end" else {}
            ax.plot(facts, values, marker=style, label=label, **{"ls": "-", **end})
        ax.plot(facts, [r["theory_t_R"] for r in chosen], "--", color="C0", label="theory t_R")
        ax.plot(facts, [r["theory_t_S"] for r in chosen], "--", color="C1", label="theory t_S")
        fit = result["fits"][name]["plateau_end"]
        title = name + (f": plateau end ∝ facts^{fit['exponent']:.2f}" if fit else "")
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if facts and max(facts) < 100 * min(facts):
            # over a decade or two the default labels minor ticks (3×10², 4×10²), which ran into each other
            plain_log_ticks(ax.xaxis)
        ax.set_xlabel("facts S·R")
        ax.set_ylabel("flow time")
        ax.legend(fontsize=8)
    fig.suptitle("Escape times against the number of facts, gradient flow:\nrandom S×R tables, D = 8, "
                 "N = S + R, reduced model, linear attention,\nconstant init of scale 1e-5, to 2.5 t_S",
                 fontsize=10)
    save(fig, path)
    return path


def format_rows(result: dict[str, Any]) -> str:
    """Markdown: one line per size, then the fitted exponents."""
    lines = ["| facts | S × R | t_relation | theory t_R | t_subject | theory t_S | plateau start – end | "
             "evals | flow seconds |", "|---|---|---|---|---|---|---|---|---|"]

    def g(x: Any) -> str:
        return "—" if x is None else f"{x:.4g}"

    for r in sorted(result["rows"], key=lambda r: (r["facts"], r["S"])):
        plateau = ("none" if r["plateau_start"] is None
                   else f"{g(r['plateau_start'])} – {g(r['plateau_end'])}")
        lines.append(f"| {r['facts']:,} | {r['S']} × {r['R']} | {g(r['t_relation'])} | "
                     f"{g(r['theory_t_R'])} | {g(r['t_subject'])} | {g(r['theory_t_S'])} | "
                     f"{plateau} | {r['function_evals']} | {r['flow_seconds']:.0f} |")
    lines += ["", "| series | plateau end | t_subject | t_relation | theory t_S | theory t_R |",
              "|---|---|---|---|---|---|"]
    for name, fit in result["fits"].items():
        cells = [f"{fit[c]['exponent']:.3f}" if fit[c] else "—"
                 for c in ("plateau_end", "t_subject", "t_relation", "theory_t_S", "theory_t_R")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
