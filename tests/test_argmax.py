"""The record's argmax from the additive tables (dynamics.models.argmax): the index of the whole table's
argmax, ties and roundings included, with whole rows formed only for the facts a bound leaves open."""

from __future__ import annotations

import pytest
import torch

from dynamics.models import argmax

S, R, D = 7, 4, 3
A = R * D


def _dense_argmax(x, y, c):
    return ((x[:, None, :] + y[None, :, :]) + c).argmax(-1)


def _tables(seed: int, own_lift: float):
    """Random tables whose own-block logits are lifted by ``own_lift`` (0: no structure)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(S, A, generator=gen, dtype=torch.float64)
    y = torch.randn(R, A, generator=gen, dtype=torch.float64)
    c = torch.randn(A, generator=gen, dtype=torch.float64)
    y.view(R, R, D)[torch.arange(R), torch.arange(R)] += own_lift
    return x, y, c


@pytest.fixture
def formed(monkeypatch):
    """What was formed whole: the rows of open facts, and whole tables."""
    counts = {"rows": 0, "tables": 0}
    rows, dense = argmax._rows, argmax._dense

    def counted_rows(x, y, c, s, r, chunk):
        counts["rows"] += len(s)
        return rows(x, y, c, s, r, chunk)

    def counted_dense(x, y, c, chunk):
        counts["tables"] += 1
        return dense(x, y, c, chunk)
    monkeypatch.setattr(argmax, "_rows", counted_rows)
    monkeypatch.setattr(argmax, "_dense", counted_dense)
    return counts


@pytest.mark.parametrize("lift", [0.0, 1.0, 50.0])
@pytest.mark.parametrize("chunk", [1, 2**22])
def test_same_index_as_the_whole_table(lift, chunk):
    for seed in range(5):
        x, y, c = _tables(seed, lift)
        assert torch.equal(argmax.argmax_answers(x, y, c, chunk), _dense_argmax(x, y, c))


def test_settled_facts_form_no_whole_row(formed):
    """Own blocks far above the rest: the bound settles every fact, no row of |A| logits is formed."""
    x, y, c = _tables(0, 50.0)
    top = argmax.argmax_answers(x, y, c, 2**22)
    assert torch.equal(top, _dense_argmax(x, y, c))
    assert torch.equal(top // D, torch.arange(R).expand(S, R))
    assert formed == {"rows": 0, "tables": 0}


@pytest.mark.parametrize("ulps", [0, 1])
def test_a_near_tie_with_another_block_gets_its_whole_row(formed, ulps):
    """An answer of another block that ties the own block's best (and comes first: it wins the tie) or
    passes it by one ulp is within the rounding margin: that fact gets its whole row, the rest stay
    settled."""
    x, y, c = _tables(1, 50.0)
    logits = (x[:, None, :] + y[None, :, :]) + c
    x[0, 0] += logits[0, 2, 2 * D:3 * D].max() - logits[0, 2, 0]  # answer 0 (block 0) meets (0, 2)'s best
    for _ in range(ulps):
        x[0, 0] = torch.nextafter(x[0, 0], torch.tensor(torch.inf, dtype=torch.float64))
    top = argmax.argmax_answers(x, y, c, 2**22)
    assert torch.equal(top, _dense_argmax(x, y, c))
    assert 1 <= formed["rows"] < S * R // 2 and formed["tables"] == 0


def test_a_mostly_open_table_is_formed_whole(formed):
    """All logits equal (the constant initial state): the first index everywhere, by the whole table."""
    x, y, c = (torch.zeros(S, A, dtype=torch.float64), torch.zeros(R, A, dtype=torch.float64),
               torch.zeros(A, dtype=torch.float64))
    assert torch.equal(argmax.argmax_answers(x, y, c, 5), torch.zeros(S, R, dtype=torch.int64))
    assert formed == {"rows": 0, "tables": 1}


def test_non_finite_logits_follow_the_whole_table():
    x, y, c = _tables(2, 50.0)
    x[3, 5] = torch.nan
    y[1, 0] = torch.inf
    assert torch.equal(argmax.argmax_answers(x, y, c, 2**22), _dense_argmax(x, y, c))
