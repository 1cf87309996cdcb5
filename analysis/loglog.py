"""The one log–log least-squares fit of the analyses: y ≈ c·x^β (power laws of the scale study and of the
capacity experiments, slopes of the geometry table, the order of a discrete run's deviation in its
learning rate)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def _logs(x: Iterable[float | None], y: Iterable[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """(log x, log y) over the pairs where both are finite and positive (None counts as missing)."""
    pairs = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=True)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0]
    lx, ly = np.array(pairs, dtype=float).reshape(-1, 2).T
    return lx, ly


def _line(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float] | None:
    """(slope, intercept) of ly against lx by least squares; None with fewer than two points or one x."""
    if len(lx) < 2 or np.ptp(lx) == 0:
        return None
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def power_law(x: Iterable[float | None], y: Iterable[float | None]) -> tuple[float, float, int] | None:
    """(β, c, points) of y ≈ c·x^β by least squares on (log x, log y) over the pairs where both are finite
    and positive (None counts as missing); None with fewer than two such pairs or a single x."""
    lx, ly = _logs(x, y)
    line = _line(lx, ly)
    return None if line is None else (line[0], math.exp(line[1]), len(lx))


def fit_power_law(x: Iterable[float | None], y: Iterable[float | None], level: float = 0.95
                  ) -> dict[str, float]:
    """:func:`power_law` with its statistics: ``exponent`` β, ``intercept`` log c, ``points``, β's two-sided
    ``level`` confidence interval from Student's t with n − 2 degrees of freedom (β ± t·s/√Σ(log x − mean)²,
    s² = RSS/(n − 2); NaN with two points) and ``r2``; NaN where there is no fit."""
    lx, ly = _logs(x, y)
    line = _line(lx, ly)
    if line is None:
        return {"exponent": math.nan, "intercept": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "points": len(lx), "r2": math.nan, "level": level}
    from scipy import stats

    beta, intercept = line
    resid = ly - (beta * lx + intercept)
    rss, tss = float((resid**2).sum()), float(((ly - ly.mean()) ** 2).sum())
    sxx = float(((lx - lx.mean()) ** 2).sum())
    n = len(lx)
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * math.sqrt(rss / (n - 2) / sxx) if n > 2 else math.nan
    return {"exponent": beta, "intercept": intercept, "ci_low": beta - half, "ci_high": beta + half,
            "points": n, "r2": 1 - rss / tss if tss > 0 else 1.0, "level": level}
