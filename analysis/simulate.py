"""``simulate``: run the flow (and optionally the discrete run) of a config into a run directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamics.config import Config
from dynamics.run import run_flow, run_training
from dynamics.task import FactTask
from dynamics.trajectory import Trajectory

from .plots import plot_losses
from .report import analyse_trajectory
from .rundir import staged_run_dir


@dataclass
class SimulatedRun:
    """One run of a run directory: its trajectory, what ``stages.json`` holds, and the seconds the whole
    ``simulate`` call took."""

    trajectory: Trajectory
    stages: dict[str, Any]
    total_seconds: float


def simulate(config: Config, out: str | Path, train: bool = False, progress: bool = False
             ) -> dict[str, SimulatedRun]:
    """Integrate the gradient flow of ``config`` and write a run directory at ``out``.

    Without ``train``: ``out/{config.json, trajectory.npz, summary.json, stages.json, stages.npz,
    loss.png, facts.png, fractions.png}`` (stage analysis: :mod:`analysis.report`). With ``train``
    the discrete run of ``train.*`` starts from the same θ(0): ``out/flow/`` and ``out/train/`` each
    hold a run, and ``out/loss.png`` overlays both. Returns the runs by name (``flow``, ``train``).
    """
    out = Path(out)
    start = time.perf_counter()
    levels = FactTask(config.task).levels.as_dict()
    runs = {"flow": run_flow(config, progress=progress)}
    if train:
        runs["train"] = run_training(config, progress=progress)
    stages = {}
    with staged_run_dir(out, config) as staging:
        for name, traj in runs.items():
            target = staging / name if train else staging
            if train:
                (target / "config.json").parent.mkdir(parents=True, exist_ok=True)
                (target / "config.json").write_text((staging / "config.json").read_text())
            traj.save(target)
            stages[name] = analyse_trajectory(traj, config, target, title=_title(config, name, traj))
        if train:
            labels = {"flow": "flow", "train": f"{config.train.optimizer} lr={config.train.lr:g}"}
            plot_losses([(labels[n], t) for n, t in runs.items()], levels, staging / "loss.png",
                        title=_title(config, "flow vs " + config.train.optimizer, runs["flow"]),
                        stages=stages["flow"]["stages"])
    seconds = time.perf_counter() - start
    return {name: SimulatedRun(traj, stages[name], seconds) for name, traj in runs.items()}


def _title(config: Config, name: str, traj: Trajectory) -> str:
    t = config.task
    return (f"{name} [{traj.info.status}]: S={t.subjects} R={t.relations} "
            f"D={t.answers_per_relation} N={t.noise_tokens} T={t.seq_len} ({t.facts})\n"
            f"{config.model.kind} model, {config.model.attention} attention, {config.init.kind} init "
            f"α={config.init.scale:g}")
