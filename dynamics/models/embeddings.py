"""Fixed token embeddings: orthonormal rows and random unit vectors."""

from __future__ import annotations

import torch


def orthonormal_rows(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``rows`` orthonormal vectors in R^dim (rows <= dim): the first rows of a random orthogonal matrix."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    return q[:rows]


def unit_rows(rows: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
              ) -> torch.Tensor:
    """``rows`` i.i.d. uniform unit vectors in R^dim: Gaussian rows divided by their norms."""
    x = torch.randn(rows, dim, generator=generator, dtype=dtype)
    return x / torch.linalg.norm(x, dim=1, keepdim=True)
