"""The reduced model (docs/design.md §3.1): one attention score and one value vector per token."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..geometry import ParameterBlock
from ..manifold import manifold_start
from ..task import FactTask, vocab_size
from . import factorised
from .base import Model
from .tokens import noise_block, population_logits_from_tokens

if TYPE_CHECKING:
    from ..config import TaskConfig


def token_count(config: TaskConfig, tied: bool = True) -> int:
    """The tokens with a (key, value) pair of their own in the reduced model: the whole vocabulary, its noise
    tokens sharing one pair when ``tied`` (the population loss, in which they are exchangeable)."""
    return _tokens(vocab_size(config), config.noise_tokens, tied)


def _tokens(vocab: int, noise_tokens: int, tied: bool) -> int:
    return vocab - (noise_tokens - min(noise_tokens, 1) if tied else 0)


class _TokenSums:
    """Σ_f c_z(f) X_f for every token z of a per-fact quantity X (..., S, R, k), added one block of subjects
    at a time, in the token order of :func:`population_logits_from_tokens` (subject s: its row; relation r:
    its column; each noise token: per_noise × all facts; EOS: all facts)."""

    def __init__(self, n_noise: int, per_noise: float):
        self.n_noise, self.per_noise = n_noise, per_noise
        self.rows: list[torch.Tensor] = []
        self.columns: torch.Tensor | float = 0.0

    def add(self, block: torch.Tensor) -> None:
        """Add the facts of the next block of subjects, X of shape (..., rows, R, k)."""
        self.rows.append(block.sum(-2))
        self.columns = self.columns + block.sum(-3)

    def result(self) -> torch.Tensor:
        """(..., n, k): one row per token."""
        columns = self.columns
        total = columns.sum(-2)
        lead, k = total.shape[:-1], total.shape[-1]
        noise = (self.per_noise * total)[..., None, :].expand(*lead, self.n_noise, k)
        return torch.cat([*self.rows, columns, noise, total[..., None, :]], dim=-2)


# Facts are processed in blocks of subjects of about this many (lead × rows × R × |A|) elements: a block's
# tensors stay in cache, so the several passes of the gradient (logits, log-softmax, residuals, sums) cost
# one trip through memory instead of ~10 over the whole S·R·|A| table (docs/performance.md has the timings).
BLOCK_ELEMENTS = 2**18


class ReducedModel(Model):
    """docs/design.md §3.1: one score ``a_z`` and one value ``v_z`` per token; θ = [a (n), v (n·|A|)].

    With ``tied=True`` one pair stands for all N noise tokens (n = S + R + 2) and its flow is scaled by
    1/N; with ``tied=False`` every vocabulary token has its own pair (n = V).
    """

    def __init__(self, task: FactTask, attention: str = "linear", tied: bool = True,
                 device: str | torch.device = "cpu"):
        self.task, self.attention, self.tied = task, attention, tied
        self.device = torch.device(device)
        self.num_tokens = _tokens(task.vocab_size, task.N, tied)  # of the built task
        self.num_params = self.num_tokens * (1 + task.num_answers)
        scale = torch.ones(self.num_tokens, dtype=torch.float64, device=self.device)
        if tied and task.N > 0:
            scale[task.S + task.R] = 1.0 / task.N
        self.preconditioner = torch.cat([scale, scale.repeat_interleave(task.num_answers)])
        self.population_exact = tied
        # (fact weights, answer ids) per device: a model may be evaluated on states held on another device
        self._targets: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def has_closed_hvp(self) -> bool:  # the logits are bilinear in (a, v) only with linear attention
        return self.attention == "linear"

    def token_parameters(self, theta):
        n = self.num_tokens
        return theta[..., :n], theta[..., n:].reshape(*theta.shape[:-1], n, self.task.num_answers)

    def population_loss_and_gradient(self, theta):
        """(L(θ), ∇L(θ)) in closed form; θ may be batched (B, P). Linear attention: by matrix products over
        the additive logits, never forming the S×R×|A| table (:mod:`.factorised`); softmax attention: the
        blocked table (:meth:`blocked_loss_and_gradient`)."""
        if self.attention == "linear" and not (torch.is_grad_enabled() and theta.requires_grad):
            return factorised.loss_and_gradient(self, theta)
        # the factorised products are not differentiated through: under autodiff, the blocked form is
        return self.blocked_loss_and_gradient(theta)

    def population_gradient(self, theta):
        """∇L(θ) alone: as :meth:`population_loss_and_gradient`, without forming L where linear attention
        allows (:func:`.factorised.gradient`, the same numbers)."""
        if self.attention == "linear" and not (torch.is_grad_enabled() and theta.requires_grad):
            return factorised.gradient(self, theta)
        return self.blocked_loss_and_gradient(theta)[1]

    @property
    def has_fact_record(self) -> bool:  # the factorised record needs additive (linear-attention) logits
        return self.attention == "linear"

    @property
    def has_curvature_blocks(self) -> bool:  # the blocks are those of additive (linear-attention) logits
        return self.attention == "linear"

    def curvature_blocks(self, theta: torch.Tensor) -> factorised.CurvatureBlocks:
        """The closed-form curvature blocks at θ (P,) for cvode's preconditioner (linear attention only)."""
        return factorised.curvature_blocks(self, theta)

    def fact_record(self, thetas: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-fact record of states (K, P) without the S×R×|A| table (linear attention only)."""
        return factorised.fact_record(self, thetas)

    def blocked_loss_and_gradient(self, theta):
        """Closed-form gradient over the table of logits, a block of subjects at a time (the reference for the
        factorised path, and the path of softmax attention); θ may be batched (B, P).

        With G_f = w_f (p_f - e_{a*(f)}) per fact f = (s, r) and the logits ℓ_f of docs/design.md §3.1:
        linear:  ∂L/∂v_z = Σ_f c_z(f) a_z G_f,        ∂L/∂a_z = Σ_f c_z(f) v_z·G_f;
        softmax: ∂L/∂v_z = Σ_f c_z(f) ω_z(f) G_f,     ∂L/∂a_z = Σ_f c_z(f) ω_z(f) (v_z·G_f - ℓ_f·G_f),
        with ω_z(f) = exp(a_z) / Σ_y c_y(f) exp(a_y) and c_z(f) the expected count of z in fact f.
        """
        task = self.task
        S, R = task.S, task.R
        lead = theta.shape[:-1]
        a, v = self.token_parameters(theta)
        weights, targets = self.population_targets(theta.device)
        n_noise, per_noise = noise_block(task, a.shape[-1])
        softmax = self.attention == "softmax"
        if softmax:
            scale = torch.exp(a - a.max(-1, keepdim=True).values)
            e_s, e_r, e_n, e_e = scale[..., :S], scale[..., S:S + R], scale[..., S + R:-1], scale[..., -1]
            shared = per_noise * e_n.sum(-1) + e_e
        else:
            scale = a
        loss = torch.zeros(lead, dtype=theta.dtype, device=theta.device)
        g, h = _TokenSums(n_noise, per_noise), _TokenSums(n_noise, per_noise)
        for rows in self._subject_blocks(theta):
            logits = population_logits_from_tokens(a, v, task, self.attention, rows)
            logp = torch.log_softmax(logits, dim=-1)
            index = targets[rows].expand(*lead, -1, -1)[..., None]
            loss = loss - (weights[rows] * logp.gather(-1, index)[..., 0]).sum((-2, -1))
            G = self._residuals(logp.exp(), rows)
            if softmax:
                denom = (e_s[..., rows, None] + e_r[..., None, :]
                         + shared[..., None, None])  # Z_f (up to the common shift)
                G = G / denom[..., None]
                h.add((G * logits).sum(-1, keepdim=True))  # ℓ_f·G_f / Z_f
            g.add(G)
        g_tok = g.result()
        grad_v = scale[..., None] * g_tok
        grad_a = (v * g_tok).sum(-1)
        if softmax:
            grad_a = scale * (grad_a - h.result()[..., 0])
        return loss, torch.cat([grad_a, grad_v.reshape(*lead, -1)], dim=-1)

    def population_hessian_vector_product(self, theta: torch.Tensor, vector: torch.Tensor
                                          ) -> torch.Tensor | None:
        """H(θ)·u in closed form for linear attention by matrix products (:mod:`.factorised`); None for
        softmax (autodiff)."""
        if not self.has_closed_hvp:
            return None
        if torch.is_grad_enabled() and (theta.requires_grad or vector.requires_grad):
            return self.blocked_hessian_vector_product(theta, vector)
        return factorised.hessian_vector_product(self, theta, vector)

    def blocked_hessian_vector_product(self, theta: torch.Tensor, vector: torch.Tensor
                                       ) -> torch.Tensor | None:
        """H(θ)·u in closed form for linear attention (None for softmax), θ and u of shape (P,).

        The logits ℓ_f = Σ_z c_z(f) a_z v_z are bilinear, so along u = (δa, δv)
        δℓ_f = ℓ_f(δa, v) + ℓ_f(a, δv) and δG_f = w_f (p_f ⊙ δℓ_f − p_f (p_f·δℓ_f)); with g_z = Σ_f c_z(f) G_f
        and δg_z = Σ_f c_z(f) δG_f:  (H u)_{v_z} = δa_z g_z + a_z δg_z,  (H u)_{a_z} = δv_z·g_z + v_z·δg_z.
        1–2 gradients' work against 1.6–3.5 for double reverse mode.
        """
        if not self.has_closed_hvp:
            return None
        task = self.task
        a, v = self.token_parameters(theta)
        da, dv = self.token_parameters(vector)
        # the token values δ(a_z v_z) = δa_z v_z + a_z δv_z, read with unit scores
        moved = da[..., None] * v + a[..., None] * dv
        ones = torch.ones_like(a)
        weights, _ = self.population_targets(theta.device)
        n_noise, per_noise = noise_block(task, a.shape[-1])
        g, dg = _TokenSums(n_noise, per_noise), _TokenSums(n_noise, per_noise)
        for rows in self._subject_blocks(theta):
            p = torch.softmax(population_logits_from_tokens(a, v, task, "linear", rows), dim=-1)
            pd = p * population_logits_from_tokens(ones, moved, task, "linear", rows)
            g.add(self._residuals(p, rows))
            dg.add(weights[rows][..., None] * (pd - p * pd.sum(-1, keepdim=True)))
        g, dg = g.result(), dg.result()
        hv_v = da[..., None] * g + a[..., None] * dg
        hv_a = (dv * g).sum(-1) + (v * dg).sum(-1)
        return torch.cat([hv_a, hv_v.reshape(-1)])

    def _subject_blocks(self, theta: torch.Tensor) -> list[slice]:
        """Consecutive blocks of subject rows with about BLOCK_ELEMENTS logits each (θ may be batched)."""
        S = self.task.S
        per_subject = theta[..., 0].numel() * self.task.R * self.task.num_answers
        rows = max(1, BLOCK_ELEMENTS // per_subject)
        return [slice(i, min(i + rows, S)) for i in range(0, S, rows)]

    def _residuals(self, p: torch.Tensor, subjects: slice = slice(None)) -> torch.Tensor:
        """G_f = w_f (p_f − e_{a*(f)}) for the facts of a block of subjects, from their answer
        probabilities p (..., rows, R, |A|)."""
        weights, targets = self.population_targets(p.device)
        weights, targets = weights[subjects], targets[subjects]
        shape = p.shape[:-1]
        G = weights[..., None] * p
        G.scatter_add_(-1, targets.expand(shape)[..., None], -weights.expand(shape)[..., None])
        return G

    def with_task(self, task: FactTask) -> ReducedModel:
        """See :meth:`Model.with_task`; the per-device fact weights are converted anew."""
        other = super().with_task(task)
        other._targets = {}
        return other

    def grown_state(self, theta_old: torch.Tensor, old_task: FactTask, theta_init: torch.Tensor
                    ) -> torch.Tensor:
        """See :meth:`Model.grown_state`. Token k of the old model is token k here for its subjects and
        token k + (S − S_old) for the rest (relations, noise, EOS shift by the subjects added)."""
        old = ReducedModel(old_task, self.attention, self.tied, device=theta_init.device)
        if theta_old.shape != (old.num_params,):
            raise ConfigError(f"init.from_run: the old state has {tuple(theta_old.shape)} parameters, its "
                              f"task gives {old.num_params}")
        a_old, v_old = old.token_parameters(theta_old.to(theta_init))
        a, v = (part.clone() for part in self.token_parameters(theta_init))
        index = torch.arange(old.num_tokens, device=theta_init.device)
        index[old_task.S:] += self.task.S - old_task.S
        a[index], v[index] = a_old, v_old
        return torch.cat([a, v.reshape(-1)])

    def population_targets(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(fact weights W (S, R), answers a* (S, R)) as tensors on ``device``, converted once per device."""
        if device not in self._targets:
            self._targets[device] = (torch.as_tensor(self.task.fact_weights, device=device),
                                     torch.as_tensor(self.task.facts, device=device))
        return self._targets[device]

    def collapse_counts(self, counts):
        if not self.tied:
            return counts
        S, R, N = self.task.S, self.task.R, self.task.N
        noise = counts[:, S + R:S + R + N].sum(1, keepdim=True)
        parts = [counts[:, :S + R], noise, counts[:, -1:]] if N else [counts[:, :S + R], counts[:, -1:]]
        return torch.cat(parts, dim=1)

    def initial_parameters(self, init):
        if init.kind == "manifold":  # Li et al.'s positive manifold (dynamics.manifold)
            return manifold_start(self, init)
        if init.kind == "constant":
            return torch.full((self.num_params,), init.scale, dtype=torch.float64, device=self.device)
        gen = torch.Generator().manual_seed(init.seed)
        theta = init.scale * torch.randn(self.num_params, generator=gen, dtype=torch.float64)
        return theta.to(self.device)

    def parameter_norms(self, theta):
        a, v = self.token_parameters(theta)
        # Norms as the full model sees them: a tied pair counts once per noise token it stands for.
        weight = 1.0 / self.preconditioner[:self.num_tokens]
        return {"a": torch.sqrt((weight * a**2).sum()), "v": torch.sqrt((weight * (v**2).sum(1)).sum())}

    def parameter_blocks(self):
        """The scores a (a vector of n) and the value table v (an n × |A| matrix, one row per token)."""
        n = self.num_tokens
        return [ParameterBlock("a", 0, (n,)), ParameterBlock("v", n, (n, self.task.num_answers))]

    def untied(self):
        if not self.tied:
            return self, lambda theta: theta
        full = ReducedModel(self.task, self.attention, tied=False, device=self.device)
        S, R, N = self.task.S, self.task.R, self.task.N
        index = torch.cat([torch.arange(S + R), torch.full((N,), S + R), torch.tensor([S + R + min(N, 1)])])
        index = index.to(self.device)

        def expand(theta: torch.Tensor) -> torch.Tensor:
            a, v = self.token_parameters(theta)
            return torch.cat([a[index], v[index].reshape(-1)])

        return full, expand
