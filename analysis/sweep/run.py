"""Running a sweep for phase diagrams: every grid point summarised by its stages, into a resumable
directory.

A sweep directory holds ``sweep.json`` (the base config and the grids), ``points/<id>.json`` (one file per
point, written atomically as it completes), ``results.csv`` (rewritten atomically after every completion from
the rows the sweep holds: the point files are read once, when it starts) and, on request,
``trajectories/<id>/`` (run directories: ``config.json``, ``trajectory.npz``, ``summary.json``). Rerunning the
same command skips finished points; a kill loses at most the points in flight. A point that raises (an invalid
combination of values, a device that is not there) is recorded with status ``error`` and its message, and
tried again by the next rerun.

Points that differ only in ``init.*`` are integrated together as one batched system
(:func:`dynamics.run.run_flow_batch`), unless their flows cannot be batched (an implicit method, a schedule
of phases, a start from another run: :func:`dynamics.run.batch_refusal`), which run as single points. The
batches are fixed by the grid (grid order, at most
:data:`MAX_BATCH` points, balanced), never by the worker count or by which points are left: a batch with a
missing member is recomputed whole, so a resumed sweep's numbers equal an uninterrupted one's exactly.
Batches and single points are spread over worker processes (``local``) or a ``dask.distributed`` cluster
(``dask``); local workers exit when the sweep's process dies.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamics.config import Config
from dynamics.errors import ConfigError, RunError
from dynamics.io import finite_or_none
from dynamics.run import batch_key, batch_refusal, prepare_run, run_flow, run_flow_batch, train_run
from dynamics.trajectory import Trajectory

from ..stages import INTERMEDIATE, detect_stages, measured_times, relation_first, theory_applies, theory_for
from .directory import ERROR, SweepDirectory
from .grid import grid_points, point_id

MAX_BATCH = 32
MESSAGE_CHARS = 300
CONNECT_SECONDS = 10  # how long to try to reach a dask scheduler

# what a point may need: its row (flow, summary, and the discrete run with --train), the discrete run's
# columns added to an existing row, its flow's trajectory kept
ROW, TRAIN, TRAJECTORY = "row", "train", "trajectory"


@dataclass(frozen=True)
class SweepOptions:
    """What each point runs and keeps."""

    train: bool = False  # also the discrete run of train.* at every point
    keep_trajectories: bool = False
    batch: bool = True  # integrate init-only variations together


@dataclass(frozen=True)
class Job:
    """One unit of work: a batch fixed by the grid (its points in grid order) and, for each member that
    needs anything, what it needs (a subset of ROW, TRAIN, TRAJECTORY)."""

    points: list[dict[str, Any]]
    wanted: dict[str, frozenset[str]]


@dataclass
class PointResult:
    """What a job gives for one point: a new row (replacing any old one), or discrete-run columns to add
    to the existing row; and the flow when its trajectory is to be kept."""

    pid: str
    values: dict[str, Any]
    row: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    flow: Trajectory | None = field(default=None, repr=False)


def describe(err: BaseException) -> str:
    """An exception as one line of at most MESSAGE_CHARS characters: ``Type: message``."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def error_row(values: dict[str, Any], err: BaseException) -> dict[str, Any]:
    """The row of a point that raised: its grid values, status ``error`` and the exception."""
    return {**values, "status": ERROR, "status_time": None, "message": describe(err)}


def train_columns(train: Trajectory | BaseException) -> dict[str, Any]:
    """The discrete run's columns of a row (status, final loss, stage names; or the error)."""
    if isinstance(train, BaseException):
        return {"train_status": ERROR, "train_final_loss": None, "train_stages": None,
                "train_message": describe(train)}
    return finite_or_none({"train_status": train.info.status.value, "train_final_loss": train.final_loss,
                           "train_stages": " > ".join(detect_stages(train).names)})


