"""Explicit adaptive Runge–Kutta methods (torchdiffeq's ``odeint``) under the engine's contract.

``integrate_explicit`` never raises on numerical failure: the result carries a status (ok, nonfinite,
step_underflow, max_steps, too_slow), the time it happened and the states at every grid point reached. Only
torchdiffeq's public ``odeint`` is used: the grid is integrated in chunks (the step size carried across), so
a failure loses no chunk already done; a chunk that fails (non-finite, step underflow) is then replayed one
grid point at a time, within what is left of the step budget, to keep every point before the failure.
The step budget itself never needs a replay: once it is spent the solver coasts to the end of the chunk on
a zero field (no evaluation, no step counted), and the chunk's points up to the last accepted step are kept,
so a run takes at most ``max_steps`` steps. The pace stop (:mod:`.pace`) ends a run the same way.
``integrate_explicit_batch`` integrates B independent flows together with shared steps and a status per
member.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..lazy import import_deferring
from ..numerics import compute_settings
from .options import FlowProblem, SolverOptions, VectorField
from .pace import Pace
from .results import BatchFlowResult, Cost, FlowResult, GridStates, Status


class _Stop(Exception):
    def __init__(self, status: Status, time_: float, message: str):
        super().__init__(message)
        self.status, self.time, self.message = status, time_, message


class _Counter(torch.nn.Module):
    """Wraps the field for torchdiffeq: counts evaluations and steps, checks finiteness, drives progress,
    keeps the step budget (``max_steps`` steps for this part; ``exhausted``: the time of the step that
    spent it, after which the field is zero and nothing is counted)."""

    def __init__(self, field: VectorField, max_steps: int, progress, pace: Pace | None = None):
        super().__init__()
        self.field, self.max_steps, self.progress, self.pace = field, max_steps, progress, pace
        self.evals = self.accepted = self.rejected = 0
        self.last_dt: float | None = None
        self.t_reached = 0.0
        self.exhausted: float | None = None
        self.too_slow: str | None = None  # the pace stop's message, when it ended the run at ``exhausted``

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.exhausted is not None:  # coasting to the end of the chunk: its points beyond are dropped
            return torch.zeros_like(y)
        self.evals += 1
        if self.members is not None:
            return self._batched(t, y)
        if not torch.isfinite(y).all():
            raise _Stop(Status.NONFINITE, float(t), f"state became non-finite at t={float(t):.6g}")
        dy = self.field(float(t), y)
        if not torch.isfinite(dy).all():
            raise _Stop(Status.NONFINITE, float(t), f"vector field became non-finite at t={float(t):.6g}")
        return dy

    # Batch mode only: per member, the time it stopped (NaN while alive), why, and the last time up to
    # which its recorded states are exact (the start of the step that stopped it).
    members: torch.Tensor | None = None
    member_kind: list[Status | None] | None = None
    member_exact_until: list[float] | None = None
    worst: int = 0  # the member with the largest error at the last norm evaluation

    def start_batch(self, size: int, device: torch.device) -> None:
        self.members = torch.full((size,), math.nan, dtype=torch.float64, device=device)
        self.member_kind = [None] * size
        self.member_exact_until = [math.inf] * size

    def freeze(self, b: int, kind: Status, when: float, exact_until: float) -> None:
        """Stop member b (zero derivative from now on)."""
        self.members[b] = when
        self.member_kind[b] = kind
        self.member_exact_until[b] = exact_until

    def alive(self) -> torch.Tensor:
        return torch.isnan(self.members)

    def _batched(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Batch mode: a member whose state or field turns non-finite is frozen (zero derivative) and its
        failure time recorded; the others go on."""
        alive = self.alive()
        safe = torch.where(alive[:, None], y, torch.zeros_like(y))
        dy = self.field(float(t), safe)
        bad = alive & ~(torch.isfinite(y).all(1) & torch.isfinite(dy).all(1))
        if bad.any():
            # The stage that found it lies inside a step begun at t_reached: grid points after that are
            # interpolated from this step's zeroed stages, so the member's exact record ends there.
            for b in torch.nonzero(bad).flatten().tolist():
                self.freeze(b, Status.NONFINITE, float(t), self.t_reached)
            alive = alive & ~bad
        return torch.where(alive[:, None], dy, torch.zeros_like(dy))

    def member_norm(self, ratio: torch.Tensor) -> torch.Tensor:
        """Error norm of a batch: the largest per-member RMS over the members still alive."""
        rms = ratio.pow(2).mean(1).sqrt()
        rms = torch.where(self.alive(), rms, torch.zeros_like(rms))
        self.worst = int(rms.argmax())
        return rms.max()

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        if self.exhausted is not None:
            return
        self.accepted += 1
        self.last_dt = float(dt)
        self.t_reached = float(t0 + dt)
        if self.progress is not None:
            self.progress(self.t_reached)
        if self.accepted >= self.max_steps:
            self.exhausted = self.t_reached
        elif self.pace is not None:
            self.too_slow = self.pace.accept(self.t_reached)
            if self.too_slow is not None:  # coast to the chunk's end like a spent budget
                self.exhausted = self.t_reached

    def callback_reject_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        if self.exhausted is None:
            self.rejected += 1

    def cost(self, start: float) -> Cost:
        return Cost(function_evals=self.evals, accepted_steps=self.accepted, rejected_steps=self.rejected,
                    wall_seconds=time.perf_counter() - start)


