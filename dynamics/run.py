"""One-call entry points: a resolved config in, a :class:`Trajectory` out (flow or discrete training)."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch
import torchdiffeq

from .config import Config, ConfigError, FlowConfig
from .curvature import sharpness
from .flow import (
    BatchFlowResult,
    FlowResult,
    batched_gradient_field,
    gradient_field,
    gradient_field_jacobian,
    gradient_field_jacobian_vector,
    integrate_flow,
    integrate_flow_batch,
    log_progress_bar,
    log_time_grid,
    modified_gradient_field,
    spectral_radius,
)
from .implicit import IMPLICIT_METHODS, SCIPY_METHODS
from .models import Model, build_model
from .numerics import compute_settings
from .objective import Objective, make_objective
from .task import FactTask
from .train import record_steps, train
from .trajectory import Trajectory, record


def versions() -> dict[str, str]:
    """Library versions recorded with every result."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("factrecall")
    except PackageNotFoundError:
        own = "unknown"
    return {"factrecall": own, "python": platform.python_version(), "torch": torch.__version__,
            "torchdiffeq": torchdiffeq.__version__, "numpy": np.__version__}


def time_grid(config: Config) -> np.ndarray:
    """The record grid of a config: t = 0 and ``flow.points - 1`` log-spaced times up to ``flow.t_max``."""
    return log_time_grid(config.flow.t_min, config.flow.t_max, config.flow.points)


def _setup(config: Config) -> tuple[FactTask, Model, Objective]:
    """The task, model and training objective of a config."""
    task = FactTask(config.task)
    model = build_model(config, task)
    return task, model, make_objective(model, task, config.loss)


def _solver_options(flow: FlowConfig) -> dict[str, Any]:
    return {"method": flow.method, "rtol": flow.rtol, "atol": flow.atol, "first_step": flow.first_step,
            "max_steps": flow.max_steps}


# ``flow.method=auto`` starts explicit (dopri5) and finishes implicitly (cvode) once the flow is stiff and
# stays so for long: when a span of dopri5 took at least AUTO_CHECK_STEPS steps whose mean size h is at least
# AUTO_STIFF_STEP / ρ (ρ: the spectral radius of the field's Jacobian there) and dopri5 would still need
# more than AUTO_SWITCH_STEPS such steps to the end. dopri5 is stable for h·ρ ≲ 3.3 on the real negative
# axis, so a step that close to the bound is set by stability, not accuracy: the detected stiffness. The
# switch pays once the explicit run left is long: 200 steps (~1,200 evaluations) is about what cvode spends
# on a whole stiff plateau and escape. Before that (the first escape: exponential growth, no stiffness)
# dopri5 is the cheaper method: on 64 × 8 facts it passes the first escape in 550 evaluations where cvode
# needs ~1,000 (README, Stiff flows).
AUTO_SPAN_STEPS = 24  # dopri5 runs in spans of about this many steps, each followed by a check
AUTO_CHECK_STEPS = 8
AUTO_STIFF_STEP = 2.0
AUTO_SWITCH_STEPS = 200
DENSE_JACOBIAN_MAX_PARAMS = 4096  # bdf/radau/lsoda build a dense P×P Jacobian


def _check_method(config: Config, model: Model) -> None:
    method = config.flow.method
    if method in SCIPY_METHODS and model.num_params > DENSE_JACOBIAN_MAX_PARAMS:
        raise ConfigError(f"flow.method={method!r}: needs a dense Jacobian, allowed up to "
                          f"{DENSE_JACOBIAN_MAX_PARAMS} parameters (this model has {model.num_params}); "
                          "use flow.method=cvode (matrix-free) or auto")


def _cost(parts: list[FlowResult]) -> dict[str, Any]:
    """What consecutive pieces of one flow cost together, and where the last one ended."""
    cost = {key: sum(getattr(p, key) for p in parts)
            for key in ("function_evals", "jvp_evals", "jacobian_evals", "accepted_steps", "rejected_steps")}
    return {**cost, "until": float(parts[-1].times[-1])}


