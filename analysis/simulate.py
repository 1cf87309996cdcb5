"""``factrecall simulate``: run the flow (and optionally the discrete run) of a config into a run directory,
analyse its stages and print them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamics.budget import check_sizes
from dynamics.config import Config
from dynamics.config.loading import refuse_unread
from dynamics.errors import ConfigError
from dynamics.run import integrate_run, prepare_run, train_run
from dynamics.rundir import config_tree
from dynamics.start import source_config
from dynamics.trajectory import Trajectory

from .arguments import config_from_args, refuse_unread_settings
from .plotting import draw_or_skip, run_titles, trained_what
from .rundir import check_target, default_run_dir, staged_run_dir
from .stages import analyse_trajectory, format_stage_table, plot_losses, predicted_times
from .timeline import analyse_timeline, format_timeline, has_timeline


@dataclass
class SimulatedRun:
    """One run of a run directory: its trajectory, what ``stages.json`` holds, and the seconds the whole
    ``simulate`` call took."""

    trajectory: Trajectory
    stages: dict[str, Any] | None  # None: the stage analysis failed (the trajectory is saved all the same)
    total_seconds: float
    timeline: dict[str, Any] | None = None  # timeline.json of a run whose data changed over time


def simulate(config: Config, out: str | Path, train: bool = False, progress: bool = False
             ) -> dict[str, SimulatedRun]:
    """Integrate the gradient flow of ``config`` and write a run directory at ``out``.

    Without ``train``: ``out/{config.json, trajectory.npz, summary.json, stages.json, stages.npz,
    loss.png, facts.png, fractions.png}`` (stage analysis: :mod:`analysis.stages.report`), and
    ``timeline.{json,npz,png}`` when the data change over time or subjects are held out
    (:mod:`analysis.timeline`). With ``train``
    the discrete run of ``train.*`` starts from the same θ(0): ``out/flow/`` and ``out/train/`` each
    hold a run, and ``out/loss.png`` overlays both. Returns the runs by name (``flow``, ``train``).

    ``out`` may hold a run of the same config and kind, which is replaced; anything else there is refused
    before any work (:func:`~analysis.rundir.check_target`). A relative ``init.from_run`` is recorded
    as an absolute path (:func:`absolute_start`). A ``train.*`` value that the run does not read (any
    without ``train``; one ``train.optimizer`` does not read) and that is neither the default, a preset's
    nor the source run's is refused (:func:`~dynamics.config.loading.refuse_unread`).
    """
    out, config = Path(out), absolute_start(config)
    refuse_unread(config, train=train, source=source_config(config))
    check_target(out, config, train=train)
    start = time.perf_counter()
    built = prepare_run(config, train=train)  # refused before any work; one build for the flow and train
    levels = built.task.levels.as_dict()
    runs = {"flow": integrate_run(built, progress=progress)}
    if train:
        runs["train"] = train_run(built, progress=progress)
    stages, timelines = {}, {}
    trained = trained_what(config) if train else ""
    titles = run_titles(config, {**runs, **({f"flow vs {trained}": runs["flow"]} if train else {})})
    tree = config_tree(config)  # config.json's tree, made once for every config.json the run writes
    with staged_run_dir(out, config, train=train, tree=tree) as staging:
        for name, traj in runs.items():
            target = staging / name if train else staging
            write = traj.saving(target, config, built.task.facts, tree)  # the task's table as built
            with ThreadPoolExecutor(1) as writer:
                # the record's deflation runs without the GIL: beside the stage analysis, not after it
                written = writer.submit(write)
                stages[name] = _analyse(name, traj, config, target, title=titles[name])
                written.result()
            if has_timeline(traj):
                timelines[name] = analyse_timeline(traj, target, title=titles[name])
        if train:
            theory = ((stages["flow"] or {}).get("theory") or {}).get("prediction") or {}
            overlay = [("flow", runs["flow"]), (trained, runs["train"])]
            draw_or_skip(staging / "loss.png", plot_losses, overlay, levels, staging / "loss.png",
                         title=titles[f"flow vs {trained}"],
                         stages=(stages["flow"] or {}).get("stages"),
                         predicted=predicted_times(theory if theory.get("applicable") else None))
    seconds = time.perf_counter() - start
    return {name: SimulatedRun(traj, stages[name], seconds, timelines.get(name))
            for name, traj in runs.items()}


def _analyse(name: str, traj: Trajectory, config: Config, target: Path, title: str) -> dict[str, Any] | None:
    """The stage analysis of a saved trajectory; one that fails is a printed note, never the loss of the
    run (``factrecall stages`` can redo it)."""
    try:
        return analyse_trajectory(traj, config, target, title=title)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"factrecall: note: stage analysis of the {name} failed ({reason}); trajectory kept",
              file=sys.stderr)
        return None


def _start_from_run(args: argparse.Namespace) -> None:
    """``--init-from RUN_DIR``: the config is RUN_DIR's, then ``--set``, with ``init.from_run=RUN_DIR``."""
    if args.config or args.preset:
        raise ConfigError(f"--init-from={args.init_from!r}: the config comes from that run (then --set); "
                          "allowed: --set overrides, not --config or --preset")
    config_file = Path(args.init_from) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"--init-from={args.init_from!r}: not a run directory (no config.json); allowed: a "
                          "directory written by factrecall simulate")
    args.config = str(config_file)
    args.overrides = [*args.overrides, f"init.from_run={args.init_from}"]  # made absolute: absolute_start


def absolute_start(config: Config) -> Config:
    """``config`` with a relative ``init.from_run`` made absolute (from the working directory), so that the
    run's ``config.json`` starts from the same run wherever it is used again (``--config``)."""
    if config.init.from_run and not os.path.isabs(config.init.from_run):
        return config.override({"init.from_run": os.path.abspath(config.init.from_run)})
    return config


def command(args: argparse.Namespace) -> int:
    """Simulate the config of ``args`` into ``--out`` (default ``runs/<preset>-<config hash>``); print each
    run's status, cost and stage table."""
    if getattr(args, "init_from", None):
        _start_from_run(args)
    config = absolute_start(config_from_args(args))
    refuse_unread_settings(args, config)
    name = ("finetune" if getattr(args, "init_from", None)
            else args.preset or (Path(args.config).stem if args.config else "figure5"))
    out = Path(args.out) if args.out else default_run_dir(config, name, train=args.train)
    check_sizes(config, train=args.train)  # before any work; simulate checks the flow's steps before it runs
    if check_target(out, config, train=args.train):
        print(f"factrecall: note: {out} holds a run of the same config and kind; it is replaced",
              file=sys.stderr)
    runs = simulate(config, out, train=args.train, progress=not args.quiet)
    for label, run in runs.items():
        traj, info = run.trajectory, run.trajectory.info
        cost = f"{info.cost.function_evals} " + ("function evals" if label == "flow" else "gradient evals")
        print(f"{label:5s}  status={info.status}  final loss={info.final_loss:.4g}  "
              f"t_end={traj.t[-1]:.4g}  {cost}  {info.cost.wall_seconds:.2f} s")
        if not info.ok:
            print(f"       {info.message}")
        print(format_stage_table(label, run.stages) if run.stages is not None
              else f"{label}: stages not analysed")
        if run.timeline is not None:
            print(format_timeline(label, run.timeline))
    print(f"wrote {out}")
    return 0
