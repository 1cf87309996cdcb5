"""One-call entry points: a resolved config in, a :class:`Trajectory` out (a flow or a discrete training).

This is where a configuration meets the engine: :func:`prepare_run` checks what a config asks of the machine
and builds the run once (:func:`dynamics.problem.build_run`: task, model, objective, start, schedule, field);
:func:`integrate_run` and :func:`train_run` integrate or train that built run and record it with the run's
record (:class:`~dynamics.records.RunInfo`). ``run_flow``, ``run_training`` and ``run_flow_batch`` are the
two steps in one call.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from .budget import check_flow_steps, check_sizes
from .config import Config
from .config.loading import refuse_unread
from .curvature import sharpness
from .models import Model
from .numerics import compute_settings
from .objective import Objective, make_objective
from .optimizers import get_optimizer
from .problem import (  # re-exported: the entry points' callers build problems through dynamics.run too
    BATCHABLE,
    BuiltRun,
    batch_refusal,
    build_run,
    integrate_config_flow,  # noqa: F401  (re-exported)
    log_time_grid,
    metric_of,
    setup,  # noqa: F401  (re-exported)
    solver_options,  # noqa: F401  (re-exported)
    time_grid,  # noqa: F401  (re-exported)
)
from .progress import log_progress_bar, step_progress_bar
from .records import FlowInfo, RunInfo, TrainInfo, versions
from .schedule import Schedule, per_task
from .solvers import (
    FlowResult,
    integrate_problem,
)
from .solvers.explicit import integrate_explicit_batch
from .start import Start
from .task import FactTask
from .training import TrainResult, record_steps, train
from .trajectory import Recorder, Trajectory, record


def _flow_info(config: Config, result: FlowResult, model: Model, schedule: Schedule,
               old_subjects: int | None) -> RunInfo:
    """The run record of a flow (``final_loss`` is filled in by :func:`record`)."""
    flow = FlowInfo(method=config.flow.method, jacobian=config.flow.jacobian,
                    method_used=result.method_used or "set by flow.method", method_split=result.method_split,
                    modified_lr=config.flow.modified_lr)
    return RunInfo(kind="flow", status=result.status, status_time=result.status_time, message=result.message,
                   final_loss=float("nan"), num_params=model.num_params, cost=result.cost, flow=flow,
                   versions=versions(), phases=schedule.as_records(), old_subjects=old_subjects)


def _measured(model: Model, measured: FactTask) -> tuple[Model, FactTask]:
    """The model and task a run is recorded on: the run's evaluation frequencies (``BuiltRun.measured``:
    held-out subjects at weight 0, whatever the schedule trains at each time)."""
    return model.with_task(measured), measured


def _recorded(model: Model, measured: FactTask, t: np.ndarray, states: torch.Tensor, info: RunInfo
              ) -> Trajectory:
    """The per-fact record of ``states`` on the run's evaluation frequencies (:func:`_measured`)."""
    return record(*_measured(model, measured), t, states, info)


def run_flow(config: Config, progress: bool = False, times: np.ndarray | None = None,
             keep_states: bool = False, start: Start | None = None, schedule: Schedule | None = None
             ) -> Trajectory:
    """Integrate the gradient flow dθ/dt = −P ∇L_{w(t)}(θ) of ``config`` and record every fact on its grid.

    w(t) are the fact frequencies trained at t: the task's own, or those of the data schedule of
    ``data.*`` (:mod:`dynamics.schedule`; the solver restarts at every phase start). ``times`` (increasing)
    replaces the config's log grid, e.g. to evaluate the flow at the times ``k·lr`` of a discrete run; the
    flow starts at ``times[0]``. ``start`` replaces the start of ``init.*`` (θ(0) and, for a run taken
    from another, its number of subjects); ``schedule`` replaces the schedule of ``data.*`` (any
    :class:`~dynamics.schedule.Schedule`). ``flow.modified_lr`` = η > 0 integrates GD's modified flow
    instead. ``keep_states`` stores θ(t) in ``Trajectory.states``, one parameter set per token. The
    trajectory's ``final_state`` is θ at its last recorded time (what a later run can start from).
    Refuses (ConfigError), before any work, what :func:`prepare_run` refuses.
    """
    return integrate_run(prepare_run(config, start=start, schedule=schedule), progress, times, keep_states)


def prepare_run(config: Config, train: bool = False, flow: bool = True, start: Start | None = None,
                schedule: Schedule | None = None) -> BuiltRun:
    """Check what a run of ``config`` asks of the machine, then build it once (:func:`build_run`), the one way
    every entry point does: its memory (with ``train``: and its discrete run's, and ``train.steps``) from
    the config alone, before anything is built; then, with ``flow``, the flow's step estimate on the built
    run's own field (:func:`~dynamics.budget.check_flow_steps`). ``start`` and ``schedule``: as for
    :func:`run_flow`. Raises ConfigError before any work."""
    check_sizes(config, train, flow)
    built = build_run(config, start, schedule, flow)
    if flow:
        check_flow_steps(config, built)
    return built


