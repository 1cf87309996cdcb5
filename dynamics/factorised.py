"""Exact population loss, gradient, Hessian-vector product and per-fact record of the linear-attention
:class:`~dynamics.models.ReducedModel` without ever forming the S×R×|A| table of logits.

With linear attention the population logits of fact f = (s, r) are additive over three tables,

    ℓ(s, r, ·) = x_s + y_r + c,   x_s = a_s v_s (S×|A|),   y_r = a_r v_r (R×|A|),
    c = per_noise · Σ_noise a_n v_n + a_EOS v_EOS (|A|),

so with the row-shifted exponentials X = exp(x − m_x), Y = exp(y − m_y), C = exp(c − m_c) (m_* the row
maxima, hence every entry in (0, 1] and nothing overflows) and YC = Y ⊙ C:

    Z = X · YCᵀ (S×R),   log Σ_a exp ℓ(s, r, a) = log Z[s, r] + m_x[s] + m_y[r] + m_c,

and, with Q = W / Z (W the fact weights), the frequency-weighted probability sums of the gradient are

    Σ_r w_sr p(s, r, ·) = X ⊙ (Q · YC),   Σ_s w_sr p(s, r, ·) = YC ⊙ (Qᵀ · X).

Each evaluation costs a few matrix products of S×|A|×R and O((S + R)·|A| + S·R) memory instead of
S·R·|A|.

Underflow. The shifts bound every entry of X, YC by 1 but do not keep Z away from 0: when the largest
x_s and y_r sit on different answers, Z[s, r] can be far below 1 (it is at least exp(max_a ℓ(s, r, a) −
m_x[s] − m_y[r] − m_c)). A fact with Z < TINY = 1e-200 is recomputed exactly from its |A| logits (a
direct log-sum-exp over the gathered rows x_s, y_r and c, a few such facts at a time) and its factorised
contribution is replaced. Why 1e-200: a product X·Y·C below the normal range (2.2e-308) carries an absolute
rounding error of at most 2^-1075 ≈ 2.5e-324, so for Z ≥ 1e-200 the error it brings to any probability
p = X·Y·C / Z is below 2.5e-124 (and probabilities above ~1e-100 keep full relative precision); Z itself
is then known to the relative precision of a sum of |A| normal numbers; and Q = W / Z ≤ 1e200, so no sum
of R or S such terms can overflow. Below the threshold those guarantees fade (at Z ~ 1e-308 every digit is
gone, at Z = 0 the fact's loss would be infinite), so the fact is recomputed instead.

Every function takes float64 tensors on any device and uses tensor operations only (the same code runs on
CUDA); the per-fact argmax of :func:`fact_record` is the one quantity no product gives, and is found from
the logits in bounded chunks of subjects.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .models import ReducedModel
from .task import FactTask

# Facts with a shifted partition function below this are recomputed from their logits (module docstring).
TINY = 1e-200
# The exact recomputation of flagged facts handles about this many logits (facts × |A|) at a time.
FALLBACK_ELEMENTS = 2**22
# The chunked argmax of fact_record evaluates about this many logits at a time.
ARGMAX_ELEMENTS = 2**22
# fact_record treats as many states at once as keep about this many entries of the per-state tables.
RECORD_ELEMENTS = 2**22
RECALLED, HALLUCINATED, OFF_TYPE = 0, 1, 2  # argmax classes, as in dynamics.trajectory

_TARGETS: weakref.WeakKeyDictionary[FactTask, dict[torch.device, tuple[torch.Tensor, torch.Tensor]]] = (
    weakref.WeakKeyDictionary())


def _targets(task: FactTask, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(fact weights W (S, R) float64, answers a* (S, R) int64) on ``device``, converted once per task."""
    per_device = _TARGETS.setdefault(task, {})
    if device not in per_device:
        per_device[device] = (torch.as_tensor(task.fact_weights, device=device),
                              torch.as_tensor(task.facts, device=device))
    return per_device[device]