def _join(parts: list[FlowResult], extra: dict[str, int]) -> FlowResult:
    """Consecutive pieces of one flow (each starting at the previous one's last grid point) as one, with
    ``extra`` evaluations (``function_evals``, ``jvp_evals``) made between them."""
    last, cost = parts[-1], _cost(parts)
    return FlowResult(np.concatenate([parts[0].times] + [p.times[1:] for p in parts[1:]]),
                      torch.cat([parts[0].states] + [p.states[1:] for p in parts[1:]]), last.status,
                      last.status_time, last.message, cost["function_evals"] + extra["function_evals"],
                      cost["accepted_steps"], cost["rejected_steps"], sum(p.wall_seconds for p in parts),
                      cost["jvp_evals"] + extra["jvp_evals"], cost["jacobian_evals"])


def _integrate_auto(options: dict[str, Any], theta0: torch.Tensor, grid: np.ndarray,
                    progress: Any) -> tuple[FlowResult, str, dict[str, Any]]:
    """dopri5, one solver call per span of about AUTO_SPAN_STEPS steps (grid to grid, the step size carried
    across), until a span's mean step h reaches AUTO_STIFF_STEP / ρ (ρ: the Jacobian's spectral radius,
    estimated by power iteration on J·v) with more than AUTO_SWITCH_STEPS such steps still to go; then
    cvode from that grid point to the end. The probe's products are counted. Returns the flow, what was
    used, and the cost of each part (``dopri5``, ``stiffness_probes``, ``cvode``)."""
    budget = options["max_steps"]
    parts: list[FlowResult] = []
    probe = {"function_evals": 0, "jvp_evals": 0}
    i, state, first_step, span_end, steps = 0, theta0, options["first_step"], grid[0], 0
    while i < len(grid) - 1:
        j = min(max(i + 1, int(np.searchsorted(grid, span_end, side="right")) - 1), len(grid) - 1)
        parts.append(integrate_flow(theta0=state, times=grid[i:j + 1], progress=progress,
                                    **{**options, "method": "dopri5", "max_steps": budget - steps,
                                       "first_step": first_step}))
        span = parts[-1]
        steps += span.accepted_steps
        if span.status != "ok":
            break
        i, state, first_step = j, span.states[-1], span.last_step or first_step
        mean_step = (span.times[-1] - span.times[0]) / max(span.accepted_steps, 1)
        left = (grid[-1] - grid[i]) / mean_step  # dopri5's steps to the end at its present step size
        span_end = grid[i] + AUTO_SPAN_STEPS * mean_step
        if span.accepted_steps >= AUTO_CHECK_STEPS and left > AUTO_SWITCH_STEPS:
            radius, cost = spectral_radius(options["field"], state, options.get("jacobian_vector"))
            for key in probe:
                probe[key] += cost[key]
            if mean_step * radius >= AUTO_STIFF_STEP:
                parts.append(integrate_flow(theta0=state, times=grid[i:], progress=progress,
                                            **{**options, "method": "cvode", "max_steps": budget - steps}))
                split = {"dopri5": _cost(parts[:-1]), "stiffness_probes": probe, "cvode": _cost(parts[-1:])}
                return _join(parts, probe), (f"dopri5 to t={grid[i]:.6g} (mean step {mean_step:.3g} = "
                                             f"{mean_step * radius:.2f}/ρ, ρ = {radius:.3g}: stiff, "
                                             f"~{left:.0f} steps left), then cvode"), split
    split = {"dopri5": _cost(parts), "stiffness_probes": probe}
    return _join(parts, probe), "dopri5 (no long stiff stretch)", split


def _integrator(config: Config, model: Model, objective: Objective, modified_lr: float = 0.0
                ) -> dict[str, Any]:
    """Keyword arguments of :func:`integrate_flow` for a run: the field, the method and the Jacobian
    products it needs."""
    _check_method(config, model)
    method = config.flow.method
    preconditioner = model.preconditioner
    options = {**_solver_options(config.flow), "method": method}
    if modified_lr > 0:
        # The modified field's Jacobian is not −PH: implicit methods difference its values instead.
        options["field"] = modified_gradient_field(objective, preconditioner, modified_lr)
        return options
    options["field"] = gradient_field(objective, preconditioner)
    if method in ("cvode", "auto") and config.flow.jacobian == "hvp":
        options["jacobian_vector"] = gradient_field_jacobian_vector(objective, preconditioner)
    elif method in SCIPY_METHODS:
        # a dense Jacobian by differences would cost P gradients: always the exact one
        options["jacobian"] = gradient_field_jacobian(objective, preconditioner)
    return options