def integrate_run(built: BuiltRun, progress: bool = False, times: np.ndarray | None = None,
                  keep_states: bool = False) -> Trajectory:
    """The flow of a built run (:func:`prepare_run`), recorded on its grid: :func:`run_flow` without the
    checks and the building."""
    config, model, start = built.config, built.model, built.start
    flow = config.flow
    update, close = log_progress_bar(flow.t_min, flow.t_max, "flow", enabled=progress)
    try:
        grid = built.grid if times is None else np.asarray(times, dtype=np.float64)
        # The per-fact record is taken point by point as the solver reaches the grid (as _recorded would
        # take it): the states are never all held unless keep_states asks for them.
        recorder = Recorder(*_measured(model, built.measured), len(grid))
        # the problem that prepare_run made (and its step estimate probed), on this grid and observed
        problem = (built.problem(grid) if built.flow is None
                   else dataclasses.replace(built.flow, times=grid))
        problem = dataclasses.replace(problem, progress=update, observe=recorder.add, keep_states=keep_states)
        result = integrate_problem(problem, flow.method, built.options)
    finally:
        close()
    info = _flow_info(config, result, model, built.schedule, start.old_subjects)
    trajectory = recorder.trajectory(result.t, info)
    trajectory.final_state = result.last_state.cpu().numpy()
    if keep_states:
        trajectory.states = _untied_states(model, result.states)
    return trajectory


def batch_key(config: Config) -> str:
    """Configs with the same key differ only in the keys of :data:`BATCHABLE` (their starts) and can be
    integrated together by :func:`run_flow_batch`."""
    tree = config.to_dict()
    for key in BATCHABLE:
        section, name = key.split(".")
        del tree[section][name]
    return json.dumps(tree, sort_keys=True)


def run_flow_batch(configs: list[Config], progress: bool = False) -> list[Trajectory]:
    """The flows of several configs that differ only in ``init.*``, integrated as one batched system
    (shared steps, per-member error control and status; see ``integrate_flow_batch``). A method that
    integrates one flow at a time (implicit ones, ``auto``) runs the configs one by one.

    Gives the same trajectories as :func:`run_flow` one by one, to the solver tolerance: the field is
    built by the same code (:func:`dynamics.problem.field_builder`: every geometry, ``flow.modified_lr``,
    the data schedule). Configs that cannot be batched (:func:`batch_refusal`) run one by one through
    :func:`run_flow`.
    """
    if len({batch_key(c) for c in configs}) != 1:
        raise ValueError("run_flow_batch: configs must differ only in " + ", ".join(BATCHABLE))
    for member in configs:
        check_sizes(member)
    config = configs[0]
    if any(batch_refusal(c) is not None for c in configs):
        return [run_flow(c, progress=progress) for c in configs]
    built = build_run(config)  # the members differ only in init.*: one task, model and field for all
    for member in configs:  # each member's start has its own stiffness
        check_flow_steps(member, built)
    model, schedule = built.model, built.schedule
    theta0 = torch.stack([model.initial_parameters(c.init) for c in configs])
    flow = config.flow
    update, close = log_progress_bar(flow.t_min, flow.t_max, f"flow ×{len(configs)}", enabled=progress)
    try:
        problem = built.problem(theta0=theta0, progress=update, batched=True)
        result = integrate_explicit_batch(flow.method, problem, built.options)
    finally:
        close()
    trajectories = []
    batch = FlowResult(result.t, result.states, result.status, result.status_time, result.message,
                       dataclasses.replace(result.cost, wall_seconds=result.cost.wall_seconds / len(configs)))
    for b in range(len(configs)):
        status, when, keep = result.member_status[b], result.member_status_time[b], result.member_kept[b]
        info = dataclasses.replace(_flow_info(config, batch, model, schedule, None), status=status,
                                   status_time=when)
        info.flow.batch_size = len(configs)
        if status != result.status:
            info.message = f"member stopped ({status}) at t={when:.6g}; the others went on"
        trajectory = _recorded(model, built.measured, result.t[:keep], result.states[:keep, b], info)
        trajectory.final_state = result.states[keep - 1, b].cpu().numpy()
        trajectories.append(trajectory)
    return trajectories


def train_info(optimizer: str, lr: float, result: TrainResult, model: Model, schedule: Schedule | None = None,
               old_subjects: int | None = None) -> RunInfo:
    """The run record of a discrete run of ``optimizer`` at ``lr`` on ``model`` (``final_loss`` is filled in
    by :func:`record`; ``schedule``: the data schedule it trained, None for the task's own frequencies)."""
    status_step = None if result.status_time is None else int(round(result.status_time / lr))
    return RunInfo(kind="train", status=result.status, status_time=result.status_time, message=result.message,
                   final_loss=float("nan"), num_params=model.num_params, cost=result.cost,
                   train=TrainInfo(optimizer=optimizer, lr=lr, status_step=status_step,
                                   first_loss_increase_step=result.first_loss_increase),
                   versions=versions(), phases=[] if schedule is None else schedule.as_records(),
                   old_subjects=old_subjects)


