"""The one list of discrete optimizers: each with its stepper, the ``train.*`` keys it reads, the flow it
follows as lr → 0, where it may be used, and how the figures draw it. The one optimizer path of discrete
training and of the capacity fitter (dynamics.training): torch's optimizers.

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

Every other part of the project asks :data:`OPTIMIZERS` instead of listing names: the config's choice of
``train.optimizer`` and its refusal of ``train.*`` keys the optimizer does not read
(:mod:`dynamics.config.loading`), the trainer, ``compare`` (which flow each optimizer is set against,
which run on fresh batches), the stage theory (which runs follow the gradient flow) and the figures. An
optimizer of your own is a stepper factory and one :func:`register_optimizer` call (docs/extending.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .geometry import ParameterBlock
from .registry import Registry

# Where an optimizer may be used: ``train.optimizer`` (simulate/sweep --train, compare's fresh-batch runs),
# ``compare --optimizers``, the capacity fitter (dynamics.training.fit).
USES = ("train", "compare", "fit")
ENTRY_POINT_GROUP = "factrecall.optimizers"  # an entry point there names a function that registers optimizers


@dataclass(frozen=True)
class StepSettings:
    """What a stepper may read besides θ(0) and η: the ``train.*`` hyperparameters (each optimizer reads its
    own, :attr:`Optimizer.reads`), the fitter's weight decay, and the model's parameter blocks."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.95
    blocks: Sequence[ParameterBlock] | None = None


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


@dataclass(frozen=True)
class Optimizer:
    """A discrete optimizer. ``stepper(θ(0), η, settings)``: the :class:`Stepper` of a run. ``reads``: the
    ``train.*`` keys (dotted) its run reads; the others are refused when set. ``flow``: the geometry
    (:mod:`dynamics.geometry`) of the flow it follows as η → 0 on a fixed loss (None: no registered one, as
    AdamW's decay). ``batches``: whether a
    discrete run steps it on fresh batches (False: on the flow's own objective, as gd). ``uses``: where it
    may be named (:data:`USES`). ``full_batch``: whether ``compare --full-batch`` steps it on the flow's own
    population loss (sgd: no, that run is gd). ``label``, ``marker``, ``color``: how the figures draw it."""

    name: str
    stepper: Callable[[torch.Tensor, float, StepSettings], Stepper]
    reads: tuple[str, ...]
    flow: str | None
    batches: bool = True
    uses: tuple[str, ...] = ("train", "compare")
    full_batch: bool = True
    label: str = ""
    marker: str = "o"
    color: str = "C7"
    summary: str = ""


def optimizers_for(use: str) -> tuple[str, ...]:
    """The names of the optimizers that may be used as ``use`` (one of :data:`USES`), in registry order
    (those of installed entry points, :data:`ENTRY_POINT_GROUP`, included)."""
    return tuple(name for name, entry in OPTIMIZERS.items() if use in entry.uses)


def get_optimizer(name: str, use: str = "train", key: str = "train.optimizer") -> Optimizer:
    """The optimizer called ``name``, usable as ``use``; a one-line ConfigError naming ``key`` and the
    allowed ones otherwise."""
    allowed = optimizers_for(use)
    if name not in allowed:
        raise ConfigError(f"{key}={name!r}: must be one of " + ", ".join(allowed))
    return OPTIMIZERS[name]


