"""Running a sweep for phase diagrams: every grid point summarised by its stages, into a resumable
directory.

A sweep directory holds ``sweep.json`` (the base config and the grid), ``points/<id>.json`` (one file per
finished point, written atomically as it completes), ``results.csv`` (rebuilt atomically from the point
files after every completion) and, on request, ``trajectories/<id>/``. Rerunning the same command skips
finished points; a kill loses at most the points in flight. Points that differ only in ``init.*`` are
integrated together as one batched system (:func:`dynamics.run.run_flow_batch`); batches and single
points are spread over worker processes (``local``) or a ``dask.distributed`` cluster (``dask``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_csv, atomic_write_json, finite_or_none
from dynamics.run import batch_key, run_flow, run_flow_batch, run_training
from dynamics.trajectory import Trajectory

from ..rundir import check_output_dir, check_writable
from ..stages import INTERMEDIATE, detect_stages, measured_times, relation_first, theory_for
from .grid import grid_points, point_id

MAX_BATCH = 32
SWEEP_ALLOWED = "a new directory or one holding a sweep of the same base config (to resume or extend)"


@dataclass(frozen=True)
class SweepOptions:
    """What each point runs and keeps."""

    train: bool = False  # also the discrete run of train.* at every point
    keep_trajectories: bool = False
    batch: bool = True  # integrate init-only variations together


def summarise(values: dict[str, Any], config: Config, flow: Trajectory, train: Trajectory | None,
              seconds: float) -> dict[str, Any]:
    """One result row: grid values, status, stage times and levels, theory beside them, cost."""
    report = detect_stages(flow)
    theory = theory_for(config, flow.facts, flow.fact_weights)
    measured = measured_times(flow)
    S, R, D = config.task.subjects, config.task.relations, config.task.answers_per_relation
    transitions = report.transitions
    intermediate = [s for s in report.stages if s.name in INTERMEDIATE]
    plateau = intermediate[-1] if intermediate else None
    # the crossings are taken at the midpoint to the curve's last value: meaningless for a run cut short
    t_rel, t_sub = ((measured["t_relation"], measured["t_subject"]) if flow.info.ok
                    else (math.nan, math.nan))
    first = (None if not (math.isfinite(t_rel) and math.isfinite(t_sub))
             else "relation" if t_rel < t_sub else "subject")
    row: dict[str, Any] = dict(values)
    row.update({
        "status": flow.info.status.value, "status_time": flow.info.status_time,
        "stages": " > ".join(report.names), "intermediate": "+".join(report.intermediate) or "none",
        "t_first_transition": transitions[0]["t"] if transitions else None,
        "t_second_transition": transitions[1]["t"] if len(transitions) > 1 else None,
        "plateau": plateau.name if plateau else None,
        "plateau_level": plateau.level if plateau else None,
        "plateau_expected_level": plateau.expected_level if plateau else None,
        "plateau_length": (plateau.t_end - plateau.t_start) if plateau and plateau.t_end else None,
        "t_relation": t_rel, "t_subject": t_sub, "learned_first": first,
        "theory_applicable": theory["applicable"], "theory_t_R": theory.get("t_R"),
        "theory_t_S": theory.get("t_S"), "theory_plateau_length": (
            theory["t_S"] - theory["t_R"] if theory.get("t_R") and theory.get("t_S") else None),
        "theory_relation_first": relation_first(S, R, D),
        "final_loss": flow.final_loss, "function_evals": flow.info.cost.function_evals,
        "batch_size": flow.info.flow.batch_size, "wall_seconds": seconds,
    })
    if train is not None:
        row.update({"train_status": train.info.status.value, "train_final_loss": train.final_loss,
                    "train_stages": " > ".join(detect_stages(train).names)})
    return finite_or_none(row)


def run_group(base: dict[str, Any], points: list[dict[str, Any]], options: SweepOptions
              ) -> list[tuple[str, dict[str, Any], Trajectory | None]]:
    """Run one group of points (a batch, or a single point) in this process; returns (id, row, flow)."""
    base_config = Config.from_dict(base)
    configs = [base_config.override(p) for p in points]
    start = time.perf_counter()
    flows = run_flow_batch(configs) if len(configs) > 1 else [run_flow(configs[0])]
    elapsed = (time.perf_counter() - start) / len(configs)
    out = []
    for values, config, flow in zip(points, configs, flows, strict=True):
        train = run_training(config) if options.train else None
        row = summarise(values, config, flow, train, elapsed)
        out.append((point_id(values), row, flow if options.keep_trajectories else None))
    return out


def plan_groups(base: Config, points: list[dict[str, Any]], options: SweepOptions, workers: int
                ) -> list[list[dict[str, Any]]]:
    """Group points that differ only in ``init.*`` into batches (at most MAX_BATCH, and split so that
    every worker gets work); the rest run one by one."""
    if not options.batch:
        return [[p] for p in points]
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(batch_key(base.override(p)), []).append(p)
    planned = []
    for members in groups.values():
        size = min(MAX_BATCH, max(1, math.ceil(len(members) / max(workers, 1))))
        planned += [members[i:i + size] for i in range(0, len(members), size)]
    return planned


def _sort_value(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def _normalised(tree: Any) -> Any:
    """A manifest's base config with the defaults of keys added since it was written filled in (so that a
    new config key with a default does not orphan existing sweeps); as stored when it does not load."""
    try:
        return json.loads(json.dumps(Config.from_dict(tree).to_dict()))
    except (ConfigError, TypeError):
        return tree


class SweepDirectory:
    """The on-disk state of a sweep: manifest, finished points, results table."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.points_dir = self.path / "points"

    def claim(self, base: Config, grid: dict[str, list[Any]]) -> None:
        """Create the directory, or check that it holds a sweep of the same base config."""
        check_output_dir(self.path, SWEEP_ALLOWED)
        check_writable(self.path)
        manifest = self.path / "sweep.json"
        if manifest.is_file():
            held = json.loads(manifest.read_text())
            if _normalised(held.get("base")) != json.loads(json.dumps(base.to_dict())):
                raise ConfigError(f"--out={str(self.path)!r}: holds a sweep of a different base config; "
                                  f"allowed: {SWEEP_ALLOWED}")
        elif self.path.exists() and any(self.path.iterdir()):
            raise ConfigError(f"--out={str(self.path)!r}: is not empty and holds no sweep; allowed: "
                              f"{SWEEP_ALLOWED}")
        self.points_dir.mkdir(parents=True, exist_ok=True)
        grids = json.loads(manifest.read_text()).get("grids", []) if manifest.is_file() else []
        if grid not in grids:
            grids.append(grid)
        atomic_write_json(manifest, {"base": base.to_dict(), "grids": grids})

    def finished(self) -> set[str]:
        """Identifiers of the points already done."""
        return {p.stem for p in self.points_dir.glob("p*.json")}

    def save_point(self, pid: str, row: dict[str, Any], flow: Trajectory | None) -> None:
        """Write one finished point (and its trajectory when kept), atomically."""
        if flow is not None:
            flow.save(self.path / "trajectories" / pid)
        atomic_write_json(self.points_dir / f"{pid}.json", row, sort_keys=False)

    def rows(self) -> list[dict[str, Any]]:
        """Every finished point's row, in grid order (sorted by the grid values)."""
        rows = [json.loads(p.read_text()) for p in self.points_dir.glob("p*.json")]
        manifest = json.loads((self.path / "sweep.json").read_text())
        keys = [k for grid in manifest["grids"] for k in grid]
        return sorted(rows, key=lambda row: [_sort_value(row.get(k)) for k in keys])

    def write_results(self) -> None:
        """Rebuild ``results.csv`` from the point files (atomically)."""
        rows = self.rows()
        if rows:
            atomic_write_csv(self.path / "results.csv", rows)


