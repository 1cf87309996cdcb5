"""What a solver is given: the problem (field, start, grid, optional Jacobian products) and its options.

A vector field is a function ``f(t, θ)`` of the flow time and a flat parameter vector (or a batch of them,
one per row); the flow is dθ/dt = f(t, θ). Fields may change discontinuously at known times (phase
boundaries): those are the problem's ``breakpoints``, where every solver stops and restarts exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

VectorField = Callable[[float, torch.Tensor], torch.Tensor]  # (t, θ) -> dθ/dt
JacobianVector = Callable[[float, torch.Tensor, torch.Tensor], torch.Tensor]  # (t, θ, v) -> J(t, θ)·v
Jacobian = Callable[[float, torch.Tensor], torch.Tensor]  # (t, θ) -> J(t, θ), dense (P, P)
Progress = Callable[[float], None]  # called with the time reached after every accepted step


@dataclass(frozen=True)
class SolverOptions:
    """Settings every method understands. ``rtol``/``atol``: the local error test
    |err_i| ≤ atol + rtol·|θ_i| (per component, RMS norm); ``first_step``: the first step size (a symmetric
    start has f ≈ 0, so it is given rather than guessed); ``max_steps``: the budget of accepted steps;
    ``chunk``: grid points per call of an explicit solver (None: about 1/24 of the grid)."""

    rtol: float = 1e-6
    atol: float = 1e-10
    first_step: float = 1e-3
    max_steps: int = 200_000
    chunk: int | None = None

    def replace(self, **changes) -> SolverOptions:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class FlowProblem:
    """dθ/dt = field(t, θ) from θ(times[0]) = theta0, recorded at every entry of ``times`` (increasing).

    ``jacobian_vector`` and ``jacobian`` are the field's Jacobian products where a method can use them
    (implicit methods, stiffness probes); ``breakpoints`` are times inside the grid where the field may
    jump: no solver step crosses one."""

    field: VectorField
    theta0: torch.Tensor
    times: np.ndarray
    jacobian_vector: JacobianVector | None = None
    jacobian: Jacobian | None = None
    progress: Progress | None = None
    breakpoints: Sequence[float] = ()

    def restricted(self, times: np.ndarray, theta0: torch.Tensor) -> FlowProblem:
        """The same flow on a part of the grid from another start (no breakpoints inside)."""
        return dataclasses.replace(self, times=times, theta0=theta0, breakpoints=())
