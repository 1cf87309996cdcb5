"""Models of DESIGN §3.1–3.2, as functions of one flat parameter vector θ.

Every model reduces to per-token attention scores ``a_z`` and value vectors ``v_z ∈ R^|A|`` read at EOS:

    linear:   logits = Σ_z c_z a_z v_z
    softmax:  logits = Σ_z c_z exp(a_z) v_z / Σ_z c_z exp(a_z)

where ``c_z`` counts token z in the sequence (positions do not matter). The *population* logits of fact
(s, r) use the expected counts: 1 for s, r and EOS, ``(T-3)/N`` for each noise token. They are exact
whenever all noise tokens carry equal parameters, which the flow preserves once it holds at t = 0.

A model object knows nothing about solvers: it maps θ to logits, and exposes a diagonal flow metric
``preconditioner`` P (the flow is dθ/dt = -P ∇L; P = 1/N on a tied noise pair standing for N tokens).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import Config, InitConfig
from .task import FactTask


def population_logits_from_tokens(a: torch.Tensor, v: torch.Tensor, task: FactTask, attention: str,
                                  subjects: slice = slice(None)) -> torch.Tensor:
    """(..., S, R, |A|) logits of every fact from token scores ``a`` (..., n) and values ``v`` (..., n, |A|).

    Tokens are ordered subjects, relations, a noise block (one tied token or all N), EOS. The noise
    block enters with its expected total count T-3 spread evenly over its tokens. Leading dimensions
    batch independent parameter sets. ``subjects`` restricts the facts to a block of subjects' rows.
    """
    S, R = task.S, task.R
    a_s, a_r, a_n, a_e = a[..., :S][..., subjects], a[..., S:S + R], a[..., S + R:-1], a[..., -1]
    v_s, v_r, v_n, v_e = (v[..., :S, :][..., subjects, :], v[..., S:S + R, :], v[..., S + R:-1, :],
                          v[..., -1, :])
    _, per_noise = _noise_block(task, a.shape[-1])
    if attention == "linear":
        shared = per_noise * (a_n[..., None] * v_n).sum(-2) + a_e[..., None] * v_e
        return ((a_s[..., None] * v_s)[..., :, None, :] + (a_r[..., None] * v_r)[..., None, :, :]
                + shared[..., None, None, :])
    shift = a.max(-1, keepdim=True).values.detach()  # softmax is shift-invariant; this keeps exp finite
    e = torch.exp(a - shift)
    e_s, e_r, e_n, e_e = e[..., :S][..., subjects], e[..., S:S + R], e[..., S + R:-1], e[..., -1]
    shared_num = per_noise * (e_n[..., None] * v_n).sum(-2) + e_e[..., None] * v_e
    shared_den = per_noise * e_n.sum(-1) + e_e
    numer = ((e_s[..., None] * v_s)[..., :, None, :] + (e_r[..., None] * v_r)[..., None, :, :]
             + shared_num[..., None, None, :])
    denom = e_s[..., :, None] + e_r[..., None, :] + shared_den[..., None, None]
    return numer / denom[..., None]


def attention_from_tokens(a: torch.Tensor, task: FactTask, attention: str) -> torch.Tensor:
    """(S, R, 4) attention on subject, relation, the whole noise block and EOS for every fact.

    Linear attention: the raw scores (noise: the summed score of its T-3 positions). Softmax: weights.
    """
    S, R = task.S, task.R
    a_s, a_r, a_n, a_e = a[:S], a[S:S + R], a[S + R:-1], a[-1]
    _, per_noise = _noise_block(task, a.shape[0])
    if attention == "softmax":
        shift = a.max()
        a_s, a_r, a_e = (torch.exp(x - shift) for x in (a_s, a_r, a_e))
        noise = per_noise * torch.exp(a_n - shift).sum()
    else:
        noise = per_noise * a_n.sum()
    shape = (S, R)
    parts = torch.stack([a_s[:, None].expand(shape), a_r[None, :].expand(shape),
                         noise.expand(shape), a_e.expand(shape)], dim=-1)
    if attention == "softmax":
        parts = parts / parts.sum(-1, keepdim=True)
    return parts


def count_logits_from_tokens(a: torch.Tensor, v: torch.Tensor, counts: torch.Tensor, attention: str
                             ) -> torch.Tensor:
    """(B, |A|) logits of sequences given as token counts (B, n) over the same tokens as ``a``."""
    if attention == "linear":
        return counts @ (a[:, None] * v)
    e = torch.exp(a - a.max().detach())
    return ((counts * e) @ v) / (counts @ e)[:, None]


class Model:
    """Common interface: token parameters from θ, logits, losses; subclasses define the parametrisation."""

    task: FactTask
    attention: str
    num_params: int
    preconditioner: torch.Tensor
    population_exact: bool

    def token_parameters(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``a`` (n,) and values ``v`` (n, |A|) of the model's token axis."""
        raise NotImplementedError

    def collapse_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Map counts over the full vocabulary (B, V) onto the model's token axis."""
        return counts

    def initial_parameters(self, init: InitConfig) -> torch.Tensor:
        """θ(0) for an initialisation config (float64, seeded)."""
        raise NotImplementedError

    def parameter_norms(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named Euclidean norms of the parameter blocks."""
        raise NotImplementedError

    def untied(self) -> tuple[Model, Callable[[torch.Tensor], torch.Tensor]]:
        """An equivalent model with one parameter set per vocabulary token, and the map θ -> θ_untied."""
        return self, lambda theta: theta

    # --- shared computations -------------------------------------------------------------------
    def population_logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(S, R, |A|) logits of every fact with expected noise counts."""
        a, v = self.token_parameters(theta)
        return population_logits_from_tokens(a, v, self.task, self.attention)

    def attention_weights(self, theta: torch.Tensor) -> torch.Tensor:
        """(S, R, 4) attention on subject, relation, noise block, EOS (see ``attention_from_tokens``)."""
        a, _ = self.token_parameters(theta)
        return attention_from_tokens(a, self.task, self.attention)

    def sequence_logits(self, theta: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(B, |A|) logits of sampled sequences given as vocabulary counts (B, V)."""
        a, v = self.token_parameters(theta)
        return count_logits_from_tokens(a, v, self.collapse_counts(counts), self.attention)

    def population_loss(self, theta: torch.Tensor) -> torch.Tensor:
        """L(θ) = Σ_{s,r} w_{sr} · CE(logits(s, r), a*(s, r)), the exact population loss when exact."""
        logp = torch.log_softmax(self.population_logits(theta), dim=-1)
        target = torch.as_tensor(self.task.facts, device=logp.device)
        weights = torch.as_tensor(self.task.fact_weights, device=logp.device)
        return -(weights * logp.gather(-1, target[..., None])[..., 0]).sum()

    def population_loss_and_gradient(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(L(θ), ∇L(θ)) of the population loss in closed form, or None where only autodiff is offered."""
        return None

    has_closed_hvp = False  # whether population_hessian_vector_product gives H·u (else None: autodiff)

    def population_hessian_vector_product(self, theta: torch.Tensor, vector: torch.Tensor
                                          ) -> torch.Tensor | None:
        """H(θ)·u of the population loss in closed form, or None where only autodiff is offered."""
        return None

    def sequence_loss(self, theta: torch.Tensor, counts: torch.Tensor, targets: torch.Tensor
                      ) -> torch.Tensor:
        """Mean cross-entropy over a batch of sequences (counts (B, V), targets (B,))."""
        logits = self.sequence_logits(theta, counts)
        return torch.nn.functional.cross_entropy(logits, targets)


def _noise_block(task: FactTask, num_tokens: int) -> tuple[int, float]:
    """Tokens in the noise block of a token axis of ``num_tokens`` (subjects, relations, noise, EOS) and
    the expected count of each in one sequence, (T − 3) / n_noise."""
    n_noise = num_tokens - task.S - task.R - 1
    return n_noise, (task.T - 3) / n_noise if n_noise else 0.0


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
# one trip through memory instead of ~10 over the whole S·R·|A| table (gradient 2.6x faster at 10^5 facts).
BLOCK_ELEMENTS = 2**18


class ReducedModel(Model):
    """DESIGN §3.1: one score ``a_z`` and one value ``v_z`` per token; θ = [a (n), v (n·|A|)].

    With ``tied=True`` one pair stands for all N noise tokens (n = S + R + 2) and its flow is scaled by
    1/N; with ``tied=False`` every vocabulary token has its own pair (n = V).
    """

    def __init__(self, task: FactTask, attention: str = "linear", tied: bool = True,
                 device: str | torch.device = "cpu"):
        self.task, self.attention, self.tied = task, attention, tied
        self.device = torch.device(device)
        noise = min(task.N, 1) if tied else task.N
        self.num_tokens = task.S + task.R + noise + 1
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
        """Closed-form gradient (about 5x faster than autodiff on small tables); θ may be batched (B, P).

        With G_f = w_f (p_f - e_{a*(f)}) per fact f = (s, r) and the logits ℓ_f of DESIGN §3.1:
        linear:  ∂L/∂v_z = Σ_f c_z(f) a_z G_f,        ∂L/∂a_z = Σ_f c_z(f) v_z·G_f;
        softmax: ∂L/∂v_z = Σ_f c_z(f) ω_z(f) G_f,     ∂L/∂a_z = Σ_f c_z(f) ω_z(f) (v_z·G_f - ℓ_f·G_f),
        with ω_z(f) = exp(a_z) / Σ_y c_y(f) exp(a_y) and c_z(f) the expected count of z in fact f.
        """
        task = self.task
        S, R = task.S, task.R
        lead = theta.shape[:-1]
        a, v = self.token_parameters(theta)
        weights, targets = self._population_targets(theta.device)
        n_noise, per_noise = _noise_block(task, a.shape[-1])
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
        weights, _ = self._population_targets(theta.device)
        n_noise, per_noise = _noise_block(task, a.shape[-1])
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
        weights, targets = self._population_targets(p.device)
        weights, targets = weights[subjects], targets[subjects]
        shape = p.shape[:-1]
        G = weights[..., None] * p
        G.scatter_add_(-1, targets.expand(shape)[..., None], -weights.expand(shape)[..., None])
        return G

    def _population_targets(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
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


def orthonormal_rows(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``rows`` orthonormal vectors in R^dim (rows <= dim): the first rows of a random orthogonal matrix."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    return q[:rows]


class EmbeddedModel(Model):
    """DESIGN §3.2: fixed embeddings E (V, d), unembeddings U (|A|, d), trainable W_KQ, W_OV (d, d).

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
        else:
            E = torch.randn(task.vocab_size, dim, generator=gen, dtype=torch.float64) / dim**0.5
            U = torch.randn(task.num_answers, dim, generator=gen, dtype=torch.float64) / dim**0.5
        self.E, self.U = E.to(self.device), U.to(self.device)
        self.num_params = 2 * dim * dim
        self.preconditioner = torch.ones(self.num_params, dtype=torch.float64, device=self.device)
        self.population_exact = embeddings == "orthonormal" and tied_init

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

    def parameter_norms(self, theta):
        w_kq, w_ov = self.matrices(theta)
        return {"W_KQ": torch.linalg.norm(w_kq), "W_OV": torch.linalg.norm(w_ov)}


def build_model(config: Config, task: FactTask) -> Model:
    """The model a config asks for, on the config's device, shaped for its loss kind.

    The population loss ties the noise tokens (exact by symmetry); the sampled loss keeps them apart.
    """
    population = config.loss.kind == "population"
    if config.model.kind == "transformer":
        from .transformer import TransformerModel  # imports this module: built lazily

        m = config.model
        return TransformerModel(task, m.dim, m.heads, m.head_dim, m.mlp_width, m.seed, device=config.device)
    if config.model.kind == "reduced":
        return ReducedModel(task, config.model.attention, tied=population, device=config.device)
    return EmbeddedModel(task, config.model.attention, config.model.dim, config.model.embeddings,
                         config.model.seed, tied_init=population, device=config.device)
