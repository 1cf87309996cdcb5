"""Exact population loss, gradient, Hessian-vector product and per-fact record of the linear-attention
:class:`~dynamics.models.ReducedModel` without ever forming the S×R×|A| table of logits.

With linear attention the population logits of fact f = (s, r) are additive over three tables,

    ℓ(s, r, ·) = x_s + y_r + c,   x_s = a_s v_s (S×|A|),   y_r = a_r v_r (R×|A|),
    c = per_noise · Σ_noise a_n v_n + a_EOS v_EOS (|A|),

so with the row-shifted exponentials X = exp(x − m_x), Y = exp(y − m_y), C = exp(c − m_c) (m_* the row
maxima: every entry lies in (0, 1] and nothing overflows), YC = Y ⊙ C and M[s, r] = m_x[s] + m_y[r] + m_c,

    Σ_a exp ℓ(s, r, a) = exp(M[s, r]) · (X · YCᵀ)[s, r].

The answers of the fact's own relation block A_r = {rD, ..., rD + D − 1} are taken apart:
Z = Z_in + Z_off with Z_in[s, r] = Σ_{a ∈ A_r} X[s, a] YC[r, a] (an S×R×D = S×|A| table) and
Z_off = X · (YC ⊙ O)ᵀ, O[r, a] = [a ∉ A_r], both sums of non-negative terms. Then

    lse[s, r] = log Σ_a exp ℓ(s, r, a) = log Z[s, r] + M[s, r],
    −log p(a* | s, r) = softplus(logaddexp(logsumexp_{a ∈ A_r, a ≠ a*} ℓ − ℓ*, log Z_off + M − ℓ*)),

the second form (the D logits of the own block summed directly) keeping full relative precision for a
well-learned fact whose loss is far below the size of its logits, where lse − ℓ* would cancel to an
absolute error of ε·|ℓ|. With Q = W / Z (W the fact weights), the frequency-weighted probability sums of
the gradient are

    Σ_r w_sr p(s, r, ·) = X ⊙ (Q · YC),   Σ_s w_sr p(s, r, ·) = YC ⊙ (Qᵀ · X).

Each evaluation costs a few matrix products of S×|A|×R and O((S + R)·|A| + S·R) memory instead of
S·R·|A|.

Underflow. The shifts bound every entry of X and YC by 1 but do not keep the fact's shifted partition
function Z away from 0: when the largest entries of x_s and y_r sit on different answers, Z can be as
small as exp(max_a ℓ(s, r, a) − M), far below the normal range. A fact with Z < TINY = 1e-200 is
*flagged*: its log-partition, loss and probabilities are recomputed exactly from its own |A| logits (a
direct log-sum-exp over the gathered rows x_s, y_r and c, a bounded number of facts at a time), and its
factorised contribution to the sums is replaced by the exact one. Why 1e-200: a product X·Y·C that falls
below the normal range (2.2e-308) is rounded with an absolute error of at most a few 2^-1075 ≈ 2.5e-324,
so for Z ≥ 1e-200 every probability p = X·Y·C / Z carries an absolute error below ~1e-123 (probabilities
above ~1e-100 keep full relative precision), Z itself keeps the relative precision of a sum of |A|
normal numbers (up to |A|·1e-123), and Q ≤ W · 1e200, so no sum of R or S terms can overflow. Below the
threshold these guarantees fade (near Z ~ 1e-308 every digit is gone, at Z = 0 the fact's loss would be
infinite), so the fact is recomputed instead. :func:`fact_record` further recomputes the facts whose
own-block mass Z_in, off-block mass Z_off, subject mass or non-subject mass alone is below TINY, since
those set the relative precision of its per-fact losses.

Every function takes float64 tensors on any device and uses tensor operations only (the same code runs on
CUDA); the per-fact argmax of :func:`fact_record` is the one quantity no product gives, and is found from
the logits in bounded chunks of subjects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..task import FactClass
from .argmax import argmax_answers
from .tokens import noise_block

if TYPE_CHECKING:
    from .reduced import ReducedModel

# Facts with a shifted partition function below this are recomputed from their logits (module docstring).
TINY = 1e-200
# The exact recomputation of flagged facts handles about this many logits (facts × |A|) at a time.
FALLBACK_ELEMENTS = 2**22
# The chunked argmax of fact_record evaluates about this many logits at a time.
ARGMAX_ELEMENTS = 2**22
# fact_record treats as many states at once as keep about this many entries of the per-state tables,
# and their subjects in pieces of about RECORD_PIECE_ELEMENTS entries (the memory the record takes beside
# a large flow: 8 MB tables instead of the whole S×|A|, 64 MB at 10^6 facts).
RECORD_ELEMENTS = 2**22
RECORD_PIECE_ELEMENTS = 2**20

# A subject's score is coupled to its values in cvode's preconditioner only while the Schur complement of its
# (score, values) block stays this far from 0 (CurvatureBlocks.factor).
SCHUR_FLOOR = 0.1

# Implementation note: on the CPU a fresh S×|A| tensor costs about as much as five passes over it (the
# allocator returns large blocks to the system, so each new one is page-faulted in again), so the S×|A|
# tables below are few and reused in place; products that only reduce use einsum, which needs no temporary.


def _check(model: ReducedModel) -> None:
    if getattr(model, "attention", None) != "linear" or not hasattr(model, "num_tokens"):
        raise ValueError("the factorised population loss needs a ReducedModel with linear attention")


def _as_batch(theta: torch.Tensor) -> torch.Tensor:
    if theta.dim() not in (1, 2):
        raise ValueError(f"θ must have shape (P,) or (B, P), got {tuple(theta.shape)}")
    if theta.dtype != torch.float64:  # TINY and the precision arguments assume float64
        raise ValueError(f"θ must be float64, got {theta.dtype}")
    return theta if theta.dim() == 2 else theta[None]


def _softplus(z: torch.Tensor) -> torch.Tensor:
    """log(1 + exp z) to full relative precision for every z, including ±inf (no linear cut-off)."""
    return z.clamp_min(0.0) + torch.log1p(torch.exp(-z.abs()))


def _tables(model: ReducedModel, a: torch.Tensor, v: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The additive tables x (..., S, |A|), y (..., R, |A|), c (..., |A|) of token scores a (..., n) and
    values v (..., n, |A|), computed with the same operations as the model's population logits (so that
    x_s + y_r + c, summed in that order, reproduces its logits bit for bit)."""
    S = model.task.S
    return (_subject_table(a[..., :S], v[..., :S, :]), *_context_tables(model, a, v))


