"""Vector fields of the flow and their Jacobian products, built from an objective and a geometry.

A field is a function f(t, θ) (see :mod:`dynamics.solvers.options`). The steepest-descent flow of a loss L
in a geometry is dθ/dt = −D(∇L(θ)), where the geometry's map D turns a gradient into the direction of
steepest descent. The geometry used throughout today is a diagonal metric P (:class:`DiagonalMetric`):
D(g) = P g, the gradient flow in the norm ‖δ‖² = Σ_i δ_i² / P_i; P = 1 is the Euclidean gradient flow,
and the reduced model's P = 1/N on its tied noise token makes that token stand for N tokens.

The Jacobian of f = −D(∇L) is −D'(∇L)·H: with a diagonal metric, J = −P H, applied to a vector by one
Hessian-vector product (never a dense Hessian), or built densely for small models.
"""

from __future__ import annotations

import torch

from .objective import Objective, gradient, gradient_and_hvp, hessian_vector_product
from .solvers.options import Jacobian, JacobianVector, VectorField


class DiagonalMetric:
    """The geometry of a diagonal metric P (a tensor of the parameters' shape, or None for P = 1):
    steepest-descent direction D(g) = P g, and its derivative along a change δg of the gradient, P δg."""

    def __init__(self, scale: torch.Tensor | None = None):
        self.scale = scale

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """D(g) = P g."""
        return grad if self.scale is None else self.scale * grad

    def negative_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """−D(g) = −P g, the field's value."""
        return -grad if self.scale is None else -self.scale * grad

    def row_scale(self) -> torch.Tensor | float:
        """P as a multiplier (1.0 when P = 1); broadcasts over a batch of rows."""
        return 1.0 if self.scale is None else self.scale


Geometry = DiagonalMetric


def _geometry(geometry: Geometry | torch.Tensor | None) -> Geometry:
    return geometry if isinstance(geometry, DiagonalMetric) else DiagonalMetric(geometry)


def gradient_field(objective: Objective, geometry: Geometry | torch.Tensor | None = None) -> VectorField:
    """f(t, θ) = −P ∇L(θ) (``geometry``: a :class:`DiagonalMetric`, a tensor P, or None for P = 1)."""
    metric = _geometry(geometry)

    def field(t: float, theta: torch.Tensor) -> torch.Tensor:
        _, grad = gradient(objective, theta)
        return metric.negative_direction(grad)

    return field


def batched_gradient_field(objective: Objective, geometry: Geometry | torch.Tensor | None = None
                           ) -> VectorField:
    """f(t, Θ) = −P ∇L(θ_b) row by row for Θ (B, P): the objective's batched closed form where it has
    one, else ``torch.func.vmap`` of the autodiff gradient."""
    closed = getattr(objective, "value_and_grad", None)
    scale = _geometry(geometry).row_scale()
    vmapped = torch.func.vmap(torch.func.grad(objective))

    def field(t: float, thetas: torch.Tensor) -> torch.Tensor:
        result = closed(thetas) if closed is not None else None
        grads = result[1] if result is not None else vmapped(thetas)
        return -scale * grads

    return field


def gradient_field_jacobian_vector(objective: Objective, geometry: Geometry | torch.Tensor | None = None
                                   ) -> JacobianVector:
    """(t, θ, v) -> J(θ)·v = −P H(θ) v: one Hessian-vector product (the objective's closed form, else
    double reverse mode)."""
    metric = _geometry(geometry)

    def product(t: float, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        return metric.negative_direction(hessian_vector_product(objective, theta, vector))

    return product


def gradient_field_jacobian(objective: Objective, geometry: Geometry | torch.Tensor | None = None
                            ) -> Jacobian:
    """(t, θ) -> J(θ) = −P H(θ), dense (P × P): for small parameter vectors only."""
    metric = _geometry(geometry)

    def jacobian(t: float, theta: torch.Tensor) -> torch.Tensor:
        hessian = torch.func.hessian(objective)(theta)
        return -hessian if metric.scale is None else -metric.scale[:, None] * hessian

    return jacobian


def modified_gradient_field(objective: Objective, geometry: Geometry | torch.Tensor | None, lr: float
                            ) -> VectorField:
    """The modified flow of GD with learning rate η (backward-error analysis, second order in η):

        f(t, θ) = −P ∇L − (η/2) · P H P ∇L

    i.e. the gradient flow of L + (η/4)‖∇L‖² in the metric P; one Hessian-vector product per evaluation.
    """
    scale = _geometry(geometry).row_scale()  # a float meets θ on any device

    def field(t: float, theta: torch.Tensor) -> torch.Tensor:
        grad, hvp = gradient_and_hvp(objective, theta, lambda g: scale * g)
        return -scale * grad - 0.5 * lr * scale * hvp

    return field