def _noise_block(task: FactTask, num_tokens: int) -> tuple[int, float]:
    """Tokens in the noise block of a token axis of ``num_tokens`` (subjects, relations, noise, EOS) and the
    expected count of each in one sequence, (T − 3) / n_noise: the model's own convention, restated here so
    that this module depends on the model only through its public interface."""
    n_noise = num_tokens - task.S - task.R - 1
    return n_noise, (task.T - 3) / n_noise if n_noise else 0.0


def _check(model: ReducedModel) -> None:
    if not isinstance(model, ReducedModel) or model.attention != "linear":
        raise ValueError("the factorised population loss needs a ReducedModel with linear attention")


def _tables(model: ReducedModel, a: torch.Tensor, v: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The additive tables x (..., S, |A|), y (..., R, |A|), c (..., |A|) of token scores a (..., n) and
    values v (..., n, |A|), computed with the same operations as the model's population logits (so that
    x_s + y_r + c, summed in that order, reproduces its logits bit for bit)."""
    S, R = model.task.S, model.task.R
    _, per_noise = _noise_block(model.task, a.shape[-1])
    x = a[..., :S, None] * v[..., :S, :]
    y = a[..., S:S + R, None] * v[..., S:S + R, :]
    c = per_noise * (a[..., S + R:-1, None] * v[..., S + R:-1, :]).sum(-2) + a[..., -1, None] * v[..., -1, :]
    return x, y, c


@dataclass
class _Partition:
    """Shifted factors X (B, S, |A|) and YC (B, R, |A|), Z = X·YCᵀ (B, S, R), the exact log-partition
    ``lse`` (B, S, R), and the flagged facts (Z < TINY) as index tensors (b, s, r)."""

    X: torch.Tensor
    YC: torch.Tensor
    Z: torch.Tensor
    lse: torch.Tensor
    bad: torch.Tensor
    flagged: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _chunks(index: tuple[torch.Tensor, ...], width: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Consecutive pieces of a tuple of equally long index tensors, about FALLBACK_ELEMENTS / width each."""
    step = max(1, FALLBACK_ELEMENTS // max(width, 1))
    for start in range(0, index[0].shape[0], step):
        yield tuple(i[start:start + step] for i in index)


def _direct_logits(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, b: torch.Tensor, s: torch.Tensor,
                   r: torch.Tensor) -> torch.Tensor:
    """(k, |A|) logits ℓ(s, r, ·) = x_s + y_r + c of the k facts (b, s, r) (b: the state of the batch)."""
    return x[b, s] + y[b, r] + c[b]


def _partition(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> _Partition:
    """log Σ_a exp ℓ(s, r, a) for every fact: log Z + m_x[s] + m_y[r] + m_c with Z = X·(Y⊙C)ᵀ, and the
    direct log-sum-exp over |A| for the facts whose Z is below TINY."""
    m_x = x.amax(-1, keepdim=True)
    m_y = y.amax(-1, keepdim=True)
    m_c = c.amax(-1, keepdim=True)
    X = torch.exp(x - m_x)
    YC = torch.exp(y - m_y) * torch.exp(c - m_c)[..., None, :]
    Z = X @ YC.mT
    bad = Z < TINY
    lse = torch.log(Z.clamp_min(TINY)) + m_x + m_y.mT + m_c[..., None]
    flagged = bad.nonzero(as_tuple=True)
    for b, s, r in _chunks(flagged, x.shape[-1]):
        lse[b, s, r] = torch.logsumexp(_direct_logits(x, y, c, b, s, r), dim=-1)
    return _Partition(X, YC, Z, lse, bad, flagged)


def _target_logits(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, facts: torch.Tensor) -> torch.Tensor:
    """(B, S, R) logits of the true answers, ℓ(s, r, a*(s, r)) = x[s, a*] + y[r, a*] + c[a*]."""
    lead = x.shape[:-2]
    from_x = x.gather(-1, facts.expand(*lead, *facts.shape))
    from_y = y.gather(-1, facts.mT.expand(*lead, *facts.mT.shape)).mT
    return from_x + from_y + c[..., facts]


def _token_sums(g_s: torch.Tensor, g_r: torch.Tensor, n_noise: int, per_noise: float) -> torch.Tensor:
    """(B, n, |A|) sums Σ_f c_z(f) G_f per token from the subject rows g_s (B, S, |A|) and relation rows
    g_r (B, R, |A|): each noise token gets per_noise × the total over facts, EOS the total."""
    total = g_r.sum(-2)
    noise = (per_noise * total)[..., None, :].expand(*total.shape[:-1], n_noise, total.shape[-1])
    return torch.cat([g_s, g_r, noise, total[..., None, :]], dim=-2)


def _as_batch(theta: torch.Tensor) -> torch.Tensor:
    if theta.dim() not in (1, 2):
        raise ValueError(f"θ must have shape (P,) or (B, P), got {tuple(theta.shape)}")
    return theta if theta.dim() == 2 else theta[None]


def loss_and_gradient(model: ReducedModel, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L(θ), ∇L(θ)) of the population loss, θ of shape (P,) or a batch (B, P) (then L (B,), ∇L (B, P)).

    L = Σ_{s,r} w_sr (log Σ_a exp ℓ(s, r, a) − ℓ(s, r, a*)) with the log-partition of the module docstring.
    With G_f = w_f (p_f − e_{a*(f)}) the token sums are
        g_s = Σ_r G_sr = X ⊙ (Q·YC)[s] − Σ_r w_sr e_{a*(s,r)},
        g_r = Σ_s G_sr = YC ⊙ (Qᵀ·X)[r] − Σ_s w_sr e_{a*(s,r)},
        g_noise = per_noise Σ_r g_r,   g_EOS = Σ_r g_r,
    and ∂L/∂v_z = a_z g_z, ∂L/∂a_z = v_z · g_z. Facts flagged for underflow enter with Q = 0, and their
    w p computed from their own logits is added to g_s and g_r instead.
    Cost: three products of S×|A|×R per state; memory O((S + R)·|A| + S·R) per state.
    """
    _check(model)
    batch = _as_batch(theta)
    a, v = model.token_parameters(batch)
    x, y, c = _tables(model, a, v)
    weights, facts = _targets(model.task, theta.device)
    part = _partition(x, y, c)
    loss = (weights * (part.lse - _target_logits(x, y, c, facts))).sum((-2, -1))
    Q = torch.where(part.bad, 0.0, weights / part.Z.clamp_min(TINY))
    g_s = part.X * (Q @ part.YC)
    g_r = part.YC * (Q.mT @ part.X)
    for b, s, r in _chunks(part.flagged, x.shape[-1]):
        wp = weights[s, r, None] * torch.exp(_direct_logits(x, y, c, b, s, r) - part.lse[b, s, r, None])
        g_s.index_put_((b, s), wp, accumulate=True)
        g_r.index_put_((b, r), wp, accumulate=True)
    B = batch.shape[0]
    g_s.scatter_add_(-1, facts.expand(B, -1, -1), -weights.expand(B, -1, -1))
    g_r.scatter_add_(-1, facts.mT.expand(B, -1, -1), -weights.mT.expand(B, -1, -1))
    g = _token_sums(g_s, g_r, *_noise_block(model.task, a.shape[-1]))
    grad = torch.cat([(v * g).sum(-1), (a[..., None] * g).reshape(B, -1)], dim=-1)
    if theta.dim() == 1:
        return loss[0], grad[0]
    return loss, grad


def hessian_vector_product(model: ReducedModel, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """H(θ)·u of the population loss, θ and u of shape (P,) (or both (B, P): one product per row).

    Along u = (δa, δv) the logits move additively, δℓ(s, r, ·) = δx_s + δỹ_r with
    δx_s = δa_s v_s + a_s δv_s and δỹ_r = δa_r v_r + a_r δv_r + δc (δc the same for c), and
    δG_f = w_f (p_f ⊙ δℓ_f − p_f ρ_f) with ρ_f = p_f · δℓ_f. In the factors:
        ρ = [ (X ⊙ δx)·YCᵀ + X·(YC ⊙ δỹ)ᵀ ] / Z,
        δg_s = Σ_r δG_sr = X ⊙ [ (Q·YC) ⊙ δx + Q·(YC ⊙ δỹ) − (Q ⊙ ρ)·YC ],
        δg_r = Σ_s δG_sr = YC ⊙ [ Qᵀ·(X ⊙ δx) + (Qᵀ·X) ⊙ δỹ − (Q ⊙ ρ)ᵀ·X ],
    noise and EOS tokens as in the gradient; then (H u)_{v_z} = δa_z g_z + a_z δg_z and
    (H u)_{a_z} = δv_z · g_z + v_z · δg_z (g the gradient's token sums). Facts flagged for underflow
    are handled from their own logits as in :func:`loss_and_gradient`.
    Cost: about nine products of S×|A|×R; memory O((S + R)·|A| + S·R).
    """
    _check(model)
    if vector.shape != theta.shape:
        raise ValueError(f"u {tuple(vector.shape)} must have the shape of θ {tuple(theta.shape)}")
    batch, direction = _as_batch(theta), _as_batch(vector)
    a, v = model.token_parameters(batch)
    da, dv = model.token_parameters(direction)
    x, y, c = _tables(model, a, v)
    # δ(a_z v_z) = δa_z v_z + a_z δv_z, read through the same tables with unit scores
    dx, dy, dc = _tables(model, torch.ones_like(a), da[..., None] * v + a[..., None] * dv)
    dy = dy + dc[..., None, :]
    weights, facts = _targets(model.task, theta.device)
    part = _partition(x, y, c)
    X, YC = part.X, part.YC
    A = X.shape[-1]
    Z = part.Z.clamp_min(TINY)
    Q = torch.where(part.bad, 0.0, weights / Z)
    rho = (torch.cat([X * dx, X], -1) @ torch.cat([YC, YC * dy], -1).mT) / Z
    Q_rho = Q * rho
    QY = Q @ torch.cat([YC, YC * dy], -1)
    QX = Q.mT @ torch.cat([X, X * dx], -1)
    g_s = X * QY[..., :A]
    g_r = YC * QX[..., :A]
    dg_s = X * (QY[..., :A] * dx + QY[..., A:] - Q_rho @ YC)
    dg_r = YC * (QX[..., A:] + QX[..., :A] * dy - Q_rho.mT @ X)
    for b, s, r in _chunks(part.flagged, A):
        w = weights[s, r, None]
        p = torch.exp(_direct_logits(x, y, c, b, s, r) - part.lse[b, s, r, None])
        pd = p * (dx[b, s] + dy[b, r])
        dG = w * (pd - p * pd.sum(-1, keepdim=True))
        g_s.index_put_((b, s), w * p, accumulate=True)
        g_r.index_put_((b, r), w * p, accumulate=True)
        dg_s.index_put_((b, s), dG, accumulate=True)
        dg_r.index_put_((b, r), dG, accumulate=True)
    B = batch.shape[0]
    g_s.scatter_add_(-1, facts.expand(B, -1, -1), -weights.expand(B, -1, -1))
    g_r.scatter_add_(-1, facts.mT.expand(B, -1, -1), -weights.mT.expand(B, -1, -1))
    noise = _noise_block(model.task, a.shape[-1])
    g, dg = _token_sums(g_s, g_r, *noise), _token_sums(dg_s, dg_r, *noise)
    hv_v = da[..., None] * g + a[..., None] * dg
    hv_a = (dv * g).sum(-1) + (v * dg).sum(-1)
    hv = torch.cat([hv_a, hv_v.reshape(B, -1)], dim=-1)
    return hv[0] if theta.dim() == 1 else hv


def fact_record(model: ReducedModel, thetas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-fact record of states ``thetas`` (K, P): the arrays of ``dynamics.trajectory.fact_metrics``,
    each (K, S, R), without the S×R×|A| table (except the bounded chunks of the argmax).

    * ``fact_loss`` = log Σ_a exp ℓ(s, r, a) − ℓ(s, r, a*), ``p_correct`` = exp(−fact_loss);
    * ``p_relation`` = Σ_{a ∈ A_r} p(s, r, a): the log-sum-exp of the D logits x_s + y_r + c on the
      relation's own block (an S×R×D = S×|A| table), minus the log-partition; ``relation_loss`` = −log;
    * ``p_subject`` = Σ_{r'} p(s, r, a*(s, r')) = ((X ⊙ M)·YCᵀ / Z)[s, r], M the S×|A| indicator of the
      subject's answers {a*(s, r')}; facts where the numerator falls below TINY (or whose Z is flagged)
      take the direct log-sum-exp of their R logits ℓ(s, r, a*(s, r')); ``subject_loss`` = −log;
    * ``argmax_class``: 0 if argmax_a ℓ = a*, 1 if in A_r but not a*, 2 otherwise; the argmax is taken on
      logits (x_s + y_r) + c formed with the operations of the model's ``population_logits`` for one state
      (identical numbers, hence the same first-index tie breaking), ARGMAX_ELEMENTS at a time.
    """
    _check(model)
    if thetas.dim() != 2:
        raise ValueError(f"thetas must have shape (K, P), got {tuple(thetas.shape)}")
    task = model.task
    S, R, A = task.S, task.R, task.num_answers
    per_state = (S + R) * A + S * R
    step = max(1, RECORD_ELEMENTS // per_state)
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for block in torch.split(thetas, step):
            for name, value in _record_block(model, block).items():
                parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


def _record_block(model: ReducedModel, block: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`fact_record` of a few states (B, P)."""
    task = model.task
    S, R, D = task.S, task.R, task.D
    B = block.shape[0]
    device = block.device
    a, v = model.token_parameters(block)
    x, y, c = _tables(model, a, v)
    _, facts = _targets(task, device)
    part = _partition(x, y, c)
    lse = part.lse
    log_correct = _target_logits(x, y, c, facts) - lse

    own = torch.arange(R, device=device)
    # logits on the relation's own block, (B, S, R, D), summed in the order of population_logits_from_tokens
    in_block = (x.reshape(B, S, R, D) + y.reshape(B, R, R, D)[:, own, own][:, None]
                + c.reshape(B, R, D)[:, None])
    log_relation = torch.logsumexp(in_block, dim=-1) - lse

    mask = torch.zeros(S, task.num_answers, dtype=x.dtype, device=device)
    mask.scatter_(-1, facts, 1.0)
    numer = (part.X * mask) @ part.YC.mT
    log_subject = torch.log(numer.clamp_min(TINY)) - torch.log(part.Z.clamp_min(TINY))
    redo = (part.bad | (numer < TINY)).nonzero(as_tuple=True)
    for b, s, r in _chunks(redo, R):
        answers = facts[s]  # (k, R): a*(s, r') for every r'
        bb, ss, rr = b[:, None], s[:, None], r[:, None]
        logits = x[bb, ss, answers] + y[bb, rr, answers] + c[bb, answers]
        log_subject[b, s, r] = torch.logsumexp(logits, dim=-1) - lse[b, s, r]

    top = torch.empty(B, S, R, dtype=torch.int64, device=device)
    rows = max(1, ARGMAX_ELEMENTS // (R * task.num_answers))
    for k in range(B):
        xk, yk, ck = _tables(model, a[k], v[k])  # one state, exactly as population_logits evaluates it
        for start in range(0, S, rows):
            subjects = slice(start, min(start + rows, S))
            top[k, subjects] = (xk[subjects, None, :] + yk[None, :, :] + ck[None, None, :]).argmax(-1)
    argmax_class = torch.where(top == facts, RECALLED, torch.where(top // D == own, HALLUCINATED, OFF_TYPE))
    return {"fact_loss": -log_correct, "p_correct": log_correct.exp(), "p_relation": log_relation.exp(),
            "p_subject": log_subject.exp(), "relation_loss": -log_relation, "subject_loss": -log_subject,
            "argmax_class": argmax_class}
