"""How stiff a flow is at a point: the spectral radius of the field's Jacobian, from J·v products only."""

from __future__ import annotations

import math

import torch

from ..numerics import compute_settings
from .options import JacobianVector, VectorField
from .results import Cost


def spectral_radius(field: VectorField, t: float, theta: torch.Tensor,
                    jacobian_vector: JacobianVector | None = None, iterations: int = 10,
                    seed: int = 0) -> tuple[float, Cost]:
    """ρ(J(t, θ)), the largest |eigenvalue| of the field's Jacobian, by power iteration: q ← J q / ‖J q‖
    from a seeded random q; ρ ≈ ‖J q‖ (from below). J·v is ``jacobian_vector`` when given, else the
    difference (f(t, θ + εv) − f(t, θ)) / ε. Returns ρ and what the products cost."""
    # the flow's own settings (one thread for a small θ): figure5's probe cost 0.3 s of CPU on two
    # threads, 0.02 s on one
    with compute_settings(theta):
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(theta.numel(), generator=gen, dtype=theta.dtype).to(theta.device)
        q = q / q.norm()
        cost = Cost()
        if jacobian_vector is None:
            base = field(t, theta)
            cost.function_evals += 1
            eps = math.sqrt(torch.finfo(theta.dtype).eps) * max(float(theta.norm()), 1.0)

            def product(v: torch.Tensor) -> torch.Tensor:
                cost.function_evals += 1
                return (field(t, theta + eps * v) - base) / eps
        else:
            def product(v: torch.Tensor) -> torch.Tensor:
                cost.hvp_evals += 1
                return jacobian_vector(t, theta, v)
        radius = 0.0
        for _ in range(iterations):
            image = product(q)
            radius = float(image.norm())
            if not math.isfinite(radius) or radius == 0.0:
                break
            q = image / radius
        return radius, cost