def summarise(values: dict[str, Any], config: Config, flow: Trajectory, train: Trajectory | None,
              seconds: float) -> dict[str, Any]:
    """One result row: grid values, status, stage times and levels, theory beside them, cost."""
    report = detect_stages(flow)
    theory = theory_for(config, flow.facts, flow.fact_weights, flow.info)
    size = config.task.subjects, config.task.relations, config.task.answers_per_relation
    measured = measured_times(flow)
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
        "message": None if flow.info.ok else flow.info.message or None,
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
        # the boundary needs the run to be one the rates describe, not the table's balance (S < D is not)
        "theory_relation_first": relation_first(*size) if theory_applies(
            config, flow.facts, flow.fact_weights, flow.info, table=False)[0] else None,
        "theory_reason": theory["reason"] or None,
        "final_loss": flow.final_loss, "function_evals": flow.info.cost.function_evals,
        "batch_size": flow.info.flow.batch_size, "wall_seconds": seconds,
    })
    if train is not None:
        row.update(train_columns(train))
    return finite_or_none(row)


# --------------------------------------------------------------------------------------------------
# Work: one job (a batch, or a single point) in this process
# --------------------------------------------------------------------------------------------------

def _configs(base: Config, points: list[dict[str, Any]]) -> dict[str, Config | ConfigError]:
    configs: dict[str, Config | ConfigError] = {}
    for values in points:
        try:
            configs[point_id(values)] = base.override(values)
        except ConfigError as err:  # a combination of values that is not a valid config
            configs[point_id(values)] = err
    return configs


def _single_flow(config: Config) -> Trajectory | Exception:
    try:
        return run_flow(config)
    except Exception as err:  # recorded as the point's status `error` with the message
        return err


def _flows(configs: dict[str, Config | ConfigError]) -> tuple[dict[str, Trajectory | Exception], float]:
    """The flows of the valid configs (one batched solve when there are several), each a trajectory or the
    exception it raised; and the wall seconds per point. A batch that raises is run point by point, so that
    one failing member does not take the others with it."""
    valid = {pid: c for pid, c in configs.items() if isinstance(c, Config)}
    start = time.perf_counter()
    if len(valid) > 1:
        try:
            flows: dict[str, Trajectory | Exception] = dict(
                zip(valid, run_flow_batch(list(valid.values())), strict=True))
        except Exception:
            flows = {pid: _single_flow(c) for pid, c in valid.items()}
    else:
        flows = {pid: _single_flow(c) for pid, c in valid.items()}
    return flows, (time.perf_counter() - start) / max(len(valid), 1)


def _train(config: Config) -> Trajectory | Exception:
    # not run_training: a sweep's base keeps train.* keys that a later rerun with --train reads (the sweep
    # command refuses those set on its own command line that no point reads)
    try:
        return train_run(prepare_run(config, train=True, flow=False))
    except Exception as err:  # recorded as train_status `error` with the message
        return err


def run_group(base: dict[str, Any], points: list[dict[str, Any]], options: SweepOptions,
              wanted: dict[str, frozenset[str]] | None = None) -> list[PointResult]:
    """Run one job in this process: the flow of the whole batch ``points`` (when a member needs its row
    or trajectory) and the discrete runs asked for. ``wanted``: what each member needs (default: every
    member its row). Returns one result per member that needs anything, in grid order."""
    if wanted is None:
        wanted = {point_id(p): frozenset({ROW}) for p in points}
    configs = _configs(Config.from_dict(base), points)
    need_flow = any(ROW in need or TRAJECTORY in need for need in wanted.values())
    flows, seconds = _flows(configs) if need_flow else ({}, 0.0)
    results = []
    for values in points:
        pid = point_id(values)
        need = wanted.get(pid, frozenset())
        if need:
            results.append(_point_result(values, configs[pid], flows.get(pid), need, options, seconds))
    return results


