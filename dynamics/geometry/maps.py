"""Geometries of steepest descent: how a gradient becomes the direction the flow moves in.

The steepest-descent flow of a loss L under a norm ‖·‖ is dθ/dt = −D(∇L(θ)), with D(g) the maximiser of
⟨g, δ⟩ − ½‖δ‖² (up to scale). Three norms, each with a diagonal metric P that makes a tied parameter
stand for several identical ones (P = 1/N on the reduced model's noise token; P = 1 elsewhere). Every map
acts on the *per-token* gradient P g, so the tied model follows exactly the untied model's flow:

* :class:`DiagonalMetric` (Euclidean): D(g) = P g — gradient flow.
* :class:`SignDescent` (ℓ∞ norm): D(g) = sign(P g) — the flow of signSGD, and of Adam with small β-lag.
  Regularised, D(g) = x / √(x² + ε²) with x = P g: smooth for ε > 0, the sign at ε = 0 (where sign(0) = 0).
* :class:`SpectralDescent` (spectral norm of each matrix block): D(G) = msign(G) = U Vᵀ for G = U Σ Vᵀ — the
  flow of Muon. Regularised, D(G) = P_r G (G̃ᵀG̃ + ε² I)^(−1/2) with G̃ = P_r^(1/2) G (P_r: the block's row
  metric), U Vᵀ at ε = 0 (singular values 0 map to 0). A vector block takes its normalised gradient,
  D(g) = P g / √(‖P^(1/2) g‖² + ε²).

The sign and spectral fields are only piecewise smooth at ε = 0; :meth:`derivative` (D'(g)·δg, for the
field's Jacobian −D'(g) H) is given where D is smooth. Each map is registered, with what it can do, in
:mod:`dynamics.geometry.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParameterBlock:
    """A named part of θ: ``shape`` (rows,) for a vector or (rows, cols) for a matrix, stored row-major
    from ``start``."""

    name: str
    start: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        size = 1
        for s in self.shape:
            size *= s
        return size

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) == 2 and min(self.shape) > 1


class DiagonalMetric:
    """Euclidean steepest descent in the metric P (a tensor of θ's shape, or None for P = 1):
    D(g) = P g, D'(g)·δg = P δg."""

    name = "euclidean"
    smooth = True

    def __init__(self, scale: torch.Tensor | None = None):
        self.scale = scale
        # −P once, not at every evaluation: −P g in one pass over the state (negation is exact: the same
        # numbers as −(P g))
        self._negative = None if scale is None else -scale

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """D(g) = P g."""
        return grad if self.scale is None else self.scale * grad

    def negative_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """−D(g) = −P g, the field's value."""
        return -grad if self.scale is None else self._negative * grad

    def derivative(self, grad: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """D'(g)·δg = P δg."""
        return self.direction(change)

    def row_scale(self) -> torch.Tensor | float:
        """P as a multiplier (1.0 when P = 1); broadcasts over a batch of rows."""
        return 1.0 if self.scale is None else self.scale


class SignDescent:
    """ℓ∞ steepest descent: D(g) = x / √(x² + ε²), x = P g (the sign of x at ε = 0)."""

    name = "sign"

    def __init__(self, scale: torch.Tensor | None = None, eps: float = 0.0):
        self.scale, self.eps = scale, eps
        self.smooth = eps > 0

    def _x(self, grad: torch.Tensor) -> torch.Tensor:
        return grad if self.scale is None else self.scale * grad

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """D(g) = x / √(x² + ε²) (sign(x) at ε = 0)."""
        x = self._x(grad)
        return torch.sign(x) if self.eps == 0 else x / torch.sqrt(x * x + self.eps**2)

    def negative_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return -self.direction(grad)

    def derivative(self, grad: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """D'(g)·δg = ε² / (x² + ε²)^(3/2) · P δg (ε > 0 only)."""
        x = self._x(grad)
        return self.eps**2 / (x * x + self.eps**2) ** 1.5 * self._x(change)


class SpectralDescent:
    """Steepest descent under the spectral norm of each matrix block (Muon's flow); vector blocks take their
    normalised gradient; see the module docstring for the regularisation ε and the row metric."""

    name = "spectral"

    def __init__(self, blocks: list[ParameterBlock], scale: torch.Tensor | None = None, eps: float = 0.0):
        self.blocks, self.scale, self.eps = blocks, scale, eps
        self.smooth = False  # the polar factor's derivative is not offered: solvers difference the field

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """D(g) block by block (θ of shape (P,) or a batch (B, P))."""
        out = torch.empty_like(grad)
        for block in self.blocks:
            part = grad[..., block.start:block.start + block.size]
            p = (torch.ones_like(part) if self.scale is None
                 else self.scale[block.start:block.start + block.size].expand_as(part))
            if block.is_matrix:
                rows, cols = block.shape
                step = self._matrix(part.reshape(*part.shape[:-1], rows, cols), p.reshape(*p.shape[:-1], rows,
                                                                                         cols))
                out[..., block.start:block.start + block.size] = step.reshape(part.shape)
            else:
                norm = torch.sqrt((p * part * part).sum(-1, keepdim=True) + self.eps**2)
                out[..., block.start:block.start + block.size] = torch.where(
                    norm > 0, p * part / torch.where(norm > 0, norm, 1.0), 0.0)
        return out

    def negative_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return -self.direction(grad)

    def _matrix(self, G: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """P_r G (G̃ᵀG̃ + ε²)^(−1/2), G̃ = P_r^(1/2) G, through the SVD G̃ = U S Vᵀ:
        = P_r^(1/2) U diag(s / √(s² + ε²)) Vᵀ (a singular value 0 maps to 0). A matrix with a non-finite
        entry maps to NaN (the solvers' ``nonfinite`` status), where the SVD would raise."""
        root = torch.sqrt(p)
        finite = torch.isfinite(G).all(-1).all(-1)[..., None, None]
        U, s, Vh = torch.linalg.svd(torch.where(finite, root * G, 0.0), full_matrices=False)
        denominator = torch.sqrt(s * s + self.eps**2)
        top = s.max(-1, keepdim=True).values if s.numel() else s
        # a singular value at rounding level of the largest is an exact zero of G̃ in exact arithmetic
        keep = s > torch.finfo(s.dtype).eps * max(G.shape[-2:]) * top
        factor = torch.where(keep, s / torch.where(keep, denominator, 1.0), 0.0)
        return torch.where(finite, root * ((U * factor[..., None, :]) @ Vh), torch.nan)

