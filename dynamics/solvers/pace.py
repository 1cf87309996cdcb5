"""The pace stop: a flow that will not reach its end within its step budget is stopped early, with the
trajectory so far, instead of spending the whole budget first.

The step estimate made before a run (``dynamics.budget``) sees only its opening steps; a sign or spectral
flow can slow down later (an interface it chatters along, a field stiffening), and it then ran to
``flow.max_steps`` for hours. While the flow is integrated, :class:`Pace` watches every accepted step in
log time s = log(t − t₀ + t₁) (t₁ the grid's first step: log-spaced grids are uniform in s) and projects
the steps still needed from the pace of the last :data:`WINDOW` steps, r steps per unit of s, over the S
units of log time left: r·S. That is the optimistic projection — exact for a step size growing like t, too
low for a step size that grows more slowly — so a stretch of small steps that the flow later leaves (the
spectral flow at ε = 1e-6, 8,257 steps in all, projects at most 1.4e5 there) does not stop it. Once
:data:`MIN_STEPS` steps are taken and the steps taken plus the projection exceed :data:`MARGIN` × the
budget, the flow stops with status ``too_slow``: it would have stopped at its budget anyway unless its
pace in log time improved :data:`MARGIN`-fold. The message gives the projection and, as the ``flow.t_max``
that works, the time it stopped at rounded down (a rerun takes the same steps to get there; further on,
a step size that shrinks faster than the pace shows — a blow-up, a stiffening field — may not fit the
budget). Deterministic: steps and flow times, never the wall clock.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW = 64  # the recent steps the pace is measured over
MIN_STEPS = 256  # no projection before this many steps (the budget's probe takes 64)
MARGIN = 2.0  # stop when the projected steps exceed this multiple of the step budget


def _round_down(x: float) -> float:
    """``x`` > 0 rounded down to two significant digits."""
    scale = 10.0 ** (math.floor(math.log10(x)) - 1)
    return math.floor(x / scale) * scale


class Pace:
    """Watches the accepted steps of one flow on the grid from ``t0`` to ``t_end`` (first step ``t1``
    after ``t0``) against a budget of ``budget`` steps (module docstring); ``advice``: another way out that
    its message offers (e.g. a larger ``flow.geometry_eps``). One object serves every part of a flow (a
    strategy's spans, the pieces between breakpoints): it counts the steps itself."""

    def __init__(self, t0: float, t1: float, t_end: float, budget: int, margin: float = MARGIN,
                 advice: str = "", window: int = WINDOW, min_steps: int = MIN_STEPS):
        self.t0, self.scale, self.budget, self.margin = t0, max(t1 - t0, 1e-300), budget, margin
        self.advice = advice
        self.window, self.min_steps = window, max(min_steps, window)
        self.s_end = self._s(t_end)
        self.steps = 0
        self.recent: deque[float] = deque(maxlen=window + 1)

    def _s(self, t: float) -> float:
        return math.log(t - self.t0 + self.scale)

    def projection(self) -> tuple[float, float]:
        """(r, S): the steps per unit of log time over the window and the log time left; r is infinite when
        the window did not advance in log time."""
        advance = self.recent[-1] - self.recent[0]
        left = max(self.s_end - self.recent[-1], 0.0)
        return (self.window / advance if advance > 0 else math.inf), left

    def accept(self, t: float) -> str | None:
        """Record an accepted step that reached flow time ``t``; the ``too_slow`` message when the flow
        should stop there, else None."""
        self.steps += 1
        self.recent.append(self._s(t))
        if self.steps < self.min_steps or len(self.recent) <= self.window:
            return None
        r, left = self.projection()
        needed = self.steps + (r * left if left > 0 else 0.0)
        if needed <= self.margin * self.budget:
            return None
        return self._message(t, r, needed)

    def _message(self, t: float, r: float, needed: float) -> str:
        """The stop's one line: what was projected, and the ways out."""
        t_end = math.exp(self.s_end) - self.scale + self.t0
        shown = f"{needed:.3g}" if math.isfinite(needed) else "unboundedly many"
        also = f", or {self.advice}" if self.advice else ""
        # where it stopped is reached again within the budget; beyond, a step size that shrinks faster
        # than the pace shows (a blow-up, a stiffening field) may not be
        return (f"too slow at t={t:.6g}: at its pace in log t over the last {self.window} steps the flow "
                f"needs at least {shown} steps to t={t_end:g}, more than {self.margin:g} × "
                f"flow.max_steps={self.budget}; allowed: flow.t_max={_round_down(t):g} (reached within the "
                f"budget){also}")


def pace_for(times, budget: int, margin: float = MARGIN, advice: str = "") -> Pace | None:
    """The :class:`Pace` of a flow on the grid ``times`` with a budget of ``budget`` steps; None when
    ``margin`` is 0 (no pace stop) or the grid has a single point."""
    if margin <= 0 or len(times) < 2:
        return None
    return Pace(float(times[0]), float(times[1]), float(times[-1]), budget, margin, advice)
