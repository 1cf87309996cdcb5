"""Four experiments on data that change over time, in the reduced model (flow, and SGD beside it):

- ``zipf``: subjects trained with Zipf frequencies (s + 1)^−α, measured on uniform frequencies: when do
  10%, 50% and 90% of the facts become known, when does the hallucination plateau end, and how many facts
  are known at a fixed budget?
- ``warmup``: a warm-up on a share of the subjects, then all of them, against no warm-up at equal total time.
- ``finetune``: a run that knows its facts goes on with new subjects, the old ones replayed at a share ρ:
  how many old facts are forgotten and when, how fast the new ones are learned.
- ``unseen``: subjects held out of training: their loss against log|A| and log D over time.

Run all of them with ``factrecall study timeline --out DIR`` (``--quick`` for small sizes, ``--no-sgd`` for
flows only): each experiment is one point of the study's store (a rerun skips the finished ones),
``DIR/experiments.json`` holds every number and ``DIR/data_over_time.png`` the figure.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from dynamics import resolve_config, run_flow, run_training
from dynamics.config import Config
from dynamics.io import atomic_write_json
from dynamics.run import setup
from dynamics.start import continued_start
from dynamics.trajectory import Trajectory

from ..stages import detect_stages
from ..timeline import fact_events, group_curves, groups_of
from .plots import plot_experiments
from .runner import StudyPlan

# The base task: 64 subjects × 8 relations × 8 answers, random table (4,096-answer facts), from the
# random64 preset; QUICK is a smaller one for smoke runs and the notebook.
FULL = {"preset": "random64", "set": {}}
QUICK = {"preset": "random64", "set": {"task.subjects": 16, "task.relations": 4, "task.noise_tokens": 24}}


def base_config(quick: bool, **overrides: Any) -> Config:
    """The experiments' base config (FULL or QUICK) with ``overrides`` (dotted keys)."""
    spec = QUICK if quick else FULL
    return resolve_config(spec["preset"], None, {**spec["set"], **overrides})


def recalled_fraction(traj: Trajectory, subjects: np.ndarray | None = None) -> np.ndarray:
    """(K,) the fraction of facts (of ``subjects``, default all trained ones) recalled (p(a*) > 1/2),
    relations weighted by their frequencies."""
    index = groups_of(traj).get("trained", np.arange(traj.facts.shape[0])) if subjects is None else subjects
    curves = group_curves(traj, {"these": index})
    return curves.recalled["these"]


def first_time(t: np.ndarray, values: np.ndarray, level: float) -> float:
    """The first recorded time at which ``values`` reaches ``level`` (NaN if never)."""
    hit = np.nonzero(values >= level)[0]
    return float(t[hit[0]]) if len(hit) else math.nan


def value_at(t: np.ndarray, values: np.ndarray, when: float) -> float:
    """``values`` at the last recorded time ≤ ``when``."""
    return float(values[max(0, int(np.searchsorted(t, when, side="right")) - 1)])


def plateau_end(traj: Trajectory) -> float:
    """The end of the hallucination stage the detector finds (NaN where there is none)."""
    for stage in detect_stages(traj).stages:
        if stage.name == "hallucination" and stage.t_end is not None:
            return float(stage.t_end)
    return math.nan


def _learning_row(traj: Trajectory, budget: float) -> dict[str, float]:
    fraction = recalled_fraction(traj)
    return {"t_10": first_time(traj.t, fraction, 0.1), "t_50": first_time(traj.t, fraction, 0.5),
            "t_90": first_time(traj.t, fraction, 0.9), "plateau_end": plateau_end(traj),
            "recalled_at_budget": value_at(traj.t, fraction, budget), "status": traj.info.status.value}


def _sgd(config: Config, t_max: float, lr: float) -> Config:
    return config.override({"train.optimizer": "sgd", "train.lr": lr, "train.steps": int(round(t_max / lr))})


def zipf_experiment(quick: bool, exponents: tuple[float, ...], sgd_lr: float | None = None) -> dict[str, Any]:
    """Training Zipf exponent α against learning times, measured on uniform subject frequencies."""
    config = base_config(quick, **{"flow.t_max": 40000.0 if not quick else 8000.0})
    uniform = run_flow(config)
    budget = 2.0 * first_time(uniform.t, recalled_fraction(uniform), 0.9)
    rows = []
    for alpha in exponents:
        point = config.override({"data.zipf": alpha})
        row = {"alpha": alpha, "flow": _learning_row(run_flow(point) if alpha else uniform, budget)}
        if sgd_lr is not None:
            row["sgd"] = _learning_row(run_training(_sgd(point, budget, sgd_lr)), budget)
        rows.append(row)
    return {"budget": budget, "rows": rows}


