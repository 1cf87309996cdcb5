"""What a solver returns: the states on the record grid, one status word and the cost of getting there.

The same :class:`Status` vocabulary and :class:`Cost` fields are used by every run of the engine (flows,
discrete training, sweeps, capacity trials), so a status reads the same wherever it is found.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

import numpy as np
import torch

from .options import FlowProblem


class Status(str, Enum):
    """How a run ended. A ``str`` subclass: ``Status.OK == "ok"`` and it is written to JSON as ``"ok"``."""

    OK = "ok"  # reached the end
    NONFINITE = "nonfinite"  # the state, the field or the loss became NaN or infinite
    STEP_UNDERFLOW = "step_underflow"  # an adaptive solver's step size fell to zero (stiff or diverging)
    MAX_STEPS = "max_steps"  # the step budget ran out
    TOO_SLOW = "too_slow"  # the pace so far projects far more steps than the budget (solvers.pace)

    def __str__(self) -> str:
        return self.value


@dataclass
class Cost:
    """What a run cost. ``function_evals`` counts evaluations of the vector field (one gradient each for a
    gradient flow; one per step for discrete training); ``hvp_evals`` Hessian-vector products handed to an
    implicit solver or a stiffness probe as J·v; ``jacobian_evals`` dense Jacobians;
    ``preconditioner_setups`` the curvature blocks cvode's preconditioner built (about a gradient each);
    ``block_products`` J·v products taken from those blocks (``flow.jacobian=blocks``: O(P) each, no
    gradient)."""

    function_evals: int = 0
    hvp_evals: int = 0
    jacobian_evals: int = 0
    preconditioner_setups: int = 0
    block_products: int = 0
    accepted_steps: int = 0
    rejected_steps: int | None = 0  # None: not reported by the solver (the implicit ones)
    wall_seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        def total(a, b):  # an unknown count makes the sum unknown
            return None if a is None or b is None else a + b

        return Cost(**{f.name: total(getattr(self, f.name), getattr(other, f.name)) for f in fields(Cost)})

    def to_dict(self) -> dict[str, Any]:
        """The cost as a plain dict (``summary.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Cost:
        """Read back what :meth:`to_dict` wrote."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class FlowResult:
    """States at the grid times reached, the run's status with the time it happened, and its cost.
    ``states`` is None when the problem had an observer and did not ask to keep them; ``last_state``, the
    state at the last grid point reached, is always there (to continue a flow)."""

    t: np.ndarray  # (K,) grid times reached
    states: torch.Tensor | None  # (K, P), or None when not kept
    status: Status
    status_time: float | None  # flow time of the failure; None when ok
    message: str
    cost: Cost = field(default_factory=Cost)
    last_step: float | None = None  # the last accepted step size (explicit methods): to continue a run
    method_used: str = ""  # what a strategy (auto) chose, and why
    method_split: dict[str, Cost] = field(default_factory=dict)  # a strategy's cost, part by part
    last_state: torch.Tensor | None = None  # θ at t[-1]

    def __post_init__(self) -> None:
        if self.last_state is None and self.states is not None and len(self.states):
            self.last_state = self.states[-1]


class GridStates:
    """The states a solver delivers on the record grid, in order: each handed to the problem's observer as
    soon as it is final, and written into one preallocated (K, …) tensor only when the problem keeps
    states (the record is written once, never copied). ``observe_seconds``: the time spent in the
    observer, which a solver leaves out of its own wall time."""

    def __init__(self, problem: FlowProblem):
        theta0 = problem.theta0
        self.observe = problem.observe
        self.states = (torch.empty((len(problem.times), *theta0.shape), dtype=theta0.dtype,
                                   device=theta0.device) if problem.keeps_states else None)
        self.count = 0
        self.last: torch.Tensor | None = None
        self.observe_seconds = 0.0
        self.add(theta0.detach().clone())

    def add(self, state: torch.Tensor) -> None:
        """The state at the next grid point (index ``count``)."""
        if self.states is not None:
            self.states[self.count] = state
        if self.observe is not None:
            start = time.perf_counter()
            self.observe(self.count, state)
            self.observe_seconds += time.perf_counter() - start
        self.last = state
        self.count += 1

    def kept(self) -> torch.Tensor | None:
        """The states of the grid points reached, (count, …), or None when not kept."""
        return None if self.states is None else self.states[:self.count]


@dataclass
class BatchFlowResult:
    """A batch integrated together: shared grid and cost, a status per member."""

    t: np.ndarray  # (K,)
    states: torch.Tensor  # (K, B, P)
    status: Status  # the batch's own status (a step-size underflow or the step budget stops every member)
    status_time: float | None
    message: str
    member_status: list[Status]
    member_status_time: list[float | None]
    member_kept: list[int]  # leading grid points whose states are exact for each member
    cost: Cost = field(default_factory=Cost)


def join(parts: list[FlowResult], extra: Cost | None = None) -> FlowResult:
    """Consecutive pieces of one flow (each starting at the previous one's last grid point) as one flow,
    with ``extra`` cost spent between them (e.g. stiffness probes)."""
    last = parts[-1]
    cost = sum((p.cost for p in parts), extra or Cost())
    states = None
    if all(p.states is not None for p in parts):
        states = torch.cat([parts[0].states] + [p.states[1:] for p in parts[1:]])
    return FlowResult(np.concatenate([parts[0].t] + [p.t[1:] for p in parts[1:]]), states, last.status,
                      last.status_time, last.message, cost, last.last_step, last_state=last.last_state)
