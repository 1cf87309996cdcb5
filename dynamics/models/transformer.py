"""The paper's one-layer transformer (docs/design.md §3.3) on the factual-recall task, a function of flat θ.

Frozen embeddings ``e_z ~ N(0, I/d)`` (V tokens) and unembeddings ``u_y ~ N(0, I/d)`` (|A| answers).
H softmax heads of size d_h, queried from the last position (EOS), no residual around attention; a ReLU
MLP of width m with a residual; no LayerNorm, no positional embeddings:

    a^h_z  = (W_Q^h e_EOS) · (W_K^h e_z) / √d_h                        score of token z in head h
    o^h    = Σ_t softmax_t(a^h_{z_t}) W_V^h e_{z_t}                     sum over the T positions
    x      = W_O [o^1; …; o^H],   y = x + W_2 ReLU(W_1 x),   logits = U y

θ = [W_Q, W_K, W_V (each H·d_h×d), W_O (d×H·d_h), W_1 (m×d), W_2 (d×m)]: 4·H·d_h·d + 2·m·d parameters.

**Count representation.** The query is always EOS and there are no positions, so a^h depends on the token
only. Grouping the T positions by token, with c_z the number of positions holding z,

    Σ_t exp(a_{z_t}) v_{z_t} / Σ_t exp(a_{z_t}) = Σ_z c_z exp(a_z) v_z / Σ_z c_z exp(a_z)
                                                = Σ_z softmax_z(a_z + log c_z) v_z,

so a sequence is fully described by its counts (B, V), as ``FactTask.sample`` returns (log 0 = -∞ drops
absent tokens). **Population record.** ``population_logits`` evaluates each fact at its *expected* counts
(1 for s, r and EOS, (T-3)/N for each noise token): deterministic, differentiable and cheap, like the
reduced softmax model's record. It is not the expected loss over noise draws (softmax and the MLP are
non-linear), hence ``population_exact = False``: training uses online batches or ``loss.kind=sampled``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..geometry import ParameterBlock
from ..task import FactTask
from .base import Model

if TYPE_CHECKING:
    from ..config import InitConfig


def expected_counts(task: FactTask) -> torch.Tensor:
    """(S·R, V) expected token counts of every fact (s, r), facts in row-major (s, r) order."""
    S, R = task.S, task.R
    counts = torch.zeros(S, R, task.vocab_size, dtype=torch.float64)
    counts[torch.arange(S), :, torch.arange(S)] = 1.0
    counts[:, torch.arange(R), S + torch.arange(R)] = 1.0
    if task.N:
        counts[:, :, S + R:S + R + task.N] = (task.T - 3) / task.N
    counts[:, :, task.eos] = 1.0
    return counts.reshape(S * R, task.vocab_size)


class TransformerModel(Model):
    """The one-layer transformer (module docstring). ``dtype`` float64 for flows, float32 for capacity."""

    def __init__(self, task: FactTask, dim: int = 64, heads: int = 8, head_dim: int = 8, mlp_width: int = 64,
                 seed: int = 0, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        self.task, self.dim, self.heads, self.head_dim, self.mlp_width = task, dim, heads, head_dim, mlp_width
        self.attention = "softmax"
        self.device, self.dtype = torch.device(device), dtype
        gen = torch.Generator().manual_seed(seed)
        E = torch.randn(task.vocab_size, dim, generator=gen, dtype=torch.float64) / dim**0.5
        U = torch.randn(task.num_answers, dim, generator=gen, dtype=torch.float64) / dim**0.5
        self.E, self.U = E.to(self.device, dtype), U.to(self.device, dtype)
        hd = heads * head_dim
        self.shapes = {"W_Q": (heads, head_dim, dim), "W_K": (heads, head_dim, dim),
                       "W_V": (heads, head_dim, dim), "W_O": (dim, hd), "W_1": (mlp_width, dim),
                       "W_2": (dim, mlp_width)}
        self.num_params = 4 * hd * dim + 2 * mlp_width * dim
        self.preconditioner = torch.ones(self.num_params, dtype=dtype, device=self.device)
        self.population_exact = False
        self._log_expected = torch.log(expected_counts(task)).to(self.device, dtype)

    def blocks(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named weight matrices (views into θ), shaped as in :attr:`shapes`."""
        out, start = {}, 0
        for name, shape in self.shapes.items():
            size = 1
            for s in shape:
                size *= s
            out[name] = theta[start:start + size].reshape(shape)
            start += size
        return out

    def parameter_blocks(self):
        """W_Q, W_K, W_V (each H·d_h × d, the heads stacked), W_O (d × H·d_h), W_1 (m × d), W_2 (d × m)."""
        out, start = [], 0
        for name, shape in self.shapes.items():
            rows = shape[0] * shape[1] if len(shape) == 3 else shape[0]
            matrix = ParameterBlock(name, start, (rows, shape[-1]))
            out.append(matrix)
            start += matrix.size
        return [b for b in out if b.size]

    def head_scores_values(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores a^h_z (H, V) and values W_V^h e_z (H, V, d_h) of every token in every head."""
        w = self.blocks(theta)
        query = w["W_Q"] @ self.E[-1]  # (H, d_h)
        keys = torch.einsum("hjd,vd->hvj", w["W_K"], self.E)
        scores = torch.einsum("hj,hvj->hv", query, keys) / self.head_dim**0.5
        values = torch.einsum("hjd,vd->hvj", w["W_V"], self.E)
        return scores, values

    def _logits_from_log_counts(self, theta: torch.Tensor, log_counts: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, |A|), attention weights (B, H, V)) from log counts (B, V)."""
        w = self.blocks(theta)
        scores, values = self.head_scores_values(theta)
        weights = torch.softmax(scores[None] + log_counts[:, None, :], dim=-1)  # (B, H, V)
        heads = torch.einsum("bhv,hvj->bhj", weights, values)
        x = heads.reshape(heads.shape[0], -1) @ w["W_O"].T
        y = x + torch.relu(x @ w["W_1"].T) @ w["W_2"].T if self.mlp_width else x
        return y @ self.U.T, weights

    def sequence_logits(self, theta, counts):
        """(B, |A|) logits of sequences given as token counts (B, V) (module docstring: count form)."""
        return self._logits_from_log_counts(theta, torch.log(counts.to(self.dtype)))[0]

    def population_logits(self, theta):
        """(S, R, |A|) logits of every fact at its expected counts."""
        logits, _ = self._logits_from_log_counts(theta, self._log_expected)
        return logits.reshape(self.task.S, self.task.R, -1)

    def attention_weights(self, theta):
        """(S, R, 4) head-averaged softmax weight on subject, relation, noise block, EOS (expected counts)."""
        _, weights = self._logits_from_log_counts(theta, self._log_expected)
        S, R = self.task.S, self.task.R
        w = weights.mean(1).reshape(S, R, -1)
        subject = torch.diagonal(w[:, :, :S], dim1=0, dim2=2).T  # w[s, r, s]
        relation = torch.diagonal(w[:, :, S:S + R], dim1=1, dim2=2)  # w[s, r, S + r]
        return torch.stack([subject, relation, w[:, :, S + R:-1].sum(-1), w[:, :, -1]], dim=-1)

    def token_parameters(self, theta):
        raise NotImplementedError("the transformer has no single score/value per token; use blocks()")

    def standard_parameters(self, generator: torch.Generator) -> torch.Tensor:
        """Fan-in initialisation: each block ~ N(0, 1/fan_in) (W_Q, W_K, W_V, W_1: 1/d; W_O: 1/(H·d_h);
        W_2: 1/m), the usual start for Adam training."""
        parts = []
        for shape in self.shapes.values():
            size = shape[0] * (shape[1] * shape[2] if len(shape) == 3 else shape[1])
            parts.append(torch.randn(size, generator=generator, dtype=torch.float64) / shape[-1]**0.5)
        return torch.cat(parts).to(self.device, self.dtype)

    def initial_parameters(self, init: InitConfig):
        """θ(0): every entry ``init.scale`` (constant) or N(0, init.scale²) i.i.d. (gaussian, seeded)."""
        if init.kind == "constant":
            return torch.full((self.num_params,), init.scale, dtype=self.dtype, device=self.device)
        gen = torch.Generator().manual_seed(init.seed)
        theta = init.scale * torch.randn(self.num_params, generator=gen, dtype=torch.float64)
        return theta.to(self.device, self.dtype)

    def parameter_norms(self, theta):
        return {name: torch.linalg.norm(block) for name, block in self.blocks(theta).items()}
