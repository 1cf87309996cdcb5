"""A run, built from its config in one place (:func:`build_run`): the task, model and objective a config
names, the start, the data schedule, and the vector field (objective + geometry, or GD's modified flow,
:mod:`dynamics.fields`) that the flow integrates, with the time grid, the solver's options, the metric and
the geometry's map.

:mod:`dynamics.run` (the flow, the batched flow and the discrete run) and :mod:`dynamics.budget` (the step
estimate's probe) take the pieces from one :class:`BuiltRun`: each is built once per run, and the run and its
estimate integrate the very same field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import Config, FlowConfig
from .errors import ConfigError
from .fields import (
    batched_gradient_field,
    gradient_field,
    gradient_field_jacobian,
    gradient_field_jacobian_vector,
    modified_gradient_field,
    row_by_row,
)
from .geometry import get_geometry
from .models import Model, build_model
from .objective import Objective, make_objective
from .schedule import (
    Schedule,
    TaskSchedule,
    evaluation_task,
    per_time,
    schedule_of,
    task_schedule,
)
from .solvers import (
    FlowProblem,
    FlowResult,
    Jacobian,
    JacobianVector,
    NewtonBlocks,
    NewtonSystem,
    SolverOptions,
    VectorField,
    get_method,
    integrate_problem,
)
from .solvers.pace import time_limit
from .start import Start, starting_state
from .task import FactTask

DENSE_JACOBIAN_MAX_PARAMS = 4096  # methods that use a dense P×P Jacobian (bdf, radau, lsoda)
# what members of one batched flow may differ in (each member gets its own θ(0) from its own init.*)
BATCHABLE = ("init.scale", "init.seed", "init.kind", "init.alpha", "init.beta")


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
    """The solver settings of a flow config (``flow.rtol`` → ``SolverOptions.rtol``, ...); the pace stop's
    time limit is :func:`~dynamics.solvers.pace.time_limit`."""
    return SolverOptions(rtol=flow.rtol, atol=flow.atol, first_step=flow.first_step, max_steps=flow.max_steps,
                         max_seconds=time_limit())


def metric_of(config: Config, model: Model) -> torch.Tensor:
    """The model's diagonal metric P with the blocks of ``data.freeze`` set to 0: a frozen block's field is
    exactly 0, so it stays exactly where it started, under every geometry and optimizer."""
    frozen = config.data.frozen
    if not frozen:
        return model.preconditioner
    blocks = {block.name: block for block in model.parameter_blocks()}
    metric = model.preconditioner.clone()
    for name in frozen:
        if name not in blocks:
            raise ConfigError(f"data.freeze={config.data.freeze!r}: {name!r} is not a parameter block of "
                              "this model; its blocks: " + ", ".join(blocks))
        block = blocks[name]
        metric[block.start:block.start + block.size] = 0.0
    if set(frozen) >= set(blocks):
        raise ConfigError(f"data.freeze={config.data.freeze!r}: freezes every parameter block, nothing would "
                          "be trained; allowed: a proper subset of " + "+".join(blocks))
    return metric


def geometry_of(config: Config, model: Model):
    """The steepest-descent map of ``flow.geometry`` for ``model``, built by its registry entry from the
    model's metric P (0 on frozen blocks), its parameter blocks and ``flow.geometry_eps`` (a key the
    geometry does not read was refused by the config itself)."""
    return get_geometry(config.flow.geometry).build(metric_of(config, model), model.parameter_blocks(),
                                                    config.flow.geometry_eps)


def field_builder(config: Config, geometry, batched: bool = False) -> Callable[[Objective], VectorField]:
    """How a run's field is built from an objective, the one way for :func:`run_flow` and
    :func:`run_flow_batch`: −D(∇L) in ``geometry``, or GD's modified field when ``flow.modified_lr`` > 0.
    ``batched``: the same field on a batch of states Θ (B, P), row by row (the gradient field through the
    objective's batched closed form, the modified field through the one-flow function itself)."""
    lr = config.flow.modified_lr
    if lr > 0:
        if batched:
            return lambda objective: row_by_row(modified_gradient_field(objective, geometry, lr))
        return lambda objective: modified_gradient_field(objective, geometry, lr)
    if batched:
        return lambda objective: batched_gradient_field(objective, geometry)
    return lambda objective: gradient_field(objective, geometry)


def batch_refusal(config: Config) -> str | None:
    """Why the flow of ``config`` cannot be integrated as a member of a batch (None: it can). Every
    field option is built by :func:`field_builder` for both; what a batch cannot do is a method that
    integrates one flow at a time, a start taken from another run, and a schedule whose phases restart
    the solver."""
    method = get_method(config.flow.method)
    if not method.batched:
        return f"flow.method={method.name!r} integrates one flow at a time"
    if config.init.from_run:
        return "init.from_run: each member starts from its own run's final state"
    if schedule_of(config).breakpoints:
        return "data.warmup_time: a schedule of phases restarts the solver at every phase start"
    return None


FlowFunctions = tuple[VectorField, JacobianVector | None, Jacobian | None, NewtonBlocks | None]


def flow_functions(config: Config, model: Model, objective: Objective, tasks: TaskSchedule | None = None,
                   batched: bool = False) -> FlowFunctions:
    """The field of ``config``'s flow and the Jacobian products its method can use: −D(∇L) in its geometry
    (or GD's modified field when ``flow.modified_lr`` > 0). With ``tasks`` (a data schedule) each is that of
    the task trained at t. ``batched``: they map batches Θ (B, P) (:func:`batch_refusal` must give None)."""
    method = get_method(config.flow.method)
    if batched and (reason := batch_refusal(config)) is not None:
        raise ValueError(f"flow_problem: cannot batch this flow ({reason})")
    if method.uses == "jacobian" and model.num_params > DENSE_JACOBIAN_MAX_PARAMS:
        raise ConfigError(f"flow.method={method.name!r}: needs a dense Jacobian, allowed up to "
                          f"{DENSE_JACOBIAN_MAX_PARAMS} parameters (this model has {model.num_params}); "
                          "use flow.method=cvode (matrix-free) or auto")
    metric = geometry_of(config, model)
    if method.uses == "jacobian" and not get_geometry(config.flow.geometry).linear:
        raise ConfigError(f"flow.method={method.name!r}: needs a dense Jacobian, offered for a geometry with "
                          f"D(g) = P g (flow.geometry=euclidean), not {config.flow.geometry!r}; use cvode or "
                          "auto")

    def of(build):  # build(objective) -> a function of (t, ...): of the one objective, or of the one at t
        if tasks is None:
            return build(objective)
        return per_time(lambda task: build(make_objective(model.with_task(task), task, config.loss)), tasks)

    vector_field, jacobian_vector, jacobian = of(field_builder(config, metric, batched)), None, None
    if config.flow.modified_lr > 0:
        pass  # the modified field's Jacobian is not −PH: implicit methods difference its values instead
    elif method.uses == "jacobian_vector" and config.flow.jacobian == "hvp":
        if gradient_field_jacobian_vector(objective, metric) is None:
            raise ConfigError(f"flow.jacobian='hvp': flow.geometry={config.flow.geometry!r} with "
                              f"flow.geometry_eps={config.flow.geometry_eps!r} is not smooth, it has no "
                              "Jacobian-vector product; allowed: difference")
        jacobian_vector = of(lambda o: gradient_field_jacobian_vector(o, metric))
    elif method.uses == "jacobian":
        # a dense Jacobian by differences would cost P gradients: always the exact one
        jacobian = of(lambda o: gradient_field_jacobian(o, metric))
    return vector_field, jacobian_vector, jacobian, newton_blocks(config, model, tasks)


def newton_blocks(config: Config, model: Model, tasks: TaskSchedule | None = None) -> NewtonBlocks | None:
    """cvode's preconditioner of ``flow.newton_preconditioner`` (None: none): the model's curvature blocks
    at (t, θ), of the task trained at t, in the flow's metric P."""
    choice = config.flow.newton_preconditioner
    if choice == "none":
        return None
    if not model.has_curvature_blocks:
        raise ConfigError(f"flow.newton_preconditioner={choice!r}: needs a model with closed-form curvature "
                          f"blocks (model.kind=reduced with linear attention), not model.kind="
                          f"{config.model.kind!r} with {model.attention!r} attention; allowed: none")
    if config.loss.kind != "population":
        raise ConfigError(f"flow.newton_preconditioner={choice!r}: the blocks are those of the population "
                          f"loss, not loss.kind={config.loss.kind!r}; allowed: none")
    scale = metric_of(config, model)

    def build(current: Model) -> Callable[[float, torch.Tensor], NewtonSystem]:
        return lambda t, theta: ScaledBlocks(current.curvature_blocks(theta), scale)

    at = build(model) if tasks is None else per_time(lambda task: build(model.with_task(task)), tasks)
    return NewtonBlocks(at, jacobian=config.flow.jacobian == "blocks")


@dataclass(frozen=True)
class ScaledBlocks:
    """A model's curvature blocks at one state in the flow's metric P = ``scale``: a :class:`NewtonSystem`."""

    blocks: Any  # has factor(γ, P) and product(P): dynamics.models.factorised.CurvatureBlocks
    scale: torch.Tensor

    def factor(self, gamma: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """r ↦ (I + γ P H̃)⁻¹ r."""
        return self.blocks.factor(gamma, self.scale)

    def product(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ P H̃ v."""
        return self.blocks.product(self.scale)


def _problem(functions: FlowFunctions, tasks: TaskSchedule | None, theta0: torch.Tensor, grid: np.ndarray,
             progress=None) -> FlowProblem:
    vector_field, jacobian_vector, jacobian, blocks = functions
    breakpoints = () if tasks is None else tasks.schedule.breakpoints
    return FlowProblem(vector_field, theta0, grid, jacobian_vector, jacobian, progress=progress,
                       breakpoints=breakpoints, newton_blocks=blocks)


def flow_problem(config: Config, model: Model, objective: Objective, theta0: torch.Tensor,
                 grid: np.ndarray, progress=None, tasks: TaskSchedule | None = None,
                 batched: bool = False) -> FlowProblem:
    """The flow of ``config`` from ``theta0`` on ``grid`` as a solver problem (:func:`flow_functions`); with
    ``tasks`` every phase start is a breakpoint. ``batched``: θ0 is a batch (B, P)."""
    return _problem(flow_functions(config, model, objective, tasks, batched), tasks, theta0, grid, progress)


@dataclass
class BuiltRun:
    """A run of ``config``, built once by :func:`build_run` and handed on: its task, model and training
    objective, its start (θ(0), and the subjects of a run it continues), the data schedule and the task
    trained at each time (None: the task's own frequencies throughout), the task it is measured on
    (:func:`~dynamics.schedule.evaluation_task`), its record grid (:func:`time_grid`) and solver options
    (:func:`solver_options`), and the flow's field and Jacobian products, built on first use and shared by
    every problem made from this run (the run's own, the budget's probe, each member of a batch). ``flow``:
    the flow's problem on the record grid from the start, made by ``build_run(flow=True)`` for the step
    estimate's probe and the run to share (None: not made)."""

    config: Config
    task: FactTask
    model: Model
    objective: Objective
    start: Start
    schedule: Schedule
    tasks: TaskSchedule | None
    measured: FactTask
    grid: np.ndarray
    options: SolverOptions
    flow: FlowProblem | None = None
    _functions: dict[bool, FlowFunctions] = field(default_factory=dict, repr=False)

    def functions(self, batched: bool = False) -> FlowFunctions:
        """The flow's field and Jacobian products (:func:`flow_functions`), built once per ``batched``."""
        if batched not in self._functions:
            self._functions[batched] = flow_functions(self.config, self.model, self.objective, self.tasks,
                                                      batched)
        return self._functions[batched]

    def problem(self, grid: np.ndarray | None = None, theta0: torch.Tensor | None = None, progress=None,
                batched: bool = False) -> FlowProblem:
        """The flow's problem on ``grid`` (default: the record grid) from ``theta0`` (default: the run's
        start)."""
        grid = self.grid if grid is None else grid
        theta0 = self.start.theta0 if theta0 is None else theta0
        return _problem(self.functions(batched), self.tasks, theta0, grid, progress)


def build_run(config: Config, start: Start | None = None, schedule: Schedule | None = None,
              flow: bool = False) -> BuiltRun:
    """The run of ``config``: its task, model and objective (:func:`setup`), its start (``start``, else
    that of ``init.*``: :func:`~dynamics.start.starting_state`), its data schedule (``schedule``, else
    that of ``data.*``: :func:`~dynamics.schedule.task_schedule`), the task it is measured on, its grid
    and solver options; with ``flow``, also the flow's field and problem (``BuiltRun.flow``; a field the
    config cannot have is refused here). The one place a run's pieces are built."""
    task, model, objective = setup(config)
    start = start or starting_state(config, model)
    schedule, tasks = task_schedule(config, task, start.old_subjects, schedule)
    built = BuiltRun(config, task, model, objective, start, schedule, tasks, evaluation_task(task, config),
                     time_grid(config), solver_options(config.flow))
    if flow:
        built.flow = built.problem()
    return built


def integrate_config_flow(config: Config, model: Model, objective: Objective, theta0: torch.Tensor,
                          grid: np.ndarray, progress=None, tasks: TaskSchedule | None = None) -> FlowResult:
    """Integrate the flow of ``config`` on ``grid`` with its method and options (and data schedule)."""
    problem = flow_problem(config, model, objective, theta0, grid, progress, tasks)
    return integrate_problem(problem, config.flow.method, solver_options(config.flow))

