"""Training to a target accuracy with early stopping (the capacity experiments, docs/reproducing.md).

Unlike :mod:`.discrete` (which records a trajectory on the flow's time axis), this trainer only asks "does
the model reach accuracy ≥ threshold within the step budget?". It knows nothing about models: it takes
``objective_at(k)`` (the loss on step k's batch, or the full-batch loss) and ``accuracy(θ)``, and steps with
the same torch optimizers as discrete training (:mod:`dynamics.optimizers`: those whose uses include
``fit``, ``adam`` and ``adamw``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..numerics import compute_settings
from ..optimizers import StepSettings, get_optimizer, make_stepper
from ..solvers.results import Status


@dataclass
class FitResult:
    """Outcome of one training: ``status`` ok (the budget or the threshold was reached) or nonfinite;
    ``stored`` whether the accuracy threshold was reached."""

    status: Status
    stored: bool
    accuracy: float
    steps: int
    loss: float
    wall_seconds: float
    message: str = ""


def fit(objective_at: Callable[[int], Callable[[torch.Tensor], torch.Tensor]],
        accuracy: Callable[[torch.Tensor], float], theta0: torch.Tensor, *, optimizer: str = "adam",
        lr: float = 1e-2, steps: int = 1000, weight_decay: float = 0.0, threshold: float = 0.99,
        check_every: int = 50, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> FitResult:
    """Train θ from ``theta0`` for at most ``steps`` updates; stop as soon as accuracy(θ) ≥ threshold
    (checked every ``check_every`` steps and at the end). A non-finite loss or θ ends the run with status
    ``nonfinite`` (a result, not an exception)."""
    get_optimizer(optimizer, "fit", "optimizer")  # one the fitter may use (dynamics.optimizers)
    with compute_settings(theta0):
        return _fit(objective_at, accuracy, theta0, optimizer, lr, steps, weight_decay, threshold,
                    check_every, betas, eps)


def _fit(objective_at, accuracy, theta0, optimizer, lr, steps, weight_decay, threshold, check_every, betas,
         eps) -> FitResult:
    start = time.perf_counter()
    stepper = make_stepper(optimizer, theta0, lr, StepSettings(betas=betas, eps=eps,
                                                               weight_decay=weight_decay))
    theta = stepper.leaves[0]  # the fitter's optimizers hold θ in one leaf
    value = math.nan
    for k in range(steps + 1):
        if k % check_every == 0 or k == steps:
            acc = accuracy(theta.detach())
            if acc >= threshold or k == steps:
                return FitResult(Status.OK, acc >= threshold, acc, k, value, time.perf_counter() - start)
        loss = objective_at(k)(theta)
        value = float(loss.detach())
        if not math.isfinite(value):
            return FitResult(Status.NONFINITE, False, 0.0, k, value, time.perf_counter() - start,
                             f"loss became non-finite at step {k}")
        (grad,) = torch.autograd.grad(loss, theta)
        stepper.step(grad)
        if not bool(torch.isfinite(theta).all()):
            return FitResult(Status.NONFINITE, False, 0.0, k + 1, value, time.perf_counter() - start,
                             f"parameters became non-finite at step {k + 1}")
    raise AssertionError("unreachable")