def _untied_states(model: Model, states: torch.Tensor) -> np.ndarray:
    """States as the full model sees them (one parameter set per vocabulary token), as numpy."""
    _, expand = model.untied()
    return torch.stack([expand(theta) for theta in states]).cpu().numpy()


def run_training(config: Config, progress: bool = False, keep_states: bool = False,
                 start: Start | None = None, schedule: Schedule | None = None) -> Trajectory:
    """Discrete training of ``train.*`` from the flow's initial parameters, recorded at t = k·lr.

    ``gd`` steps on the flow's own objective; ``sgd``, ``adam``, ``signsgd`` and ``muon`` draw a fresh batch
    of ``train.batch_size`` sequences every step, on the model with one parameter set per token. Under a data
    schedule, step k trains the frequencies w(k·lr) of the flow at that time. ``start`` and
    ``schedule``: as for :func:`run_flow`. ``keep_states`` stores θ_k in ``Trajectory.states`` (one
    parameter set per token). Refuses (ConfigError), before any work, what :func:`prepare_run` refuses
    for a discrete run (its memory and ``train.steps``), and a ``train.*`` key set to other than its default
    that the optimizer does not read (:func:`~dynamics.config.loading.refuse_unread`).
    """
    refuse_unread(config, train=True)
    built = prepare_run(config, train=True, flow=False, start=start, schedule=schedule)
    return train_run(built, progress, keep_states)


def train_run(built: BuiltRun, progress: bool = False, keep_states: bool = False) -> Trajectory:
    """The discrete run of ``train.*`` of a built run (:func:`prepare_run` with ``train``), from its start:
    :func:`run_training` without the checks and the building (a flow and its discrete run share one)."""
    config, task, model, objective = built.config, built.task, built.model, built.objective
    tasks, theta0 = built.tasks, built.start.theta0
    opts = config.train

    def task_at(k: int) -> FactTask:
        return task if tasks is None else tasks.at(k * opts.lr)

    if not get_optimizer(opts.optimizer).batches:  # gd: the flow's own objective
        if tasks is not None:  # one objective per constant phase, as the flow's field
            objective_of = per_task(lambda now: make_objective(model.with_task(now), now, config.loss), tasks)

        def objective_at(k: int) -> Objective:
            return objective if tasks is None else objective_of(k * opts.lr)
    else:
        model, expand = model.untied()
        theta0 = expand(theta0)
        generator = torch.Generator().manual_seed(opts.seed)
        device = theta0.device

        def objective_at(k: int) -> Objective:
            counts, targets = task_at(k).sample(opts.batch_size, generator)
            counts, targets = counts.to(device), targets.to(device)
            return lambda theta: model.sequence_loss(theta, counts, targets)

    update, close = step_progress_bar(opts.steps, f"train ({opts.optimizer})", enabled=progress)
    try:
        result = train(objective_at, theta0, optimizer=opts.optimizer, lr=opts.lr, steps=opts.steps,
                       record=record_steps(built.grid, opts.lr, opts.steps),
                       preconditioner=metric_of(config, model), beta1=opts.beta1, beta2=opts.beta2,
                       eps=opts.eps, momentum=opts.momentum, blocks=model.parameter_blocks(),
                       progress=update)
    finally:
        close()
    info = train_info(opts.optimizer, opts.lr, result, model, built.schedule, built.start.old_subjects)
    trajectory = _recorded(model, built.measured, result.t, result.states, info)
    if keep_states:
        trajectory.states = _untied_states(model, result.states)
    return trajectory


def flow_sharpness(config: Config, points: int = 32, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Sharpness λ_max(P H) along the flow of ``config`` at ``points`` log-spaced times in [t_min, t_max]:
    GD with learning rate η follows the flow only while η · λ_max < 2. Returns (t, λ_max).

    The flow is the run's own (its start, data schedule and frozen blocks); at time t, H is the Hessian of
    the loss trained at t and P the run's metric (0 on frozen blocks)."""
    config = config.override({"flow.modified_lr": 0.0})  # along the gradient flow itself
    built = build_run(config)
    model, objective, tasks = built.model, built.objective, built.tasks
    flow = config.flow
    times = log_time_grid(flow.t_min, flow.t_max, points + 1)
    result = integrate_problem(built.problem(times), flow.method, built.options)
    metric = metric_of(config, model)

    def objective_at(t: float) -> Objective:
        if tasks is None:
            return objective
        trained = tasks.at(t)
        return make_objective(model.with_task(trained), trained, config.loss)

    with compute_settings(result.states[0]):
        values = [sharpness(objective_at(t), theta, metric, iterations)
                  for t, theta in zip(result.t, result.states, strict=True)]
    return result.t, np.asarray(values)
