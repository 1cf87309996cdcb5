"""Discrete training on the flow's time axis (docs/design.md §4.3): every optimizer of the
registry (:data:`dynamics.optimizers.OPTIMIZERS`: gd, sgd, adam, signsgd, muon, ...).

Step k with learning rate η sits at flow time t = k·η. Trainers know nothing about models: they take an
``objective_at(k)`` (the full objective, or the loss on the k-th fresh batch) and a diagonal metric P, and
step on the gradient the flow uses, g = P ∇L, with the optimizer's stepper
(:mod:`dynamics.optimizers`). Numerical failure ends the run with a status and the time it happened;
the states before it are kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import ParameterBlock
from ..numerics import compute_settings
from ..objective import Objective, gradient
from ..optimizers import OPTIMIZERS, StepSettings, make_stepper
from ..solvers.results import Cost, Status


def record_steps(times: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """The distinct steps k = round(t / lr) ≤ ``steps`` nearest to the grid ``times``, plus the last."""
    ks = np.rint(np.asarray(times) / lr).astype(np.int64)
    return np.unique(np.concatenate([ks[ks <= steps], [steps]]))


@dataclass
class TrainResult:
    """Parameters at the recorded steps, with status and cost (``function_evals``: gradients taken)."""

    steps: np.ndarray  # (K,) recorded step indices
    t: np.ndarray  # (K,) flow times k·lr
    states: torch.Tensor  # (K, P)
    status: Status  # ok | nonfinite
    status_time: float | None
    message: str
    cost: Cost
    first_loss_increase: int | None = None  # full-batch GD: first step k with L(θ_k) > L(θ_{k-1})


def train(objective_at: Callable[[int], Objective], theta0: torch.Tensor, *, optimizer: str, lr: float,
          steps: int, record: np.ndarray, preconditioner: torch.Tensor | None = None, beta1: float = 0.9,
          beta2: float = 0.999, eps: float = 1e-8, momentum: float = 0.95,
          blocks: Sequence[ParameterBlock] | None = None,
          progress: Callable[[int], None] | None = None) -> TrainResult:
    """Run ``steps`` updates from ``theta0``; keep θ at the step indices in ``record`` (sorted).

    g = P ∇L_k(θ); gd / sgd: θ ← θ − η g; adam: the usual bias-corrected moments of g; signsgd:
    θ ← θ − η sign(g); muon: orthogonalised momentum per matrix block of ``blocks``; any registered
    optimizer by its stepper (:mod:`dynamics.optimizers`).
    """
    settings = StepSettings(betas=(beta1, beta2), eps=eps, momentum=momentum, blocks=blocks)
    stepper = make_stepper(optimizer, theta0, lr, settings)
    # the first rise of the loss is meaningful where every step sees one fixed objective (gd)
    fixed = not OPTIMIZERS[optimizer].batches
    with compute_settings(theta0):
        return _train(objective_at, stepper, fixed, lr, steps, record, preconditioner, progress)


def _train(objective_at, stepper, fixed, lr, steps, record, preconditioner, progress):
    start = time.perf_counter()
    wanted = set(int(k) for k in record)
    kept_steps: list[int] = []
    kept: list[torch.Tensor] = []
    status, status_time, message = Status.OK, None, f"trained {steps} steps"
    evals = 0
    previous = math.inf
    first_increase = None
    for k in range(steps + 1):
        theta = stepper.theta
        if not math.isfinite(k * lr):  # the time axis t = k·lr overflowed: no later point can be placed
            status, status_time = Status.NONFINITE, (k - 1) * lr
            message = (f"flow time t = k·lr overflowed at step {k} (lr={lr}); stopped at step {k - 1} "
                       f"(t={(k - 1) * lr:.6g})")
            break
        if k in wanted:
            kept_steps.append(k)
            kept.append(theta.clone())
        if k == steps:
            break
        value, grad = gradient(objective_at(k), theta)
        evals += 1
        if preconditioner is not None:
            grad = preconditioner * grad
        current = float(value)
        # On one fixed objective a stable step never raises the loss (descent lemma, lr < 2/λ_max);
        # the first rise marks where GD left the flow. Meaningless for fresh batches (sgd, adam).
        rose = current > previous + 1e-12 * max(1.0, abs(previous))
        if fixed and first_increase is None and rose:
            first_increase = k
        previous = current
        if not (math.isfinite(current) and torch.isfinite(grad).all()):
            status, status_time = Status.NONFINITE, k * lr
            message = f"loss or gradient became non-finite at step {k} (t={k * lr:.6g}); lr={lr} diverged"
            if len(kept) > 1 and kept_steps[-1] == k:  # θ_k itself is where it failed: not part of the record
                kept_steps.pop()
                kept.pop()
            break
        stepper.step(grad)
        if not torch.isfinite(stepper.theta).all():
            status, status_time = Status.NONFINITE, (k + 1) * lr
            message = f"parameters became non-finite at step {k + 1} (t={(k + 1) * lr:.6g}); lr={lr} diverged"
            break
        if progress is not None:
            progress(k + 1)
    kept_steps_arr = np.asarray(kept_steps, dtype=np.int64)
    cost = Cost(function_evals=evals, accepted_steps=evals, wall_seconds=time.perf_counter() - start)
    return TrainResult(kept_steps_arr, kept_steps_arr * lr, torch.stack(kept), status, status_time, message,
                       cost, first_increase)