def warmup_experiment(quick: bool, shares: tuple[float, ...], budgets: tuple[float, ...],
                      sgd_lr: float | None = None) -> dict[str, Any]:
    """A warm-up on a share f of the subjects for the first half of a budget, then all of them, against no
    warm-up at the same budget; budgets are multiples of the time at which the run without warm-up knows
    half of its facts."""
    config = base_config(quick, **{"flow.t_max": 40000.0 if not quick else 8000.0})
    plain = run_flow(config)
    t_50 = first_time(plain.t, recalled_fraction(plain), 0.5)
    rows = []
    for multiple in budgets:
        budget = multiple * t_50
        for share in (1.0, *shares):
            warmup = {"data.warmup_subjects": share, "data.warmup_time": budget / 2 if share < 1 else 0.0}
            point = config.override({"flow.t_max": budget, **warmup})
            flow = run_flow(point)
            row = {"budget": budget, "budget_over_t50": multiple, "share": share,
                   "flow_recalled": float(recalled_fraction(flow)[-1]), "flow_final_loss": flow.final_loss}
            if sgd_lr is not None:
                train = run_training(_sgd(point, budget, sgd_lr))
                row.update({"sgd_recalled": float(recalled_fraction(train)[-1]),
                            "sgd_final_loss": train.final_loss})
            rows.append(row)
    return {"t_50_without_warmup": t_50, "rows": rows}


def _finetune_summary(traj: Trajectory) -> tuple[dict[str, Any], tuple]:
    """Old facts forgotten and known, new facts learned, of a run started from another; and its curves."""
    groups = groups_of(traj)
    recalled = group_curves(traj, {g: groups[g] for g in ("old", "new")}).recalled  # one classification
    old_recalled, new_recalled = recalled["old"], recalled["new"]
    forgotten = fact_events(traj).forgotten[groups["old"]]
    summary = {"old_recalled_min": float(old_recalled.min()),
               "t_old_recalled_min": float(traj.t[old_recalled.argmin()]),
               "old_recalled_end": float(old_recalled[-1]),
               "old_forgotten": int(np.isfinite(forgotten).sum()),
               "old_facts": int(forgotten.size), "median_forgotten": _median(forgotten),
               "new_t_50": first_time(traj.t, new_recalled, 0.5), "new_recalled_end": float(new_recalled[-1])}
    return summary, (traj.t, old_recalled, new_recalled)


def finetune_experiment(quick: bool, new_share: float, replays: tuple[float, ...], duration: float,
                        sgd_lr: float | None = None) -> dict[str, Any]:
    """Train the base task until its facts are known, then add ⌈new_share·S⌉ subjects and train them with the
    old ones replayed at each share ρ (and, at ρ = 0, with the scores a frozen). With ``sgd_lr``, SGD from the
    same state beside each flow with unfrozen scores."""
    old = base_config(quick, **{"flow.t_max": 40000.0 if not quick else 8000.0})
    first = run_flow(old)
    S_old = old.task.subjects
    S_new = S_old + math.ceil(new_share * S_old)
    runs = {f"replay {replay:g}": old.override({"task.subjects": S_new, "data.replay": replay,
                                                "flow.t_max": duration}) for replay in replays}
    runs["replay 0, scores frozen"] = old.override({"task.subjects": S_new, "data.freeze": "a",
                                                    "flow.t_max": duration})
    out: dict[str, Any] = {"old_subjects": S_old, "new_subjects": S_new - S_old,
                           "old_recalled_before": float(recalled_fraction(first)[-1]), "runs": {}}
    curves = {}
    for name, config in runs.items():
        model = setup(config)[1]
        traj = run_flow(config, start=continued_start(config, model, old, first.final_state))
        out["runs"][name], curves[name] = _finetune_summary(traj)
        if sgd_lr is not None and not config.data.frozen:
            sgd = run_training(_sgd(config, duration, sgd_lr),
                               start=continued_start(config, model, old, first.final_state))
            out["runs"][name]["sgd"] = _finetune_summary(sgd)[0]
    return {"summary": out, "curves": curves}


