"""``flow.method=sliding``: the ε = 0 sign flow integrated event by event as a Filippov system
(:mod:`dynamics.solvers.filippov`): exact free pieces between sign changes of the gradient entries,
equivalent-control sliding where entries stay at 0. The field's gradient and Hessian-vector products come
with the field itself (``field.gradient``, ``field.hessian_vector`` and ``field.direction_map``, set by
:func:`~dynamics.fields.gradient_field`): this method reads ∇L and H·x, not −sign(P ∇L)."""

from __future__ import annotations

from ..errors import ConfigError
from .filippov import integrate_sign_flow
from .options import FlowProblem, SolverOptions
from .results import FlowResult, GridStates, Status

STATUS = {"ok": Status.OK, "max_steps": Status.MAX_STEPS, "stuck": Status.STEP_UNDERFLOW}


def integrate_sliding(problem: FlowProblem, options: SolverOptions) -> FlowResult:
    """Integrate ``problem`` (the field −sign(P ∇L) of a sign geometry at ε = 0) with
    :func:`~dynamics.solvers.filippov.integrate_sign_flow`, at most ``options.steps_left`` steps (accepted and
    rejected). Status ``step_underflow``: sliding entries could not be held at g = 0 (or events kept
    coming at one instant). A field without its gradient (a data schedule's, or not a sign field at ε = 0)
    is refused (ConfigError)."""
    field = problem.field
    metric = getattr(field, "direction_map", None)
    if getattr(field, "gradient", None) is None or getattr(metric, "name", None) != "sign" or metric.eps != 0:
        raise ConfigError("flow.method='sliding': integrates the ε = 0 sign flow of one loss (no data "
                          "schedule, no modified flow); allowed: flow.geometry=sign, flow.geometry_eps=0 "
                          "and the task's own frequencies throughout, or another flow.method")
    result = integrate_sign_flow(field.gradient, field.hessian_vector, problem.theta0, problem.times,
                                 metric.scale, first_step=options.first_step, max_steps=options.steps_left)
    grid = GridStates(problem)
    for t, state in zip(result.t[1:], result.states[1:], strict=True):
        grid.add(state)
        if problem.progress is not None:
            problem.progress(float(t))
    status, when = STATUS[result.status], result.status_time
    message = ("" if status == Status.OK else options.budget_message(when) if status == Status.MAX_STEPS
               else f"{result.why} at t={when:.6g}")
    return FlowResult(result.t, grid.kept(), status, None if status == Status.OK else when, message,
                      result.cost, last_state=grid.last)
