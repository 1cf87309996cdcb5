"""Training to a target accuracy with early stopping (the capacity experiments of the paper's Figures 1, 4).

Unlike :mod:`dynamics.train` (which records a trajectory on the flow's time axis), this trainer only asks
"does the model reach accuracy ≥ threshold within the step budget?". It knows nothing about models: it
takes ``objective_at(k)`` (the loss on step k's batch, or the full-batch loss) and ``accuracy(θ)``.

Adam:  m ← β₁m + (1-β₁)g,  v ← β₂v + (1-β₂)g²,  θ ← θ - η m̂/(√v̂ + ε)   (bias-corrected m̂, v̂)
AdamW: the same, plus the decoupled decay θ ← θ - η λ θ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import ConfigError
from .numerics import compute_settings

OPTIMIZERS = ("adam", "adamw")


@dataclass
class FitResult:
    """Outcome of one training: ``status`` is stored | not_stored | nonfinite."""

    status: str
    accuracy: float
    steps: int
    loss: float
    seconds: float
    message: str = ""

    @property
    def success(self) -> bool:
        """True when the accuracy threshold was reached."""
        return self.status == "stored"


def fit(objective_at: Callable[[int], Callable[[torch.Tensor], torch.Tensor]],
        accuracy: Callable[[torch.Tensor], float], theta0: torch.Tensor, *, optimizer: str = "adam",
        lr: float = 1e-2, steps: int = 1000, weight_decay: float = 0.0, threshold: float = 0.99,
        check_every: int = 50, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> FitResult:
    """Train θ from ``theta0`` for at most ``steps`` updates; stop as soon as accuracy(θ) ≥ threshold
    (checked every ``check_every`` steps and at the end). A non-finite loss or θ ends the run with status
    ``nonfinite`` (a result, not an exception)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer={optimizer!r}: allowed " + ", ".join(OPTIMIZERS))
    with compute_settings(theta0):
        return _fit(objective_at, accuracy, theta0, optimizer, lr, steps, weight_decay, threshold,
                    check_every, betas, eps)


def _fit(objective_at, accuracy, theta0, optimizer, lr, steps, weight_decay, threshold, check_every, betas,
         eps) -> FitResult:
    start = time.perf_counter()
    theta = theta0.detach().clone().requires_grad_(True)
    decay = weight_decay if optimizer == "adamw" else 0.0
    opt = torch.optim.AdamW([theta], lr=lr, betas=betas, eps=eps, weight_decay=decay)
    value = math.nan
    for k in range(steps + 1):
        if k % check_every == 0 or k == steps:
            acc = accuracy(theta.detach())
            if acc >= threshold:
                return FitResult("stored", acc, k, value, time.perf_counter() - start)
            if k == steps:
                return FitResult("not_stored", acc, k, value, time.perf_counter() - start)
        opt.zero_grad(set_to_none=True)
        loss = objective_at(k)(theta)
        value = float(loss.detach())
        if not math.isfinite(value):
            return FitResult("nonfinite", 0.0, k, value, time.perf_counter() - start,
                             f"loss became non-finite at step {k}")
        loss.backward()
        opt.step()
        if not bool(torch.isfinite(theta).all()):
            return FitResult("nonfinite", 0.0, k + 1, value, time.perf_counter() - start,
                             f"parameters became non-finite at step {k + 1}")
    raise AssertionError("unreachable")
