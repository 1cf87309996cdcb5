"""Stiff-aware (implicit) integrators for the flow engine. Know nothing about models.

The gradient flow dθ/dt = f(θ) = −P ∇L(θ) is stiff on the hallucination plateau: the Jacobian
J = ∂f/∂θ = −P H has eigenvalues near −0.7 while the mode that ends the plateau grows at about 0.005, so an
explicit method's step is bounded by stability, not accuracy. Implicit methods solve
(I − γJ) δ = r at each Newton iteration and take steps limited by accuracy alone:

* ``cvode``: SUNDIALS CVODE (variable-order BDF, scikit-sundae bindings) with matrix-free GMRES; every
  product J·v is a Hessian-vector product supplied by the caller, or CVODE's own difference of two field
  values when none is — never a dense Hessian;
* ``bdf``, ``radau``, ``lsoda``: SciPy's integrators with the exact dense Jacobian supplied by the caller,
  for small parameter vectors only (a dense Jacobian costs P Hessian-vector products).

Both keep the engine's contract (:class:`~dynamics.flow.FlowResult`): states at every grid point reached, a
status ``ok`` | ``nonfinite`` | ``step_underflow`` | ``max_steps`` with its time, the progress callback, and
the user's ``rtol``/``atol``. ``jvp_evals`` counts Jacobian-vector products and ``jacobian_evals`` dense
Jacobians, beside ``function_evals``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from .numerics import compute_settings

VectorField = Callable[[torch.Tensor], torch.Tensor]
JacobianVector = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (θ, v) -> J(θ)·v
Jacobian = Callable[[torch.Tensor], torch.Tensor]  # θ -> J(θ), dense (P, P)

SCIPY_METHODS = {"bdf": "BDF", "radau": "Radau", "lsoda": "LSODA"}
IMPLICIT_METHODS = ("cvode", *SCIPY_METHODS)


class _Evaluations:
    """Counts the calls a solver makes (f(θ) on numpy states, J·v, dense J) and remembers where f was
    first non-finite. A non-finite value is handed back, not raised: an implicit solver probes trial
    states in its Newton iterations and recovers from a bad one by shrinking its step."""

    def __init__(self, field: VectorField, like: torch.Tensor):
        self.field, self.like = field, like
        self.evals = self.jvps = self.jacobians = 0
        self.first_nonfinite = math.inf  # earliest t at which f was not finite, since the last accepted step

    def tensor(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(y, dtype=np.float64), device=self.like.device)

    def f(self, t: float, y: np.ndarray) -> np.ndarray:
        self.evals += 1
        dy = self.field(self.tensor(y)).cpu().numpy()
        if not (np.isfinite(y).all() and np.isfinite(dy).all()):
            self.first_nonfinite = min(self.first_nonfinite, float(t))
        return dy

    def failure(self, reached: float, solver: str, message: str) -> tuple[str, float, str]:
        """Status, time and message of a solver that gave up just after ``reached``: ``nonfinite`` when
        the field turned non-finite beyond the last accepted step, else ``step_underflow``."""
        if math.isfinite(self.first_nonfinite):
            when = max(self.first_nonfinite, reached)
            return ("nonfinite", when,
                    f"vector field became non-finite after t={when:.6g} ({solver}: {message})")
        return ("step_underflow", reached,
                f"{solver} stopped at t={reached:.6g}: {message} (stiff or diverging flow)")


class _Grid:
    """The record grid as the solver passes it: after each accepted step to ``reached``, the grid points up
    to there are interpolated inside that step and kept; counts steps, drives progress, keeps the budget."""

    def __init__(self, calls: _Evaluations, states: list[np.ndarray], times: np.ndarray, max_steps: int,
                 progress: Callable[[float], None] | None):
        self.calls, self.states, self.times = calls, states, times
        self.max_steps, self.progress = max_steps, progress
        self.k, self.steps = 1, 0

    @property
    def done(self) -> bool:
        return self.k >= len(self.times)

    def accept(self, reached: float, interpolant: Callable[[], Callable[[float], np.ndarray]]
               ) -> tuple[str, float, str] | None:
        """Record a step accepted at ``reached``; (status, time, message) when that ends the run, else None.
        ``interpolant()`` gives the step's interpolating function; it is built only when a grid point lies
        inside the step."""
        self.steps += 1
        self.calls.first_nonfinite = math.inf
        interpolate = None
        while not self.done and self.times[self.k] <= reached:
            interpolate = interpolate or interpolant()
            t = float(self.times[self.k])
            state = np.array(np.atleast_2d(interpolate(t))[-1], dtype=np.float64)
            if not np.isfinite(state).all():
                return "nonfinite", t, f"state became non-finite at t={t:.6g}"
            self.states.append(state)
            self.k += 1
        if self.progress is not None:
            self.progress(reached)
        if self.steps >= self.max_steps and not self.done:
            return ("max_steps", reached, f"step budget flow.max_steps={self.max_steps} exhausted at "
                    f"t={reached:.6g}")
        return None


def integrate_implicit(field: VectorField, theta0: torch.Tensor, times: np.ndarray, *, method: str,
                       rtol: float = 1e-6, atol: float = 1e-10, first_step: float = 1e-3,
                       max_steps: int = 200_000, jacobian_vector: JacobianVector | None = None,
                       jacobian: Jacobian | None = None, progress: Callable[[float], None] | None = None):
    """Integrate dθ/dt = field(θ) from θ(times[0]) = theta0 with an implicit method; θ at every grid time.

    ``cvode`` uses ``jacobian_vector(θ, v) = J(θ)·v``, ``bdf``/``radau``/``lsoda`` a dense ``jacobian(θ)``;
    when not given, the solver differences f instead (those evaluations count as function evaluations).
    Returns a :class:`~dynamics.flow.FlowResult` (with ``jvp_evals`` and ``jacobian_evals`` set).
    """
    from .flow import FlowResult

    if method not in IMPLICIT_METHODS:
        raise ValueError(f"method={method!r}: allowed " + ", ".join(IMPLICIT_METHODS))
    start = time.perf_counter()
    times = np.asarray(times, dtype=np.float64)
    calls = _Evaluations(field, theta0)
    states = [theta0.detach().cpu().numpy().astype(np.float64)]
    grid = _Grid(calls, states, times, max_steps, progress)
    with compute_settings(theta0):
        if method == "cvode":
            status, when, message = _cvode(calls, jacobian_vector, grid, rtol, atol, first_step, max_steps)
        else:
            status, when, message = _scipy(calls, jacobian, SCIPY_METHODS[method], grid, rtol, atol,
                                           first_step)
    kept = torch.as_tensor(np.stack(states), device=theta0.device)
    return FlowResult(times[:len(kept)], kept, status, when, message, calls.evals, grid.steps, 0,
                      time.perf_counter() - start, calls.jvps, calls.jacobians)


def _cvode(calls: _Evaluations, jacobian_vector: JacobianVector | None, grid: _Grid, rtol: float,
           atol: float, first_step: float, max_steps: int) -> tuple[str, float | None, str]:
    from sksundae.cvode import CVODE, CVODEJacTimes

    def rhs(t, y, yp):
        yp[:] = calls.f(t, y)

    def jtimes(t, y, fy, v, jv):
        calls.jvps += 1
        jv[:] = jacobian_vector(calls.tensor(y), calls.tensor(v)).cpu().numpy()

    solver = CVODE(rhs, method="BDF", linsolver="gmres", krylov_dim=20, rtol=rtol, atol=atol,
                   first_step=first_step, max_num_steps=max_steps,
                   jactimes=None if jacobian_vector is None else CVODEJacTimes(None, jtimes))
    times = grid.times
    reached = float(times[0])
    solver.init_step(reached, grid.states[0])
    while not grid.done:
        # One internal step, then the grid points it passed, interpolated inside that step. (After an
        # interpolated output CVODE's next one-step call first returns its current time: not a new step.)
        out = solver.step(float(times[-1]), method="onestep")
        if not out.success:
            return calls.failure(reached, "CVODE", str(out.message))
        new = float(np.atleast_1d(out.t)[-1])
        if new <= reached:
            continue
        if not np.isfinite(np.atleast_2d(out.y)[-1]).all():
            return "nonfinite", new, f"state became non-finite at t={new:.6g}"
        if new - reached <= 1e-13 * max(1.0, abs(new)):
            # CVODE only warns when t + h == t and goes on (its error test passes on NaN): stop here.
            return calls.failure(reached, "CVODE", "step size underflow")
        reached = new
        stop = grid.accept(reached, lambda: lambda t: solver.step(t).y)
        if stop is not None:
            return stop
    return "ok", None, "integrated to t_max"


def _scipy(calls: _Evaluations, jacobian: Jacobian | None, name: str, grid: _Grid, rtol: float, atol: float,
           first_step: float) -> tuple[str, float | None, str]:
    import scipy.integrate

    def jac(t, y):
        calls.jacobians += 1
        return jacobian(calls.tensor(y)).cpu().numpy()

    start, end = float(grid.times[0]), float(grid.times[-1])
    solver = getattr(scipy.integrate, name)(calls.f, start, grid.states[0], end, rtol=rtol, atol=atol,
                                            first_step=first_step, jac=None if jacobian is None else jac)
    while not grid.done:
        reached = float(solver.t)
        message = solver.step()
        if solver.status == "failed":
            return calls.failure(reached, name, str(message))
        if not np.isfinite(solver.y).all():  # an accepted step can carry NaN: its error test compares NaN
            return "nonfinite", float(solver.t), f"state became non-finite at t={solver.t:.6g}"
        stop = grid.accept(float(solver.t), solver.dense_output)
        if stop is not None:
            return stop
    return "ok", None, "integrated to t_max"


def is_implicit(method: str) -> bool:
    """Whether ``method`` names one of this module's implicit integrators."""
    return method in IMPLICIT_METHODS
