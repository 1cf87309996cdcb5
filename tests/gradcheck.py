"""Independent gradient checks shared by the model tests: central differences against autograd."""

from __future__ import annotations

import torch


def central_differences(f, theta: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """∇f(θ) by central differences, one coordinate at a time, without autograd."""
    grad = torch.zeros_like(theta)
    with torch.no_grad():
        for i in range(theta.numel()):
            e = torch.zeros_like(theta)
            e[i] = h
            grad[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return grad


def autograd_gradient(f, theta: torch.Tensor) -> torch.Tensor:
    """∇f(θ) by reverse-mode autodiff."""
    x = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x), x)
    return grad


def relative_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """‖x − y‖ / ‖y‖."""
    return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))
