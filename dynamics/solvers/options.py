"""What a solver is given: the problem (field, start, grid, optional Jacobian products) and its options.

A vector field is a function ``f(t, θ)`` of the flow time and a flat parameter vector (or a batch of them,
one per row); the flow is dθ/dt = f(t, θ). Fields may change discontinuously at known times (phase
boundaries): those are the problem's ``breakpoints``, where every solver stops and restarts exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .pace import MARGIN, Clock, Pace, pace_for

if TYPE_CHECKING:  # the options are read when a config is checked, which loads no torch
    import torch

# the aliases name torch's tensor as text: evaluated here, they would need torch
VectorField = Callable[[float, "torch.Tensor"], "torch.Tensor"]  # (t, θ) -> dθ/dt
JacobianVector = Callable[[float, "torch.Tensor", "torch.Tensor"], "torch.Tensor"]  # (t, θ, v) -> J(t, θ)·v
Jacobian = Callable[[float, "torch.Tensor"], "torch.Tensor"]  # (t, θ) -> J(t, θ), dense (P, P)
Progress = Callable[[float], None]  # called with the time reached after every accepted step
Observer = Callable[[int, "torch.Tensor"], None]  # (k, θ(times[k])), as each grid point is reached


class NewtonSystem(Protocol):
    """An approximation J̃ = −P H̃ of the flow's Jacobian at one state, with the two things cvode asks of it."""

    def factor(self, gamma: float) -> Callable[..., torch.Tensor]:
        """r ↦ M⁻¹ r for the Newton matrix M = I − γJ̃ (``f(r, out=z)`` writes it into z, not r)."""

    def product(self) -> Callable[..., torch.Tensor]:
        """v ↦ P H̃ v (= −J̃ v) (``f(v, out=z)`` writes it into z, not v)."""


@dataclass(frozen=True)
class NewtonBlocks:
    """cvode's Newton systems from the model's structure: ``at(t, θ)`` the approximation at a state (built
    when CVODE sets its preconditioner up). ``jacobian``: GMRES also takes its products J·v from it (a
    modified Newton iteration with an approximate Jacobian: it converges to the same tolerance, more slowly
    per iteration, and no product costs a gradient), else only the preconditioner does."""

    at: Callable[[float, torch.Tensor], NewtonSystem]
    jacobian: bool = False


@dataclass(frozen=True)
class SolverOptions:
    """Settings every method understands. ``rtol``/``atol``: the local error test
    |err_i| ≤ atol + rtol·|θ_i| (per component, RMS norm); ``first_step``: the first step size (a symmetric
    start has f ≈ 0, so it is given rather than guessed); ``max_steps``: the budget of accepted steps;
    ``chunk``: grid points per call of an explicit solver (None: about 1/24 of the grid); ``spent``: steps
    of the budget already taken by earlier parts of the same flow (a strategy's spans, the pieces between
    breakpoints), so that a part gets ``max_steps − spent`` steps and its messages name the whole budget;
    ``too_slow``: the pace stop's margin (:mod:`~dynamics.solvers.pace`; 0: none), ``max_seconds`` the
    time limit the stop projects the flow's cost against on ``clock`` (inf: none; None: the process's CPU
    seconds), and ``pace`` the stop's watcher, one for all the parts of a flow (made by :meth:`paced`)."""

    rtol: float = 1e-6
    atol: float = 1e-10
    first_step: float = 1e-3
    max_steps: int = 200_000
    chunk: int | None = None
    spent: int = 0
    too_slow: float = MARGIN
    max_seconds: float = math.inf
    clock: Clock | None = dataclasses.field(default=None, compare=False, repr=False)
    pace: Pace | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def steps_left(self) -> int:
        """What is left of the step budget for this part: ``max_steps − spent``."""
        return self.max_steps - self.spent

    def budget_message(self, when: float) -> str:
        """The message of a run stopped by the step budget at flow time ``when``."""
        return f"step budget flow.max_steps={self.max_steps} exhausted at t={when:.6g}"

    def paced(self, times: np.ndarray) -> SolverOptions:
        """These options with the pace stop's watcher for a flow on the grid ``times`` (kept when there is
        one already: the flow's earlier parts have fed it)."""
        if self.pace is not None:
            return self
        return self.replace(pace=pace_for(times, self.max_steps, self.too_slow, self.max_seconds, self.clock))

    def replace(self, **changes) -> SolverOptions:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class FlowProblem:
    """dθ/dt = field(t, θ) from θ(times[0]) = theta0, recorded at every entry of ``times`` (increasing).

    ``jacobian_vector`` and ``jacobian`` are the field's Jacobian products where a method can use them
    (implicit methods, stiffness probes); ``breakpoints`` are times inside the grid where the field may
    jump: no solver step crosses one; ``newton_blocks`` preconditions cvode's GMRES (an approximate inverse
    of I − γJ built from the model's structure, :mod:`~dynamics.solvers.preconditioner`). ``observe(k, θ)``
    is called once for every grid point k reached, in order (k = 0, 1, ...), as soon as θ(times[k]) is
    final — a failure later never takes it back — so a caller can reduce each state as it comes (the
    per-fact record) instead of holding them all. θ is the observer's to read (the solver never writes to
    it again); the solver keeps it only when ``keeps_states``."""

    field: VectorField
    theta0: torch.Tensor
    times: np.ndarray
    jacobian_vector: JacobianVector | None = None
    jacobian: Jacobian | None = None
    progress: Progress | None = None
    breakpoints: Sequence[float] = ()
    observe: Observer | None = None
    keep_states: bool | None = None
    newton_blocks: NewtonBlocks | None = None  # cvode's Newton systems from the model (None: GMRES as it is)

    @property
    def keeps_states(self) -> bool:
        """Whether the result holds the states at every grid point reached: when asked (``keep_states``),
        and by default only when there is no observer."""
        return self.observe is None if self.keep_states is None else self.keep_states

    def restricted(self, times: np.ndarray, theta0: torch.Tensor, indices: np.ndarray | None = None
                   ) -> FlowProblem:
        """The same flow on a part of the grid from another start (no breakpoints inside).

        ``indices[k]`` is the index in this problem's grid of the part's point k (−1: not one of its points,
        e.g. a breakpoint); the part's observer reports those indices and never the part's start, which
        this problem has already seen. Without ``indices`` the part has no observer."""
        observe = None
        if self.observe is not None and indices is not None:
            outer, where = self.observe, np.asarray(indices, dtype=np.int64)

            def observe(k: int, theta: torch.Tensor) -> None:
                if k > 0 and where[k] >= 0:
                    outer(int(where[k]), theta)

        return dataclasses.replace(self, times=times, theta0=theta0, breakpoints=(), observe=observe)
