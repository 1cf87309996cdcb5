"""The embedded model (docs/design.md §3.2): the same attention layer in explicit matrices W_KQ, W_OV."""

from __future__ import annotations

import torch

from ..geometry import ParameterBlock
from ..task import FactTask
from .base import Model
from .embeddings import ORTHONORMAL_EMBEDDINGS, hadamard_rows, onehot_rows, orthonormal_rows
from .reduced import ReducedModel


class EmbeddedModel(Model):
    """docs/design.md §3.2: fixed embeddings E (V, d), unembeddings U (|A|, d), trainable W_KQ, W_OV (d, d).

    ``embeddings``: ``orthonormal`` (rows of a random orthogonal matrix, seeded), ``onehot`` (rows of the
    identity), ``hadamard`` (rows of the Sylvester–Hadamard matrix / √d, d a power of 2) — three orthonormal
    bases that the gradient and spectral flows cannot tell apart and the sign flow can — or ``gaussian``
    (N(0, I/d) rows, not orthonormal).

    ``logits = U W_OV Σ_t (e_EOS^T W_KQ e_t) e_t``, i.e. ``a_z = e_EOS^T W_KQ e_z``, ``v_z = U W_OV e_z``.
    θ = [W_KQ (d·d), W_OV (d·d)], row-major. Initialised as the image of the reduced initialisation,
    ``W_KQ = e_EOS (E^T a)^T`` and ``W_OV = U^T v^T E``, which is exact for orthonormal embeddings.
    """

    def __init__(self, task: FactTask, attention: str = "linear", dim: int = 64,
                 embeddings: str = "orthonormal", seed: int = 0, tied_init: bool = True,
                 device: str | torch.device = "cpu"):
        self.task, self.attention, self.dim = task, attention, dim
        self.device = torch.device(device)
        self.tied_init = tied_init
        gen = torch.Generator().manual_seed(seed)
        if embeddings == "orthonormal":
            E = orthonormal_rows(task.vocab_size, dim, gen)
            U = orthonormal_rows(task.num_answers, dim, gen)
        elif embeddings == "onehot":
            E, U = onehot_rows(task.vocab_size, dim), onehot_rows(task.num_answers, dim)
        elif embeddings == "hadamard":
            E, U = hadamard_rows(task.vocab_size, dim), hadamard_rows(task.num_answers, dim)
        else:
            E = torch.randn(task.vocab_size, dim, generator=gen, dtype=torch.float64) / dim**0.5
            U = torch.randn(task.num_answers, dim, generator=gen, dtype=torch.float64) / dim**0.5
        self.E, self.U = E.to(self.device), U.to(self.device)
        self.num_params = 2 * dim * dim
        self.preconditioner = torch.ones(self.num_params, dtype=torch.float64, device=self.device)
        self.population_exact = embeddings in ORTHONORMAL_EMBEDDINGS and tied_init

    def matrices(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_KQ, W_OV), each (d, d)."""
        d2 = self.dim * self.dim
        return theta[:d2].reshape(self.dim, self.dim), theta[d2:].reshape(self.dim, self.dim)

    def token_parameters(self, theta):
        w_kq, w_ov = self.matrices(theta)
        a = self.E @ (w_kq.T @ self.E[-1])
        v = self.E @ w_ov.T @ self.U.T
        return a, v

    def initial_parameters(self, init):
        reduced = ReducedModel(self.task, self.attention, tied=self.tied_init, device=self.device)
        full, expand = reduced.untied()
        a, v = full.token_parameters(expand(reduced.initial_parameters(init)))
        w_kq = torch.outer(self.E[-1], self.E.T @ a)
        w_ov = self.U.T @ v.T @ self.E
        return torch.cat([w_kq.reshape(-1), w_ov.reshape(-1)])

    def parameter_blocks(self):
        """W_KQ and W_OV, each a d × d matrix."""
        d = self.dim
        return [ParameterBlock("W_KQ", 0, (d, d)), ParameterBlock("W_OV", d * d, (d, d))]

    def parameter_norms(self, theta):
        w_kq, w_ov = self.matrices(theta)
        return {"W_KQ": torch.linalg.norm(w_kq), "W_OV": torch.linalg.norm(w_ov)}
