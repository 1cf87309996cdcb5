"""``auto``: a solver strategy that starts explicit (dopri5) and finishes implicitly (cvode) once the flow is
stiff and stays so for long.

dopri5 runs in spans of about ``SPAN_STEPS`` steps (grid point to grid point, the step size carried across).
After a span of at least ``CHECK_STEPS`` steps the Jacobian's spectral radius ρ is estimated by power
iteration; when the span's mean step h has reached ``STIFF_STEP``/ρ (dopri5 is stable for h·ρ ≲ 3.3 on the
negative real axis, so a step that close to the bound is set by stability, not accuracy) and dopri5 would
still need more than ``SWITCH_STEPS`` such steps to the end, cvode takes over from that grid point. Before
that — an exponential escape, not stiff — dopri5 is the cheaper method. docs/stiff-flows.md has the
measurements behind the thresholds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..numerics import compute_settings
from .explicit import integrate_explicit
from .implicit import integrate_implicit
from .options import FlowProblem, SolverOptions
from .results import Cost, FlowResult, join
from .stiffness import spectral_radius

SPAN_STEPS = 24  # dopri5 runs in spans of about this many steps, each followed by a check
CHECK_STEPS = 8  # a span shorter than this says nothing about the step size
STIFF_STEP = 2.0  # h·ρ at or above this: the step is bounded by stability
SWITCH_STEPS = 200  # switch only when dopri5 would need more steps than this to the end


def integrate_auto(problem: FlowProblem, options: SolverOptions) -> FlowResult:
    """Integrate ``problem`` with dopri5, switching to cvode on detected stiffness (module docstring).
    The result's ``method_used`` and ``method_split`` (the cost of each part: ``dopri5``,
    ``stiffness_probes``, ``cvode``) say what was done."""
    grid = np.asarray(problem.times, dtype=np.float64)
    parts: list[FlowResult] = []
    probes = Cost()
    i, state, first_step, span_end, steps = 0, problem.theta0, options.first_step, grid[0], options.spent
    if problem.observe is not None:
        with compute_settings(state):  # the settings the solvers observe under
            problem.observe(0, state)  # every span's start has been seen: the first one here
    while i < len(grid) - 1:
        j = min(max(i + 1, int(np.searchsorted(grid, span_end, side="right")) - 1), len(grid) - 1)
        span = integrate_explicit("dopri5", _part_of(problem, i, j + 1, state),
                                  options.replace(spent=steps, first_step=first_step))
        parts.append(span)
        steps += span.cost.accepted_steps
        if span.status != "ok":
            break
        i, state, first_step = j, span.last_state, span.last_step or first_step
        mean_step = (span.t[-1] - span.t[0]) / max(span.cost.accepted_steps, 1)
        left = (grid[-1] - grid[i]) / mean_step  # dopri5's steps to the end at its present step size
        span_end = grid[i] + SPAN_STEPS * mean_step
        if span.cost.accepted_steps >= CHECK_STEPS and left > SWITCH_STEPS:
            radius, cost = spectral_radius(problem.field, float(grid[i]), state, problem.jacobian_vector)
            probes = probes + cost
            if mean_step * radius >= STIFF_STEP:
                implicit = integrate_implicit("cvode", _part_of(problem, i, len(grid), state),
                                              options.replace(spent=steps))
                used = (f"dopri5 to t={grid[i]:.6g} (mean step {mean_step:.3g} = "
                        f"{mean_step * radius:.2f}/ρ, ρ = {radius:.3g}: stiff, ~{left:.0f} "
                        "steps left), then cvode")
                split = {"dopri5": _part(parts), "stiffness_probes": probes, "cvode": implicit.cost}
                return dataclasses.replace(join(parts + [implicit], probes), method_used=used,
                                           method_split=split)
    split = {"dopri5": _part(parts), "stiffness_probes": probes}
    return dataclasses.replace(join(parts, probes), method_used="dopri5 (no long stiff stretch)",
                               method_split=split)


def _part(parts: list[FlowResult]) -> Cost:
    return sum((p.cost for p in parts), Cost())


def _part_of(problem: FlowProblem, start: int, stop: int, state) -> FlowProblem:
    """The problem on grid points start … stop − 1 from ``state``, its observer seeing the whole grid's
    indices."""
    return problem.restricted(problem.times[start:stop], state, np.arange(start, stop))
