"""The steppers of the built-in optimizers (:data:`dynamics.optimizers.OPTIMIZERS` names each by where it
lives here): :class:`Stepper`, θ held as leaves that torch's optimizers step, and one factory per optimizer,
``name(θ(0), η, settings) -> Stepper``. The update rules are listed in :mod:`dynamics.optimizers`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .geometry import ParameterBlock

if TYPE_CHECKING:
    from .optimizers import StepSettings


class Stepper:
    """θ as ``leaves`` (the tensors torch's ``optimizers`` step, in order, covering θ) and what each leaf's
    optimizer is handed: ``direction(i, g_i)`` of the gradient's part g_i on leaf i (None: g_i itself)."""

    def __init__(self, leaves: list[torch.Tensor], optimizers: list[torch.optim.Optimizer],
                 direction: Callable[[int, torch.Tensor], torch.Tensor] | None = None):
        self.leaves, self.optimizers, self.direction = leaves, optimizers, direction

    @classmethod
    def single(cls, theta0: torch.Tensor, optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
               direction: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> Stepper:
        """θ as one leaf, a copy of ``theta0``, stepped by ``optimizer([leaf])``."""
        leaf = theta0.detach().clone().requires_grad_(True)
        return cls([leaf], [optimizer([leaf])], direction)

    @property
    def theta(self) -> torch.Tensor:
        """The current θ (flat, detached; a copy when θ is held in several leaves or as a matrix)."""
        if len(self.leaves) == 1 and self.leaves[0].dim() == 1:
            return self.leaves[0].detach()
        return torch.cat([leaf.detach().reshape(-1) for leaf in self.leaves])

    def step(self, grad: torch.Tensor) -> None:
        """One update of θ with gradient ``grad`` (flat, θ's shape)."""
        start = 0
        for i, leaf in enumerate(self.leaves):
            part = grad[start:start + leaf.numel()].reshape(leaf.shape)
            start += leaf.numel()
            leaf.grad = part if self.direction is None else self.direction(i, part)
        for optimizer in self.optimizers:
            optimizer.step()


def polar_factor(G: torch.Tensor) -> torch.Tensor:
    """U Vᵀ of G = U Σ Vᵀ by SVD; singular values at rounding level of the largest (exact zeros) map to 0."""
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = s > torch.finfo(s.dtype).eps * max(G.shape) * (s.max() if s.numel() else 0.0)
    return (U * keep.to(G.dtype)) @ Vh


def sgd(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    return Stepper.single(theta0, lambda leaves: torch.optim.SGD(leaves, lr=lr))


def signsgd(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    return Stepper.single(theta0, lambda leaves: torch.optim.SGD(leaves, lr=lr), lambda i, g: torch.sign(g))


def adam(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    return Stepper.single(theta0, lambda leaves: torch.optim.Adam(leaves, lr=lr, betas=settings.betas,
                                                                  eps=settings.eps))


def adamw(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    return Stepper.single(theta0, lambda leaves: torch.optim.AdamW(leaves, lr=lr, betas=settings.betas,
                                                                   eps=settings.eps,
                                                                   weight_decay=settings.weight_decay))


def _blocks(theta0: torch.Tensor, settings: StepSettings) -> tuple[list[ParameterBlock], list[torch.Tensor]]:
    """The model's blocks (default: θ as one vector) and one leaf per block, a copy of its part of θ(0)."""
    theta0 = theta0.detach()
    blocks = list(settings.blocks or [ParameterBlock("theta", 0, (theta0.numel(),))])
    return blocks, [theta0[b.start:b.start + b.size].reshape(b.shape).clone().requires_grad_(True)
                    for b in blocks]


def _normalised(part: torch.Tensor) -> torch.Tensor:
    norm = part.norm()
    return part / norm if norm > 0 else part


def muon(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    blocks, leaves = _blocks(theta0, settings)
    matrices = [leaf for leaf, b in zip(leaves, blocks, strict=True) if b.is_matrix]
    vectors = [leaf for leaf, b in zip(leaves, blocks, strict=True) if not b.is_matrix]
    # torch's Muon scales η by √max(1, rows/cols) ("original"); one group per matrix undoes it
    groups = [{"params": [w], "lr": lr / math.sqrt(max(1.0, w.shape[0] / w.shape[1]))} for w in matrices]
    optimizers = [torch.optim.Muon(groups, lr=lr, weight_decay=0.0, momentum=settings.momentum,
                                   nesterov=True, adjust_lr_fn="original")] if matrices else []
    if vectors:
        optimizers.append(torch.optim.SGD(vectors, lr=lr))
    return Stepper(leaves, optimizers, lambda i, g: g if blocks[i].is_matrix else _normalised(g))


def muon_svd(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    blocks, leaves = _blocks(theta0, settings)
    buffers = {i: torch.zeros_like(leaf) for i, (leaf, b) in enumerate(zip(leaves, blocks, strict=True))
               if b.is_matrix}  # the momentum buffer of each matrix block
    mu = settings.momentum

    def direction(i: int, part: torch.Tensor) -> torch.Tensor:
        if i not in buffers:
            return _normalised(part)
        buffers[i].mul_(mu).add_(part)
        return polar_factor(part + mu * buffers[i])

    return Stepper(leaves, [torch.optim.SGD(leaves, lr=lr)], direction)
