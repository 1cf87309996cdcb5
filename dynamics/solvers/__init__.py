"""The flow engine's solvers. They integrate any vector field f(t, θ) of a flat parameter vector and know
nothing of models or configurations.

One call integrates a flow, torchdiffeq-style::

    result = integrate_flow(field, theta0, times, method="dopri5", rtol=1e-6, atol=1e-10)
    result.status, result.t, result.states, result.cost

A :class:`FlowProblem` with an observer, ``observe(k, θ)``, hands each grid state over as soon as it is
final and keeps none (unless ``keep_states``): what a caller does not reduce on the way is not held.

Modules: ``registry`` (the methods by name), ``options`` (the problem and the solver settings),
``results`` (result types, the status vocabulary, costs), ``explicit`` (torchdiffeq), ``implicit`` (CVODE,
SciPy), ``stiffness`` (the Jacobian's spectral radius), ``auto`` (explicit, then implicit when stiff).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..lazy import lazy_exports
from .options import (
    FlowProblem,
    Jacobian,
    JacobianVector,
    NewtonBlocks,
    NewtonSystem,
    Observer,
    Progress,
    SolverOptions,
    VectorField,
)
from .registry import METHODS, Method, get_method

if TYPE_CHECKING:
    import torch

    from .results import BatchFlowResult, FlowResult

# what computes (torch) is loaded when first read: the registry and the options alone check a config
__getattr__, __dir__ = lazy_exports(__name__, {
    "BatchFlowResult": ".results", "Cost": ".results", "FlowResult": ".results", "Status": ".results",
    "join": ".results", "spectral_radius": ".stiffness"})

__all__ = ["METHODS", "BatchFlowResult", "Cost", "FlowProblem", "FlowResult", "Jacobian", "JacobianVector",
           "NewtonBlocks", "NewtonSystem", "Method", "Observer", "Progress", "SolverOptions", "Status",
           "VectorField", "get_method", "integrate_flow", "integrate_flow_batch", "integrate_problem", "join",
           "spectral_radius"]


def integrate_flow(field: VectorField, theta0: torch.Tensor, times: np.ndarray, *, method: str = "dopri5",
                   rtol: float = SolverOptions.rtol, atol: float = SolverOptions.atol,
                   first_step: float = SolverOptions.first_step, max_steps: int = SolverOptions.max_steps,
                   chunk: int | None = None, breakpoints: Sequence[float] = (),
                   progress: Progress | None = None, jacobian_vector: JacobianVector | None = None,
                   jacobian: Jacobian | None = None) -> FlowResult:
    """Integrate dθ/dt = field(t, θ) from θ(times[0]) = theta0, recording θ at every entry of ``times``
    (increasing). ``method``: a name of :data:`METHODS`. ``breakpoints``: times where the field may jump;
    no step crosses one. ``progress(t)`` is called after every accepted step. Implicit methods use
    ``jacobian_vector(t, θ, v) = J·v`` (cvode, auto) or a dense ``jacobian(t, θ)`` (bdf, radau, lsoda) when
    given, and differences of the field when not.

    Numerical failure never raises: the result's ``status`` says what happened and when, and the states
    up to the last grid point before it are kept. A flow whose pace projects far more than ``max_steps``
    steps stops early with status ``too_slow`` (:mod:`~dynamics.solvers.pace`).
    """
    problem = FlowProblem(field, theta0, np.asarray(times, dtype=np.float64), jacobian_vector, jacobian,
                          progress, tuple(breakpoints))
    options = SolverOptions(rtol=rtol, atol=atol, first_step=first_step, max_steps=max_steps, chunk=chunk)
    return integrate_problem(problem, method, options)


def integrate_problem(problem: FlowProblem, method: str, options: SolverOptions) -> FlowResult:
    """Integrate a :class:`FlowProblem` with the named method and options (what :func:`integrate_flow`
    does after packing its arguments). Breakpoints split the grid: each piece [b_k, b_{k+1}] is integrated
    on its own, the field seeing times in [b_k, b_{k+1}) only, and the pieces are joined."""
    import torch

    from ..numerics import compute_settings
    from .results import Status, join

    spec = get_method(method)
    times = problem.times
    options = options.paced(times)  # one pace stop for all the pieces
    inner = sorted({float(b) for b in problem.breakpoints if times[0] < b < times[-1]})
    if not inner:
        return spec.integrate(problem, options)
    edges = [float(times[0]), *inner, float(times[-1])]
    parts: list[FlowResult] = []
    state, steps = problem.theta0, options.spent
    if problem.observe is not None:
        with compute_settings(state):  # the settings the solvers observe under
            problem.observe(0, state)  # every piece's start has been seen: the first one here
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        inside = np.flatnonzero((times > start) & (times < end))
        piece_times = np.concatenate([[start], times[inside], [end]])
        # the piece's points in the grid (its start was seen already; a breakpoint off the grid: −1)
        indices = np.concatenate([[-1], inside, [_index_of(times, end)]])
        piece = _before(problem, end).restricted(piece_times, state, indices)
        part = spec.integrate(piece, options.replace(spent=steps))
        parts.append(part)
        steps += part.cost.accepted_steps
        if part.status != Status.OK:
            break
        state = part.last_state
    joined = join(parts)
    keep = np.isin(joined.t, times)  # drop the breakpoints that are not record times
    joined.t = joined.t[keep]
    if joined.states is not None:
        joined.states = joined.states[torch.as_tensor(keep, device=joined.states.device)]
    return joined


def _index_of(times: np.ndarray, t: float) -> int:
    """The index of ``t`` in the grid ``times``, −1 when it is not a grid time."""
    k = int(np.searchsorted(times, t))
    return k if k < len(times) and times[k] == t else -1


def _before(problem: FlowProblem, end: float) -> FlowProblem:
    """The problem with the field (and its Jacobian products) evaluated at times strictly before ``end``:
    a solver's last stage lands on ``end`` itself, which belongs to the next piece."""
    last = float(np.nextafter(end, -np.inf))

    def clamp(t: float) -> float:
        return min(float(t), last)

    jv, jac = problem.jacobian_vector, problem.jacobian
    return dataclasses.replace(
        problem, field=lambda t, theta: problem.field(clamp(t), theta),
        jacobian_vector=None if jv is None else (lambda t, theta, v: jv(clamp(t), theta, v)),
        jacobian=None if jac is None else (lambda t, theta: jac(clamp(t), theta)))


def integrate_flow_batch(field: VectorField, theta0: torch.Tensor, times: np.ndarray, *,
                         method: str = "dopri5", rtol: float = SolverOptions.rtol,
                         atol: float = SolverOptions.atol, first_step: float = SolverOptions.first_step,
                         max_steps: int = SolverOptions.max_steps,
                         progress: Progress | None = None) -> BatchFlowResult:
    """Integrate B independent flows (theta0: (B, P); the field maps (t, Θ) row by row) with shared steps and
    a status per member; ``method`` must be a batched (explicit) method. See
    :func:`~dynamics.solvers.explicit.integrate_explicit_batch`."""
    from .explicit import integrate_explicit_batch

    spec = get_method(method)
    if not spec.batched:
        raise ValueError(f"method={method!r}: integrates one flow at a time; batched methods: "
                         + ", ".join(name for name, m in METHODS.items() if m.batched))
    problem = FlowProblem(field, theta0, np.asarray(times, dtype=np.float64), progress=progress)
    options = SolverOptions(rtol=rtol, atol=atol, first_step=first_step, max_steps=max_steps)
    return integrate_explicit_batch(method, problem, options.paced(problem.times))
