"""Training objectives: a loss as a function of the flat parameter vector θ (docs/design.md §3)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import LossConfig
from .errors import ConfigError
from .models import Model
from .task import FactTask

Objective = Callable[[torch.Tensor], torch.Tensor]


class PopulationObjective:
    """The population loss of a model, with its closed-form gradient where the model has one."""

    def __init__(self, model: Model):
        self.model = model

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return self.model.population_loss(theta)

    def value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(L, ∇L) without autodiff, or None."""
        return self.model.population_loss_and_gradient(theta)

    def grad(self, theta: torch.Tensor) -> torch.Tensor | None:
        """∇L without autodiff (and without forming L where the model can skip it), or None."""
        return self.model.population_gradient(theta)

    @property
    def hvp(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """(θ, u) -> H(θ)·u without autodiff, or None where the model has no closed form."""
        return self.model.population_hessian_vector_product if self.model.has_closed_hvp else None


def make_objective(model: Model, task: FactTask, loss: LossConfig) -> Objective:
    """θ -> L(θ): the exact population loss, or the mean loss on a fixed seeded sample of sequences.

    Raises :class:`ConfigError` when the population loss is asked of a model where it is not exact.
    """
    if loss.kind == "population":
        if not model.population_exact:
            raise ConfigError("loss.kind='population': not exact for this model (noise tokens not "
                              "symmetric); allowed: loss.kind=sampled")
        return PopulationObjective(model)
    generator = torch.Generator().manual_seed(loss.seed)
    counts, targets = task.sample(loss.samples, generator)
    device = model.preconditioner.device
    counts, targets = counts.to(device), targets.to(device)
    return lambda theta: model.sequence_loss(theta, counts, targets)


def gradient(objective: Objective, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L(θ), ∇L(θ)): the objective's closed form when it has one, else reverse-mode autodiff."""
    closed = getattr(objective, "value_and_grad", None)
    if closed is not None:
        result = closed(theta)
        if result is not None:
            return result
    return _autodiff_gradient(objective, theta)


def _autodiff_gradient(objective: Objective, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L(θ), ∇L(θ)) by reverse-mode autodiff."""
    with torch.enable_grad():
        x = theta.detach().requires_grad_(True)
        value = objective(x)
        (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def closed_gradient(objective: Objective, theta: torch.Tensor) -> torch.Tensor | None:
    """∇L(θ) by the objective's closed form, or None where it has none: its gradient alone (``grad``,
    without forming L where the model can skip it; its None is the answer) when it offers one, else
    ``value_and_grad``'s. θ may be a batch (B, P) where the objective's closed forms take one."""
    alone = getattr(objective, "grad", None)
    if alone is not None:
        return alone(theta)
    closed = getattr(objective, "value_and_grad", None)
    result = closed(theta) if closed is not None else None
    return None if result is None else result[1]


def gradient_only(objective: Objective, theta: torch.Tensor) -> torch.Tensor:
    """∇L(θ): :func:`closed_gradient` where there is one (the same numbers as :func:`gradient`'s), else
    reverse-mode autodiff."""
    grad = closed_gradient(objective, theta)
    return grad if grad is not None else _autodiff_gradient(objective, theta)[1]


def gradient_and_hvp(objective: Objective, theta: torch.Tensor,
                     direction: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇L(θ), H(θ)·v) with v = direction(∇L(θ)): the objective's closed forms when it has both, else
    double reverse-mode autodiff (never a dense Hessian)."""
    closed = getattr(objective, "hvp", None)
    if closed is not None:
        grad = gradient_only(objective, theta)
        return grad, closed(theta, direction(grad))
    with torch.enable_grad():
        x = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x), x, create_graph=True)
        v = direction(grad.detach())
        (hvp,) = torch.autograd.grad(grad, x, grad_outputs=v)
    return grad.detach(), hvp


def hessian_vector_product(objective: Objective, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """H(θ)·v for the Hessian H of the objective at θ (closed form when the objective has one)."""
    closed = getattr(objective, "hvp", None)
    return closed(theta, vector) if closed is not None else gradient_and_hvp(objective, theta,
                                                                              lambda grad: vector)[1]
