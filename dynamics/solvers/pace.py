"""The pace stop: a flow that will not reach its end within its step budget or its time limit is stopped
early, with the trajectory so far, instead of spending the whole budget first.

The step estimate made before a run (``dynamics.budget``) sees only its opening steps; a sign or spectral
flow can slow down later (an interface it chatters along, a field stiffening), and it then ran to
``flow.max_steps`` for hours. While the flow is integrated, :class:`Pace` watches every accepted step, by
any method (explicit, implicit, ``auto``'s parts), in log time s = log(u), u = t − t₀ + t₁ (t₁ the grid's
first step: log-spaced grids are uniform in s).

**Steps.** It projects the steps still needed from the pace of the last :data:`WINDOW` steps, r steps per
unit of s, over the S units of log time left: r·S. That is the optimistic projection — exact for a step
size growing like t, too low for a step size that grows more slowly — so a stretch of small steps that the
flow later leaves (the spectral flow at ε = 1e-6, 8,257 steps in all, projects at most 1.4e5 there) does
not stop it. Once :data:`MIN_STEPS` steps are taken and the steps taken plus the projection exceed
:data:`MARGIN` × the budget, the flow stops with status ``too_slow``.

**Time.** A step's cost differs by a factor of 10^4 between fields (the tiny task's reduced model, a
transformer, 10^6 facts), so a step budget alone lets an expensive field run for hours within it. With a
time limit (``seconds``), the cost of the steps left is projected too: the cost of a step over the last
:data:`WINDOW` steps (read from ``clock``: the process's CPU seconds in a run, a fake cost in the tests)
times the steps left at the step-size trend of the last two windows — h ∝ u^p, p fitted from their mean
steps and clamped to [:data:`SLOWEST_TREND`, 1] (p = 1: the log-time pace above; p = 0: a constant step;
p < 0: a step that keeps shrinking, the chattering sign and spectral fields of a transformer) — plus the
cost spent so far. A shrinking step (p < :data:`SHRINKING`) is extrapolated to the end; one that is not, at
most one decade (:data:`HORIZON`) ahead in u: a constant step is what a hard stretch looks like, and the
step grows again after it (the tiny task's spectral flow at ε = 1e-6 holds a constant step near t = 4,
which, extrapolated to t = 400, projected 6.2e5 steps and 102 min; it takes 8,257 steps in all). When that
exceeds :data:`TIME_MARGIN` × the limit, with more than :data:`FEW_STEPS` steps taken and left, at every
step of the last :data:`PERSIST` windows (the projection is made from the first two windows on), and the
flow has spent :data:`FIRST_SHARE` of the limit (90 s of the default 30 min), it stops with ``too_slow``.
The share, as no trend read from a hard stretch says when the stretch ends: that same spectral flow holds a
step near 1e-4 from t = 4 to 5.7 (7,000 steps) and then crosses to t = 400 in 900; it takes 74.5 CPU s in
all, and read at t = 4.76 it projected 87.5 min. Two windows, as the trend of two
windows reads a step that shrinks for a while and then grows again as if it kept shrinking: the scale
problem at 10^4 facts by cvode at rtol 1e-9 (1,132 steps in all) shrinks its step at the relation escape for
about a window, and was stopped there, at t = 755, projecting 9.65e4 steps; a chattering step stays small
(the transformer's sign and spectral flows: above the limit for more than two windows in a row within their
first minute).
So a flow of few but dear steps (10^6 facts by cvode: about 550 steps of seconds each) runs as long as it
needs; many dear steps — a transformer's chattering sign or spectral flow by cvode or auto, some 10^4 steps
of 50 ms to t = 20 — are stopped within the first minutes.

Each stop's message gives the projection and, as the way out, the ``flow.t_max`` it reached, rounded down
(a rerun takes the same steps and cost to get there; further on, a step size that shrinks faster than the
pace shows — a blow-up, a stiffening field — may not fit the budget). It advises no larger
``flow.geometry_eps``: nothing but running it says which ε finishes (the transformer's sign flow at
ε = 1e-4 was advised 100 × ε, which the stop on one projection stopped again). The steps stop is
deterministic (steps and flow times); the time stop is deterministic given its clock.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import deque
from collections.abc import Callable

from ..errors import ConfigError

WINDOW = 64  # the recent steps the pace is measured over
MIN_STEPS = 256  # no projection before this many steps (the budget's probe takes 64)
MARGIN = 2.0  # stop when the projected steps exceed this multiple of the step budget
TIME_MARGIN = 1.0  # stop when the projected cost exceeds this multiple of the time limit
FIRST_SHARE = 0.05  # no time stop before this share of the limit is spent (a hard stretch's trend misleads)
SLOWEST_TREND = -1.0  # the lowest exponent p of a step size h ∝ u^p the time projection extrapolates
FEW_STEPS = 2000  # a flow projected to need fewer steps is never stopped for time (dear steps, not many)
PERSIST = 2  # windows over which every step's time projection must exceed the limit before the flow stops
HORIZON = 10.0  # how far ahead (a factor in u) a step that is not shrinking is extrapolated: one decade
SHRINKING = -0.25  # a trend p below this is a shrinking step (a constant one fits p = 0 up to noise)

Clock = Callable[[], float]  # cumulative cost in seconds
TIME_LIMIT = 1800.0  # CPU seconds of one flow (FACTRECALL_TIME_LIMIT changes it): the pace stop's limit
DURATION = re.compile(r"(?P<number>(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?|inf)\s*(?P<unit>s|min|h)?", re.IGNORECASE)
DURATION_UNITS = {"": 1.0, "s": 1.0, "min": 60.0, "h": 3600.0}


def time_limit() -> float:
    """The CPU seconds a flow may take (the pace stop's time limit, :mod:`this module`):
    ``FACTRECALL_TIME_LIMIT`` when set — seconds (``600``), with a unit s, min or h (``10min``, ``1.5h``),
    or ``inf`` (no limit) — else :data:`TIME_LIMIT`. Anything else, or a limit not above 0, is one
    ConfigError line."""
    text = os.environ.get("FACTRECALL_TIME_LIMIT")
    if text is None:
        return TIME_LIMIT
    match = DURATION.fullmatch(text.strip())
    value = float(match["number"]) * DURATION_UNITS[(match["unit"] or "").lower()] if match else math.nan
    if not value > 0:
        raise ConfigError(f"FACTRECALL_TIME_LIMIT={text!r}: must be a duration above 0: seconds (600), with "
                          "a unit s, min or h (10min, 1.5h), or inf (no limit)")
    return value


def cpu_seconds() -> float:
    """The CPU seconds this process has used (all its threads): what a run costs the machine, which other
    processes' load does not inflate as it does wall time. The pace stop's clock unless one is given."""
    return time.process_time()


def round_down(x: float) -> float:
    """``x`` > 0 rounded down to two significant digits."""
    scale = 10.0 ** (math.floor(math.log10(x)) - 1)
    return math.floor(x / scale) * scale


def format_seconds(seconds: float) -> str:
    """``seconds`` in s, min or h (``42 s``, ``12.5 min``, ``3.1 h``); ``unboundedly long`` when infinite."""
    if not math.isfinite(seconds):
        return "unboundedly long"
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


def steps_between(u: float, u_end: float, h: float, u_mid: float, p: float) -> float:
    """The steps from u to u_end of a step size h(v) = h·(v/u_mid)^p: ∫ dv / h(v) over [u, u_end]."""
    if u_end <= u:
        return 0.0
    if h <= 0:
        return math.inf
    if p > 1 - 1e-9:
        return u_mid / h * math.log(u_end / u)
    q = 1.0 - p
    return u_mid ** p / h * (u_end ** q - u ** q) / q


class Pace:
    """Watches the accepted steps of one flow on the grid from ``t0`` to ``t_end`` (first step ``t1``
    after ``t0``) against a budget of ``budget`` steps and, when ``seconds`` is finite, a time limit of
    ``seconds`` read from ``clock`` (default :func:`cpu_seconds`; module docstring). One object serves every
    part of a flow (a strategy's spans, the pieces between breakpoints): it counts the steps itself."""

    def __init__(self, t0: float, t1: float, t_end: float, budget: int, margin: float = MARGIN,
                 window: int = WINDOW, min_steps: int = MIN_STEPS, seconds: float = math.inf,
                 clock: Clock | None = None):
        self.t0, self.scale, self.budget, self.margin = t0, max(t1 - t0, 1e-300), budget, margin
        self.window, self.min_steps = window, max(min_steps, 2 * window)
        self.s_end = self._s(t_end)
        self.u_end = t_end - t0 + self.scale
        self.steps = 0
        self.recent: deque[float] = deque(maxlen=window + 1)
        self.seconds, self.clock = seconds, clock or cpu_seconds
        self.started = self.clock() if math.isfinite(seconds) else 0.0
        self.trail: deque[tuple[float, float]] = deque(maxlen=2 * window + 1)  # (u, cost) of recent steps
        self.persist, self.over = PERSIST * window, 0  # steps the time projection must stay above the limit

    def _s(self, t: float) -> float:
        return math.log(t - self.t0 + self.scale)

    def projection(self) -> tuple[float, float]:
        """(r, S): the steps per unit of log time over the window and the log time left; r is infinite when
        the window did not advance in log time."""
        advance = self.recent[-1] - self.recent[0]
        left = max(self.s_end - self.recent[-1], 0.0)
        return (self.window / advance if advance > 0 else math.inf), left

    def trend(self) -> tuple[float, float, float]:
        """(h, u_mid, p): the mean step of the last window, its midpoint in u, and the exponent p of
        h ∝ u^p between the last two windows, clamped to [SLOWEST_TREND, 1]."""
        (ua, _), (um, _), (ub, _) = self.trail[0], self.trail[self.window], self.trail[-1]
        h_old, h = (um - ua) / self.window, (ub - um) / self.window
        mid_old, mid = (ua + um) / 2, (um + ub) / 2
        p = 1.0 if h_old <= 0 or h <= 0 else math.log(h / h_old) / math.log(mid / mid_old)
        return h, mid, min(max(p, SLOWEST_TREND), 1.0)

    def horizon(self, u: float, p: float) -> float:
        """How far the trend p at u is extrapolated: to the end when the step shrinks (p < SHRINKING: a
        chattering field only gets worse), else at most :data:`HORIZON` × u — a constant step is what a hard
        stretch looks like (an escape, a stiff phase), after which the step grows again, so it is read one
        decade ahead and read again as the flow goes."""
        return self.u_end if p < SHRINKING else min(self.u_end, HORIZON * u)

    def time_projection(self) -> tuple[float, float, float]:
        """(spent, per_step, steps_left): the cost so far, a step's cost over the last window, and the steps
        left to :meth:`horizon` at the trend of :meth:`trend`."""
        (_, old), (u, now) = self.trail[-1 - self.window], self.trail[-1]
        h, mid, p = self.trend()
        return now - self.started, (now - old) / self.window, steps_between(u, self.horizon(u, p), h, mid, p)

    def accept(self, t: float) -> str | None:
        """Record an accepted step that reached flow time ``t``; the ``too_slow`` message when the flow
        should stop there, else None."""
        self.steps += 1
        self.recent.append(self._s(t))
        if math.isfinite(self.seconds):
            self.trail.append((t - self.t0 + self.scale, self.clock()))
        late = self.steps >= self.min_steps and len(self.recent) > self.window
        if late:
            r, left = self.projection()
            needed = self.steps + (r * left if left > 0 else 0.0)
            if needed > self.margin * self.budget:
                return self._message(t, r, needed)
        return self._watch_time(t, late) if len(self.trail) == self.trail.maxlen else None

    def _watch_time(self, t: float, late: bool) -> str | None:
        """The time stop's check at every step once the trail holds two windows: the projected cost
        (:meth:`time_projection`) above the limit, with more than FEW_STEPS steps, at each of the last
        ``persist`` steps; the message when ``late`` (past MIN_STEPS) and FIRST_SHARE of the limit is spent,
        else None."""
        spent, per_step, steps_left = self.time_projection()
        total = spent + per_step * steps_left
        over = total > TIME_MARGIN * self.seconds and self.steps + steps_left > FEW_STEPS
        self.over = self.over + 1 if over else 0
        if late and self.over >= self.persist and spent >= FIRST_SHARE * self.seconds:
            return self._time_message(t, per_step, steps_left, total)
        return None

    def _t_end(self) -> float:
        return math.exp(self.s_end) - self.scale + self.t0

    def _ways_out(self, t: float) -> str:
        # where it stopped is reached again within the budget; beyond, a step size that shrinks faster
        # than the pace shows (a blow-up, a stiffening field) may not be
        t_max = round_down(t)
        # a t_max at or before the grid's first record time needs an earlier one (flow.t_min < flow.t_max)
        t_min = f" with flow.t_min={round_down(t_max / 10):g}" if t_max <= self.t0 + self.scale else ""
        return f"allowed: flow.t_max={t_max:g}{t_min} (reached within the budget)"

    def _message(self, t: float, r: float, needed: float) -> str:
        """The steps stop's one line: what was projected, and the ways out."""
        shown = f"{needed:.3g}" if math.isfinite(needed) else "unboundedly many"
        return (f"too slow at t={t:.6g}: at its pace in log t over the last {self.window} steps the flow "
                f"needs at least {shown} steps to t={self._t_end():g}, more than {self.margin:g} × "
                f"flow.max_steps={self.budget}; " + self._ways_out(t))

    def _time_message(self, t: float, per_step: float, steps_left: float, total: float) -> str:
        """The time stop's one line: the cost projected, and the ways out."""
        left = f"{steps_left:.3g}" if math.isfinite(steps_left) else "unboundedly many"
        _, _, p = self.trend()
        u = self.trail[-1][0]
        until = self.horizon(u, p) - self.scale + self.t0
        return (f"too slow at t={t:.6g}: at {format_seconds(per_step)} a step over the last {self.window} "
                f"steps and its step size's trend (∝ t^{p:.2g}) the flow needs about {left} more steps to "
                f"t={until:g} (over {FEW_STEPS} in all) and {format_seconds(total)}, more than the "
                f"time limit of {format_seconds(self.seconds)} (FACTRECALL_TIME_LIMIT), as projected at each "
                f"of the last {self.persist} steps; " + self._ways_out(t))


def pace_for(times, budget: int, margin: float = MARGIN, seconds: float = math.inf,
             clock: Clock | None = None) -> Pace | None:
    """The :class:`Pace` of a flow on the grid ``times`` with a budget of ``budget`` steps and a time limit of
    ``seconds`` on ``clock``; None when ``margin`` is 0 (no pace stop) or the grid has a single point."""
    if margin <= 0 or len(times) < 2:
        return None
    return Pace(float(times[0]), float(times[1]), float(times[-1]), budget, margin, seconds=seconds,
                clock=clock)
