"""Stage analysis of a run directory: ``stages.json``, ``stages.npz`` and the stage figures."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.config import Config
from dynamics.io import atomic_write_json
from dynamics.rundir import STAGE_FILES, STAGES_SCHEMA, run_directories, write_arrays
from dynamics.trajectory import Trajectory, load_run

from ..plotting import draw_or_skip, run_title
from .detect import FactStages, detect_fact_stages, detect_stages
from .plots import plot_fact_fractions, plot_fact_heatmap, plot_stage_losses
from .theory import compare_times, measured_times, theory_for

FIGURES = tuple(name for name in STAGE_FILES if name.endswith(".png"))


def analyse_trajectory(traj: Trajectory, config: Config, directory: str | Path, title: str = ""
                       ) -> dict[str, Any]:
    """Detect aggregate and per-fact stages of ``traj``, set them against the theory, and write
    ``stages.json``, ``stages.npz``, ``loss.png`` (stages shaded), ``facts.png`` and ``fractions.png``
    into ``directory``. Returns what ``stages.json`` holds."""
    directory = Path(directory)  # a str too, as every path of the API
    report = detect_stages(traj)
    facts = detect_fact_stages(traj)
    theory = theory_for(config, traj.facts, traj.fact_weights, traj.info)
    measured = measured_times(traj)
    payload = report.to_dict()
    payload["theory"] = {"prediction": theory, "measured": measured, "ratio": compare_times(theory, measured)}
    payload["facts"] = _fact_summary(facts)
    payload["run_status"] = "ok" if traj.info is None else traj.info.status.value
    groups = fine_tune_groups(traj)
    if groups:  # old and new facts start apart: the aggregate alone has no stage to show before the end
        payload["groups"] = {name: {"subjects": [int(index[0]), int(index[-1]) + 1],
                                    **detect_stages(group_trajectory(traj, index)).to_dict()}
                             for name, index in groups.items()}
    atomic_write_json(directory / "stages.json", payload)
    write_arrays(directory / "stages.npz", facts.arrays(), STAGES_SCHEMA)
    stage_dicts = payload["stages"]
    draw_or_skip(directory / "loss.png", plot_stage_losses, traj, stage_dicts,
                 theory if theory.get("applicable") else None, directory / "loss.png", title=title)
    draw_or_skip(directory / "facts.png", plot_fact_heatmap, traj, facts.learning_time,
                 directory / "facts.png", title=f"p(a*) of every fact, by learning time\n{title}" if title
                 else "p(a*) of every fact, by learning time")
    draw_or_skip(directory / "fractions.png", plot_fact_fractions, facts.t, facts.fraction_uninformed,
                 facts.fraction_hallucinating, facts.fraction_recalled, directory / "fractions.png",
                 title=f"facts uninformed / hallucinating / recalled\n{title}" if title
                 else "facts uninformed / hallucinating / recalled", stages=stage_dicts)
    return payload


def fine_tune_groups(traj: Trajectory) -> dict[str, np.ndarray]:
    """The trained subjects of a run started from another run's state, by group: ``old`` (below the old
    run's subject count) and ``new``, each left out when empty; {} for any other run."""
    old = None if traj.info is None else traj.info.old_subjects
    if old is None:
        return {}
    subjects = np.arange(traj.facts.shape[0])
    trained = traj.fact_weights.sum(1) > 0
    groups = {"old": subjects[(subjects < old) & trained], "new": subjects[(subjects >= old) & trained]}
    return {name: index for name, index in groups.items() if len(index)}


def group_trajectory(traj: Trajectory, subjects: np.ndarray) -> Trajectory:
    """The record of the facts of ``subjects`` alone, as if they were the whole table: per-fact arrays
    restricted to them, ``loss``, ``relation_loss`` and ``subject_loss`` recomputed as their
    frequency-weighted means (as the record computes them over every fact), so that the reference levels
    are those of their own table. Attention and norms stay the run's."""
    subjects = np.asarray(subjects)
    if len(subjects) and (np.diff(subjects) == 1).all():  # a range (as groups are): views, not copies
        subjects = slice(int(subjects[0]), int(subjects[-1]) + 1)
    weights = traj.fact_weights[subjects]
    if not weights.sum() > 0:
        raise ValueError("group_trajectory: the subjects have no weight in the record (never trained)")
    weights = weights / weights.sum()
    per_fact = {name: getattr(traj, name)[:, subjects]
                for name in ("fact_loss", "p_correct", "p_relation", "p_subject", "argmax_class")}

    def mean(values: np.ndarray) -> np.ndarray:
        return (weights * values).sum((-2, -1))

    with np.errstate(divide="ignore"):  # p = 0 is an infinite loss, as in the record
        return dataclasses.replace(traj, facts=traj.facts[subjects], fact_weights=weights, **per_fact,
                                   loss=mean(per_fact["fact_loss"]),
                                   relation_loss=mean(-np.log(per_fact["p_relation"])),
                                   subject_loss=mean(-np.log(per_fact["p_subject"])), states=None)


