"""The one optimizer path of discrete training and of the capacity fitter: torch's own optimizers.

Both trainers step a single flat parameter tensor θ. The step direction is whatever gradient the trainer
hands in (for training on the flow's time axis, g = P ∇L in the flow's metric), so the update rules are:

    gd, sgd:  θ ← θ − η g
    adam:     m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,  θ ← θ − η m̂ / (√v̂ + ε)   (bias-corrected m̂, v̂)
    adamw:    adam, plus the decoupled decay θ ← θ − η λ θ
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("gd", "sgd", "adam", "adamw")


def make_optimizer(name: str, theta: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """A torch optimizer of the one tensor ``theta`` (a leaf that requires grad) for ``name`` in
    :data:`OPTIMIZERS`; the caller sets ``theta.grad`` and calls ``step()``."""
    if name in ("gd", "sgd"):
        return torch.optim.SGD([theta], lr=lr)
    if name == "adam":
        return torch.optim.Adam([theta], lr=lr, betas=betas, eps=eps)
    if name == "adamw":
        return torch.optim.AdamW([theta], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r}: allowed " + ", ".join(OPTIMIZERS))
