"""One-call entry points: a resolved config in, a :class:`Trajectory` out (a flow or a discrete training).

This is where a configuration meets the engine: the task, model and objective a config names; the vector
field (objective + geometry, :mod:`dynamics.fields`); the solver's options from ``config.flow``; and the run's
record (:class:`~dynamics.records.RunInfo`).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from .config import Config, FlowConfig
from .curvature import sharpness
from .errors import ConfigError
from .fields import (
    batched_gradient_field,
    gradient_field,
    gradient_field_jacobian,
    gradient_field_jacobian_vector,
    modified_gradient_field,
)
from .geometry import make_geometry
from .models import Model, build_model
from .numerics import compute_settings
from .objective import Objective, make_objective
from .progress import log_progress_bar, step_progress_bar
from .records import FlowInfo, RunInfo, TrainInfo, versions
from .solvers import (
    FlowProblem,
    FlowResult,
    SolverOptions,
    get_method,
    integrate_flow_batch,
    integrate_problem,
)
from .task import FactTask
from .training import record_steps, train
from .trajectory import Trajectory, record

DENSE_JACOBIAN_MAX_PARAMS = 4096  # methods that use a dense P×P Jacobian (bdf, radau, lsoda)
BATCHABLE = ("init.scale", "init.seed", "init.kind")  # what members of one batched flow may differ in


def log_time_grid(t_min: float, t_max: float, points: int) -> np.ndarray:
    """``points`` times: 0, then ``points - 1`` log-spaced values from t_min to t_max."""
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, points - 1)])


def time_grid(config: Config) -> np.ndarray:
    """The record grid of a config: t = 0 and ``flow.points - 1`` log-spaced times up to ``flow.t_max``."""
    return log_time_grid(config.flow.t_min, config.flow.t_max, config.flow.points)


def setup(config: Config) -> tuple[FactTask, Model, Objective]:
    """The task, model and training objective of a config."""
    task = FactTask(config.task)
    model = build_model(config, task)
    return task, model, make_objective(model, task, config.loss)


def solver_options(flow: FlowConfig) -> SolverOptions:
    """The solver settings of a flow config (``flow.rtol`` → ``SolverOptions.rtol``, ...)."""
    return SolverOptions(rtol=flow.rtol, atol=flow.atol, first_step=flow.first_step, max_steps=flow.max_steps)


def geometry_of(config: Config, model: Model):
    """The steepest-descent geometry of ``flow.geometry`` for ``model`` (its metric P and its blocks)."""
    return make_geometry(config.flow.geometry, model.preconditioner, model.parameter_blocks(),
                         config.flow.geometry_eps)


def flow_problem(config: Config, model: Model, objective: Objective, theta0: torch.Tensor,
                 grid: np.ndarray, progress=None) -> FlowProblem:
    """The flow of ``config`` as a solver problem: the field −D(∇L) of its geometry (or GD's modified field
    when ``flow.modified_lr`` > 0) and the Jacobian products its method can use."""
    method = get_method(config.flow.method)
    if method.uses == "jacobian" and model.num_params > DENSE_JACOBIAN_MAX_PARAMS:
        raise ConfigError(f"flow.method={method.name!r}: needs a dense Jacobian, allowed up to "
                          f"{DENSE_JACOBIAN_MAX_PARAMS} parameters (this model has {model.num_params}); "
                          "use flow.method=cvode (matrix-free) or auto")
    metric = geometry_of(config, model)
    if method.uses == "jacobian" and config.flow.geometry != "euclidean":
        raise ConfigError(f"flow.method={method.name!r}: needs a dense Jacobian, offered for "
                          f"flow.geometry=euclidean only (not {config.flow.geometry!r}); use cvode or auto")
    problem = FlowProblem(gradient_field(objective, metric), theta0, grid, progress=progress)
    if config.flow.modified_lr > 0:
        # The modified field's Jacobian is not −PH: implicit methods difference its values instead.
        problem.field = modified_gradient_field(objective, metric, config.flow.modified_lr)
    elif method.uses == "jacobian_vector" and config.flow.jacobian == "hvp":
        problem.jacobian_vector = gradient_field_jacobian_vector(objective, metric)
    elif method.uses == "jacobian":
        # a dense Jacobian by differences would cost P gradients: always the exact one
        problem.jacobian = gradient_field_jacobian(objective, metric)
    return problem


def integrate_config_flow(config: Config, model: Model, objective: Objective, theta0: torch.Tensor,
                          grid: np.ndarray, progress=None) -> FlowResult:
    """Integrate the flow of ``config`` on ``grid`` with its method and options."""
    problem = flow_problem(config, model, objective, theta0, grid, progress)
    return integrate_problem(problem, config.flow.method, solver_options(config.flow))


def _flow_info(config: Config, result: FlowResult, model: Model) -> RunInfo:
    """The run record of a flow (``final_loss`` is filled in by :func:`record`)."""
    flow = FlowInfo(method=config.flow.method, jacobian=config.flow.jacobian,
                    method_used=result.method_used or "set by flow.method", method_split=result.method_split,
                    modified_lr=config.flow.modified_lr)
    return RunInfo(kind="flow", status=result.status, status_time=result.status_time, message=result.message,
                   final_loss=float("nan"), num_params=model.num_params, cost=result.cost, flow=flow,
                   versions=versions())


def run_flow(config: Config, progress: bool = False, times: np.ndarray | None = None,
             keep_states: bool = False) -> Trajectory:
    """Integrate the gradient flow dθ/dt = −P ∇L(θ) of ``config`` and record every fact on its grid.

    ``times`` (increasing, starting at 0) replaces the config's log grid, e.g. to evaluate the flow at
    the times ``k·lr`` of a discrete run. ``flow.modified_lr`` = η > 0 integrates GD's modified flow
    instead. ``keep_states`` stores θ(t) in ``Trajectory.states``, one parameter set per token.
    """
    task, model, objective = setup(config)
    theta0 = model.initial_parameters(config.init)
    flow = config.flow
    update, close = log_progress_bar(flow.t_min, flow.t_max, "flow", enabled=progress)
    try:
        grid = time_grid(config) if times is None else np.asarray(times, dtype=np.float64)
        result = integrate_config_flow(config, model, objective, theta0, grid, update)
    finally:
        close()
    trajectory = record(model, task, result.t, result.states, _flow_info(config, result, model))
    if keep_states:
        trajectory.states = _untied_states(model, result.states)
    return trajectory


def batch_key(config: Config) -> str:
    """Configs with the same key differ only in their initialisation (:data:`BATCHABLE`) and can be
    integrated together by :func:`run_flow_batch`."""
    tree = config.to_dict()
    tree.pop("init")
    return json.dumps(tree, sort_keys=True)


def run_flow_batch(configs: list[Config], progress: bool = False) -> list[Trajectory]:
    """The flows of several configs that differ only in ``init.*``, integrated as one batched system
    (shared steps, per-member error control and status; see ``integrate_flow_batch``). A method that
    integrates one flow at a time (implicit ones, ``auto``) runs the configs one by one.

    Gives the same trajectories as :func:`run_flow` one by one, to the solver tolerance.
    """
    if len({batch_key(c) for c in configs}) != 1:
        raise ValueError("run_flow_batch: configs must differ only in " + ", ".join(BATCHABLE))
    config = configs[0]
    if not get_method(config.flow.method).batched:
        return [run_flow(c, progress=progress) for c in configs]
    task, model, objective = setup(config)
    theta0 = torch.stack([model.initial_parameters(c.init) for c in configs])
    flow = config.flow
    update, close = log_progress_bar(flow.t_min, flow.t_max, f"flow ×{len(configs)}", enabled=progress)
    options = solver_options(flow)
    try:
        result = integrate_flow_batch(batched_gradient_field(objective, geometry_of(config, model)), theta0,
                                      time_grid(config), method=flow.method, rtol=options.rtol,
                                      atol=options.atol, first_step=options.first_step,
                                      max_steps=options.max_steps, progress=update)
    finally:
        close()
    trajectories = []
    batch = FlowResult(result.t, result.states, result.status, result.status_time, result.message,
                       dataclasses.replace(result.cost, wall_seconds=result.cost.wall_seconds / len(configs)))
    for b in range(len(configs)):
        status, when, keep = result.member_status[b], result.member_status_time[b], result.member_kept[b]
        info = dataclasses.replace(_flow_info(config, batch, model), status=status, status_time=when)
        info.flow.batch_size = len(configs)
        if status != result.status:
            info.message = f"member stopped ({status}) at t={when:.6g}; the others went on"
        trajectories.append(record(model, task, result.t[:keep], result.states[:keep, b], info))
    return trajectories


def _untied_states(model: Model, states: torch.Tensor) -> np.ndarray:
    """States as the full model sees them (one parameter set per vocabulary token), as numpy."""
    _, expand = model.untied()
    return torch.stack([expand(theta) for theta in states]).cpu().numpy()


def run_training(config: Config, progress: bool = False, keep_states: bool = False) -> Trajectory:
    """Discrete training of ``train.*`` from the flow's initial parameters, recorded at t = k·lr.

    ``gd`` steps on the flow's own objective; ``sgd``, ``adam``, ``signsgd`` and ``muon`` draw a fresh batch
    of ``train.batch_size`` sequences every step, on the model with one parameter set per token.
    ``keep_states`` stores θ_k in ``Trajectory.states`` (one parameter set per token).
    """
    task, model, objective = setup(config)
    theta0 = model.initial_parameters(config.init)
    opts = config.train
    if opts.optimizer == "gd":
        def objective_at(k: int) -> Objective:
            return objective
    else:
        model, expand = model.untied()
        theta0 = expand(theta0)
        generator = torch.Generator().manual_seed(opts.seed)
        device = theta0.device

        def objective_at(k: int) -> Objective:
            counts, targets = task.sample(opts.batch_size, generator)
            counts, targets = counts.to(device), targets.to(device)
            return lambda theta: model.sequence_loss(theta, counts, targets)

    update, close = step_progress_bar(opts.steps, f"train ({opts.optimizer})", enabled=progress)
    try:
        result = train(objective_at, theta0, optimizer=opts.optimizer, lr=opts.lr, steps=opts.steps,
                       record=record_steps(time_grid(config), opts.lr, opts.steps),
                       preconditioner=model.preconditioner, beta1=opts.beta1, beta2=opts.beta2,
                       eps=opts.eps, momentum=opts.momentum, blocks=model.parameter_blocks(),
                       progress=update)
    finally:
        close()
    status_step = None if result.status_time is None else int(round(result.status_time / opts.lr))
    info = RunInfo(kind="train", status=result.status, status_time=result.status_time, message=result.message,
                   final_loss=float("nan"), num_params=model.num_params, cost=result.cost,
                   train=TrainInfo(optimizer=opts.optimizer, lr=opts.lr, status_step=status_step,
                                   first_loss_increase_step=result.first_loss_increase),
                   versions=versions())
    trajectory = record(model, task, result.t, result.states, info)
    if keep_states:
        trajectory.states = _untied_states(model, result.states)
    return trajectory


def flow_sharpness(config: Config, points: int = 32, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Sharpness λ_max(P H) along the flow of ``config`` at ``points`` log-spaced times in [t_min, t_max]:
    GD with learning rate η follows the flow only while η · λ_max < 2. Returns (t, λ_max)."""
    config = config.override({"flow.modified_lr": 0.0})  # along the gradient flow itself
    _, model, objective = setup(config)
    flow = config.flow
    times = log_time_grid(flow.t_min, flow.t_max, points + 1)
    result = integrate_config_flow(config, model, objective, model.initial_parameters(config.init), times)
    with compute_settings(result.states[0]):
        values = [sharpness(objective, theta, model.preconditioner, iterations) for theta in result.states]
    return result.t, np.asarray(values)
