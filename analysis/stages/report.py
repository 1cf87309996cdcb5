"""Stage analysis of a run directory: ``stages.json``, ``stages.npz`` and the stage figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write, atomic_write_json
from dynamics.trajectory import Trajectory

from .detect import FactStages, detect_fact_stages, detect_stages
from .plots import plot_fact_fractions, plot_fact_heatmap, plot_stage_losses
from .theory import compare_times, measured_times, theory_for

FIGURES = ("loss.png", "facts.png", "fractions.png")


def analyse_trajectory(traj: Trajectory, config: Config, directory: Path, title: str = "") -> dict[str, Any]:
    """Detect aggregate and per-fact stages of ``traj``, set them against the theory, and write
    ``stages.json``, ``stages.npz``, ``loss.png`` (stages shaded), ``facts.png`` and ``fractions.png``
    into ``directory``. Returns what ``stages.json`` holds."""
    report = detect_stages(traj)
    facts = detect_fact_stages(traj)
    theory = theory_for(config, traj.facts, traj.fact_weights)
    measured = measured_times(traj)
    payload = report.to_dict()
    payload["theory"] = {"prediction": theory, "measured": measured, "ratio": compare_times(theory, measured)}
    payload["facts"] = _fact_summary(facts)
    payload["run_status"] = "ok" if traj.info is None else traj.info.status.value
    atomic_write_json(directory / "stages.json", payload)
    atomic_write(directory / "stages.npz", lambda f: np.savez_compressed(f, **facts.arrays()))
    stage_dicts = payload["stages"]
    plot_stage_losses(traj, stage_dicts, theory if theory.get("applicable") else None,
                      directory / "loss.png", title=title)
    plot_fact_heatmap(traj, facts.learning_time, directory / "facts.png")
    plot_fact_fractions(facts.t, facts.fraction_uninformed, facts.fraction_hallucinating,
                        facts.fraction_recalled, directory / "fractions.png")
    return payload


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


def run_directories(path: Path) -> list[Path]:
    """The directories under ``path`` that hold a trajectory: ``path`` itself, or its ``flow/`` and
    ``train/`` when it is a ``simulate --train`` run. Raises ConfigError when there is none."""
    if (path / "trajectory.npz").is_file():
        return [path]
    found = [path / name for name in ("flow", "train") if (path / name / "trajectory.npz").is_file()]
    if not found:
        raise ConfigError(f"RUN_DIR={str(path)!r}: holds no trajectory.npz (nor flow/ or train/ with one); "
                          "allowed: a run directory written by factrecall simulate")
    return found


def format_stage_table(name: str, payload: dict[str, Any]) -> str:
    """A plain-text table of the stages of one run, with the theory's times beside the measured ones."""
    lines = [f"{name}: {payload['summary']}",
             f"  {'stage':14s} {'t_start':>10s} {'t_end':>10s} {'level':>8s} {'expected':>9s}  level name"]
    for stage in payload["stages"]:
        end = "running" if stage["t_end"] is None else f"{stage['t_end']:.4g}"
        lines.append(f"  {stage['name']:14s} {stage['t_start']:>10.4g} {end:>10s} {stage['level']:>8.4f} "
                     f"{stage['expected_level']:>9.4f}  {stage['level_name']}")
    theory = payload["theory"]
    prediction, measured, ratio = theory["prediction"], theory["measured"], theory["ratio"]
    if prediction.get("applicable"):
        for key, label in (("R", "relation"), ("S", "subject")):
            got = measured.get(f"t_{label}")
            rat = ratio.get(f"{label}_ratio")
            lines.append(f"  theory t_{key} = {prediction[f't_{key}']:.4g}, measured {label} time = "
                         f"{_fmt(got)}, ratio {_fmt(rat)}")
    else:
        lines.append("  theory: not applicable (" + "; ".join(prediction.get("reasons", [])) + ")")
    facts = payload["facts"]
    lines.append(f"  facts: at most {facts['max_fraction_hallucinating']:.0%} hallucinating "
                 f"(t = {facts['t_max_fraction_hallucinating']:.4g}); {facts['final_fraction_recalled']:.0%} "
                 f"recalled at the end")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}"


def analyse_run_directory(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Analyse every trajectory of a run directory in place; returns (name, stages.json payload) pairs."""
    results = []
    for directory in run_directories(path):
        config = Config.from_dict(_read_json(directory / "config.json"))
        traj = Trajectory.load(directory)
        name = directory.name if directory != path else "run"
        results.append((name, analyse_trajectory(traj, config, directory, title=f"{path.name}: {name}")))
    return results


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"RUN_DIR={str(path.parent)!r}: has no config.json; allowed: a run directory "
                          "written by factrecall simulate")
    return json.loads(path.read_text())