def _fact_summary(facts: FactStages) -> dict[str, Any]:
    peak = int(np.argmax(facts.fraction_hallucinating))
    return {"max_fraction_hallucinating": float(facts.fraction_hallucinating[peak]),
            "t_max_fraction_hallucinating": float(facts.t[peak]),
            "final_fraction_recalled": float(facts.fraction_recalled[-1]),
            "median_learning_time": _nanmedian(facts.learning_time),
            "median_recall_time": _nanmedian(facts.recall_time),
            "never_recalled": int(np.isnan(facts.recall_time).sum())}


def _nanmedian(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) else None


def format_stage_table(name: str, payload: dict[str, Any]) -> str:
    """A plain-text table of the stages of one run, with the theory's times beside the measured ones."""
    groups = payload.get("groups")
    if groups:  # a fine-tune: the old and the new facts each have their own stages
        lines = [f"{name}: all facts: {payload['summary']}; started from another run, so per group of facts:"]
        for group, report in groups.items():
            lo, hi = report["subjects"]
            lines.append(f"  {group} facts (subjects {lo}..{hi - 1}): {report['summary']}")
            lines += _stage_rows(report["stages"], "    ")
    else:
        lines = [f"{name}: {payload['summary']}", *_stage_rows(payload["stages"], "  ")]
    theory = payload["theory"]
    prediction, measured, ratio = theory["prediction"], theory["measured"], theory["ratio"]
    if prediction.get("applicable"):
        for key, label in (("R", "relation"), ("S", "subject")):
            got = measured.get(f"t_{label}")
            rat = ratio.get(f"{label}_ratio")
            lines.append(f"  theory t_{key} = {prediction[f't_{key}']:.4g}, measured {label} time = "
                         f"{_fmt(got)}, ratio {_fmt(rat)}")
    else:
        reason = prediction.get("reason") or "; ".join(prediction.get("reasons", []))
        lines.append(f"  theory: not applicable ({reason})")
    facts = payload["facts"]
    lines.append(f"  facts: at most {facts['max_fraction_hallucinating']:.0%} hallucinating "
                 f"(t = {facts['t_max_fraction_hallucinating']:.4g}); {facts['final_fraction_recalled']:.0%} "
                 f"recalled at the end")
    return "\n".join(lines)


def _stage_rows(stages: list[dict[str, Any]], indent: str) -> list[str]:
    """The rows of a stage table; a first stage that starts after t = 0 has a row before it saying that the
    loss sat on no reference level until then."""
    if not stages:
        return []
    rows = [f"{indent}{'stage':14s} {'t_start':>10s} {'t_end':>10s} {'level':>8s} {'expected':>9s}  "
            "level name"]
    if stages[0]["t_start"] > 0:
        rows.append(f"{indent}{'-':14s} {0:>10.4g} {stages[0]['t_start']:>10.4g} {'-':>8s} {'-':>9s}  "
                    "no reference level")
    for stage in stages:
        end = "running" if stage["t_end"] is None else f"{stage['t_end']:.4g}"
        rows.append(f"{indent}{stage['name']:14s} {stage['t_start']:>10.4g} {end:>10s} "
                    f"{stage['level']:>8.4f} {stage['expected_level']:>9.4f}  {stage['level_name']}")
    return rows


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}"


def analyse_run_directory(path: str | Path) -> list[tuple[str, Path, Trajectory, dict[str, Any]]]:
    """Analyse every trajectory of a run directory in place; returns (name, its directory, the trajectory,
    the stages.json payload) per run. Every record is read and checked (:func:`load_run`) before anything
    is written."""
    path = Path(path)
    loaded = [(directory, *load_run(directory)) for directory in run_directories(path)]
    results = []
    for directory, config, traj in loaded:
        name = directory.name if directory != path else "run"
        title = run_title(config, traj.info.kind if name == "run" else name, traj)
        payload = analyse_trajectory(traj, config, directory, title=title)
        results.append((name, directory, traj, payload))
    return results
