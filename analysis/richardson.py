"""Richardson extrapolation of a quantity measured at several ε to its ε → 0 limit.

A flow regularised by ε (the sign and spectral geometries' ``flow.geometry_eps``) gives learning times
T(ε) = T0 + c ε^k + (higher order). Three ε determine (T0, c, k); a ladder of n ε gives n − 2 such
extrapolations, and the difference between the last two is the measured error of the last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq

K_RANGE = (1e-3, 8.0)  # the orders k a triple may give; outside it (or T not monotone) there is no fit
CONVERGED = 0.02  # "at its limit": T moves by less than this fraction from 10 ε to ε


@dataclass(frozen=True)
class Limit:
    """The ε → 0 limit of one ladder: ``value`` T0 from the last (smallest-ε) triple, its ``order`` k,
    ``error`` |T0(last triple) − T0(the triple before)| (NaN with one triple), ``decade``: the relative change
    |T(10 ε) − T(ε)| / T(ε) at the smallest ε when 10 ε is on the ladder (else NaN), ``last``: T at the
    smallest ε, and ``reason``: why there is no fit ('' when there is one; where T is not monotone over
    the last three ε, ``value`` is ``last`` and ``error`` their spread)."""

    value: float
    order: float
    error: float
    decade: float
    last: float
    reason: str = ""

    @property
    def converged(self) -> bool:
        """T moves by less than :data:`CONVERGED` over the last decade of ε."""
        return self.decade < CONVERGED

    @property
    def within(self) -> bool:
        """Converged, or extrapolated with an error below :data:`CONVERGED` of the limit."""
        return self.converged or (math.isfinite(self.error) and self.error < CONVERGED * abs(self.value))


def triple_limit(eps: tuple[float, float, float], values: tuple[float, float, float]) -> tuple[float, float]:
    """(T0, k) of T(ε) = T0 + c ε^k through three points ε1 > ε2 > ε3: k solves
    (ε1^k − ε2^k)/(ε2^k − ε3^k) = (T1 − T2)/(T2 − T3) (the left side grows with k), then
    c = (T2 − T3)/(ε2^k − ε3^k), T0 = T3 − c ε3^k. (NaN, NaN) when T is not monotone in ε or k falls
    outside :data:`K_RANGE`."""
    (e1, e2, e3), (t1, t2, t3) = eps, values
    if not (e1 > e2 > e3 > 0) or not all(map(math.isfinite, values)):
        return math.nan, math.nan
    if t2 == t3:
        return (t3, math.inf) if t1 == t2 else (math.nan, math.nan)
    rho = (t1 - t2) / (t2 - t3)

    def gap(k: float) -> float:
        return (e1 ** k - e2 ** k) / (e2 ** k - e3 ** k) - rho

    lo, hi = K_RANGE
    if rho <= 0 or gap(lo) > 0 or gap(hi) < 0:
        return math.nan, math.nan
    k = brentq(gap, lo, hi, xtol=1e-12)
    c = (t2 - t3) / (e2 ** k - e3 ** k)
    return t3 - c * e3 ** k, k


def ladder_limit(eps: list[float], values: list[float]) -> Limit:
    """The :class:`Limit` of T measured at ``eps`` (any order; NaN values, e.g. a run that stopped before
    T, are left out): extrapolations from the last two consecutive triples of the finite points sorted by
    decreasing ε (T at the smallest ε and the last three's spread where T is not monotone there)."""
    points = sorted(((e, v) for e, v in zip(eps, values, strict=True) if math.isfinite(v)), reverse=True)
    if not points:
        return Limit(math.nan, math.nan, math.nan, math.nan, math.nan, "no finite T")
    by_eps = dict(points)
    smallest, last = points[-1]
    ten = next((v for e, v in points if math.isclose(e, 10 * smallest, rel_tol=1e-6)), math.nan)
    decade = abs(ten - last) / abs(last) if math.isfinite(ten) else math.nan
    fits = [triple_limit(tuple(e for e, _ in points[i:i + 3]), tuple(by_eps[e] for e, _ in points[i:i + 3]))
            for i in range(len(points) - 2)]
    if not fits:
        return Limit(math.nan, math.nan, math.nan, decade, last, f"{len(points)} finite T, a fit needs 3")
    value, order = fits[-1]
    if not math.isfinite(value):  # no fit: T at the smallest ε, its error the last three's spread
        spread = max(abs(v - last) for _, v in points[-3:])
        return Limit(last, math.nan, spread, decade, last,
                     "T not monotone in ε over the last three ε (the value: T at the smallest ε; the error: "
                     "their spread)")
    error = abs(value - fits[-2][0]) if len(fits) > 1 else math.nan
    return Limit(value, order, error, decade, last)