def _point_result(values: dict[str, Any], config: Config | ConfigError, flow: Trajectory | Exception | None,
                  need: frozenset[str], options: SweepOptions, seconds: float) -> PointResult:
    pid = point_id(values)
    if isinstance(config, ConfigError):
        return PointResult(pid, values, row=error_row(values, config))
    train = _train(config) if options.train and (ROW in need or TRAIN in need) else None
    kept = flow if isinstance(flow, Trajectory) and (TRAJECTORY in need or
                                                     (ROW in need and options.keep_trajectories)) else None
    if ROW not in need:
        return PointResult(pid, values, train=train_columns(train) if train is not None else None, flow=kept)
    if isinstance(flow, Exception) or flow is None:
        row = error_row(values, flow or RunError("no flow was computed"))
        if train is not None:
            row.update(train_columns(train))
        return PointResult(pid, values, row=row)
    try:
        row = summarise(values, config, flow, train, seconds)
    except Exception as err:  # a trajectory the analysis cannot read: the point is an error, not a crash
        row = error_row(values, err)
        kept = None
    return PointResult(pid, values, row=row, flow=kept)


# --------------------------------------------------------------------------------------------------
# Planning: batches fixed by the grid, and what each point still needs
# --------------------------------------------------------------------------------------------------

def _batch_key(base: Config, values: dict[str, Any]) -> str:
    try:
        config = base.override(values)
        refused = batch_refusal(config) is not None  # e.g. an implicit method: one flow at a time
    except ConfigError:  # an invalid point runs (and is recorded as an error) on its own
        return "invalid:" + point_id(values)
    return "single:" + point_id(values) if refused else batch_key(config)


def plan_groups(base: Config, points: list[dict[str, Any]], options: SweepOptions
                ) -> list[list[dict[str, Any]]]:
    """The batches of a grid: ``points`` (the whole grid, in grid order) that differ only in ``init.*``,
    cut into the fewest chunks of at most MAX_BATCH, of balanced sizes; the rest one by one. A function
    of the grid and the base config only, so that resuming or another worker count never re-batches."""
    if not options.batch:
        return [[p] for p in points]
    groups: dict[str, list[dict[str, Any]]] = {}
    for values in points:
        groups.setdefault(_batch_key(base, values), []).append(values)
    planned = []
    for members in groups.values():
        size = math.ceil(len(members) / math.ceil(len(members) / MAX_BATCH))
        planned += [members[i:i + size] for i in range(0, len(members), size)]
    return planned


def _needs(row: dict[str, Any] | None, has_trajectory: bool, options: SweepOptions) -> frozenset[str]:
    """What a point needs given its valid row (None: none or damaged) and whether its trajectory is kept."""
    if row is None or row.get("status") == ERROR:
        return frozenset({ROW})
    need = set()
    if options.train and row.get("train_status") in (None, ERROR):
        need.add(TRAIN)
    if options.keep_trajectories and not has_trajectory:
        need.add(TRAJECTORY)
    return frozenset(need)


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------

def note(text: str) -> None:
    """One line on stderr about what a sweep does beyond the plain run."""
    print(f"factrecall: note: {text}", file=sys.stderr)


def counted(count: int) -> str:
    """``1 point``, ``2 points``."""
    return f"{count} point" + ("" if count == 1 else "s")


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def plan_jobs(directory: SweepDirectory, base: Config, grid: dict[str, list[Any]], options: SweepOptions,
              report: Callable[[str], None] = note) -> list[Job]:
    """The jobs of a run: every batch of the grid with a member that needs anything; one line each on
    damaged point files (recomputed), points that failed before (retried) and results that earlier runs
    did not ask for (computed now)."""
    rows, damaged = directory.scan(grid)
    points = grid_points(grid)
    ids = {point_id(p) for p in points}
    ours = {name for name in damaged if name[:-len(".json")] in ids}
    if ours:
        listed = _listed(f"{name}: {damaged[name]}" for name in ours)
        report(f"{len(ours)} damaged point file{'' if len(ours) == 1 else 's'} recomputed ({listed})")
    if set(damaged) - ours:
        others = set(damaged) - ours
        report(f"{len(others)} damaged point file{'' if len(others) == 1 else 's'} of no point of this grid "
               f"left out of results.csv ({_listed(others)})")
    needs = {pid: _needs(rows.get(pid), directory.has_trajectory(pid), options) for pid in ids}
    _report_needs(needs, rows, report)
    jobs = []
    for group in plan_groups(base, points, options):
        wanted = {point_id(p): needs[point_id(p)] for p in group if needs[point_id(p)]}
        if wanted:
            jobs.append(Job(group, wanted))
    return jobs


