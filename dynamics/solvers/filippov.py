"""The ε = 0 sign flow dθ/dt = −sign(P ∇L(θ)) integrated as the discontinuous ODE it is (Filippov's sense).

Between sign changes of the gradient entries the direction is constant, so the flow is piecewise smooth:
free entries (g_i ≠ 0) move at θ_i' = −sign(g_i) exactly, and a step ends exactly where an entry reaches 0
(an *event*, located by root finding on that entry). There, and wherever an entry sits at 0, Filippov's
convex combination decides: the entries S held at g_S = 0 *slide* with the equivalent control u_S, the
velocity that keeps them at 0,

    d/dt g_S = H_SS u_S + H_SF v_F = 0   ⇒   u_S = −H_SS⁺ H_SF v_F   (H: the Hessian, by Hessian-vector
                                                                       products; ⁺: least-squares, min-norm)

valid while every |u_i| ≤ 1 (the convex hull of ±1). An entry whose |u_i| would exceed 1 is released
(it crosses, transversally) and one whose |u_i| reaches 1 while sliding leaves the surface (another event).
While sliding, θ_F moves linearly and θ_S is put back on g_S(θ) = 0 by (chord) Newton: no integration
error builds up along the surface.

Free entries that reach 0 at one instant decide together with the entries already sliding, by one
complementarity problem over them (:func:`box_complementarity`): each slides (|u_i| ≤ 1, ġ_i = 0) or
crosses (u_i = ±1, ġ_i u_i < 0), and a sliding entry may have to leave.

Entries of the gradient that are zero at the start (|g_i| ≤ ``ZERO_TOL``·‖g‖∞, e.g. by the symmetry of a
constant start) are candidates for sliding from t = 0: they stay at zero as long as the equivalent control
keeps them there (|u_i| ≤ 1; an entry whose ġ_i is 0 by symmetry gets u_i = 0 from the min-norm solve and
stays exactly where it is), and are released otherwise: with the sign of u_i, or, where no u_i keeps
g_i at 0 (H_ii = 0 while ġ_i ≠ 0, the scores of a constant start), to the side g_i moves to. Entries with
P_i = 0 (frozen blocks) never move; P > 0 does not change sign(P g) = sign(g).

Rounding: entries of H·v below 1e-10 of the largest ‖H v‖∞ the flow has seen count as 0 (so the symmetric
zeros get no velocity from noise divided by a shrinking curvature), and so do eigenvalues of H_SS below
1e-8 of it. Once the loss is so small that its gradient is at this level (the tiny task: L ≈ 1e-14 at
t ≈ 4.3) the entries that reach 0 are held there (their gradient is rounding) while the others move on.

This module knows no model: :func:`integrate_sign_flow` takes θ ↦ ∇L(θ) and (θ, x) ↦ H(θ)·x.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import brentq

from .results import Cost

ZERO_TOL = 1e-10  # |g_i| ≤ ZERO_TOL·‖g‖∞ at the start: an entry at zero (a symmetric start's exact zeros)
SLIDE_TOL = 1e-10  # sliding entries are held at |g_i| ≤ SLIDE_TOL·‖g_F‖∞ (Newton's target) ...
LOOSE_TOL = 1e-7  # ... or, where rounding stops Newton first, at LOOSE_TOL·‖g_F‖∞ (else the step fails)
LINEAR_TOL = 0.25  # a step is kept while ‖g(θ+) − g − h ġ‖∞ ≤ LINEAR_TOL·‖g‖∞ (events are then seen)
PINV_RTOL = 1e-8  # singular values of H_SS below this fraction of the largest count as 0
NEWTON_ITERATIONS = 40
U_TOL = 1e-9  # a sliding entry leaves when |u_i| > 1 + U_TOL (one that starts at |u_i| = 1 is not an event)
RHS_TOL = 1e-10  # entries of (H v)_S below this fraction of the largest ‖H v‖∞ so far are 0 (rounding)
RESIDUAL_TOL = 1e-8  # |(H_SS u − rhs)_i| above this fraction of that: entry i has no equivalent control


class _Solve:
    """r ↦ H_SS⁺ r (least squares, min-norm), with H_SS, the right-hand side −(H v)_S it was last used for
    and ‖H v‖∞ = ``scale`` (the scale of "ġ = 0"). Eigenvalues of H_SS below PINV_RTOL of the larger of its
    largest and ``scale`` count as 0: entries the loss barely sees (a symmetric zero late in a flow, where
    the Hessian shrinks with the loss) get no velocity from rounding noise divided by their curvature."""

    def __init__(self, build, scale: float):
        self._build, self.rhs, self.scale = build, None, scale
        self._H = self._pinv = None

    @property
    def H(self) -> torch.Tensor:
        """H_SS, built on first use (|S| Hessian-vector products): a zero right-hand side needs none."""
        if self._H is None:
            self._H = self._build()
        return self._H

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        if not bool(r.any()):
            return torch.zeros_like(r)
        if self._pinv is None:
            values, vectors = torch.linalg.eigh(0.5 * (self.H + self.H.T))
            top = max(float(values.abs().max()) if values.numel() else 0.0, self.scale)
            keep = values.abs() > PINV_RTOL * top
            inverse = torch.where(keep, 1.0 / torch.where(keep, values, torch.ones_like(values)), 0.0)
            self._pinv = (vectors * inverse) @ vectors.T
        return self._pinv @ r


@dataclass
class Event:
    """An event at time ``t`` for entry ``index``: ``cross`` (a free entry crossed 0), ``slide`` (it
    reached 0 and stays there) or ``leave`` (a sliding entry's |u| reached 1 and it left the surface)."""

    t: float
    index: int
    kind: str


@dataclass
class _Mode:
    """A piece of the flow: free velocities ``v`` (±1; 0 on sliding and frozen entries), the sliding set
    ``S`` (bool), the velocity ``w`` at the piece's start (v on free entries, u on sliding ones) and the
    least-squares solve with H_SS there (the chord Newton's matrix)."""

    v: torch.Tensor
    S: torch.Tensor
    w: torch.Tensor
    solve: _Solve | None = None


@dataclass
class _Point:
    tau: float
    theta: torch.Tensor
    g: torch.Tensor
    w: torch.Tensor | None = None
    solve: _Solve | None = None


@dataclass
class SignFlowResult:
    """States on the grid ``t`` (K, P), the status (``ok``; ``max_steps``: the budget of steps or events ran
    out; ``stuck``: a sliding entry could not be held at 0), the cost, the events and how many entries
    were sliding at each grid time. :meth:`state_at` gives θ at any time reached (exact on free pieces)."""

    t: np.ndarray
    states: torch.Tensor
    status: str
    cost: Cost  # gradients as function_evals, Hessian-vector products as hvp_evals
    events: list[Event]
    sliding: np.ndarray
    status_time: float = float("nan")
    why: str = ""  # what stopped a ``stuck`` flow
    _pieces: list = field(default_factory=list, repr=False)
    _flow: object = field(default=None, repr=False)

    def state_at(self, t: float) -> torch.Tensor:
        """θ(t) for t in the span reached: θ_0 + (t − t_0) v on a free piece, Newton back onto the surface
        on a sliding one."""
        starts = [piece[0] for piece in self._pieces]
        k = max(int(np.searchsorted(starts, t, side="right")) - 1, 0)
        t0, theta0, mode, reference = self._pieces[k]
        self._flow.reference = reference  # the piece's own scale of "g_S = 0", not the run's last one
        point = self._flow.advance(theta0, mode, float(t) - t0)
        if point is None:
            raise RuntimeError(f"state_at({t}): the sliding entries could not be put back on g_S = 0")
        return point.theta


class _Flow:
    """The gradient, the Hessian products and the pieces' algebra of one sign flow (counted)."""

    def __init__(self, gradient, hvp, frozen: torch.Tensor, cost: Cost):
        self._gradient, self._hvp, self.frozen, self.cost = gradient, hvp, frozen, cost
        self.reference = 0.0  # ‖g‖∞ at the current step's start: the scale of "g_S = 0"
        self.top = 0.0  # ‖g‖∞ at the start (its 1e-3 is the least reference)
        self.peak = 0.0  # the largest ‖H v‖∞ so far

    def set_reference(self, g: torch.Tensor, S: torch.Tensor) -> float:
        """The scale of "g_S = 0" for a step from a state with gradient g and sliding set S: ‖g‖∞ over the
        free entries that move, at least 1e-3 of ‖g‖∞ at the start."""
        free = ~S & ~self.frozen
        self.reference = max(float(g[free].abs().max()) if bool(free.any()) else 0.0, 1e-3 * self.top, 1e-300)
        return self.reference

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        self.cost.function_evals += 1
        return self._gradient(theta)

    def hvp(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.cost.hvp_evals += 1
        return self._hvp(theta, x)

    def solver(self, theta: torch.Tensor, S: torch.Tensor, scale: float) -> _Solve:
        """The least-squares solve with H_SS at θ, H_SS built (when first needed) column by column from |S|
        Hessian-vector products."""
        index = torch.nonzero(S).flatten()

        def build() -> torch.Tensor:
            columns = []
            for j in index.tolist():
                unit = torch.zeros_like(theta)
                unit[j] = 1.0
                columns.append(self.hvp(theta, unit)[index])
            return torch.stack(columns, dim=1)

        return _Solve(build, scale)

    def velocity(self, theta: torch.Tensor, v: torch.Tensor, S: torch.Tensor):
        """(w, solve): w = v on free entries and the equivalent control u_S = −H_SS⁺ (H v)_S on S."""
        if not bool(S.any()):
            return v, None
        rate = self.hvp(theta, v)
        self.peak = max(self.peak, float(rate.abs().max()))
        scale = self.peak  # rounding in H·v is relative to the largest rates the flow has seen
        solve = self.solver(theta, S, scale)
        w = v.clone()
        # rounding-level entries of (H v)_S are 0: a symmetric zero's rhs is noise, which H_SS⁺ would amplify
        solve.rhs = torch.where(rate[S].abs() > RHS_TOL * scale, -rate[S], 0.0)
        w[S] = solve(solve.rhs)
        return w, solve

    def advance(self, theta: torch.Tensor, mode: _Mode, tau: float) -> _Point | None:
        """θ at time τ into ``mode``'s piece: θ + τ w, the sliding entries then put back on g_S = 0 by chord
        Newton (None if they do not get there)."""
        new = theta + tau * mode.w
        g = self.grad(new)
        if mode.solve is None:
            return _Point(tau, new, g)
        best = (float(g[mode.S].abs().max()), new, g)
        for _ in range(NEWTON_ITERATIONS):
            if best[0] <= SLIDE_TOL * self.reference:
                break
            new = best[1].clone()
            new[mode.S] -= mode.solve(best[2][mode.S])
            g = self.grad(new)
            residual = float(g[mode.S].abs().max())
            if residual >= best[0]:  # rounding reached (or the chord diverges): keep the best
                break
            best = (residual, new, g)
        if best[0] > LOOSE_TOL * self.reference:
            return None
        return _Point(tau, best[1], best[2])

    def select(self, theta: torch.Tensor, v: torch.Tensor, candidates: torch.Tensor) -> _Mode:
        """The mode at θ with the entries ``candidates`` at 0 and the others' velocities ``v``: slide every
        candidate whose equivalent control exists and stays in [−1, 1]; else release the worst one and
        solve again. An entry with no equivalent control (H_SS u_S = −(H v)_S has no solution in its row:
        H_ii = 0 by symmetry while its gradient moves) goes to the side its gradient moves to; one with
        |u_i| > 1 to the sign of u_i; a released entry whose gradient would then move into the wrong side
        (ġ_i v_i > 0) takes the other sign."""
        v, S = v.clone(), candidates.clone()
        v[S] = 0.0
        released = torch.zeros_like(S)
        while True:
            w, solve = self.velocity(theta, v, S)
            if solve is None:
                break
            index = torch.nonzero(S).flatten()
            u = w[S]
            drift = (solve.H @ u if bool(u.any()) else 0.0) - solve.rhs  # ġ_S: 0 where u exists
            missing = drift.abs() > RESIDUAL_TOL * max(solve.scale, 1e-300)
            if bool(missing.any()):
                k = int(torch.argmax(torch.where(missing, drift.abs(), torch.zeros_like(drift))))
                sign = -torch.sign(drift[k])
            else:
                k = int(torch.argmax(w[S].abs()))
                if float(w[index[k]].abs()) <= 1.0 + U_TOL:
                    break
                sign = torch.sign(w[index[k]])
            worst = int(index[k])
            v[worst], S[worst], released[worst] = sign, False, True
        if bool(released.any()):
            rate = self.hvp(theta, w)
            wrong = released & (rate * v > 0)
            if bool(wrong.any()):
                v[wrong] = -v[wrong]
                w, solve = self.velocity(theta, v, S)
        return _Mode(v, S, w, solve)

    def event_values(self, point: _Point, mode: _Mode) -> torch.Tensor:
        """f ≥ 0 while the piece is valid: −v_i g_i on free entries, 1 − |u_i| on sliding ones (+inf on
        frozen entries)."""
        f = -mode.v * point.g
        if mode.solve is not None:
            self.complete(point, mode)
            f = torch.where(mode.S, 1.0 + U_TOL - point.w.abs(), f)
        return torch.where(self.frozen, torch.full_like(f, np.inf), f)

    def complete(self, point: _Point, mode: _Mode) -> _Point:
        """``point`` with its velocity w (and the H_SS solve there) in ``mode``."""
        if point.w is None:
            point.w, point.solve = self.velocity(point.theta, mode.v, mode.S)
        return point


def _dips(g0: torch.Tensor, r0: torch.Tensor, g1: torch.Tensor, r1: torch.Tensor, h: float, v: torch.Tensor,
          tol: float) -> bool:
    """Whether a free entry's −v_i g_i, interpolated on the step by the cubic Hermite polynomial of its
    values g and rates ġ at both ends, dips below −tol inside the step though both ends are ≥ 0 (an entry
    that crosses 0 and back within one step)."""
    s = torch.linspace(0.0, 1.0, 17, dtype=g0.dtype, device=g0.device)[1:-1, None]
    s2, s3 = s * s, s * s * s
    p = (2 * s3 - 3 * s2 + 1) * g0 + (s3 - 2 * s2 + s) * h * r0 + (3 * s2 - 2 * s3) * g1 + (s3 - s2) * h * r1
    return bool(((-v * p < -tol) & (v != 0)).any())


def _locate(flow: _Flow, mode: _Mode, start: _Point, end: _Point, t: float, tol: torch.Tensor,
            offset: torch.Tensor) -> tuple[_Point, list[int]]:
    """The first event inside the step from ``start`` to ``end`` (where some event value + ``offset`` is
    ≤ 0): the entry c whose value the secant puts first is located by Brent's method to rounding in t, and
    others that went negative before it move the bracket's end there; entries within ``tol`` of 0 at the
    event are events too (symmetric entries cross together). Returns the point and the entries hit."""
    points = {0.0: start, end.tau: end}

    def at(tau: float) -> _Point:
        if tau not in points:
            point = flow.advance(start.theta, mode, tau)
            if point is None:
                raise _Stuck(t + tau, "the sliding entries could not be put back on g_S = 0 inside a step")
            points[tau] = point
        return points[tau]

    def value(tau: float, c: int) -> float:
        point = at(tau)
        if bool(mode.S[c]):
            flow.complete(point, mode)
            return 1.0 + U_TOL - float(point.w[c].abs()) + float(offset[c])
        return -float(mode.v[c] * point.g[c]) + float(offset[c])

    f_lo, hi = flow.event_values(start, mode) + offset, end
    while True:
        f_hi = flow.event_values(hi, mode) + offset
        bracketed = (f_hi <= 0) & (f_lo > 0)
        if not bool(bracketed.any()):  # only entries at 0 at the start, going the wrong way: an event there
            return start, torch.nonzero(f_hi <= 0).flatten().tolist()
        guess = torch.where(bracketed, hi.tau * f_lo / (f_lo - f_hi), torch.full_like(f_lo, np.inf))
        c = int(torch.argmin(guess))
        tau = brentq(value, 0.0, hi.tau, args=(c,), xtol=1e-15 * max(t + hi.tau, 1e-6), rtol=1e-15,
                     maxiter=400)
        point = at(tau)
        f = flow.event_values(point, mode) + offset
        early = (f < -tol) & (f_lo > 0)
        early[c] = False
        if not bool(early.any()):
            hit = ((f.abs() <= tol) | (f < 0)) & (f_lo > 0)
            hit[c] = True
            return point, torch.nonzero(hit).flatten().tolist()
        hi = point


class _Stuck(Exception):
    """The flow cannot go on at time ``args[0]``; ``args[1]`` says why."""


def _after_event(flow: _Flow, mode: _Mode, point: _Point, hit: list[int], t: float
                 ) -> tuple[_Mode, list[Event]]:
    """The mode after the entries ``hit`` met their event at ``point``: a free one that reached 0 becomes a
    candidate for sliding, a sliding one whose |u| reached 1 leaves to the sign of u."""
    candidates, v = mode.S.clone(), mode.v.clone()
    for i in hit:
        if bool(mode.S[i]):
            flow.complete(point, mode)
            candidates[i], v[i] = False, torch.sign(point.w[i])
        else:
            candidates[i] = True
    joint = [i for i in hit if not bool(mode.S[i])]
    new = None
    if len(joint) >= 2:
        new = _joint_mode(flow, point.theta, v, mode.S & candidates, joint)
    if new is None:
        new = flow.select(point.theta, v, candidates)
    kinds = ["leave" if bool(mode.S[i]) else "slide" if bool(new.S[i]) else "cross" for i in hit]
    # sliding entries the joint choice releases (not hit themselves) leave too
    left = [i for i in torch.nonzero(mode.S & ~new.S).flatten().tolist() if i not in hit]
    events = [Event(t, i, kind) for i, kind in zip(hit + left, kinds + ["leave"] * len(left), strict=True)]
    return new, events


def box_complementarity(H: torch.Tensor, rate: torch.Tensor, zero: float, scale: float
                        ) -> torch.Tensor | None:
    """The velocities u ∈ [−1, 1]ⁿ of entries at 0 whose gradients move as ġ = rate + H u, with the
    Filippov complementarity: ġ_i = 0 where |u_i| < 1 (slides), ġ_i u_i ≤ 0 where u_i = ±1 (crosses into
    its own side). For a symmetric positive semi-definite H these are the optimality conditions of
    min ½ uᵀ H u + rateᵀ u over the box, solved by a primal active-set method: a Newton step on the
    free entries (min-norm; eigenvalues below PINV_RTOL of the larger of the largest and ``scale`` are 0, and
    a rate H cannot absorb moves its entries to their bound, the way an entry with H_ii = 0 leaves), cut at
    the first bound it meets, which joins the bound set; at a free minimum, the bound entry whose ġ pushes
    it back inside most (ġ_i u_i > ``zero``) is freed. None if that does not settle."""
    n = rate.numel()
    u = torch.zeros_like(rate)
    bound = torch.zeros_like(rate)  # ±1: held at that bound; 0: free
    for _ in range(4 * n + 8):
        free = bound == 0
        if bool(free.any()):
            values, vectors = torch.linalg.eigh(0.5 * (H + H.T)[free][:, free])
            top = max(float(values.abs().max()), scale)
            keep = values.abs() > PINV_RTOL * top
            coef = vectors.T @ (rate[free] + H[free][:, ~free] @ u[~free] + H[free][:, free] @ u[free])
            unabsorbed = vectors[:, ~keep] @ coef[~keep]
            if unabsorbed.numel() and float(unabsorbed.abs().max()) > zero:
                d, reach = -unabsorbed, math.inf  # the objective falls without end along it: to a bound
            else:
                d, reach = -(vectors[:, keep] @ (coef[keep] / values[keep])), 1.0
            if float(d.abs().max()) > 1e-14:
                room = torch.where(d > 0, (1 - u[free]) / d, torch.where(d < 0, (-1 - u[free]) / d, math.inf))
                alpha = min(float(room.min()), reach)
                u[free] = (u[free] + alpha * d).clamp(-1.0, 1.0)
                if alpha < reach:
                    k = int(torch.nonzero(free).flatten()[int(torch.argmin(room))])
                    bound[k] = u[k] = torch.sign(d[int(torch.argmin(room))])
                    continue
        push = (rate + H @ u) * bound  # > 0: ġ drives a bound entry back into the box
        if not bool((push > zero).any()):
            return u
        bound[int(torch.argmax(push))] = 0.0
    return None


def _joint_mode(flow: _Flow, theta: torch.Tensor, v: torch.Tensor, S: torch.Tensor, joint: list[int]
                ) -> _Mode | None:
    """The mode for several free entries ``joint`` that reached 0 together while the entries ``S`` slide:
    one complementarity problem over S ∪ joint (:func:`box_complementarity`; one entry's choice changes
    the others', and a sliding entry may have to leave), each entry sliding (|u| ≤ 1, ġ = 0) or crossing
    to u = ±1 (ġ_i u_i < 0); None if there is no consistent choice. One Hessian-vector product per entry
    of S ∪ joint and one for the free rate."""
    block = S.clone()
    block[joint] = True
    index = torch.nonzero(block).flatten()
    base = v.clone()
    base[block] = 0.0
    rate = flow.hvp(theta, base)[index]
    flow.peak = max(flow.peak, float(rate.abs().max()))
    columns = []
    for j in index.tolist():
        unit = torch.zeros_like(theta)
        unit[j] = 1.0
        columns.append(flow.hvp(theta, unit)[index])
    H = torch.stack(columns, dim=1)
    zero = RESIDUAL_TOL * max(flow.peak, 1e-300)
    rate = torch.where(rate.abs() > RHS_TOL * flow.peak, rate, 0.0)
    local = box_complementarity(H, rate, zero, flow.peak)
    if local is None:
        return None
    drift = rate + H @ local
    sliding = drift.abs() <= zero
    if not bool((local[sliding].abs() <= 1.0 + U_TOL).all()):
        return None
    new_v, new_S = v.clone(), S.clone()
    new_v[index] = torch.where(sliding, 0.0, torch.sign(local))
    new_S[index] = sliding
    w, solve = flow.velocity(theta, new_v, new_S)
    return _Mode(new_v, new_S, w, solve)


def _tolerance(flow: _Flow, g: torch.Tensor, mode: _Mode) -> tuple[float, torch.Tensor]:
    """‖g‖∞ over the entries that move, and the event values' tolerance: 1e-9 of it on free entries (g's
    units), 1e-9 on sliding ones (u's)."""
    live = ~flow.frozen
    scale = float(g[live].abs().max()) if bool(live.any()) else 0.0
    return scale, torch.where(mode.S, torch.full_like(g, 1e-9), torch.full_like(g, 1e-9 * scale))


def integrate_sign_flow(gradient, hvp, theta0: torch.Tensor, times, scale: torch.Tensor | None = None, *,
                        first_step: float | None = None, max_steps: int = 100_000,
                        max_events: int = 100_000) -> SignFlowResult:
    """Integrate dθ/dt = −sign(P ∇L(θ)) (Filippov) from θ(times[0]) = ``theta0``, recording θ at every entry
    of ``times`` (increasing). ``gradient(θ)`` = ∇L(θ), ``hvp(θ, x)`` = H(θ)·x; ``scale``: P (≥ 0; entries
    with P_i = 0 stay where they start), None for 1. See the module docstring for the events and the
    sliding. Steps are sized so that ∇L stays close to linear along each (‖g(θ+) − g − h ġ‖∞ ≤ 0.25‖g‖∞);
    free pieces are exact (θ moves linearly), event times are located to rounding."""
    clock = time.perf_counter()
    times = np.asarray(times, dtype=np.float64)
    cost, crossings, why = Cost(), 0, ""
    frozen = torch.zeros_like(theta0, dtype=torch.bool) if scale is None else (scale == 0)
    flow = _Flow(gradient, hvp, frozen, cost)
    theta = theta0.detach().clone()
    start = _Point(0.0, theta, flow.grad(theta))
    top = float(start.g[~frozen].abs().max()) if bool((~frozen).any()) else 0.0
    at_zero = ~frozen & (start.g.abs() <= ZERO_TOL * top)
    mode = flow.select(theta, torch.where(frozen, 0.0, -torch.sign(start.g)), at_zero)
    events = [Event(float(times[0]), i, "slide") for i in torch.nonzero(mode.S).flatten().tolist()]
    t, k, status, instant = float(times[0]), 1, "ok", 0
    flow.top = top
    states, sliding = [theta], [int(mode.S.sum())]
    pieces = [(t, theta, mode, flow.set_reference(start.g, mode.S))]
    rate = flow.hvp(theta, mode.w)
    h = first_step or 1e-3 * max(float(times[-1] - times[0]), 1e-300)
    try:
        while k < len(times):
            if cost.accepted_steps + cost.rejected_steps >= max_steps or crossings >= max_events:
                status = "max_steps"
                break
            land = h >= times[k] - t
            h = min(h, float(times[k] - t))
            gscale, tol = _tolerance(flow, start.g, mode)
            flow.set_reference(start.g, mode.S)
            end = flow.advance(start.theta, mode, h)
            if end is None:
                cost.rejected_steps, h = cost.rejected_steps + 1, h / 4
                if h <= 1e-15 * max(t, 1.0):
                    raise _Stuck(t, "the sliding entries could not be put back on g_S = 0 by any step")
                continue
            # a free entry released at the surface (|g_i| within the sliding tolerance, maybe on the wrong
            # side by that much) meets its event only once it is a further ``tol`` past 0
            lag = mode.v * start.g
            offset = torch.where(~mode.S & ~frozen & (start.g.abs() <= LOOSE_TOL * max(gscale, 1e-300)),
                                 lag.clamp(min=0.0) + tol, torch.zeros_like(lag))
            values = flow.event_values(end, mode) + offset
            if bool((values <= 0).any()):
                point, hit = _locate(flow, mode, start, end, t, tol, offset)
                instant = instant + 1 if point.tau == 0 else 0
                if instant > 3:  # the same entries keep meeting their event at once: no consistent mode
                    raise _Stuck(t, f"events kept coming at one instant (entries {hit[:8]})")
                t = float(times[k]) if point.tau == end.tau and land else t + point.tau
                mode, new = _after_event(flow, mode, point, hit, t)
                events += new
                crossings += len(hit)
                start, land = _Point(0.0, point.theta, point.g), point.tau == end.tau and land
                rate = flow.hvp(start.theta, mode.w)
                pieces.append((t, start.theta, mode, flow.set_reference(start.g, mode.S)))
            else:
                flow.complete(end, mode)
                rate1 = flow.hvp(end.theta, end.w)
                miss = float((end.g - start.g - h * rate).abs().max()) / gscale if gscale > 0 else 0.0
                if miss > LINEAR_TOL or _dips(start.g, rate, end.g, rate1, h, mode.v, 1e-9 * gscale):
                    cost.rejected_steps += 1
                    h *= max(0.1, 0.8 * (LINEAR_TOL / miss) ** 0.5) if miss > LINEAR_TOL else 0.5
                    continue
                cost.accepted_steps += 1
                t = float(times[k]) if land else t + h
                if mode.solve is not None:
                    mode = _Mode(mode.v, mode.S, end.w, end.solve)
                    pieces.append((t, end.theta, mode, flow.set_reference(end.g, mode.S)))
                start, rate = _Point(0.0, end.theta, end.g), rate1
                h *= min(4.0, 0.8 * (LINEAR_TOL / max(miss, 1e-16)) ** 0.5)
            if land:
                states.append(start.theta)
                sliding.append(int(mode.S.sum()))
                k += 1
    except _Stuck as stuck:
        status, t, why = "stuck", float(stuck.args[0]), stuck.args[1]
    cost.wall_seconds = time.perf_counter() - clock
    return SignFlowResult(times[:len(states)], torch.stack(states), status, cost, events, np.array(sliding),
                          float("nan") if status == "ok" else t, why, pieces, flow)