def _subject_table(a_s: torch.Tensor, v_s: torch.Tensor) -> torch.Tensor:
    """x = a_s v_s (..., k, |A|) of subjects' scores a_s (..., k) and values v_s (..., k, |A|)."""
    return a_s[..., None] * v_s


def _context_tables(model: ReducedModel, a: torch.Tensor, v: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """y (..., R, |A|) and c (..., |A|) of :func:`_tables`."""
    S, R = model.task.S, model.task.R
    _, per_noise = noise_block(model.task, a.shape[-1])
    y = a[..., S:S + R, None] * v[..., S:S + R, :]
    c = per_noise * (a[..., S + R:-1, None] * v[..., S + R:-1, :]).sum(-2) + a[..., -1, None] * v[..., -1, :]
    return y, c


def _directions(model: ReducedModel, a: torch.Tensor, v: torch.Tensor, da: torch.Tensor, dv: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Along (δa, δv): δx (B, S, |A|) = δa_s v_s + a_s δv_s and δỹ (B, R, |A|) = δy_r + δc, so that the
    logits move by δℓ(s, r, ·) = δx_s + δỹ_r."""
    S, R = model.task.S, model.task.R
    _, per_noise = noise_block(model.task, a.shape[-1])

    def moved(rows: slice) -> torch.Tensor:
        return torch.mul(da[:, rows, None], v[:, rows]).addcmul_(a[:, rows, None], dv[:, rows])

    dc = per_noise * moved(slice(S + R, -1)).sum(-2) + moved(slice(-1, None))[:, 0]
    return moved(slice(0, S)), moved(slice(S, S + R)) + dc[:, None]


def _chunks(index: tuple[torch.Tensor, ...], width: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Consecutive pieces of a tuple of equally long index tensors, about FALLBACK_ELEMENTS / width each."""
    step = max(1, FALLBACK_ELEMENTS // max(width, 1))
    for start in range(0, index[0].shape[0], step):
        yield tuple(i[start:start + step] for i in index)


def _row_logits(a: torch.Tensor, v: torch.Tensor, y: torch.Tensor, c: torch.Tensor, b: torch.Tensor,
                s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(k, |A|) logits ℓ(s, r, ·) = x_s + y_r + c of the k facts (b, s, r) (b: the state of the batch),
    x_s recomputed as a_s v_s exactly as in the table x."""
    return a[b, s, None] * v[b, s] + y[b, r] + c[b]


def _masked_logsumexp(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log Σ exp over the entries where ``keep`` holds (−inf for none), along the last dimension."""
    return torch.logsumexp(logits.masked_fill(~keep, -math.inf), dim=-1)


@dataclass
class _Facts:
    """Per-fact quantities of a batch of states (B, S, R), plus the factors (see :func:`_facts`)."""

    X: torch.Tensor  # (B, S, |A|) exp(x − m_x)
    YC: torch.Tensor  # (B, R, |A|) exp(y − m_y) ⊙ exp(c − m_c)
    lse: torch.Tensor  # log Σ_a exp ℓ(s, r, a), exact for every fact
    loss: torch.Tensor | None  # −log p(a* | s, r), to full relative precision (None: not formed)
    scale: torch.Tensor  # 1 / Z, 0 for flagged facts: p(s, r, a) = X[s, a] YC[r, a] scale[s, r]
    Z_in: torch.Tensor  # Σ_{a ∈ A_r} X[s, a] YC[r, a]: the own block's share of Z = exp(lse − M)
    Z_off: torch.Tensor  # Σ_{a ∉ A_r} X[s, a] YC[r, a]: the other blocks' share (0 when R = 1)
    flagged: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (b, s, r) of the facts with Z < TINY
    spare: torch.Tensor  # a (B, S, |A|) buffer free for the caller


def _facts(a: torch.Tensor, v: torch.Tensor, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor,
           facts: torch.Tensor, with_loss: bool = True) -> _Facts:
    """Log-partition and loss of every fact of states (a, v) with tables x (B, S, |A|), y (B, R, |A|),
    c (B, |A|); the flagged facts are recomputed from their own logits (module docstring). ``x`` is
    overwritten by X. Without ``with_loss`` the loss is not formed (``loss`` is None): a gradient needs
    only the factors, Z and lse, which are then the same numbers bit for bit."""
    B, S, A = x.shape
    R = y.shape[-2]
    D = A // R
    own = torch.arange(R, device=x.device)
    if with_loss:
        # the D logits of the fact's own block, (B, S, R, D), summed in the order of the model's logits
        block = torch.add(x.view(B, S, R, D), y.view(B, R, R, D)[:, own, own][:, None])
        block += c.view(B, R, D)[:, None]
        within = (facts - own * D).expand(B, S, R)[..., None]
        target = block.gather(-1, within)[..., 0]
        # log Σ_{a ∈ A_r, a ≠ a*} exp ℓ(s, r, a) (−inf when D = 1), in place
        block.scatter_(-1, within, -math.inf)
        top = block.amax(-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, 0.0)
        others = torch.log(block.sub_(top).exp_().sum(-1)) + top[..., 0]
        spare = block.view(B, S, A)
    else:
        spare = torch.empty_like(x)

    m_x = x.amax(-1, keepdim=True)
    m_y = y.amax(-1, keepdim=True)
    m_c = c.amax(-1, keepdim=True)
    X = x.sub_(m_x).exp_()
    YC = torch.exp(y - m_y) * torch.exp(c - m_c)[..., None, :]
    M = m_x + m_y.mT + m_c[..., None]
    off_block = (torch.arange(A, device=x.device) // D)[None, :] != own[:, None]  # (R, |A|)
    Z_off = X @ (YC * off_block).mT
    Z_in = torch.einsum("bsrd,brd->bsr", X.view(B, S, R, D), YC.view(B, R, R, D)[:, own, own])
    Z = Z_in + Z_off
    bad = Z < TINY
    lse = torch.log(Z.clamp_min(TINY)) + M
    loss = (_softplus(torch.logaddexp(others - target, torch.log(Z_off) + (M - target))) if with_loss
            else None)
    flagged = bad.nonzero(as_tuple=True)
    for b, s, r in _chunks(flagged, A):
        logits = _row_logits(a, v, y, c, b, s, r)
        lse[b, s, r] = torch.logsumexp(logits, dim=-1)
        if with_loss:
            not_target = torch.arange(A, device=x.device) != facts[s, r, None]
            loss[b, s, r] = _softplus(_masked_logsumexp(logits, not_target) - target[b, s, r])
    scale = torch.where(bad, 0.0, 1.0 / Z.clamp_min(TINY))
    return _Facts(X, YC, lse, loss, scale, Z_in, Z_off, flagged, spare)


def _token_rows(g_s: torch.Tensor, g_r: torch.Tensor, n_noise: int, per_noise: float
                ) -> list[tuple[slice, torch.Tensor]]:
    """The sums Σ_f c_z(f) G_f of every token as (token rows, (B, rows, |A|)) pieces, from the subject rows
    g_s (B, S, |A|) and relation rows g_r (B, R, |A|): each noise token gets per_noise × the total over
    facts, EOS the total."""
    S, R = g_s.shape[-2], g_r.shape[-2]
    total = g_r.sum(-2, keepdim=True)
    noise = (per_noise * total).expand(-1, n_noise, -1)
    return [(slice(0, S), g_s), (slice(S, S + R), g_r), (slice(S + R, S + R + n_noise), noise),
            (slice(S + R + n_noise, S + R + n_noise + 1), total)]


def _subtract_targets(g_s: torch.Tensor, g_r: torch.Tensor, weights: torch.Tensor, facts: torch.Tensor
                      ) -> None:
    """g_s[s, a*(s, r)] −= w_sr and g_r[r, a*(s, r)] −= w_sr for every fact, in place."""
    B = g_s.shape[0]
    g_s.scatter_add_(-1, facts.expand(B, -1, -1), -weights.expand(B, -1, -1))
    g_r.scatter_add_(-1, facts.mT.expand(B, -1, -1), -weights.mT.expand(B, -1, -1))


def _split(out: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The score part (B, n) and the value part (B, n, |A|) of parameter vectors (B, P)."""
    return out[:, :n], out[:, n:].unflatten(-1, (n, -1))


@torch.no_grad()
def loss_and_gradient(model: ReducedModel, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L(θ), ∇L(θ)) of the population loss, θ of shape (P,) or a batch (B, P) (then L (B,), ∇L (B, P)).

    L = Σ_{s,r} w_sr (−log p(a* | s, r)), each term from the split of the module docstring. With
    G_f = w_f (p_f − e_{a*(f)}) and Q = W / Z the token sums are
        g_s = Σ_r G_sr = X ⊙ (Q·YC)[s] − Σ_r w_sr e_{a*(s,r)},
        g_r = Σ_s G_sr = YC ⊙ (Qᵀ·X)[r] − Σ_s w_sr e_{a*(s,r)},
        g_noise = per_noise Σ_r g_r,   g_EOS = Σ_r g_r,
    and ∂L/∂v_z = a_z g_z, ∂L/∂a_z = v_z · g_z. Flagged facts enter with Q = 0, and their w p, computed
    from their own logits, is added to g_s and g_r instead.
    Cost: three products of S×|A|×R per state; memory O((S + R)·|A| + S·R) per state.
    """
    return _loss_and_gradient(model, theta, with_loss=True)


@torch.no_grad()
def gradient(model: ReducedModel, theta: torch.Tensor) -> torch.Tensor:
    """∇L(θ) of :func:`loss_and_gradient` alone, the same numbers bit for bit, without forming the loss
    (the per-fact −log p(a*) over the own blocks: about a fifth of the work), as a flow's field needs."""
    return _loss_and_gradient(model, theta, with_loss=False)[1]


def _loss_and_gradient(model: ReducedModel, theta: torch.Tensor, with_loss: bool
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(L or None, ∇L) of :func:`loss_and_gradient`."""
    _check(model)
    batch = _as_batch(theta)
    a, v = model.token_parameters(batch)
    x, y, c = _tables(model, a, v)
    weights, facts = model.population_targets(theta.device)
    f = _facts(a, v, x, y, c, facts, with_loss)
    loss = (weights * f.loss).sum((-2, -1)) if with_loss else None
    Q = weights * f.scale
    g_s = torch.matmul(Q, f.YC, out=f.spare).mul_(f.X)
    g_r = f.YC * (Q.mT @ f.X)
    for b, s, r in _chunks(f.flagged, f.X.shape[-1]):
        wp = weights[s, r, None] * torch.exp(_row_logits(a, v, y, c, b, s, r) - f.lse[b, s, r, None])
        g_s.index_put_((b, s), wp, accumulate=True)
        g_r.index_put_((b, r), wp, accumulate=True)
    _subtract_targets(g_s, g_r, weights, facts)
    grad = torch.empty_like(batch)
    grad_a, grad_v = _split(grad, a.shape[-1])
    for rows, g in _token_rows(g_s, g_r, *noise_block(model.task, a.shape[-1])):
        torch.mul(a[:, rows, None], g, out=grad_v[:, rows])
        grad_a[:, rows] = torch.einsum("bka,bka->bk", v[:, rows], g)
    if theta.dim() == 1:
        return (loss[0] if with_loss else None), grad[0]
    return loss, grad


@torch.no_grad()
def hessian_vector_product(model: ReducedModel, theta: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """H(θ)·u of the population loss, θ and u of shape (P,) (or both (B, P): one product per row).

    Along u = (δa, δv) the logits move additively, δℓ(s, r, ·) = δx_s + δỹ_r with
    δx_s = δa_s v_s + a_s δv_s and δỹ_r = δa_r v_r + a_r δv_r + δc (δc the same for c), and
    δG_f = w_f (p_f ⊙ δℓ_f − p_f ρ_f) with ρ_f = p_f · δℓ_f. With Q = W / Z:
        ρ = [ (X ⊙ δx)·YCᵀ + X·(YC ⊙ δỹ)ᵀ ] / Z,
        δg_s = Σ_r δG_sr = (Q·YC) ⊙ (X ⊙ δx) + X ⊙ [ Q·(YC ⊙ δỹ) − (Q ⊙ ρ)·YC ],
        δg_r = Σ_s δG_sr = YC ⊙ [ Qᵀ·(X ⊙ δx) + (Qᵀ·X) ⊙ δỹ − (Q ⊙ ρ)ᵀ·X ],
    noise and EOS tokens as in the gradient; then (H u)_{v_z} = δa_z g_z + a_z δg_z and
    (H u)_{a_z} = δv_z · g_z + v_z · δg_z (g the gradient's token sums). Flagged facts are handled from
    their own logits as in :func:`loss_and_gradient`.
    Cost: about nine products of S×|A|×R; memory O((S + R)·|A| + S·R).
    """
    _check(model)
    if vector.shape != theta.shape:
        raise ValueError(f"u {tuple(vector.shape)} must have the shape of θ {tuple(theta.shape)}")
    batch, direction = _as_batch(theta), _as_batch(vector)
    a, v = model.token_parameters(batch)
    da, dv = model.token_parameters(direction)
    x, y, c = _tables(model, a, v)
    dx, dy = _directions(model, a, v, da, dv)
    weights, facts = model.population_targets(theta.device)
    f = _facts(a, v, x, y, c, facts, with_loss=False)
    X, YC = f.X, f.YC
    R = YC.shape[-2]
    flagged = [(b, s, r, dx[b, s]) for b, s, r in _chunks(f.flagged, X.shape[-1])]  # δx rows, kept
    Xdx = dx.mul_(X)
    Q = weights * f.scale
    YCdy = YC * dy
    rho = (Xdx @ YC.mT + X @ YCdy.mT) * f.scale
    Q_rho = Q * rho
    QY = torch.matmul(Q, YC, out=f.spare)
    dg_s = (torch.cat([Q, -Q_rho], -1) @ torch.cat([YCdy, YC], -2)).mul_(X).addcmul_(QY, Xdx)
    g_s = QY.mul_(X)
    QX = torch.cat([Q, Q_rho], -1).mT @ X  # [Qᵀ·X; (Q ⊙ ρ)ᵀ·X]
    g_r = YC * QX[:, :R]
    dg_r = YC * (Q.mT @ Xdx + QX[:, :R] * dy - QX[:, R:])
    for b, s, r, dx_rows in flagged:
        w = weights[s, r, None]
        p = torch.exp(_row_logits(a, v, y, c, b, s, r) - f.lse[b, s, r, None])
        pd = p * (dx_rows + dy[b, r])
        dG = w * (pd - p * pd.sum(-1, keepdim=True))
        g_s.index_put_((b, s), w * p, accumulate=True)
        g_r.index_put_((b, r), w * p, accumulate=True)
        dg_s.index_put_((b, s), dG, accumulate=True)
        dg_r.index_put_((b, r), dG, accumulate=True)
    _subtract_targets(g_s, g_r, weights, facts)
    hv = torch.empty_like(batch)
    hv_a, hv_v = _split(hv, a.shape[-1])
    noise = noise_block(model.task, a.shape[-1])
    pieces = zip(_token_rows(g_s, g_r, *noise), _token_rows(dg_s, dg_r, *noise), strict=True)
    for (rows, g), (_, dg) in pieces:
        torch.mul(da[:, rows, None], g, out=hv_v[:, rows]).addcmul_(a[:, rows, None], dg)
        hv_a[:, rows] = (torch.einsum("bka,bka->bk", dv[:, rows], g)
                         + torch.einsum("bka,bka->bk", v[:, rows], dg))
    return hv[0] if theta.dim() == 1 else hv


def fact_record(model: ReducedModel, thetas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-fact record of states ``thetas`` (K, P): the arrays of ``dynamics.trajectory.fact_metrics``,
    each (K, S, R), without the S×R×|A| table (except the bounded chunks of the argmax).

    * ``fact_loss`` = −log p(a*) as in :func:`loss_and_gradient`, ``p_correct`` = exp(−fact_loss);
    * ``relation_loss`` = −log Σ_{a ∈ A_r} p(s, r, a) = softplus(log Z_off + M − logsumexp_{A_r} ℓ),
      ``p_relation`` = exp(−relation_loss);
    * ``subject_loss`` = −log Σ_{r'} p(s, r, a*(s, r')) = softplus(log S_out − log S_in) with
      S_in = (X ⊙ U)·YCᵀ and S_out = (X ⊙ (1 − U))·YCᵀ, U the S×|A| indicator of each subject's answers
      {a*(s, r')} (two products, neither with cancellation), ``p_subject`` = exp(−subject_loss);
    * facts flagged as in :func:`loss_and_gradient`, or whose Z_off, S_in or S_out (where not empty) is
      below TINY, get all three losses from their own |A| logits instead;
    * ``argmax_class``: the ``dynamics.trajectory.FactClass`` of argmax_a ℓ (RECALLED if it is a*,
      HALLUCINATING if another answer of A_r, UNINFORMED otherwise); the argmax is taken on
      logits (x_s + y_r) + c formed with the operations of the model's ``population_logits`` for one state
      (identical numbers, hence the same first-index tie breaking): only the own block's logits where a
      bound puts the argmax there (:func:`~dynamics.models.argmax.argmax_answers`), else ARGMAX_ELEMENTS
      at a time.
    """
    _check(model)
    if thetas.dim() != 2:
        raise ValueError(f"thetas must have shape (K, P), got {tuple(thetas.shape)}")
    _as_batch(thetas)
    task = model.task
    per_state = (task.S + task.R) * task.num_answers + task.S * task.R
    step = max(1, RECORD_ELEMENTS // per_state)
    record: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for first in range(0, thetas.shape[0], step):
            _record_block(model, thetas[first:first + step], record, first, thetas.shape[0])
    return record


def _record_block(model: ReducedModel, block: torch.Tensor, record: dict[str, torch.Tensor], first: int,
                  total: int) -> None:
    """:func:`fact_record` of a few states (B, P), written into ``record``'s (total, S, R) arrays (made at
    the first value of each) from state ``first`` on; the subjects RECORD_PIECE_ELEMENTS table entries at a
    time: a subject's record needs its own row x_s of the tables and nothing of the other subjects'."""
    task = model.task
    S, R, A = task.S, task.R, task.num_answers
    B = block.shape[0]
    a, v = model.token_parameters(block)
    y, c = _context_tables(model, a, v)
    # one state at a time, its tables exactly as population_logits evaluates them (for the argmax)
    alone = [_context_tables(model, a[k], v[k]) for k in range(B)]
    _, facts = model.population_targets(block.device)
    rows = max(1, RECORD_PIECE_ELEMENTS // (B * (A + R)))
    states = slice(first, first + B)
    for subject in range(0, S, rows):
        piece = slice(subject, min(S, subject + rows))
        pieces = _record_subjects(model, a[:, piece], v[:, piece], y, c, alone, facts[piece])
        for name, value in pieces.items():
            if name not in record:
                record[name] = torch.empty((total, S, R), dtype=value.dtype, device=value.device)
            record[name][states, piece] = value


def _record_subjects(model: ReducedModel, a_s: torch.Tensor, v_s: torch.Tensor, y: torch.Tensor,
                     c: torch.Tensor, alone: list[tuple[torch.Tensor, torch.Tensor]], facts: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The record of the facts of k subjects (scores a_s (B, k), values v_s (B, k, |A|), answers ``facts``
    (k, R)) of B states with tables y and c; ``alone``: each state's (y, c) as population_logits forms
    them."""
    task = model.task
    D, A = task.D, task.num_answers
    R = y.shape[-2]
    B, S = a_s.shape
    device = a_s.device
    x = _subject_table(a_s, v_s)
    # the argmax first, on x itself (one state at a time, y and c as population_logits forms them): _facts
    # overwrites x
    top = torch.stack([argmax_answers(x[k], *alone[k], ARGMAX_ELEMENTS) for k in range(B)])
    f = _facts(a_s, v_s, x, y, c, facts)
    fact_loss = f.loss
    relation_loss = _softplus(torch.log(f.Z_off) - torch.log(f.Z_in))

    subject = torch.zeros(S, A, dtype=torch.bool, device=device)
    subject.scatter_(-1, facts, True)
    X_in = f.X * subject
    s_in = X_in @ f.YC.mT
    s_out = f.X.sub_(X_in) @ f.YC.mT  # X ⊙ (1 − U), exactly; X is not used after this
    subject_loss = _softplus(torch.log(s_out) - torch.log(s_in))

    redo = (s_in < TINY) | (f.Z_in < TINY)
    redo[f.flagged] = True
    if R > 1:
        redo |= f.Z_off < TINY
    if D > 1:
        redo |= s_out < TINY
    answer = torch.arange(A, device=device)
    for b, s, r in _chunks(redo.nonzero(as_tuple=True), A):
        logits = _row_logits(a_s, v_s, y, c, b, s, r)
        target = facts[s, r]
        in_block = answer // D == r[:, None]
        own_answers = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, facts[s], True)
        target_logit = logits.gather(-1, target[:, None])[:, 0]
        fact_loss[b, s, r] = _softplus(_masked_logsumexp(logits, answer != target[:, None]) - target_logit)
        relation_loss[b, s, r] = _softplus(_masked_logsumexp(logits, ~in_block)
                                           - _masked_logsumexp(logits, in_block))
        subject_loss[b, s, r] = _softplus(_masked_logsumexp(logits, ~own_answers)
                                          - _masked_logsumexp(logits, own_answers))

    own = torch.arange(R, device=device)
    argmax_class = torch.where(top == facts, FactClass.RECALLED,
                               torch.where(top // D == own, FactClass.HALLUCINATING, FactClass.UNINFORMED))
    return {"fact_loss": fact_loss, "p_correct": torch.exp(-fact_loss),
            "p_relation": torch.exp(-relation_loss), "p_subject": torch.exp(-subject_loss),
            "relation_loss": relation_loss, "subject_loss": subject_loss, "argmax_class": argmax_class}


@dataclass
class CurvatureBlocks:
    """The parts of the Hessian H(θ) of the population loss that make the flow stiff, in closed form, for a
    block preconditioner of the Newton systems (I + γ P H) z = r of an implicit solver
    (:func:`curvature_blocks`).

    Along a token's values v_z the logits are linear, so exactly
    H_{v_z v_z} = κ_z² Σ_f c_z(f)² w_f (diag p_f − p_f p_fᵀ) (κ_z = a_z, or per_noise · a_z for a noise
    token). The approximation keeps, for every fact f = (s, r), only the part of p_f p_fᵀ inside the fact's
    own relation block A_r (q_f = p_f restricted to A_r): a subject's block A_r is diag(d_s) − w_f q_f q_fᵀ
    (diagonal plus rank one), and the relation token r, the noise token and EOS, which move the logits of
    A_r together, form one group per relation, coupled by κκᵀ ⊗ (diag(d_r) − Σ_s w_sr q_sr q_srᵀ)
    (docs/stiff-flows.md: its R(D − 1) stiff modes). A subject's score a_s joins its values' block
    (the coupling H_{a_s v_s}, which carries the subject's growing mode); the other scores and every
    coupling between tokens outside a group are left out (identity and nothing)."""

    a: torch.Tensor  # (n,) token scores
    d: torch.Tensor  # (n, |A|) Σ_f c_z(f)² w_f p_f: the diagonal of H_{v_z v_z} / κ_z²
    q: torch.Tensor  # (S, R, D) own-block probabilities of every fact
    w: torch.Tensor  # (S, R) fact weights (0 for flagged facts)
    G: torch.Tensor  # (R, D, D) Σ_s w_sr q_sr q_srᵀ
    v_s: torch.Tensor  # (S, |A|) the subjects' values
    targets: torch.Tensor  # (S, |A|) Σ_r w_sr e_{a*(s, r)}
    per_noise: float
    n_noise: int
    # the γ-free pieces for the last metric asked: cvode refactors for every new γ on the same blocks
    _pieces: tuple[torch.Tensor, _ScaledBlocks] | None = field(default=None, repr=False, compare=False)

    def _scaled(self, scale: torch.Tensor) -> _ScaledBlocks:
        """The γ-free pieces of P H̃ (P = ``scale``), shared by :meth:`factor` and :meth:`product`, computed
        once per metric."""
        if self._pieces is None or self._pieces[0] is not scale:
            self._pieces = (scale, self._compute_scaled(scale))
        return self._pieces[1]

    def _compute_scaled(self, scale: torch.Tensor) -> _ScaledBlocks:
        S, R, D = self.q.shape
        n, A = self.d.shape
        a = self.a
        kappa = a.clone()
        kappa[S + R:-1] *= self.per_noise
        p_v = scale[n:].view(n, A)
        # every value entry's diagonal P κ² d (the whole of P H̃ there for the entries outside any group)
        diagonal = p_v * (kappa**2)[:, None] * self.d
        # subjects: per fact block, P κ_s² (diag d − w q qᵀ), P taken constant inside the block
        beta = p_v[:S].view(S, R, D)[..., 0] * (kappa[:S]**2)[:, None] * self.w
        # a subject's score and values together: H_{a_s v_s} = g_s + a_s B_s v_s (g_s its gradient sum),
        # H_{a_s a_s} = v_sᵀ B_s v_s, B_s = diag(d_s) − Σ_r w_sr q_sr q_srᵀ
        d_s, v_s = self.d[:S], self.v_s
        qv = (self.q * v_s.reshape(S, R, D)).sum(-1)
        own_part = ((self.w * qv)[..., None] * self.q).reshape(S, A)
        cross = d_s - self.targets + a[:S, None] * (d_s * v_s - own_part)
        curvature = (d_s * v_s**2).sum(-1) - (self.w * qv**2).sum(-1)
        # groups: relation r's own block, then the shared tokens' block A_r (noise tied: one token)
        shared = tuple(range(S + R, n)) if self.n_noise <= 1 else (n - 1,)
        own = torch.arange(R, device=a.device)
        k = 1 + len(shared)
        members = torch.stack([kappa[S:S + R], *[kappa[z].expand(R) for z in shared]], -1)  # (R, k)
        weights = torch.stack([p_v[S:S + R].view(R, R, D)[own, own],
                               *[p_v[z].view(R, D) for z in shared]], 1)  # (R, k, D): P of each entry
        d_rel = self.d[S:S + R].view(R, R, D)[own, own]  # (R, D)
        block = torch.diag_embed(d_rel) - self.G  # (R, D, D)
        H = (members[:, :, None, None, None] * members[:, None, :, None, None]
             * block[:, None, None]).permute(0, 1, 3, 2, 4).reshape(R, k * D, k * D)
        # shared tokens also see the other relations' facts in A_r: their diagonal
        extra = torch.stack([torch.zeros(R, D, dtype=a.dtype, device=a.device),
                             *[(kappa[z]**2) * (self.d[z].view(R, D) - d_rel) for z in shared]], 1)
        H = H + torch.diag_embed(extra.reshape(R, k * D))
        groups = weights.reshape(R, k * D, 1) * H
        p_cross = p_v[:S] * cross
        return _ScaledBlocks(diagonal, beta, cross, curvature, scale[:S], p_cross, groups, shared, own)

    def factor(self, gamma: float, scale: torch.Tensor) -> Callable[..., torch.Tensor]:
        """z = M⁻¹ r for M = I + γ P H̃ (H̃ the blocks above, P = ``scale`` the flow's diagonal metric), as a
        function of r (P,) that writes z into ``out`` when given (a tensor of r's shape, not r); the R small
        group matrices are factorised here, once per γ, and everything else that does not depend on r."""
        S, R, D = self.q.shape
        n, A = self.d.shape
        parts = self._scaled(scale)
        diagonal = 1.0 + gamma * parts.diagonal
        beta = gamma * parts.beta
        sub_diag = diagonal[:S].view(S, R, D)
        u = self.q / sub_diag
        denominator = 1.0 - beta * (self.q * u).sum(-1)

        def subjects(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            """M_vv⁻¹ x on the subjects' values into ``out``, x (S, |A|): per fact block, Sherman–Morrison."""
            y = torch.div(x.view(S, R, D), sub_diag, out=out.view(S, R, D))
            return y.addcmul_(u, (beta * (self.q * y).sum(-1) / denominator)[..., None]).view(S, A)

        # the subject's score by its Schur complement
        cross, p_a = parts.cross, parts.p_a
        moved = subjects(parts.p_cross, torch.empty_like(cross))
        schur = 1.0 + gamma * p_a * parts.curvature - gamma**2 * p_a * (cross * moved).sum(-1)
        coupled = schur.abs() > SCHUR_FLOOR  # else the score is left alone (identity), like the others
        schur = torch.where(coupled, schur, 1.0)
        moved.masked_fill_(~coupled[:, None], 0.0)  # in place, and cross masked in its sums below: the
        gamma_p_a = gamma * p_a                      # factors hold no second S×|A| table
        groups = parts.groups
        M = torch.eye(groups.shape[-1], dtype=groups.dtype, device=groups.device) + gamma * groups
        lu = torch.linalg.lu_factor(M)

        def solve(r: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            z = torch.empty_like(r) if out is None else out
            z[S:n] = r[S:n]  # the other scores: identity
            rv, zv = r[n:].view(n, A), z[n:].view(n, A)
            torch.div(rv[S:], diagonal[S:], out=zv[S:])
            y = subjects(rv[:S], zv[:S])
            torch.div(r[:S] - gamma_p_a * torch.where(coupled, (cross * y).sum(-1), 0.0), schur, out=z[:S])
            y.addcmul_(moved, gamma * z[:S, None], value=-1.0)
            x = torch.linalg.lu_solve(*lu, parts.gather(rv)).view(R, -1, D)
            parts.scatter(zv, x)
            return z

        return solve

    def product(self, scale: torch.Tensor) -> Callable[..., torch.Tensor]:
        """x ↦ P H̃ x (P = ``scale``), the blocks' own approximation of −J = P H, written into ``out`` when
        given (a tensor of x's shape, not x): the pieces are computed here, once, so that each product costs
        O(P) plus R small (k·D)² matrix products. With it as cvode's J·v (``flow.jacobian=blocks``) the
        Newton matrix I − γJ̃ is the one :meth:`factor` inverts."""
        S, R, D = self.q.shape
        n, A = self.d.shape
        parts = self._scaled(scale)

        def apply(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            z = torch.empty_like(x) if out is None else out
            z[S:n] = 0.0  # the scores outside the subjects' blocks: nothing
            xv, zv = x[n:].view(n, A), z[n:].view(n, A)
            torch.mul(parts.diagonal, xv, out=zv)
            q_x = (self.q * xv[:S].view(S, R, D)).sum(-1)
            zv[:S].view(S, R, D).addcmul_(self.q, (parts.beta * q_x)[..., None], value=-1.0)
            torch.mul(parts.p_a, parts.curvature * x[:S] + (parts.cross * xv[:S]).sum(-1), out=z[:S])
            zv[:S].addcmul_(parts.p_cross, x[:S, None])
            parts.scatter(zv, (parts.groups @ parts.gather(xv)).view(R, -1, D))
            return z

        return apply


@dataclass(frozen=True)
class _ScaledBlocks:
    """The γ-free pieces of P H̃ for one state and metric P (:meth:`CurvatureBlocks._scaled`)."""

    diagonal: torch.Tensor  # (n, |A|) P κ² d: the values' diagonal
    beta: torch.Tensor  # (S, R) P κ_s² w: the rank-one weight of each subject's fact block
    cross: torch.Tensor  # (S, |A|) H_{a_s v_s}
    curvature: torch.Tensor  # (S,) H_{a_s a_s}
    p_a: torch.Tensor  # (S,) P of the subjects' scores
    p_cross: torch.Tensor  # (S, |A|) P H_{v_s a_s}: the subjects' values' P times ``cross``
    groups: torch.Tensor  # (R, k·D, k·D) P H̃ of each relation's group
    shared: tuple[int, ...]  # the tokens that join every relation's group (noise tied, EOS)
    own: torch.Tensor  # (R,) arange: relation r's own block A_r

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """The group entries of the value table (n, |A|) as (R, k·D, 1)."""
        R, D = self.groups.shape[0], self.groups.shape[-1] // (1 + len(self.shared))
        S = self.beta.shape[0]
        return torch.stack([values[S:S + R].view(R, R, D)[self.own, self.own],
                            *[values[z].view(R, D) for z in self.shared]], 1).reshape(R, -1, 1)

    def scatter(self, values: torch.Tensor, x: torch.Tensor) -> None:
        """Write the group entries x (R, k, D) into the value table (n, |A|) in place."""
        R, _, D = x.shape
        S = self.beta.shape[0]
        values[S:S + R].view(R, R, D)[self.own, self.own] = x[:, 0]
        for i, token in enumerate(self.shared):
            values[token].view(R, D).copy_(x[:, 1 + i])


@torch.no_grad()
def curvature_blocks(model: ReducedModel, theta: torch.Tensor) -> CurvatureBlocks:
    """:class:`CurvatureBlocks` of the population loss at θ (P,): one factorised pass (about a gradient's
    work: two products of S×|A|×R) and the S·R·D own-block probabilities."""
    _check(model)
    task = model.task
    S, R, D = task.S, task.R, task.D
    batch = _as_batch(theta)
    a, v = model.token_parameters(batch)
    x, y, c = _tables(model, a, v)
    weights, facts = model.population_targets(theta.device)
    f = _facts(a, v, x, y, c, facts, with_loss=False)
    X, YC = f.X[0], f.YC[0]
    Q = weights * f.scale[0]
    n_noise, per_noise = noise_block(task, a.shape[-1])
    d_s = X * (Q @ YC)
    d_r = YC * (Q.mT @ X)
    total = d_r.sum(0)
    d = torch.cat([d_s, d_r, total.expand(n_noise, -1), total[None]])
    own = torch.arange(R, device=theta.device)
    q = X.view(S, R, D) * YC.view(R, R, D)[own, own][None] * f.scale[0][..., None]
    w = torch.where(f.scale[0] > 0, weights, 0.0)
    G = torch.einsum("sr,srd,sre->rde", w, q, q)
    targets = torch.zeros_like(d_s).scatter_add_(-1, facts, weights)
    return CurvatureBlocks(a[0], d, q, w, G, v[0, :S], targets, per_noise, n_noise)
