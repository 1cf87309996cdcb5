"""The most likely answer of every fact from the additive tables of the logits, without the S×R×|A| table
where a bound settles it.

The logits of fact (s, r) are ℓ(s, r, ·) = (x_s + y_r) + c (:func:`dynamics.models.factorised._tables`).
Their argmax over all |A| answers is what the record's ``argmax_class`` needs; forming the whole table costs
S·R·|A| additions and comparisons per state (40 million at 10^5 facts, several gradients' work). But the
answers fall in R blocks A_r' of D, and an answer of block r' ≠ r is at most

    x_max(s, r') + yc_max(r, r') ≤ max_r' x_max(s, r') + max_{r' ≠ r} yc_max(r, r'),

x_max(s, r') = max_{a ∈ A_r'} x_s(a), yc_max(r, r') = max_{a ∈ A_r'} (y_r + c)(a). Where that bound, with a
margin for rounding, is below the best logit of the fact's own block A_r, the argmax lies in A_r and only
the S·R·D own-block logits are formed; the facts it does not settle get their full row. Both are computed
with the same floating-point operations as the full table, so the argmax is the same index, ties included
(the first). Past the first instants of a flow the bound settles every fact.
"""

from __future__ import annotations

import torch

# Rounding margin, in units of eps·(max|x| + max|y| + max|c|): each logit and the bound are within a few
# roundings of their exact values.
ROUNDING_MARGIN = 8.0
# Beyond this fraction of facts left unsettled, the whole table is formed instead, chunk by chunk.
DENSE_FRACTION = 0.5


def argmax_answers(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    """argmax_a of ℓ(s, r, a) = (x_s(a) + y_r(a)) + c(a) for every fact (s, r): x (S, |A|), y (R, |A|),
    c (|A|,) of one state, |A| = R·D answers in R blocks; (S, R) int64, the first index on ties, exactly as
    ``((x[:, None] + y[None]) + c).argmax(-1)``. At most ``chunk_elements`` logits are formed at once."""
    S, A = x.shape
    R = y.shape[0]
    D = A // R
    own = torch.arange(R, device=x.device)
    own_logits = torch.add(x.view(S, R, D), y.view(R, R, D)[own, own]).add_(c.view(R, D))  # (S, R, D)
    best, index = own_logits.max(-1)
    top = index + own * D
    yc_max = (y + c).view(R, R, D).amax(-1)  # (R, R'): the max of y_r + c over each block r'
    yc_max[own, own] = -torch.inf
    bound = x.view(S, R, D).amax(-1).amax(-1)[:, None] + yc_max.amax(-1)[None, :]  # (S, R)
    scale = x.abs().amax() + y.abs().amax() + c.abs().amax()
    margin = ROUNDING_MARGIN * torch.finfo(x.dtype).eps * scale
    unsettled = ~(bound + margin < best)  # NaN or inf: unsettled
    count = int(unsettled.sum())
    if count > DENSE_FRACTION * S * R:
        return _dense(x, y, c, chunk_elements)
    if count:
        s, r = unsettled.nonzero(as_tuple=True)
        top[s, r] = _rows(x, y, c, s, r, chunk_elements)
    return top


def _rows(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, s: torch.Tensor, r: torch.Tensor,
          chunk_elements: int) -> torch.Tensor:
    """The argmax of the whole rows of the facts (s, r) (k,), ``chunk_elements`` logits at a time."""
    step = max(1, chunk_elements // x.shape[1])
    return torch.cat([torch.add(x[s[i:i + step]], y[r[i:i + step]]).add_(c).argmax(-1)
                      for i in range(0, len(s), step)])


def _dense(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    """The argmax of the whole table, ``chunk_elements`` logits at a time."""
    S, A = x.shape
    R = y.shape[0]
    top = torch.empty(S, R, dtype=torch.int64, device=x.device)
    rows = min(S, max(1, chunk_elements // (R * A)))
    buffer = torch.empty(rows, R, A, dtype=x.dtype, device=x.device)  # reused for (x_s + y_r) + c
    for start in range(0, S, rows):
        subjects = slice(start, min(start + rows, S))
        chunk = buffer[:subjects.stop - start]
        torch.add(x[subjects, None, :], y[None, :, :], out=chunk).add_(c)
        top[subjects] = chunk.argmax(-1)
    return top
