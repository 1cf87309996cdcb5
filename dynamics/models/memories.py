"""Associative memories of docs/design.md §3.4, as functions of one flat parameter vector θ.

N inputs ``x`` with embeddings ``e_x`` (rows of E, (N, d)) and M output classes with unembeddings ``u_y``
(rows of U, (M, d)), both random unit vectors (or orthonormal rows when N, M ≤ d). The map to store is
``f(x) = ⌊x·M/N⌋`` (the identity when M = N). A memory gives every input the logits ``ℓ_x = U F(e_x)``:

    linear:  F(e) = W e,                    W ∈ R^{d×d},                  θ = W (row-major, d²)
    mlp:     F(e) = W_2 ReLU(W_1 e + b_1),  W_1 ∈ R^{m×d}, W_2 ∈ R^{d×m},  θ = [W_1, b_1, W_2]

and ``f`` is *stored* when ``argmax_y ℓ_x(y) = f(x)`` for every x (accuracy 1; the capacity search accepts
accuracy ≥ 0.99 as the paper does). The loss is the full-batch mean cross-entropy over the N inputs.
Models know nothing about optimisers (the fitter is :mod:`dynamics.training.fit`).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .embeddings import orthonormal_rows, unit_rows


def targets_of(n: int, num_classes: int) -> torch.Tensor:
    """f(i) = ⌊i·M/N⌋ for i = 0..N-1 (the identity when M = N); every class gets ⌊N/M⌋ or ⌈N/M⌉ inputs."""
    return (torch.arange(n) * num_classes) // n


class AssociativeMemory:
    """Common part: embeddings, targets, loss and accuracy; subclasses define F and θ."""

    def __init__(self, n: int, dim: int, num_classes: int | None, embeddings: str, seed: int,
                 dtype: torch.dtype, device: str | torch.device):
        if n < 1:
            raise ConfigError(f"n={n}: must be an integer >= 1")
        if dim < 1:
            raise ConfigError(f"d={dim}: must be an integer >= 1")
        self.n, self.dim = n, dim
        self.num_classes = n if num_classes is None else num_classes
        if not 1 <= self.num_classes <= n:
            raise ConfigError(f"num_classes={self.num_classes}: allowed 1..n={n}")
        gen = torch.Generator().manual_seed(seed)
        if embeddings == "orthonormal":
            if max(n, self.num_classes) > dim:
                raise ConfigError(f"n={n}: orthonormal embeddings need n <= d={dim}; allowed: "
                                  "embeddings=gaussian for more inputs than dimensions")
            E = orthonormal_rows(n, dim, gen)
            U = orthonormal_rows(self.num_classes, dim, gen)
        elif embeddings == "gaussian":
            E = unit_rows(n, dim, gen)
            U = unit_rows(self.num_classes, dim, gen)
        else:
            raise ConfigError(f"embeddings={embeddings!r}: allowed gaussian, orthonormal")
        self.device = torch.device(device)
        self.dtype = dtype
        self.E, self.U = E.to(self.device, dtype), U.to(self.device, dtype)
        self.targets = targets_of(n, self.num_classes).to(self.device)
        self.generator = gen  # continues the same stream for initial_parameters

    def features(self, theta: torch.Tensor) -> torch.Tensor:
        """F(e_x) for every input, (N, d)."""
        raise NotImplementedError

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(N, M) logits ℓ_x(y) = u_y · F(e_x)."""
        return self.features(theta) @ self.U.T

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """L(θ) = (1/N) Σ_x -log softmax(ℓ_x)[f(x)]."""
        return torch.nn.functional.cross_entropy(self.logits(theta), self.targets)

    def accuracy(self, theta: torch.Tensor) -> float:
        """Fraction of inputs x with argmax_y ℓ_x(y) = f(x)."""
        with torch.no_grad():
            return float((self.logits(theta).argmax(1) == self.targets).double().mean())


class LinearMemory(AssociativeMemory):
    """ℓ_x = U W e_x, i.e. logits = (E Wᵀ) Uᵀ with W ∈ R^{d×d}; d² parameters, initialised at zero."""

    def __init__(self, n: int, dim: int, num_classes: int | None = None, embeddings: str = "gaussian",
                 seed: int = 0, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        super().__init__(n, dim, num_classes, embeddings, seed, dtype, device)
        self.num_params = dim * dim

    def features(self, theta):
        return self.E @ theta.reshape(self.dim, self.dim).T

    def initial_parameters(self) -> torch.Tensor:
        """θ(0) = 0 (the loss is then log M and every direction of descent is open)."""
        return torch.zeros(self.num_params, dtype=self.dtype, device=self.device)


class MLPMemory(AssociativeMemory):
    """ℓ_x = U W_2 ReLU(W_1 e_x + b_1); 2·m·d + m parameters (the paper counts m·d up to the factor 2).

    Initialisation (seeded): W_1 ~ N(0, 1/d), b_1 = 0, W_2 ~ N(0, 1/m).
    """

    def __init__(self, n: int, dim: int, width: int, num_classes: int | None = None,
                 embeddings: str = "gaussian", seed: int = 0, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu"):
        if width < 1:
            raise ConfigError(f"m={width}: must be an integer >= 1")
        super().__init__(n, dim, num_classes, embeddings, seed, dtype, device)
        self.width = width
        self.num_params = 2 * width * dim + width

    def blocks(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_1 (m, d), b_1 (m,), W_2 (d, m))."""
        m, d = self.width, self.dim
        return (theta[:m * d].reshape(m, d), theta[m * d:m * d + m],
                theta[m * d + m:].reshape(d, m))

    def features(self, theta):
        w1, b1, w2 = self.blocks(theta)
        return torch.relu(self.E @ w1.T + b1) @ w2.T

    def initial_parameters(self) -> torch.Tensor:
        """W_1 ~ N(0, 1/d), b_1 = 0, W_2 ~ N(0, 1/m), from the memory's own seeded generator."""
        m, d = self.width, self.dim
        w1 = torch.randn(m * d, generator=self.generator, dtype=torch.float64) / d**0.5
        w2 = torch.randn(m * d, generator=self.generator, dtype=torch.float64) / m**0.5
        theta = torch.cat([w1, torch.zeros(m, dtype=torch.float64), w2])
        return theta.to(self.device, self.dtype)
