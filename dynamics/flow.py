"""Gradient-flow engine on torchdiffeq (DESIGN §4). Knows nothing about models.

``integrate_flow`` integrates an autonomous vector field dθ/dt = f(θ) over a time grid with an adaptive
solver and never raises on numerical failure: the result carries a status (``ok``, ``nonfinite``,
``step_underflow``, ``max_steps``), the time it happened, and the states at every grid point reached.

Failure handling uses only torchdiffeq's public ``odeint``: the grid is integrated in chunks (the step
size carried across), so a failure loses no chunk already done; the failed chunk is then replayed one grid
point at a time to keep every point before the failure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchdiffeq import odeint

from .implicit import Jacobian, JacobianVector, integrate_implicit, is_implicit
from .numerics import compute_settings
from .objective import Objective, gradient, gradient_and_hvp, hessian_vector_product

VectorField = Callable[[torch.Tensor], torch.Tensor]


def log_time_grid(t_min: float, t_max: float, points: int) -> np.ndarray:
    """``points`` times: 0, then ``points - 1`` log-spaced values from t_min to t_max."""
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, points - 1)])


def gradient_field(objective: Objective, preconditioner: torch.Tensor | None = None) -> VectorField:
    """The gradient-flow field f(θ) = -P ∇L(θ) (P diagonal, default the identity)."""

    def field(theta: torch.Tensor) -> torch.Tensor:
        _, grad = gradient(objective, theta)
        return -grad if preconditioner is None else -preconditioner * grad

    return field


def batched_gradient_field(objective: Objective, preconditioner: torch.Tensor | None = None) -> VectorField:
    """f(Θ) = -P ∇L(θ_b) row by row for Θ (B, P): the objective's batched closed form where it has one,
    else ``torch.func.vmap`` of the autodiff gradient."""
    closed = getattr(objective, "value_and_grad", None)
    scale = 1.0 if preconditioner is None else preconditioner
    vmapped = torch.func.vmap(torch.func.grad(objective))

    def field(thetas: torch.Tensor) -> torch.Tensor:
        result = closed(thetas) if closed is not None else None
        grads = result[1] if result is not None else vmapped(thetas)
        return -scale * grads

    return field


def gradient_field_jacobian_vector(objective: Objective, preconditioner: torch.Tensor | None = None
                                   ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(θ, v) -> J(θ)·v = −P H(θ) v, the Jacobian of the gradient-flow field times v: one Hessian-vector
    product (the objective's closed form, else double reverse mode), never a dense Hessian."""

    def product(theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        hv = hessian_vector_product(objective, theta, vector)
        return -hv if preconditioner is None else -preconditioner * hv

    return product


def gradient_field_jacobian(objective: Objective, preconditioner: torch.Tensor | None = None
                            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """θ -> J(θ) = −P H(θ), dense (P × P): for small parameter vectors only."""

    def jacobian(theta: torch.Tensor) -> torch.Tensor:
        hessian = torch.func.hessian(objective)(theta)
        return -hessian if preconditioner is None else -preconditioner[:, None] * hessian

    return jacobian


def spectral_radius(field: VectorField, theta: torch.Tensor,
                    jacobian_vector: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    iterations: int = 10, seed: int = 0) -> tuple[float, dict[str, int]]:
    """ρ(J(θ)), the largest |eigenvalue| of the field's Jacobian, by power iteration: q ← J q / ‖J q‖ from a
    seeded random q; ρ ≈ ‖J q‖ (from below). J·v is ``jacobian_vector`` when given, else the difference
    (f(θ + εv) − f(θ)) / ε. Returns ρ and its cost {"function_evals", "jvp_evals"}."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(theta.numel(), generator=gen, dtype=theta.dtype).to(theta.device)
    q = q / q.norm()
    cost = {"function_evals": 0, "jvp_evals": 0}
    if jacobian_vector is None:
        base = field(theta)
        cost["function_evals"] += 1
        eps = math.sqrt(torch.finfo(theta.dtype).eps) * max(float(theta.norm()), 1.0)

        def product(v: torch.Tensor) -> torch.Tensor:
            cost["function_evals"] += 1
            return (field(theta + eps * v) - base) / eps
    else:
        def product(v: torch.Tensor) -> torch.Tensor:
            cost["jvp_evals"] += 1
            return jacobian_vector(theta, v)
    radius = 0.0
    for _ in range(iterations):
        image = product(q)
        radius = float(image.norm())
        if not math.isfinite(radius) or radius == 0.0:
            break
        q = image / radius
    return radius, cost


def modified_gradient_field(objective: Objective, preconditioner: torch.Tensor | None, lr: float
                            ) -> VectorField:
    """The modified flow of GD with learning rate η (backward-error analysis, second order in η):

        f(θ) = −P ∇L − (η/2) · P H P ∇L

    i.e. the gradient flow of L + (η/4)‖∇L‖² in the metric P; one Hessian-vector product per evaluation.
    """
    scale = 1.0 if preconditioner is None else preconditioner  # a float meets θ on any device

    def field(theta: torch.Tensor) -> torch.Tensor:
        grad, hvp = gradient_and_hvp(objective, theta, lambda g: scale * g)
        return -scale * grad - 0.5 * lr * scale * hvp

    return field


@dataclass
class FlowResult:
    """States at the grid points reached, with the run's status and cost."""

    times: np.ndarray  # (K,) grid times reached
    states: torch.Tensor  # (K, P)
    status: str  # ok | nonfinite | step_underflow | max_steps
    status_time: float | None  # flow time of the failure; None when ok
    message: str
    function_evals: int
    accepted_steps: int
    rejected_steps: int
    wall_seconds: float
    jvp_evals: int = 0  # Jacobian-vector (Hessian-vector) products, implicit methods
    jacobian_evals: int = 0  # dense Jacobians, implicit methods
    last_step: float | None = None  # the last accepted step size (explicit methods): to continue a run


class _Stop(Exception):
    def __init__(self, status: str, time_: float, message: str):
        super().__init__(message)
        self.status, self.time, self.message = status, time_, message


class _Counter(torch.nn.Module):
    """Wraps the field for torchdiffeq: counts evaluations and steps, checks finiteness, drives progress."""

    def __init__(self, field: VectorField, max_steps: int, progress: Callable[[float], None] | None):
        super().__init__()
        self.field, self.max_steps, self.progress = field, max_steps, progress
        self.evals = self.accepted = self.rejected = 0
        self.last_dt: float | None = None
        self.t_reached = 0.0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.evals += 1
        if self.members is not None:
            return self._batched(t, y)
        if not torch.isfinite(y).all():
            raise _Stop("nonfinite", float(t), f"state became non-finite at t={float(t):.6g}")
        dy = self.field(y)
        if not torch.isfinite(dy).all():
            raise _Stop("nonfinite", float(t), f"vector field became non-finite at t={float(t):.6g}")
        return dy

    # Batch mode only: per member, the time it stopped (NaN while alive), why, and the last time up to
    # which its recorded states are exact (the start of the step that stopped it).
    members: torch.Tensor | None = None
    member_kind: list[str | None] | None = None
    member_exact_until: list[float] | None = None
    worst: int = 0  # the member with the largest error at the last norm evaluation

    def start_batch(self, size: int, device: torch.device) -> None:
        self.members = torch.full((size,), math.nan, dtype=torch.float64, device=device)
        self.member_kind = [None] * size
        self.member_exact_until = [math.inf] * size

    def freeze(self, b: int, kind: str, when: float, exact_until: float) -> None:
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
        dy = self.field(safe)
        bad = alive & ~(torch.isfinite(y).all(1) & torch.isfinite(dy).all(1))
        if bad.any():
            # The stage that found it lies inside a step begun at t_reached: grid points after that are
            # interpolated from this step's zeroed stages, so the member's exact record ends there.
            for b in torch.nonzero(bad).flatten().tolist():
                self.freeze(b, "nonfinite", float(t), self.t_reached)
            alive = alive & ~bad
        return torch.where(alive[:, None], dy, torch.zeros_like(dy))

    def member_norm(self, ratio: torch.Tensor) -> torch.Tensor:
        """Error norm of a batch: the largest per-member RMS over the members still alive."""
        rms = ratio.pow(2).mean(1).sqrt()
        rms = torch.where(self.alive(), rms, torch.zeros_like(rms))
        self.worst = int(rms.argmax())
        return rms.max()

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.accepted += 1
        self.last_dt = float(dt)
        self.t_reached = float(t0 + dt)
        if self.progress is not None:
            self.progress(self.t_reached)
        if self.accepted >= self.max_steps:
            raise _Stop("max_steps", self.t_reached, f"step budget flow.max_steps={self.max_steps} "
                        f"exhausted at t={self.t_reached:.6g}")

    def callback_reject_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.rejected += 1


def integrate_flow(field: VectorField, theta0: torch.Tensor, times: np.ndarray, *, method: str = "dopri5",
                   rtol: float = 1e-6, atol: float = 1e-10, first_step: float = 1e-3,
                   max_steps: int = 200_000, chunk: int | None = None,
                   progress: Callable[[float], None] | None = None,
                   jacobian_vector: JacobianVector | None = None,
                   jacobian: Jacobian | None = None) -> FlowResult:
    """Integrate dθ/dt = field(θ) from θ(times[0]) = theta0, recording θ at every entry of ``times``.

    ``times`` must be increasing. ``progress(t)`` is called after every accepted step. Numerical failure
    ends the run with a status; the states up to the last grid point before the failure are kept.
    ``method``: a torchdiffeq solver (``dopri5``, ...), or an implicit one of :mod:`dynamics.implicit`
    (``cvode`` with ``jacobian_vector(θ, v) = J·v``; ``bdf``, ``radau``, ``lsoda`` with a dense
    ``jacobian(θ)``).
    """
    if is_implicit(method):
        return integrate_implicit(field, theta0, times, method=method, rtol=rtol, atol=atol,
                                  first_step=first_step, max_steps=max_steps, progress=progress,
                                  jacobian_vector=jacobian_vector, jacobian=jacobian)
    with compute_settings(theta0):
        return _integrate(field, theta0, times, method, rtol, atol, first_step, max_steps, chunk, progress)


@dataclass
class BatchFlowResult:
    """A batch integrated together: shared grid and cost, a status per member."""

    times: np.ndarray  # (K,)
    states: torch.Tensor  # (K, B, P)
    status: str  # the batch's own status (a step underflow or step budget stops every member)
    status_time: float | None
    message: str
    member_status: list[str]
    member_status_time: list[float | None]
    member_kept: list[int]  # leading grid points whose states are exact for each member
    function_evals: int
    accepted_steps: int
    rejected_steps: int
    wall_seconds: float


def integrate_flow_batch(field: VectorField, theta0: torch.Tensor, times: np.ndarray, *,
                         method: str = "dopri5", rtol: float = 1e-6, atol: float = 1e-10,
                         first_step: float = 1e-3, max_steps: int = 200_000,
                         progress: Callable[[float], None] | None = None) -> BatchFlowResult:
    """Integrate B independent flows dθ_b/dt = field(Θ)_b together (Θ: (B, P); ``field`` maps (B, P) to
    (B, P) row by row) on one grid, one evaluation of the batched field per stage.

    Step control is shared but judged member by member: the error norm is the largest per-member RMS, so
    every member meets the tolerance on its own scale. A member whose state turns non-finite is frozen
    with status ``nonfinite`` and its time; a step-size underflow while several members are alive freezes
    the member with the largest error (status ``step_underflow``), so a member blowing up in finite time
    does not stop the rest. ``member_kept[b]`` counts the leading grid points exact for member b.
    """
    with compute_settings(theta0[0]):
        flow, counter = _integrate(field, theta0, times, method, rtol, atol, first_step, max_steps, None,
                                   progress, batch=True)
    statuses, when, kept = [], [], []
    for b, kind in enumerate(counter.member_kind):
        if kind is None:
            statuses.append(flow.status)
            when.append(flow.status_time)
            kept.append(len(flow.times))
        else:
            statuses.append(kind)
            when.append(float(counter.members[b]))
            exact_until = counter.member_exact_until[b]
            kept.append(max(1, int(np.searchsorted(flow.times, exact_until, side="right"))))
    return BatchFlowResult(flow.times, flow.states, flow.status, flow.status_time, flow.message, statuses,
                           when, kept, flow.function_evals, flow.accepted_steps, flow.rejected_steps,
                           flow.wall_seconds)


def _integrate(field, theta0, times, method, rtol, atol, first_step, max_steps, chunk, progress,
               batch: bool = False):
    start = time.perf_counter()
    # Each chunk restarts the solver (about one step's work); a few dozen chunks keep that cost small.
    chunk = chunk or max(32, len(times) // 24)
    counter = _Counter(field, max_steps, progress)
    if batch:
        counter.start_batch(theta0.shape[0], theta0.device)
    grid = torch.as_tensor(np.asarray(times, dtype=np.float64), device=theta0.device)
    states = [theta0.detach().clone()]
    status, status_time, message = "ok", None, "integrated to t_max"
    i = 0
    while i < len(grid) - 1 and status == "ok":
        j = min(i + chunk, len(grid) - 1)
        try:
            states.extend(_solve(counter, states[-1], grid[i:j + 1], method, rtol, atol, first_step)[1:])
            i = j
            continue
        except (_Stop, AssertionError) as err:
            status, status_time, message = _classify(err, counter)
        if status == "max_steps":
            # The budget ran out at status_time, after the accepted steps had passed every grid point up
            # to it: replay those points (no progress in time beyond status_time) instead of losing them.
            counter.max_steps = math.inf
            j = max(i, int(np.searchsorted(np.asarray(times, dtype=np.float64), status_time, "right")) - 1)
        # Replay the failed chunk point by point, keeping every grid point before the failure.
        while i < j:
            try:
                states.append(_solve(counter, states[-1], grid[i:i + 2], method, rtol, atol,
                                     first_step)[1])
                i += 1
            except (_Stop, AssertionError):
                break
        if status == "step_underflow" and batch and int(counter.alive().sum()) > 1:
            # One member stiffening or blowing up must not stop the batch: freeze the one that forced the
            # step down (exact up to grid[i], the last point reached) and go on with the others.
            counter.freeze(counter.worst, "step_underflow", status_time, float(grid[i]))
            counter.last_dt = None
            status, status_time, message = "ok", None, "integrated to t_max"
    kept = torch.stack(states)
    result = FlowResult(np.asarray(times[:len(kept)], dtype=np.float64), kept, status, status_time, message,
                        counter.evals, counter.accepted, counter.rejected, time.perf_counter() - start,
                        last_step=counter.last_dt)
    return (result, counter) if batch else result


def _solve(counter: _Counter, y0: torch.Tensor, t: torch.Tensor, method: str, rtol: float, atol: float,
           first_step: float) -> torch.Tensor:
    step = counter.last_dt if counter.last_dt is not None else first_step
    counter.t_reached = float(t[0])  # a step of this solve starts no earlier than here
    options = {"first_step": min(step, float(t[-1] - t[0]))}
    if counter.members is not None:
        options["norm"] = counter.member_norm
    with torch.no_grad():
        return odeint(counter, y0, t, method=method, rtol=rtol, atol=atol, options=options)


def _classify(err: Exception, counter: _Counter) -> tuple[str, float, str]:
    if isinstance(err, _Stop):
        return err.status, err.time, err.message
    text = str(err)
    if "underflow" in text:
        if "nan" in text.lower():
            return "nonfinite", counter.t_reached, f"state became non-finite after t={counter.t_reached:.6g}"
        return "step_underflow", counter.t_reached, f"step size underflow at t={counter.t_reached:.6g} " \
                                                    "(stiff or diverging flow)"
    raise err


def log_progress_bar(t_min: float, t_max: float, description: str, enabled: bool = True):
    """A tqdm bar on stderr advancing in log t from t_min to t_max; returns (callback, close)."""
    from tqdm.std import tqdm  # plain text on stderr, also in notebooks (no ipywidgets)

    bar = tqdm(total=1000, desc=description, disable=not enabled, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}]")
    span = math.log(t_max / t_min)

    def update(t: float) -> None:
        done = int(1000 * min(max(math.log(max(t, t_min) / t_min) / span, 0.0), 1.0))
        if done > bar.n:
            bar.update(done - bar.n)
            bar.set_postfix_str(f"t={t:.4g}", refresh=False)

    return update, bar.close