def _report_needs(needs: dict[str, frozenset[str]], rows: dict[str, dict[str, Any]],
                  report: Callable[[str], None]) -> None:
    retried = sum(ROW in n and rows.get(pid, {}).get("status") == ERROR for pid, n in needs.items())
    if retried:
        report(f"{counted(retried)} that failed with an error before tried again")
    train = sum(TRAIN in n for n in needs.values())
    if train:
        report(f"{counted(train)} finished without --train: their discrete runs are computed now")
    kept = sum(TRAJECTORY in n for n in needs.values())
    if kept:
        report(f"{counted(kept)} finished without --keep-trajectories: their flows are recomputed (with "
               "their batches) to keep the trajectories")


def run_sweep(base: Config, grid: dict[str, list[Any]], out: Path, options: SweepOptions = SweepOptions(),
              workers: int = 1, backend: str = "local", scheduler: str | None = None,
              progress: bool = False, on_point: Callable[[str, dict[str, Any]], None] | None = None,
              report: Callable[[str], None] = note) -> list[dict[str, Any]]:
    """Run every unfinished point of ``grid`` over ``base`` into ``out``; returns all rows (old and new).
    ``report`` receives the one-line notes (damaged point files, retried points, results added). Grid
    values may be numpy scalars or arrays (``np.geomspace(...)``): they are taken as their Python values."""
    grid = {key: [v.item() if hasattr(v, "item") and hasattr(v, "dtype") else v for v in values]
            for key, values in grid.items()}
    if backend not in ("local", "dask"):
        raise ConfigError(f"--backend={backend!r}: must be local or dask")
    if scheduler is not None and backend != "dask":
        raise ConfigError(f"--scheduler={scheduler!r}: only used with --backend dask; allowed: omit it, or "
                          "add --backend dask")
    directory = SweepDirectory(out)
    held = directory.check(base)
    jobs = plan_jobs(directory, base, grid, options, report)
    with ExitStack() as stack:
        client = stack.enter_context(dask_client(scheduler, workers)) if jobs and backend == "dask" else None
        directory.write_manifest(base, held, grid)
        table = directory.scan()[0]  # every valid row, kept up to date as points finish
        _run_jobs(directory, base, jobs, options, workers, client, progress, on_point, table)
    directory.write_results(table)
    return directory.rows(table)


def _run_jobs(directory: SweepDirectory, base: Config, jobs: list[Job], options: SweepOptions, workers: int,
              client: Any, progress: bool, on_point: Callable[[str, dict[str, Any]], None] | None,
              table: dict[str, dict[str, Any]]) -> None:
    """Run ``jobs`` and save each result as it comes; ``table`` (the valid rows by identifier) gets every
    new row, and ``results.csv`` is rewritten from it after each job (no point file is read again)."""
    from tqdm.std import tqdm  # plain text on stderr, also in notebooks (no ipywidgets)

    bar = tqdm(total=sum(len(j.wanted) for j in jobs), desc="sweep", unit="point", disable=not progress,
               leave=False)
    base_tree = base.to_dict()

    def finish(results: list[PointResult]) -> None:
        for result in results:
            row = _save(directory, base, result, table.get(result.pid))
            table[result.pid] = row
            if on_point is not None:
                on_point(result.pid, row)
            bar.update(1)
        directory.write_results(table)

    try:
        if not jobs:
            pass  # every point already finished: no worker or cluster to start
        elif client is not None:
            _run_dask(client, jobs, base_tree, options, finish)
        elif workers > 1 and len(jobs) > 1:
            _run_processes(jobs, base_tree, options, workers, finish)
        else:
            for job in jobs:
                finish(run_group(base_tree, job.points, options, job.wanted))
    except KeyboardInterrupt:
        directory.write_results(table)  # results.csv lists every point kept
        raise
    finally:
        bar.close()


