"""Vector fields of the flow and their Jacobian products, built from an objective and a geometry.

A field is a function f(t, θ) (see :mod:`dynamics.solvers.options`). The steepest-descent flow of a loss L
in a geometry (:mod:`dynamics.geometry`) is dθ/dt = −D(∇L(θ)), where the geometry's map D turns a gradient
into the direction of steepest descent: D(g) = P g for the gradient flow in a diagonal metric P (P = 1/N
on the reduced model's tied noise token makes it stand for N tokens), sign(P g) for sign descent, the
polar factor of each matrix block for spectral descent.

The Jacobian of f = −D(∇L) is −D'(∇L)·H: with a diagonal metric, J = −P H, applied to a vector by one
Hessian-vector product (never a dense Hessian), or built densely for small models.
"""

from __future__ import annotations

import torch

from .geometry import DiagonalMetric, SignDescent, SpectralDescent
from .objective import Objective, gradient, gradient_and_hvp, hessian_vector_product
from .solvers.options import Jacobian, JacobianVector, VectorField

Geometry = DiagonalMetric | SignDescent | SpectralDescent


def _geometry(geometry: Geometry | torch.Tensor | None) -> Geometry:
    if isinstance(geometry, (DiagonalMetric, SignDescent, SpectralDescent)):
        return geometry
    return DiagonalMetric(geometry)


def gradient_field(objective: Objective, geometry: Geometry | torch.Tensor | None = None) -> VectorField:
    """f(t, θ) = −D(∇L(θ)) (``geometry``: one of :mod:`dynamics.geometry`, or a tensor P or None for the
    diagonal metric P, i.e. f = −P ∇L)."""
    metric = _geometry(geometry)

    def field(t: float, theta: torch.Tensor) -> torch.Tensor:
        _, grad = gradient(objective, theta)
        return metric.negative_direction(grad)

    return field


def batched_gradient_field(objective: Objective, geometry: Geometry | torch.Tensor | None = None
                           ) -> VectorField:
    """f(t, Θ) = −D(∇L(θ_b)) row by row for Θ (B, P): the objective's batched closed form where it has
    one, else ``torch.func.vmap`` of the autodiff gradient."""
    closed = getattr(objective, "value_and_grad", None)
    metric = _geometry(geometry)
    scale = metric.row_scale() if isinstance(metric, DiagonalMetric) else None
    vmapped = torch.func.vmap(torch.func.grad(objective))

    def field(t: float, thetas: torch.Tensor) -> torch.Tensor:
        result = closed(thetas) if closed is not None else None
        grads = result[1] if result is not None else vmapped(thetas)
        return -scale * grads if scale is not None else metric.negative_direction(grads)

    return field


def row_by_row(field: VectorField) -> VectorField:
    """The batched form of a one-flow field: f(t, Θ) = [field(t, θ_b)]_b for Θ (B, P), each row evaluated
    by the very function a single run uses (for fields without a batched closed form)."""

    def batched(t: float, thetas: torch.Tensor) -> torch.Tensor:
        return torch.stack([field(t, theta) for theta in thetas])

    return batched


def gradient_field_jacobian_vector(objective: Objective, geometry: Geometry | torch.Tensor | None = None
                                   ) -> JacobianVector | None:
    """(t, θ, v) -> J(θ)·v = −D'(∇L) H(θ) v (= −P H v in a diagonal metric): one Hessian-vector product
    (the objective's closed form, else double reverse mode). None where the geometry's map is not smooth."""
    metric = _geometry(geometry)
    if isinstance(metric, DiagonalMetric):
        def product(t: float, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
            return metric.negative_direction(hessian_vector_product(objective, theta, vector))

        return product
    if not metric.smooth:
        return None

    def curved(t: float, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        grad, hv = gradient_and_hvp(objective, theta, lambda g: vector)
        return -metric.derivative(grad, hv)

    return curved


def gradient_field_jacobian(objective: Objective, geometry: Geometry | torch.Tensor | None = None
                            ) -> Jacobian:
    """(t, θ) -> J(θ) = −P H(θ), dense (P × P), in a diagonal metric: for small parameter vectors only."""
    metric = _geometry(geometry)
    if not isinstance(metric, DiagonalMetric):
        raise ValueError(f"a dense Jacobian is offered for the euclidean geometry only, not {metric.name}")

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
    metric = _geometry(geometry)
    if not isinstance(metric, DiagonalMetric):
        raise ValueError(f"GD's modified flow is defined for the euclidean geometry only, not {metric.name}")
    scale = metric.row_scale()  # a float meets θ on any device

    def field(t: float, theta: torch.Tensor) -> torch.Tensor:
        grad, hvp = gradient_and_hvp(objective, theta, lambda g: scale * g)
        return -scale * grad - 0.5 * lr * scale * hvp

    return field
