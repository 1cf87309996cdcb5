"""The one log–log least-squares fit of the analyses: y ≈ c·x^β (power laws of the scale study, slopes of
the geometry table, the order of a discrete run's deviation in its learning rate)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def power_law(x: Iterable[float | None], y: Iterable[float | None]) -> tuple[float, float, int] | None:
    """(β, c, points) of y ≈ c·x^β by least squares on (log x, log y) over the pairs where both are finite
    and positive (None counts as missing); None with fewer than two such pairs."""
    pairs = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=True)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0]
    if len(pairs) < 2:
        return None
    lx, ly = np.array(pairs).T
    beta, log_c = np.polyfit(lx, ly, 1)
    return float(beta), float(math.exp(log_c)), len(pairs)