def unseen_experiment(quick: bool, holdout_share: float, sgd_lr: float | None = None) -> dict[str, Any]:
    """Hold out a share of the subjects; their loss and hallucinations over time (flow, and SGD beside it
    with ``sgd_lr``)."""
    config = base_config(quick, **{"flow.t_max": 40000.0 if not quick else 8000.0})
    config = config.override({"data.holdout": max(1, int(round(holdout_share * config.task.subjects)))})
    traj = run_flow(config)
    summary, curves = _unseen_summary(config, traj)
    if sgd_lr is not None:
        summary["sgd"] = _unseen_summary(config, run_training(_sgd(config, config.flow.t_max, sgd_lr)))[0]
    return {"summary": summary, "curves": curves}


def _unseen_summary(config: Config, traj: Trajectory) -> tuple[dict[str, Any], tuple]:
    groups = groups_of(traj)
    curves = group_curves(traj, groups)
    loss = curves.loss["unseen"]
    halluc = curves.hallucinating["unseen"]
    D = config.task.answers_per_relation
    summary = {"held_out": int(len(groups["unseen"])), "log_answers": math.log(config.task.relations * D),
               "log_D": math.log(D), "H(A|R)": traj.levels["H(A|R)"], "loss_start": float(loss[0]),
               "loss_max": float(loss.max()), "t_loss_max": float(traj.t[loss.argmax()]),
               "loss_min": float(loss.min()), "t_loss_min": float(traj.t[loss.argmin()]),
               "loss_end": float(loss[-1]), "hallucinating_end": float(halluc[-1]),
               "t_trained_50": first_time(traj.t, curves.recalled["trained"], 0.5),
               "recalled_unseen_end": float(curves.recalled["unseen"][-1])}
    return summary, (traj.t, loss, curves.loss["trained"], halluc)


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) else None


EXPERIMENTS = ("zipf", "warmup", "finetune", "unseen")
SGD_LR = 1.0  # SGD beside each flow (none with --no-sgd)


def run_experiment(name: str, quick: bool, sgd_lr: float | None = SGD_LR) -> dict[str, Any]:
    """One experiment (:data:`EXPERIMENTS`) at the FULL (or QUICK) size, as the study runs it."""
    duration = 20000.0 if not quick else 4000.0
    if name == "zipf":
        return zipf_experiment(quick, (0.0, 0.25, 0.5, 0.75, 1.0, 1.25), sgd_lr)
    if name == "warmup":
        return warmup_experiment(quick, (0.25, 0.5), (0.6, 0.8, 1.0), sgd_lr)
    if name == "finetune":
        return finetune_experiment(quick, 0.25, (0.0, 0.1, 0.3), duration, sgd_lr)
    return unseen_experiment(quick, 0.2, sgd_lr)


def plan(args: argparse.Namespace) -> StudyPlan:
    """The four experiments, each one point, with or without SGD beside the flows."""
    return StudyPlan(base_config(args.quick), [{"experiment": list(EXPERIMENTS), "quick": [bool(args.quick)],
                                                "sgd_lr": [None if args.no_sgd else SGD_LR]}])


def compute(values: dict[str, Any]) -> dict[str, Any]:
    """One experiment's point: its values and its result (curves as lists)."""
    result = run_experiment(values["experiment"], values["quick"], values["sgd_lr"])
    return {**values, "result": result}


def _arrays(curves: Any) -> Any:
    """Stored curves (lists, null for NaN) back as float arrays, in their nesting."""
    if isinstance(curves, dict):
        return {k: _arrays(v) for k, v in curves.items()}
    if isinstance(curves, (list, tuple)) and curves and isinstance(curves[0], (list, tuple)):
        return tuple(_arrays(c) for c in curves)
    return np.array([math.nan if v is None else v for v in curves], dtype=float)


def finish(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    """Write ``experiments.json`` (every number, no curves) and ``data_over_time.png``."""
    results = {row["experiment"]: row["result"] for row in rows}
    for name in ("finetune", "unseen"):
        results[name] = {**results[name], "curves": _arrays(results[name]["curves"])}
    atomic_write_json(out / "experiments.json", _plain(results))
    plot_experiments(results, out / "data_over_time.png", base_config(args.quick),
                     None if args.no_sgd else SGD_LR)
    return ""


def _plain(results: dict[str, Any]) -> dict[str, Any]:
    """The results less their curves (what ``experiments.json`` holds)."""
    return {"zipf": results["zipf"], "warmup": results["warmup"], "finetune": results["finetune"]["summary"],
            "unseen": results["unseen"]["summary"]}
