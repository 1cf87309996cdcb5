"""Richardson extrapolation in ε (analysis/richardson.py) on functions with a known limit."""

import math

import pytest

from analysis.richardson import ladder_limit, triple_limit

LADDER = [1e-4, 3e-5, 1e-5, 3e-6, 1e-6]


@pytest.mark.parametrize("k", [0.5, 1.0, 1.7])
def test_a_triple_recovers_limit_and_order_of_a_pure_power(k):
    eps = (1e-4, 3e-5, 1e-5)
    value, order = triple_limit(eps, tuple(2.0 + 3e2 * e ** k for e in eps))
    assert value == pytest.approx(2.0, rel=1e-9)
    assert order == pytest.approx(k, rel=1e-7)


def test_a_ladder_with_a_higher_order_term_has_an_error_that_bounds_the_true_one():
    # T = 5 − 40 ε^0.8 + 1e4 ε^1.6: each triple's fit is off by the second term; the last two differ by
    # more than the last one is off
    def f(e):
        return 5.0 - 40 * e ** 0.8 + 1e4 * e ** 1.6

    limit = ladder_limit(LADDER, [f(e) for e in LADDER])
    assert abs(limit.value - 5.0) < limit.error < 1e-3
    assert limit.order == pytest.approx(0.8, abs=0.05)
    assert limit.last == pytest.approx(f(1e-6), rel=1e-12)
    assert limit.decade == pytest.approx(abs(f(1e-6) - f(1e-5)) / f(1e-6), rel=1e-9)


def test_converged_and_within_read_the_last_decade_and_the_error():
    flat = ladder_limit(LADDER, [1.0 + 0.1 * e for e in LADDER])
    assert flat.converged and flat.within and flat.reason == ""
    steep = ladder_limit(LADDER, [1.0 + 2e4 * e for e in LADDER])  # 20% change from 1e-5 to 1e-6 ...
    assert not steep.converged and steep.decade > 0.1
    assert steep.within and steep.value == pytest.approx(1.0, rel=1e-9)  # ... but an exact extrapolation


def test_unordered_input_and_missing_points():
    shuffled = [3e-6, 1e-4, 1e-5, 3e-5]
    limit = ladder_limit(shuffled + [1e-6], [2.0 + e for e in shuffled] + [math.nan])  # 1e-6 did not reach T
    assert limit.value == pytest.approx(2.0, rel=1e-9) and math.isfinite(limit.error)
    assert limit.last == pytest.approx(2.0 + 3e-6) and limit.decade == pytest.approx(2.7e-5 / limit.last)
    no_decade = ladder_limit([1e-4, 3e-5, 1e-5, 3e-6], [2.0 + e for e in (1e-4, 3e-5, 1e-5)] + [math.nan])
    assert math.isfinite(no_decade.decade)  # 1e-5 is the smallest finite one, 1e-4 its decade
    assert math.isnan(ladder_limit([2e-5, 1e-5, 3e-6], [1.0, 1.0 - 1e-3, 1.0 - 2e-3]).decade)
    few = ladder_limit([1e-4, 1e-5], [1.0, 1.1])
    assert math.isnan(few.value) and "needs 3" in few.reason


def test_a_ladder_not_monotone_in_eps_gives_its_last_value_with_the_spread_as_error():
    limit = ladder_limit([1e-4, 1e-5, 1e-6], [1.0, 1.2, 1.1])
    assert limit.value == 1.1 and limit.error == pytest.approx(0.1) and "not monotone" in limit.reason
    assert math.isnan(limit.order) and not limit.within
    flat = ladder_limit([1e-4, 1e-5, 1e-6], [2.0, 2.001, 2.0005])  # converged, only not monotone
    assert flat.within and flat.value == 2.0005 and flat.error == pytest.approx(5e-4)
