"""Implicit (stiff-aware) methods under the engine's contract.

The gradient flow is stiff on the hallucination plateau (see docs/stiff-flows.md): the Jacobian has a block
of eigenvalues near −ρ while the mode that ends the plateau grows at a rate σ ≪ ρ, so an explicit method's
step is bounded by stability, not accuracy. Implicit methods solve (I − γJ) δ = r at each Newton iteration
and take steps limited by accuracy alone:

* ``cvode``: SUNDIALS CVODE (variable-order BDF, scikit-sundae bindings) with matrix-free GMRES; every
  product J·v comes from the problem's ``jacobian_vector``, or is CVODE's own difference of two field values
  when there is none — never a dense Jacobian; GMRES is preconditioned where the problem carries
  ``newton_blocks`` (:mod:`.preconditioner`);
* ``bdf``, ``radau``, ``lsoda``: SciPy's integrators with the problem's dense ``jacobian``, for small
  parameter vectors only.

Both keep the contract of :class:`~dynamics.solvers.results.FlowResult`: states at every grid point reached,
a status with its time, the progress callback, the user's ``rtol``/``atol``; the cost counts
``hvp_evals`` (J·v products) and ``jacobian_evals`` (dense Jacobians) beside ``function_evals``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..numerics import compute_settings
from .options import FlowProblem, SolverOptions
from .preconditioner import CvodePreconditioner, Preconditioning
from .registry import SCIPY_METHODS
from .results import Cost, FlowResult, GridStates, Status

# GMRES's Krylov vectors, each a state (65 MB at 10^6 facts), allocated whole by CVODE: 20 unpreconditioned;
# 5 with the curvature blocks as preconditioner, where GMRES converges in one to three iterations (5 and 20
# give the same steps and evaluations at 10^4 and 10^5 facts; 3 and 2 do not); 2 where J̃·v comes from the
# very blocks the preconditioner inverts (flow.jacobian=blocks): the preconditioned system is the identity,
# solved in one iteration (2 and 5 give the same counts and numbers at 10^4 facts).
KRYLOV_DIM = 20
PRECONDITIONED_KRYLOV_DIM = 5
EXACT_KRYLOV_DIM = 2


class _Evaluations:
    """Counts the calls a solver makes (f(t, θ) on numpy states, J·v, dense J) and remembers where f was
    first non-finite. A non-finite value is handed back, not raised: an implicit solver probes trial
    states in its Newton iterations and recovers from a bad one by shrinking its step."""

    def __init__(self, problem: FlowProblem):
        self.problem, self.like = problem, problem.theta0
        self.evals = self.jvps = self.jacobians = 0
        self.first_nonfinite = math.inf  # earliest t at which f was not finite, since the last accepted step
        self.preconditioner: CvodePreconditioner | None = None  # cvode's, when the problem has newton_blocks

    def tensor(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(y, dtype=np.float64), device=self.like.device)

    def f(self, t: float, y: np.ndarray) -> np.ndarray:
        self.evals += 1
        dy = self.problem.field(float(t), self.tensor(y)).cpu().numpy()
        if not (np.isfinite(y).all() and np.isfinite(dy).all()):
            self.first_nonfinite = min(self.first_nonfinite, float(t))
        return dy

    def jacobian_vector(self, t: float, y: np.ndarray, v: np.ndarray) -> np.ndarray:
        self.jvps += 1
        return self.problem.jacobian_vector(float(t), self.tensor(y), self.tensor(v)).cpu().numpy()

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        self.jacobians += 1
        return self.problem.jacobian(float(t), self.tensor(y)).cpu().numpy()

    def failure(self, reached: float, solver: str, message: str) -> tuple[Status, float, str]:
        """Status, time and message of a solver that gave up just after ``reached``: ``nonfinite`` when
        the field turned non-finite beyond the last accepted step, else ``step_underflow``."""
        if math.isfinite(self.first_nonfinite):
            when = max(self.first_nonfinite, reached)
            return (Status.NONFINITE, when,
                    f"vector field became non-finite after t={when:.6g} ({solver}: {message})")
        return (Status.STEP_UNDERFLOW, reached,
                f"{solver} stopped at t={reached:.6g}: {message} (stiff or diverging flow)")


class _Grid:
    """The record grid as the solver passes it: after each accepted step to ``reached``, the grid points up
    to there are interpolated inside that step and delivered to ``states`` (the problem's observer, and the
    states kept when asked: :class:`~dynamics.solvers.results.GridStates`); counts steps, drives progress,
    keeps the budget (``options.steps_left`` steps; the message names ``flow.max_steps``)."""

    def __init__(self, calls: _Evaluations, problem: FlowProblem, options: SolverOptions):
        self.calls, self.times, self.options = calls, np.asarray(problem.times, dtype=np.float64), options
        self.theta0 = problem.theta0.detach().cpu().numpy().astype(np.float64)
        self.states = GridStates(problem)
        self.max_steps, self.progress = options.steps_left, problem.progress
        self.k, self.steps = 1, 0

    @property
    def done(self) -> bool:
        return self.k >= len(self.times)

    def accept(self, reached: float, interpolant: Callable[[], Callable[[float], np.ndarray]]
               ) -> tuple[Status, float, str] | None:
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
                return Status.NONFINITE, t, f"state became non-finite at t={t:.6g}"
            self.states.add(torch.as_tensor(state, device=self.calls.like.device))
            self.k += 1
        if self.progress is not None:
            self.progress(reached)
        if self.steps >= self.max_steps and not self.done:
            return Status.MAX_STEPS, reached, self.options.budget_message(reached)
        if self.options.pace is not None and not self.done:
            too_slow = self.options.pace.accept(reached)
            if too_slow is not None:
                return Status.TOO_SLOW, reached, too_slow
        return None


def integrate_implicit(method: str, problem: FlowProblem, options: SolverOptions) -> FlowResult:
    """Integrate ``problem`` with ``cvode`` (J·v from ``problem.jacobian_vector`` or differences) or a SciPy
    method (dense J from ``problem.jacobian`` or differences); θ at every grid time."""
    start = time.perf_counter()
    times = np.asarray(problem.times, dtype=np.float64)
    calls = _Evaluations(problem)
    grid = _Grid(calls, problem, options)
    with compute_settings(problem.theta0):
        if grid.max_steps <= 0 and not grid.done:
            status, when, message = Status.MAX_STEPS, float(times[0]), options.budget_message(float(times[0]))
        elif method == "cvode":
            status, when, message = _cvode(calls, grid, options)
        else:
            status, when, message = _scipy(calls, SCIPY_METHODS[method], grid, options)
    counts = Preconditioning() if calls.preconditioner is None else calls.preconditioner.counts
    cost = Cost(function_evals=calls.evals, hvp_evals=calls.jvps, jacobian_evals=calls.jacobians,
                preconditioner_setups=counts.setups, block_products=counts.products,
                accepted_steps=grid.steps, rejected_steps=None,  # CVODE's and SciPy's wrappers do not say
                wall_seconds=time.perf_counter() - start - grid.states.observe_seconds)
    return FlowResult(times[:grid.k].copy(), grid.states.kept(), status, when, message, cost,
                      last_state=grid.states.last)


def _cvode(calls: _Evaluations, grid: _Grid, options: SolverOptions) -> tuple[Status, float | None, str]:
    from sksundae.cvode import CVODE, CVODEJacTimes

    def rhs(t, y, yp):
        yp[:] = calls.f(t, y)

    def jtimes(t, y, fy, v, jv):
        jv[:] = calls.jacobian_vector(t, y, v)

    products = None if calls.problem.jacobian_vector is None else CVODEJacTimes(None, jtimes)
    blocks = calls.problem.newton_blocks
    preconditioner = None if blocks is None else CvodePreconditioner(blocks, calls.like)
    calls.preconditioner = preconditioner
    krylov_dim = KRYLOV_DIM if blocks is None else PRECONDITIONED_KRYLOV_DIM
    if blocks is not None and blocks.jacobian:
        products = CVODEJacTimes(None, preconditioner.jacobian_vector)
        krylov_dim = EXACT_KRYLOV_DIM
    solver = CVODE(rhs, method="BDF", linsolver="gmres", krylov_dim=krylov_dim, rtol=options.rtol,
                   atol=options.atol, first_step=options.first_step, max_num_steps=options.max_steps,
                   jactimes=products, precond=None if preconditioner is None else preconditioner.sundials())
    times = grid.times
    reached = float(times[0])
    solver.init_step(reached, grid.theta0)
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
            return Status.NONFINITE, new, f"state became non-finite at t={new:.6g}"
        if new - reached <= 1e-13 * max(1.0, abs(new)):
            # CVODE only warns when t + h == t and goes on (its error test passes on NaN): stop here.
            return calls.failure(reached, "CVODE", "step size underflow")
        reached = new
        stop = grid.accept(reached, lambda: lambda t: solver.step(t).y)
        if stop is not None:
            return stop
    return Status.OK, None, "integrated to t_max"


def _scipy(calls: _Evaluations, name: str, grid: _Grid, options: SolverOptions
           ) -> tuple[Status, float | None, str]:
    import scipy.integrate

    start, end = float(grid.times[0]), float(grid.times[-1])
    jac = None if calls.problem.jacobian is None else calls.jacobian
    solver = getattr(scipy.integrate, name)(calls.f, start, grid.theta0, end, rtol=options.rtol,
                                            atol=options.atol, first_step=options.first_step, jac=jac)
    while not grid.done:
        reached = float(solver.t)
        message = solver.step()
        if solver.status == "failed":
            return calls.failure(reached, name, str(message))
        if not np.isfinite(solver.y).all():  # an accepted step can carry NaN: its error test compares NaN
            return Status.NONFINITE, float(solver.t), f"state became non-finite at t={solver.t:.6g}"
        stop = grid.accept(float(solver.t), solver.dense_output)
        if stop is not None:
            return stop
    return Status.OK, None, "integrated to t_max"
