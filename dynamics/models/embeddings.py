"""Fixed token embeddings: orthonormal rows (random, one-hot or Hadamard) and random unit vectors."""

from __future__ import annotations

import torch

from .registry import ORTHONORMAL_EMBEDDINGS  # noqa: F401  (the kinds' refusals read it without torch)


def orthonormal_rows(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``rows`` orthonormal vectors in R^dim (rows <= dim): the first rows of a random orthogonal matrix."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    return q[:rows]


def onehot_rows(rows: int, dim: int) -> torch.Tensor:
    """``rows`` one-hot vectors in R^dim (rows <= dim): the first rows of the identity."""
    if not 1 <= rows <= dim:
        raise ValueError(f"onehot_rows: rows={rows} must be in [1, dim={dim}]")
    return torch.eye(dim, dtype=torch.float64)[:rows]


def is_power_of_two(n: int) -> bool:
    """Whether n = 2^k for some k >= 0."""
    return n >= 1 and n & (n - 1) == 0


def sylvester_hadamard(dim: int) -> torch.Tensor:
    """The Sylvester–Hadamard matrix H_dim (entries ±1, H Hᵀ = dim·I): H_1 = [1], H_2n = [[H, H], [H, −H]].
    ``dim`` must be a power of 2."""
    if not is_power_of_two(dim):
        raise ValueError(f"sylvester_hadamard: dim={dim} must be a power of 2")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < dim:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_rows(rows: int, dim: int) -> torch.Tensor:
    """``rows`` orthonormal vectors in R^dim whose entries are all ±1/√dim: the first rows of the
    Sylvester–Hadamard matrix scaled by 1/√dim (``dim`` a power of 2, rows <= dim). Each such vector is
    spread evenly over every coordinate, the opposite of a one-hot vector."""
    if not 1 <= rows <= dim:
        raise ValueError(f"hadamard_rows: rows={rows} must be in [1, dim={dim}]")
    return sylvester_hadamard(dim)[:rows] / dim**0.5


def unit_rows(rows: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
              ) -> torch.Tensor:
    """``rows`` i.i.d. uniform unit vectors in R^dim: Gaussian rows divided by their norms."""
    x = torch.randn(rows, dim, generator=generator, dtype=dtype)
    return x / torch.linalg.norm(x, dim=1, keepdim=True)