def integrate_config_flow(config: Config, model: Model, objective: Objective, theta0: torch.Tensor,
                          grid: np.ndarray, progress: Any = None) -> tuple[FlowResult, dict[str, Any]]:
    """Integrate the flow of ``config`` on ``grid`` with its method (``auto`` resolved); the result and
    the metadata that records the method used and why (with ``auto``: ``method_split``, each part's cost)."""
    options = _integrator(config, model, objective, config.flow.modified_lr)
    chosen = {"method": config.flow.method, "jacobian": config.flow.jacobian}
    if config.flow.method == "auto":
        result, chosen["method_used"], chosen["method_split"] = _integrate_auto(options, theta0, grid,
                                                                                 progress)
    else:
        result = integrate_flow(theta0=theta0, times=grid, progress=progress, **options)
        chosen["method_used"] = "set by flow.method"
    return result, chosen


def _flow_meta(result: FlowResult | BatchFlowResult, model: Model, **extra: Any) -> dict[str, Any]:
    """What ``summary.json`` says about a flow run."""
    return {"kind": "flow", "status": result.status, "status_time": result.status_time,
            "message": result.message, "function_evals": result.function_evals,
            "accepted_steps": result.accepted_steps, "rejected_steps": result.rejected_steps,
            "wall_seconds": result.wall_seconds, "num_params": model.num_params, "modified_lr": 0.0,
            "jvp_evals": getattr(result, "jvp_evals", 0),
            "jacobian_evals": getattr(result, "jacobian_evals", 0), "versions": versions(), **extra}


def run_flow(config: Config, progress: bool = False, times: np.ndarray | None = None,
             keep_states: bool = False) -> Trajectory:
    """Integrate the gradient flow dθ/dt = -P ∇L(θ) of ``config`` and record every fact on its grid.

    ``times`` (increasing, starting at 0) replaces the config's log grid, e.g. to evaluate the flow at
    the times ``k·lr`` of a discrete run. ``flow.modified_lr`` = η > 0 integrates GD's modified flow
    instead. ``keep_states`` stores θ(t) in ``Trajectory.states``, one parameter set per token.
    """
    task, model, objective = _setup(config)
    theta0 = model.initial_parameters(config.init)
    flow = config.flow
    update, close = log_progress_bar(flow.t_min, flow.t_max, "flow", enabled=progress)
    try:
        grid = time_grid(config) if times is None else np.asarray(times, dtype=np.float64)
        result, chosen = integrate_config_flow(config, model, objective, theta0, grid, update)
    finally:
        close()
    meta = _flow_meta(result, model, modified_lr=flow.modified_lr, **chosen)
    trajectory = record(model, task, result.times, result.states, meta)
    meta["final_loss"] = trajectory.final_loss
    if keep_states:
        trajectory.states = _untied_states(model, result.states)
    return trajectory


BATCHABLE = ("init.scale", "init.seed", "init.kind")


def batch_key(config: Config) -> str:
    """Configs with the same key differ only in their initialisation (:data:`BATCHABLE`) and can be
    integrated together by :func:`run_flow_batch`."""
    import json

    tree = config.to_dict()
    tree.pop("init")
    return json.dumps(tree, sort_keys=True)


