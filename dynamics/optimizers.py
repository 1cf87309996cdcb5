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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError
from .lazy import Lazy, lazy_exports
from .registry import Registry

if TYPE_CHECKING:
    import torch

    from .geometry import ParameterBlock
    from .steppers import Stepper

# the steppers compute (torch), loaded when first read: the registry alone checks a config
__getattr__, __dir__ = lazy_exports(__name__, {"Stepper": ".steppers", "polar_factor": ".steppers"})

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


_STEPS = ("train.optimizer", "train.lr", "train.steps")
_BATCHED = (*_STEPS, "train.batch_size", "train.seed")


def _stepper(name: str) -> Lazy:
    """The built-in stepper ``name`` of :mod:`dynamics.steppers` (torch), imported when a run first steps."""
    return Lazy(f"dynamics.steppers:{name}")


_BUILTIN = (
        Optimizer("gd", _stepper("sgd"), _STEPS, "euclidean", batches=False, full_batch=False,
                  label="GD (full batch)", marker="o", color="C0",
                  summary="full-batch gradient descent on the flow's own loss"),
        Optimizer("sgd", _stepper("sgd"), _BATCHED, "euclidean", full_batch=False, label="SGD (online)",
                  marker="v", color="C2", summary="gradient descent on a fresh batch every step"),
        Optimizer("adam", _stepper("adam"), (*_BATCHED, "train.beta1", "train.beta2", "train.eps"), "sign",
                  uses=("train", "compare", "fit"), label="Adam", marker="^", color="C4",
                  summary="Adam (torch.optim.Adam); its flow as lr → 0 is the sign flow"),
        Optimizer("signsgd", _stepper("signsgd"), _BATCHED, "sign", label="signSGD", marker="D", color="C1",
                  summary="steps along sign(g)"),
        Optimizer("muon", _stepper("muon"), (*_BATCHED, "train.momentum"), "spectral", label="Muon",
                  marker="P", color="C5",
                  summary="torch.optim.Muon on the matrix blocks, normalised steps on vectors"),
        Optimizer("muon_svd", _stepper("muon_svd"), (*_STEPS, "train.momentum"), "spectral",
                  uses=("compare",), label="Muon (exact polar factor)", marker="X", color="C6",
                  summary="Muon with the exact polar factor (SVD): how far torch's Muon is from the spectral "
                          "flow (compare's full-batch runs)"),
        Optimizer("adamw", _stepper("adamw"), (), None, uses=("fit",), label="AdamW", marker="s", color="C3",
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