def _save(directory: SweepDirectory, base: Config, result: PointResult, held: dict[str, Any] | None
          ) -> dict[str, Any]:
    """Write one point's result: a new row, or the discrete-run columns merged into its valid row ``held``,
    and its trajectory (before the row, so that a row asking for a trajectory always has it). Returns the
    row."""
    config = base.override(result.values) if result.flow is not None else None
    if result.row is not None:
        directory.save_point(result.pid, result.row, result.flow, config)
        return result.row
    row = held or dict(result.values)
    if result.flow is not None and config is not None:
        directory.save_trajectory(result.pid, config, result.flow)
    if result.train is not None:
        row = {**row, **result.train}
        directory.save_point(result.pid, row)
    return row


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: exit when the sweep's process dies (SIGKILL included): the kernel's parent-death
    signal on Linux, and everywhere a thread that polls the parent. Ctrl-C is left to the parent, which
    ends the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tqdm.std import tqdm

    # tqdm would make a named (spawn) semaphore per worker, which a worker ended by the parent never frees
    tqdm.set_lock(threading.RLock())
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="sweep-parent-watch").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


@contextmanager
def worker_pool(workers: int, what: str = "sweep") -> Iterator[Any]:
    """A ``concurrent.futures`` pool of ``workers`` spawned processes (no forked torch thread pools) that
    exit when this process dies. On an error or Ctrl-C in the block the work not started is cancelled and
    the workers are ended at once, not after their current job; a worker that died is one RunError
    (``what`` names the command)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BrokenProcessPool:
        _stop(pool)
        raise RunError(f"{what}: a worker process died (killed, or out of memory?); the finished points are "
                       "kept, rerun the same command to resume") from None
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()


def _run_processes(jobs: list[Job], base_tree: dict[str, Any], options: SweepOptions, workers: int,
                   finish: Callable[[list[PointResult]], None]) -> None:
    from concurrent.futures import as_completed

    with worker_pool(min(workers, len(jobs))) as pool:
        futures = [pool.submit(run_group, base_tree, job.points, options, job.wanted) for job in jobs]
        for future in as_completed(futures):
            finish(future.result())


def _stop(pool: Any) -> None:
    """Cancel what has not started and end the workers now (not after their current batch)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
    pool.shutdown(wait=True, cancel_futures=True)  # the pool sees its workers gone and frees its queues


@contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A ``dask.distributed`` client of ``scheduler`` (a one-line ConfigError when it cannot be reached
    within CONNECT_SECONDS), or of a local cluster of ``workers`` processes; closed on exit."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--backend='dask': needs dask.distributed; install the project's 'cluster' "
                          "extra (pip install -c constraints.txt '.[cluster]')") from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_SECONDS)
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"--scheduler={scheduler!r}: cannot connect ({describe(err)}); allowed: "
                              "the address of a running dask scheduler, e.g. tcp://host:8786") from None
    else:
        cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_dask(client: Any, jobs: list[Job], base_tree: dict[str, Any], options: SweepOptions,
              finish: Callable[[list[PointResult]], None]) -> None:
    from dask.distributed import as_completed

    futures = [client.submit(run_group, base_tree, job.points, options, job.wanted, pure=False)
               for job in jobs]
    try:
        for future in as_completed(futures):
            finish(future.result())
    except BaseException:
        client.cancel(futures)
        raise