def run_flow_batch(configs: list[Config], progress: bool = False) -> list[Trajectory]:
    """The flows of several configs that differ only in ``init.*``, integrated as one batched system
    (shared steps, per-member error control and status; see ``integrate_flow_batch``).

    Gives the same trajectories as :func:`run_flow` one by one, to the solver tolerance.
    """
    if len({batch_key(c) for c in configs}) != 1:
        raise ValueError("run_flow_batch: configs must differ only in " + ", ".join(BATCHABLE))
    config = configs[0]
    if config.flow.method in ("auto", *IMPLICIT_METHODS):
        # Implicit methods integrate one flow at a time (each member has its own Newton systems).
        return [run_flow(c, progress=progress) for c in configs]
    task, model, objective = _setup(config)
    theta0 = torch.stack([model.initial_parameters(c.init) for c in configs])
    flow = config.flow
    update, close = log_progress_bar(flow.t_min, flow.t_max, f"flow ×{len(configs)}", enabled=progress)
    try:
        result = integrate_flow_batch(batched_gradient_field(objective, model.preconditioner), theta0,
                                      time_grid(config), progress=update, **_solver_options(flow))
    finally:
        close()
    trajectories = []
    for b, member in enumerate(configs):
        status, when, keep = result.member_status[b], result.member_status_time[b], result.member_kept[b]
        meta = _flow_meta(result, model, status=status, status_time=when, batch_size=len(configs),
                          wall_seconds=result.wall_seconds / len(configs), init_scale=member.init.scale)
        if status != result.status:
            meta["message"] = f"member stopped ({status}) at t={when:.6g}; the others went on"
        traj = record(model, task, result.times[:keep], result.states[:keep, b], meta)
        meta["final_loss"] = traj.final_loss
        trajectories.append(traj)
    return trajectories


def _untied_states(model, states: torch.Tensor) -> np.ndarray:
    """States as the full model sees them (one parameter set per vocabulary token), as numpy."""
    _, expand = model.untied()
    return torch.stack([expand(theta) for theta in states]).cpu().numpy()


def run_training(config: Config, progress: bool = False, keep_states: bool = False) -> Trajectory:
    """Discrete training of ``train.*`` from the flow's initial parameters, recorded at t = k·lr.

    ``gd`` steps on the flow's own objective; ``sgd`` and ``adam`` draw a fresh batch of
    ``train.batch_size`` sequences every step, on the model with one parameter set per token.
    ``keep_states`` stores θ_k in ``Trajectory.states`` (one parameter set per token).
    """
    task, model, objective = _setup(config)
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

    from tqdm.std import tqdm  # plain text on stderr, also in notebooks (no ipywidgets)

    bar = tqdm(total=opts.steps, desc=f"train ({opts.optimizer})", disable=not progress, leave=False,
               mininterval=0.2)
    try:
        result = train(objective_at, theta0, optimizer=opts.optimizer, lr=opts.lr, steps=opts.steps,
                       record=record_steps(time_grid(config), opts.lr, opts.steps),
                       preconditioner=model.preconditioner, beta1=opts.beta1, beta2=opts.beta2,
                       eps=opts.eps, progress=lambda k: bar.update(1))
    finally:
        bar.close()
    meta = {"kind": "train", "optimizer": opts.optimizer, "lr": opts.lr, "status": result.status,
            "status_time": result.status_time, "message": result.message,
            "gradient_evals": result.gradient_evals, "wall_seconds": result.wall_seconds,
            "num_params": model.num_params, "status_step": (None if result.status_time is None
                                                             else int(round(result.status_time / opts.lr))),
            "first_loss_increase_step": result.first_loss_increase,
            "versions": versions()}
    trajectory = record(model, task, result.times, result.states, meta)
    meta["final_loss"] = trajectory.final_loss
    if keep_states:
        trajectory.states = _untied_states(model, result.states)
    return trajectory


def flow_sharpness(config: Config, points: int = 32, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Sharpness λ_max(P H) along the flow of ``config`` at ``points`` log-spaced times in [t_min, t_max]:
    GD with learning rate η follows the flow only while η · λ_max < 2. Returns (t, λ_max)."""
    config = config.override({"flow.modified_lr": 0.0})  # along the gradient flow itself
    _, model, objective = _setup(config)
    flow = config.flow
    times = log_time_grid(flow.t_min, flow.t_max, points + 1)
    result, _ = integrate_config_flow(config, model, objective, model.initial_parameters(config.init), times)
    with compute_settings(result.states[0]):
        values = [sharpness(objective, theta, model.preconditioner, iterations) for theta in result.states]
    return result.times, np.asarray(values)
