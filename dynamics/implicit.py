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
    with compute_settings(theta0):
        if method == "cvode":
            status, when, message, steps = _cvode(calls, jacobian_vector, states, times, rtol, atol,
                                                  first_step, max_steps, progress)
        else:
            status, when, message, steps = _scipy(calls, jacobian, SCIPY_METHODS[method], states, times, rtol,
                                                  atol, first_step, max_steps, progress)
    kept = torch.as_tensor(np.stack(states), device=theta0.device)
    return FlowResult(times[:len(kept)], kept, status, when, message, calls.evals, steps, 0,
                      time.perf_counter() - start, calls.jvps, calls.jacobians)


def _cvode(calls: _Evaluations, jacobian_vector: JacobianVector | None, states: list[np.ndarray],
           times: np.ndarray, rtol: float, atol: float, first_step: float, max_steps: int,
           progress: Callable[[float], None] | None) -> tuple[str, float | None, str, int]:
    from sksundae.cvode import CVODE, CVODEJacTimes

    def rhs(t, y, yp):
        yp[:] = calls.f(t, y)

    def jtimes(t, y, fy, v, jv):
        calls.jvps += 1
        jv[:] = jacobian_vector(calls.tensor(y), calls.tensor(v)).cpu().numpy()

    solver = CVODE(rhs, method="BDF", linsolver="gmres", krylov_dim=20, rtol=rtol, atol=atol,
                   first_step=first_step, max_num_steps=max_steps,
                   jactimes=None if jacobian_vector is None else CVODEJacTimes(None, jtimes))
    steps, k, reached = 0, 1, float(times[0])
    solver.init_step(float(times[0]), states[0])
    while k < len(times):
        # One internal step, then the grid points it passed, interpolated inside that step. (After an
        # interpolated output CVODE's next one-step call first returns its current time: not a new step.)
        out = solver.step(float(times[-1]), method="onestep")
        if not out.success:
            return (*calls.failure(reached, "CVODE", str(out.message)), steps)
        new = float(np.atleast_1d(out.t)[-1])
        if new <= reached:
            continue
        if not np.isfinite(np.atleast_2d(out.y)[-1]).all():
            return "nonfinite", new, f"state became non-finite at t={new:.6g}", steps
        if new - reached <= 1e-13 * max(1.0, abs(new)):
            # CVODE only warns when t + h == t and goes on (its error test passes on NaN): stop here.
            return (*calls.failure(reached, "CVODE", "step size underflow"), steps)
        steps, reached, calls.first_nonfinite = steps + 1, new, math.inf
        while k < len(times) and times[k] <= reached:
            states.append(np.array(np.atleast_2d(solver.step(float(times[k])).y)[-1], dtype=np.float64))
            k += 1
        if progress is not None:
            progress(reached)
        if steps >= max_steps and k < len(times):
            return _budget(max_steps, reached, steps)
    return "ok", None, "integrated to t_max", steps


def _budget(max_steps: int, reached: float, steps: int) -> tuple[str, float, str, int]:
    return "max_steps", reached, f"step budget flow.max_steps={max_steps} exhausted at t={reached:.6g}", steps


def _scipy(calls: _Evaluations, jacobian: Jacobian, name: str, states: list[np.ndarray], times: np.ndarray,
           rtol: float, atol: float, first_step: float, max_steps: int,
           progress: Callable[[float], None] | None) -> tuple[str, float | None, str, int]:
    import scipy.integrate

    def jac(t, y):
        calls.jacobians += 1
        return jacobian(calls.tensor(y)).cpu().numpy()

    solver = getattr(scipy.integrate, name)(calls.f, float(times[0]), states[0], float(times[-1]), rtol=rtol,
                                            atol=atol, first_step=first_step,
                                            jac=None if jacobian is None else jac)
    steps, k = 0, 1
    while k < len(times):
        reached = float(solver.t)
        message = solver.step()
        if solver.status == "failed":
            return (*calls.failure(reached, name, str(message)), steps)
        if not np.isfinite(solver.y).all():  # an accepted step can carry NaN: its error test compares NaN
            return "nonfinite", float(solver.t), f"state became non-finite at t={solver.t:.6g}", steps
        steps, calls.first_nonfinite = steps + 1, math.inf
        dense = None
        while k < len(times) and times[k] <= solver.t:
            dense = dense or solver.dense_output()
            state = np.asarray(dense(times[k]), dtype=np.float64)
            if not np.isfinite(state).all():
                return "nonfinite", float(times[k]), f"state became non-finite at t={times[k]:.6g}", steps
            states.append(state)
            k += 1
        if progress is not None:
            progress(float(solver.t))
        if steps >= max_steps and k < len(times):
            return _budget(max_steps, float(solver.t), steps)
    return "ok", None, "integrated to t_max", steps


def is_implicit(method: str) -> bool:
    """Whether ``method`` names one of this module's implicit integrators."""
    return method in IMPLICIT_METHODS
