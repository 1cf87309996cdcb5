"""Token arithmetic shared by the attention models (docs/design.md §3.1).

Every attention model reduces to per-token attention scores ``a_z`` and value vectors ``v_z ∈ R^|A|`` read at
EOS:

    linear:   logits = Σ_z c_z a_z v_z
    softmax:  logits = Σ_z c_z exp(a_z) v_z / Σ_z c_z exp(a_z)

where ``c_z`` counts token z in the sequence (positions do not matter). The *population* logits of fact
(s, r) use the expected counts: 1 for s, r and EOS, ``(T-3)/N`` for each noise token. They are exact
whenever all noise tokens carry equal parameters, which the flow preserves once it holds at t = 0.
"""

from __future__ import annotations

import torch

from ..task import FactTask


def noise_block(task: FactTask, num_tokens: int) -> tuple[int, float]:
    """Tokens in the noise block of a token axis of ``num_tokens`` (subjects, relations, noise, EOS) and
    the expected count of each in one sequence, (T − 3) / n_noise."""
    n_noise = num_tokens - task.S - task.R - 1
    return n_noise, (task.T - 3) / n_noise if n_noise else 0.0


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
    _, per_noise = noise_block(task, a.shape[-1])
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
    _, per_noise = noise_block(task, a.shape[0])
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