def integrate_explicit(method: str, problem: FlowProblem, options: SolverOptions) -> FlowResult:
    """Integrate ``problem`` with the torchdiffeq method ``method`` (see the module docstring)."""
    with compute_settings(problem.theta0):
        result, _ = _integrate(method, problem, options, batch=False)
    return result


def integrate_explicit_batch(method: str, problem: FlowProblem, options: SolverOptions) -> BatchFlowResult:
    """Integrate B independent flows dθ_b/dt = field(t, Θ)_b together (Θ: (B, P); the field maps (B, P) to
    (B, P) row by row) on one grid, one evaluation of the batched field per stage.

    Step control is shared but judged member by member: the error norm is the largest per-member RMS, so
    every member meets the tolerance on its own scale. A member whose state turns non-finite is frozen
    with status ``nonfinite`` and its time; a step-size underflow while several members are alive freezes
    the member with the largest error (status ``step_underflow``), so a member blowing up in finite time
    does not stop the rest. ``member_kept[b]`` counts the leading grid points exact for member b.
    """
    with compute_settings(problem.theta0[0]):
        flow, counter = _integrate(method, problem, options, batch=True)
    statuses, when, kept = [], [], []
    for b, kind in enumerate(counter.member_kind):
        if kind is None:
            statuses.append(flow.status)
            when.append(flow.status_time)
            kept.append(len(flow.t))
        else:
            statuses.append(kind)
            when.append(float(counter.members[b]))
            exact_until = counter.member_exact_until[b]
            kept.append(max(1, int(np.searchsorted(flow.t, exact_until, side="right"))))
    return BatchFlowResult(flow.t, flow.states, flow.status, flow.status_time, flow.message, statuses,
                           when, kept, flow.cost)