def run_sweep(base: Config, grid: dict[str, list[Any]], out: Path, options: SweepOptions = SweepOptions(),
              workers: int = 1, backend: str = "local", scheduler: str | None = None,
              progress: bool = False, on_point: Callable[[str, dict[str, Any]], None] | None = None
              ) -> list[dict[str, Any]]:
    """Run every unfinished point of ``grid`` over ``base`` into ``out``; returns all rows (old and new)."""
    directory = SweepDirectory(out)
    directory.claim(base, grid)
    done = directory.finished()
    todo = [p for p in grid_points(grid) if point_id(p) not in done]
    groups = plan_groups(base, todo, options, workers)
    from tqdm.std import tqdm  # plain text on stderr, also in notebooks (no ipywidgets)

    bar = tqdm(total=len(todo), desc="sweep", unit="point", disable=not progress, leave=False)
    base_tree = base.to_dict()

    def finish(results: list[tuple[str, dict[str, Any], Trajectory | None]]) -> None:
        for pid, row, flow in results:
            directory.save_point(pid, row, flow)
            if on_point is not None:
                on_point(pid, row)
            bar.update(1)
        directory.write_results()

    try:
        if not groups:
            pass  # every point already finished: no worker or cluster to start
        elif backend == "dask":
            _run_dask(groups, base_tree, options, workers, scheduler, finish)
        elif workers > 1 and len(groups) > 1:
            _run_processes(groups, base_tree, options, workers, finish)
        else:
            for group in groups:
                finish(run_group(base_tree, group, options))
    finally:
        bar.close()
    directory.write_results()
    return directory.rows()


def _run_processes(groups, base_tree, options, workers, finish) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(run_group, base_tree, group, options) for group in groups]
        for future in as_completed(futures):
            finish(future.result())


def _run_dask(groups, base_tree, options, workers, scheduler, finish) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("--backend='dask': needs dask.distributed; install the project's 'cluster' extra "
                          "(pip install -c constraints.txt '.[cluster]')") from None
    if scheduler:
        client = Client(scheduler)
        cluster = None
    else:
        cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(run_group, base_tree, group, options, pure=False) for group in groups]
        for future in as_completed(futures):
            finish(future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
