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

from .geometry import DiagonalMetric, Geometry, SteepestDescent, entry_of
from .objective import Objective, closed_gradient, gradient_and_hvp, gradient_only, hessian_vector_product
from .solvers.options import Jacobian, JacobianVector, VectorField


def _geometry(geometry: SteepestDescent | torch.Tensor | None) -> tuple[SteepestDescent, Geometry]:
    """The map and its registry entry (what it can do): a tensor P or None is the diagonal metric P; a map
    of a geometry that is not registered is refused (:func:`~dynamics.geometry.entry_of`)."""
    metric = DiagonalMetric(geometry) if geometry is None or isinstance(geometry, torch.Tensor) else geometry
    return metric, entry_of(metric)


def gradient_field(objective: Objective, geometry: SteepestDescent | torch.Tensor | None = None
                   ) -> VectorField:
    """f(t, θ) = −D(∇L(θ)) (``geometry``: one of :mod:`dynamics.geometry`, or a tensor P or None for the
    diagonal metric P, i.e. f = −P ∇L). The field carries what it is made of, for a method that reads
    ∇L and H·x rather than f (``flow.method=sliding``): ``field.gradient(θ)``, ``field.hessian_vector(θ, x)``
    and ``field.direction_map`` (D)."""
    metric, _ = _geometry(geometry)

    def field(t: float, theta: torch.Tensor) -> torch.Tensor:
        return metric.negative_direction(gradient_only(objective, theta))

    field.gradient = lambda theta: gradient_only(objective, theta)
    field.hessian_vector = lambda theta, x: hessian_vector_product(objective, theta, x)
    field.direction_map = metric
    return field


def batched_gradient_field(objective: Objective, geometry: SteepestDescent | torch.Tensor | None = None
                           ) -> VectorField:
    """f(t, Θ) = −D(∇L(θ_b)) row by row for Θ (B, P): the gradients by the objective's batched closed form
    where it has one, else ``torch.func.vmap`` of the autodiff gradient; D on the whole batch where the
    geometry's entry is ``batched``, else row by row."""
    metric, entry = _geometry(geometry)
    vmapped = torch.func.vmap(torch.func.grad(objective))

    def field(t: float, thetas: torch.Tensor) -> torch.Tensor:
        grads = closed_gradient(objective, thetas)
        if grads is None:
            grads = vmapped(thetas)
        if entry.batched:
            return metric.negative_direction(grads)
        return torch.stack([metric.negative_direction(grad) for grad in grads])

    return field


def row_by_row(field: VectorField) -> VectorField:
    """The batched form of a one-flow field: f(t, Θ) = [field(t, θ_b)]_b for Θ (B, P), each row evaluated
    by the very function a single run uses (for fields without a batched closed form)."""

    def batched(t: float, thetas: torch.Tensor) -> torch.Tensor:
        return torch.stack([field(t, theta) for theta in thetas])

    return batched


def gradient_field_jacobian_vector(objective: Objective,
                                   geometry: SteepestDescent | torch.Tensor | None = None
                                   ) -> JacobianVector | None:
    """(t, θ, v) -> J(θ)·v = −D'(∇L) H(θ) v (= −P H v in a diagonal metric): one Hessian-vector product
    (the objective's closed form, else double reverse mode). None where the geometry's map is not smooth."""
    metric, entry = _geometry(geometry)
    if entry.linear:
        def product(t: float, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
            return metric.negative_direction(hessian_vector_product(objective, theta, vector))

        return product
    if not metric.smooth:
        return None

    def curved(t: float, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        grad, hv = gradient_and_hvp(objective, theta, lambda g: vector)
        return -metric.derivative(grad, hv)

    return curved


def gradient_field_jacobian(objective: Objective, geometry: SteepestDescent | torch.Tensor | None = None
                            ) -> Jacobian:
    """(t, θ) -> J(θ) = −P H(θ), dense (P × P), in a diagonal metric (a ``linear`` geometry): for small
    parameter vectors only."""
    metric, entry = _geometry(geometry)
    if not entry.linear:
        raise ValueError(f"a dense Jacobian is offered for a linear geometry (D(g) = P g) only, not "
                         f"{metric.name}")

    def jacobian(t: float, theta: torch.Tensor) -> torch.Tensor:
        hessian = torch.func.hessian(objective)(theta)
        return -hessian if metric.scale is None else -metric.scale[:, None] * hessian

    return jacobian


def modified_gradient_field(objective: Objective, geometry: SteepestDescent | torch.Tensor | None, lr: float
                            ) -> VectorField:
    """The modified flow of GD with learning rate η (backward-error analysis, second order in η):

        f(t, θ) = −P ∇L − (η/2) · P H P ∇L

    i.e. the gradient flow of L + (η/4)‖∇L‖² in the metric P; one Hessian-vector product per evaluation.
    """
    metric, entry = _geometry(geometry)
    if not entry.linear:
        raise ValueError(f"GD's modified flow is defined for a linear geometry (D(g) = P g) only, not "
                         f"{metric.name}")
    scale = metric.row_scale()  # a float meets θ on any device

    def field(t: float, theta: torch.Tensor) -> torch.Tensor:
        grad, hvp = gradient_and_hvp(objective, theta, lambda g: scale * g)
        return -scale * grad - 0.5 * lr * scale * hvp

    return field