def make_stepper(name: str, theta0: torch.Tensor, lr: float, settings: StepSettings = StepSettings()
                 ) -> Stepper:
    """The stepper of the registered optimizer ``name`` from ``theta0`` with step size ``lr``."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r}: must be one of " + ", ".join(OPTIMIZERS))
    return OPTIMIZERS[name].stepper(theta0, lr, settings)


def polar_factor(G: torch.Tensor) -> torch.Tensor:
    """U Vᵀ of G = U Σ Vᵀ by SVD; singular values at rounding level of the largest (exact zeros) map to 0."""
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = s > torch.finfo(s.dtype).eps * max(G.shape) * (s.max() if s.numel() else 0.0)
    return (U * keep.to(G.dtype)) @ Vh


# --- the built-in optimizers ----------------------------------------------------------------------------

def _sgd(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    return Stepper.single(theta0, lambda leaves: torch.optim.SGD(leaves, lr=lr))


def _signsgd(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    return Stepper.single(theta0, lambda leaves: torch.optim.SGD(leaves, lr=lr), lambda i, g: torch.sign(g))


def _adam(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    return Stepper.single(theta0, lambda leaves: torch.optim.Adam(leaves, lr=lr, betas=settings.betas,
                                                                  eps=settings.eps))


def _adamw(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
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


def _muon(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
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


def _muon_svd(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
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


_STEPS = ("train.optimizer", "train.lr", "train.steps")
_BATCHED = (*_STEPS, "train.batch_size", "train.seed")
_BUILTIN = (
        Optimizer("gd", _sgd, _STEPS, "euclidean", batches=False, full_batch=False, label="GD (full batch)",
                  marker="o", color="C0", summary="full-batch gradient descent on the flow's own loss"),
        Optimizer("sgd", _sgd, _BATCHED, "euclidean", full_batch=False, label="SGD (online)", marker="v",
                  color="C2", summary="gradient descent on a fresh batch every step"),
        Optimizer("adam", _adam, (*_BATCHED, "train.beta1", "train.beta2", "train.eps"), "sign",
                  uses=("train", "compare", "fit"), label="Adam", marker="^", color="C4",
                  summary="Adam (torch.optim.Adam); its flow as lr → 0 is the sign flow"),
        Optimizer("signsgd", _signsgd, _BATCHED, "sign", label="signSGD", marker="D", color="C1",
                  summary="steps along sign(g)"),
        Optimizer("muon", _muon, (*_BATCHED, "train.momentum"), "spectral", label="Muon", marker="P",
                  color="C5", summary="torch.optim.Muon on the matrix blocks, normalised steps on vectors"),
        Optimizer("muon_svd", _muon_svd, (*_STEPS, "train.momentum"), "spectral", uses=("compare",),
                  label="Muon (exact polar factor)", marker="X", color="C6",
                  summary="Muon with the exact polar factor (SVD): how far torch's Muon is from the spectral "
                          "flow (compare's full-batch runs)"),
        Optimizer("adamw", _adamw, (), None, uses=("fit",), label="AdamW", marker="s", color="C3",
                  summary="Adam with decoupled weight decay (the capacity fitter's)"))

OPTIMIZERS: Registry[Optimizer] = Registry("optimizer", ENTRY_POINT_GROUP, _BUILTIN)
BUILTIN = OPTIMIZERS.builtin  # the optimizers above, which stay


def register_optimizer(optimizer: Optimizer) -> Optimizer:
    """Add ``optimizer`` to the registry (from anywhere: a user's own file), so that ``train.optimizer`` and
    ``compare --optimizers`` may name it (as its ``uses`` say); returns the entry. A name already taken, a
    name that is not an identifier, a read key outside ``train.*``, an unknown use, or a compare use
    without a flow is refused (ValueError)."""
    name = optimizer.name
    wrong = [key for key in optimizer.reads if not key.startswith("train.")]
    if wrong or set(optimizer.uses) - set(USES):
        raise ValueError(f"register_optimizer: {name!r}: reads {wrong} must be train.* keys and uses "
                         f"{list(optimizer.uses)} among {', '.join(USES)}")
    if optimizer.flow is None and "compare" in optimizer.uses:
        raise ValueError(f"register_optimizer: {name!r}: compare sets an optimizer against its flow; "
                         "name one (a geometry of dynamics.geometry) or leave compare out of its uses")
    return OPTIMIZERS.register(optimizer)


def unregister_optimizer(name: str) -> None:
    """Remove an optimizer added by :func:`register_optimizer` (the built-in ones stay: ValueError)."""
    OPTIMIZERS.unregister(name)
