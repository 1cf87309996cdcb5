"""Curvature of an objective from Hessian-vector products only: the sharpness λ_max by Lanczos.

Discrete GD with the flow's metric P steps θ ← θ − η P ∇L; near a point its error propagates by
(I − η P H), so it is stable while η · λ_max(P H) < 2. The eigenvalues of P H are those of the symmetric
operator v ↦ P^{1/2} H P^{1/2} v, whose largest eigenvalue Lanczos finds from a few dozen products.
"""

from __future__ import annotations

import torch

from .objective import Objective, hessian_vector_product


def sharpness(objective: Objective, theta: torch.Tensor, preconditioner: torch.Tensor | None = None,
              iterations: int = 60, seed: int = 0, tol: float = 1e-10) -> float:
    """λ_max of P^{1/2} H(θ) P^{1/2} (P = identity when None) by Lanczos with full reorthogonalisation.

    Stops early when the Ritz residual β_k |y_k| of the top Ritz pair falls below tol·|λ|.
    """
    n = theta.numel()
    root = torch.ones_like(theta) if preconditioner is None else preconditioner.sqrt()

    def apply(v: torch.Tensor) -> torch.Tensor:
        return root * hessian_vector_product(objective, theta, root * v)

    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, generator=gen, dtype=theta.dtype).to(theta.device)
    q = q / q.norm()
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    top = 0.0
    for k in range(min(iterations, n)):
        w = apply(basis[-1])
        alpha = float(w @ basis[-1])
        alphas.append(alpha)
        Q = torch.stack(basis, dim=1)
        w = w - Q @ (Q.T @ w)  # full reorthogonalisation (twice is enough)
        w = w - Q @ (Q.T @ w)
        beta = float(w.norm())
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        values, vectors = torch.linalg.eigh(T)
        top = float(values[-1])
        residual = beta * abs(float(vectors[-1, -1]))
        if residual <= tol * max(abs(top), 1e-300) or beta < 1e-14 or k == n - 1:
            break
        betas.append(beta)
        basis.append(w / beta)
    return top
