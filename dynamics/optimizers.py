"""The one optimizer path of discrete training and of the capacity fitter (dynamics.training): torch's
optimizers.

A :class:`Stepper` holds θ and steps it with a gradient g handed in by the trainer (for training on the
flow's time axis, g = P ∇L in the flow's metric). The update rules, with step size η:

    gd, sgd:  θ ← θ − η g                                   (torch.optim.SGD)
    adam:     m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − η m̂/(√v̂ + ε), bias-corrected (torch.optim.Adam)
    adamw:    adam, plus the decoupled decay θ ← θ − η λ θ   (torch.optim.AdamW)
    signsgd:  θ ← θ − η sign(g)                              (torch.optim.SGD on sign(g))
    muon:     each matrix block W: B ← μB + G, W ← W − η NS(G + μB) (Nesterov), NS the Newton–Schulz
              approximation of the polar factor U Vᵀ (torch.optim.Muon, no weight decay, η not rescaled by
              the block's shape); each vector block: θ ← θ − η g / ‖g‖, the normalised gradient.
    muon_svd: muon with the exact polar factor U Vᵀ of G + μB (by SVD; singular values below rounding
              level of the largest map to 0) in place of Newton–Schulz: Nesterov momentum by
              torch.optim.SGD on the polar factor would be wrong (the momentum must be taken before
              orthogonalising), so the buffer is kept here; vector blocks as in muon.

signsgd's flow is the sign flow and muon's the spectral flow (dynamics.geometry), in the limit η → 0 (for
muon up to Newton–Schulz's inexact singular values, which torch computes in bfloat16).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .geometry import ParameterBlock

TRAIN_OPTIMIZERS = ("gd", "sgd", "adam", "signsgd", "muon")  # train.optimizer
# adamw: the capacity fitter's; muon_svd: Muon with the exact polar factor (SVD) instead of Newton–Schulz, for
# measuring how far torch's Muon is from the spectral flow (analysis.compare)
OPTIMIZERS = (*TRAIN_OPTIMIZERS, "adamw", "muon_svd")


class Stepper:
    """θ and a torch optimizer over it. ``blocks`` (muon only): the model's parameter blocks, in order,
    covering θ; matrix blocks go to torch's Muon, vector blocks take normalised gradient steps."""

    def __init__(self, name: str, theta0: torch.Tensor, lr: float, *,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.95,
                 blocks: Sequence[ParameterBlock] | None = None):
        self.buffers: dict[int, torch.Tensor] = {}  # muon_svd: the momentum buffer of each matrix block
        if name not in OPTIMIZERS:
            raise ValueError(f"optimizer={name!r}: allowed " + ", ".join(OPTIMIZERS))
        self.name = name
        theta0 = theta0.detach()
        if name in ("muon", "muon_svd"):
            blocks = list(blocks or [ParameterBlock("theta", 0, (theta0.numel(),))])
            self.leaves = [theta0[b.start:b.start + b.size].reshape(b.shape).clone().requires_grad_(True)
                           for b in blocks]
            matrices = [leaf for leaf, b in zip(self.leaves, blocks, strict=True) if b.is_matrix]
            vectors = [leaf for leaf, b in zip(self.leaves, blocks, strict=True) if not b.is_matrix]
            self.momentum = momentum
            if name == "muon_svd":
                self.buffers = {id(w): torch.zeros_like(w) for w in matrices}
            if name == "muon_svd":
                self.optimizers = [torch.optim.SGD(self.leaves, lr=lr)]
                self.normalise = [not b.is_matrix for b in blocks]
                return
            # torch's Muon scales η by √max(1, rows/cols) ("original"); one group per matrix undoes it
            groups = [{"params": [w], "lr": lr / math.sqrt(max(1.0, w.shape[0] / w.shape[1]))}
                      for w in matrices]
            self.optimizers = [torch.optim.Muon(groups, lr=lr, weight_decay=0.0, momentum=momentum,
                                                nesterov=True, adjust_lr_fn="original")] if matrices else []
            if vectors:
                self.optimizers.append(torch.optim.SGD(vectors, lr=lr))
            self.normalise = [not b.is_matrix for b in blocks]
            return
        self.leaves = [theta0.clone().requires_grad_(True)]
        self.normalise = [False]
        leaf = self.leaves[0]
        if name in ("gd", "sgd", "signsgd"):
            self.optimizers = [torch.optim.SGD([leaf], lr=lr)]
        elif name == "adam":
            self.optimizers = [torch.optim.Adam([leaf], lr=lr, betas=betas, eps=eps)]
        else:
            self.optimizers = [torch.optim.AdamW([leaf], lr=lr, betas=betas, eps=eps,
                                                 weight_decay=weight_decay)]

    @property
    def theta(self) -> torch.Tensor:
        """The current θ (flat, detached; a copy for muon)."""
        if len(self.leaves) == 1 and self.name not in ("muon", "muon_svd"):
            return self.leaves[0].detach()
        return torch.cat([leaf.detach().reshape(-1) for leaf in self.leaves])

    def step(self, grad: torch.Tensor) -> None:
        """One update of θ with gradient ``grad`` (flat, θ's shape)."""
        if self.name == "signsgd":
            grad = torch.sign(grad)
        start = 0
        for leaf, normalise in zip(self.leaves, self.normalise, strict=True):
            part = grad[start:start + leaf.numel()].reshape(leaf.shape)
            start += leaf.numel()
            if normalise:
                norm = part.norm()
                part = part / norm if norm > 0 else part
            elif id(leaf) in self.buffers:
                buffer = self.buffers[id(leaf)]
                buffer.mul_(self.momentum).add_(part)
                part = polar_factor(part + self.momentum * buffer)
            leaf.grad = part
        for optimizer in self.optimizers:
            optimizer.step()


def polar_factor(G: torch.Tensor) -> torch.Tensor:
    """U Vᵀ of G = U Σ Vᵀ by SVD; singular values at rounding level of the largest (exact zeros) map to 0."""
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = s > torch.finfo(s.dtype).eps * max(G.shape) * (s.max() if s.numel() else 0.0)
    return (U * keep.to(G.dtype)) @ Vh