def _integrate(method: str, problem: FlowProblem, options: SolverOptions, batch: bool
               ) -> tuple[FlowResult, _Counter]:
    start = time.perf_counter()
    times = np.asarray(problem.times, dtype=np.float64)
    theta0 = problem.theta0
    # Each chunk restarts the solver (about one step's work); a few dozen chunks keep that cost small.
    chunk = options.chunk or max(32, len(times) // 24)
    counter = _Counter(problem.field, options.steps_left, problem.progress, options.pace)
    if batch:
        counter.start_batch(theta0.shape[0], theta0.device)
    grid = torch.as_tensor(times, device=theta0.device)
    states = GridStates(problem)
    status, status_time, message = Status.OK, None, "integrated to t_max"
    i = 0
    if counter.max_steps <= 0 and len(grid) > 1:
        status, status_time = Status.MAX_STEPS, float(times[0])
        message = options.budget_message(status_time)
    while i < len(grid) - 1 and status == Status.OK:
        j = min(i + chunk, len(grid) - 1)
        try:
            solution = _solve(counter, states.last, grid[i:j + 1], method, options)
            i = _advance(counter, states, times, i, solution)
            if counter.exhausted is not None and i < len(grid) - 1:
                status, status_time = Status.MAX_STEPS, counter.exhausted
                message = options.budget_message(counter.exhausted)
                if counter.too_slow is not None:
                    status, message = Status.TOO_SLOW, counter.too_slow
            continue
        except (_Stop, AssertionError) as err:
            status, status_time, message = _classify(err, counter)
        # Replay the failed chunk point by point, keeping every grid point before the failure; the replay
        # is part of the run and shares what is left of its step budget (not its pace: it has failed).
        counter.pace = None
        while i < j and counter.exhausted is None:
            try:
                solution = _solve(counter, states.last, grid[i:i + 2], method, options)
                i = _advance(counter, states, times, i, solution)
            except (_Stop, AssertionError) as err:
                _classify(err, counter)  # anything but a numerical failure is a bug: raised
                break
        if status == Status.STEP_UNDERFLOW and batch and int(counter.alive().sum()) > 1:
            # One member stiffening or blowing up must not stop the batch: freeze the one that forced the
            # step down (exact up to grid[i], the last point reached) and go on with the others.
            counter.freeze(counter.worst, Status.STEP_UNDERFLOW, status_time, float(grid[i]))
            counter.last_dt = None
            status, status_time, message = Status.OK, None, "integrated to t_max"
    cost = counter.cost(start)
    cost.wall_seconds -= states.observe_seconds
    result = FlowResult(times[:states.count].copy(), states.kept(), status, status_time, message, cost,
                        last_step=counter.last_dt, last_state=states.last)
    return result, counter


def _advance(counter: _Counter, states: GridStates, times: np.ndarray, i: int, solution: torch.Tensor) -> int:
    """Deliver the points of a solve from times[i] (``solution[0]``, already delivered): all of them, or,
    when the step budget ran out inside it, those up to the last accepted step. Returns the new index."""
    n = len(solution)
    if counter.exhausted is not None:
        n = int(np.searchsorted(times[i:i + n], counter.exhausted, side="right"))
    for state in solution[1:n]:
        states.add(state)
    return i + max(n - 1, 0)


def _solve(counter: _Counter, y0: torch.Tensor, t: torch.Tensor, method: str, options: SolverOptions
           ) -> torch.Tensor:
    step = counter.last_dt if counter.last_dt is not None else options.first_step
    counter.t_reached = float(t[0])  # a step of this solve starts no earlier than here
    settings = {"first_step": min(step, float(t[-1] - t[0]))}
    if counter.members is not None:
        settings["norm"] = counter.member_norm
    # torchdiffeq loads when an explicit method first runs (an implicit run, or a config refused before it
    # runs, never needs it), and without the scipy.integrate of its scipy_solver, which no flow.method uses
    odeint = import_deferring("torchdiffeq", "torchdiffeq._impl.scipy_wrapper").odeint
    with torch.no_grad():
        return odeint(counter, y0, t, method=method, rtol=options.rtol, atol=options.atol, options=settings)


def _classify(err: Exception, counter: _Counter) -> tuple[Status, float, str]:
    if isinstance(err, _Stop):
        return err.status, err.time, err.message
    text = str(err)
    if "underflow" in text:
        if "nan" in text.lower():
            return (Status.NONFINITE, counter.t_reached,
                    f"state became non-finite after t={counter.t_reached:.6g}")
        return (Status.STEP_UNDERFLOW, counter.t_reached,
                f"step size underflow at t={counter.t_reached:.6g} (stiff or diverging flow)")
    raise err
