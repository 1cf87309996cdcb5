"""Capacity search (the paper's Figures 1 and 4): the largest number of associations or facts a model of a
given size learns to accuracy ≥ 0.99, by bisection, over seeds; then the exponent of capacity against
parameters.

The bisection (:func:`bisect_largest`) only sees a yes/no oracle, so it is tested on synthetic monotone
oracles; :func:`guarded` turns a trial that diverges (or reports a RunError) into a *failed* trial recorded
as such, and lets any other exception (a crash, not an answer) surface.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dynamics.errors import RunError


@dataclass
class TrialRecord:
    """One training trial at one size: ``stored`` whether it reached the accuracy threshold; ``status`` how
    the training ended (ok | nonfinite, the engine's status words) or ``error`` when it raised a RunError."""

    size: int
    stored: bool
    status: str
    accuracy: float = math.nan
    steps: int = 0
    wall_seconds: float = 0.0
    lr: float = math.nan
    message: str = ""

    def as_row(self) -> dict[str, Any]:
        """The record as a flat dict (one CSV row)."""
        return asdict(self)


def guarded(trial: Callable[[int], Any], log: list[TrialRecord],
            on_record: Callable[[TrialRecord], None] | None = None) -> Callable[[int], bool]:
    """An oracle n -> success from ``trial(n)``, appending a :class:`TrialRecord` to ``log`` every call.

    ``trial`` returns a FitResult-like object (``status``, ``stored``, ``accuracy``, ``steps``,
    ``wall_seconds``, ``message``), or a (result, lr) pair. A RunError (a training that ran but cannot
    deliver), a non-finite accuracy or a ``nonfinite`` status is a failed trial (stored False); any other
    exception is a crash and propagates, never mistaken for a model that did not store. ``on_record``
    (optional) sees each record as it is made.
    """

    def oracle(n: int) -> bool:
        success = _run(n)
        if on_record is not None:
            on_record(log[-1])
        return success

    def _run(n: int) -> bool:
        try:
            out = trial(n)
        except RunError as err:  # the training's own answer: it cannot deliver
            log.append(TrialRecord(n, False, "error", message=f"{type(err).__name__}: {err}"[:300]))
            return False
        result, lr = out if isinstance(out, tuple) else (out, math.nan)
        accuracy = float(getattr(result, "accuracy", math.nan))
        status = str(getattr(result, "status", "error"))
        if not math.isfinite(accuracy) and status == "ok":
            status = "nonfinite"
        success = bool(getattr(result, "stored", False)) and status == "ok"
        log.append(TrialRecord(n, success, status, accuracy, int(getattr(result, "steps", 0)),
                               float(getattr(result, "wall_seconds", 0.0)), float(lr),
                               str(getattr(result, "message", ""))))
        return success

    return oracle


@dataclass
class Bisection:
    """Result of :func:`bisect_largest`: the largest size that succeeded (None: not even ``low``)."""

    capacity: int | None
    status: str  # ok | below_range (low failed) | at_upper (high succeeded)
    low_fail: int | None  # smallest size seen to fail (the bracket's upper end)
    calls: list[int] = field(default_factory=list)


def bisect_largest(succeeds: Callable[[int], bool], low: int, high: int, rel_tol: float = 0.0) -> Bisection:
    """The largest n in [low, high] with ``succeeds(n)``, assuming success is monotone (decreasing in n).

    Tests ``low`` first (fails: below_range) and then ``high`` (succeeds: at_upper). Then keeps a bracket
    lo (succeeded) < hi (failed) and tests the geometric midpoint √(lo·hi) while hi > 2·lo, the arithmetic
    one after (clamped to lo+1..hi-1), until hi - lo ≤ max(1, rel_tol·lo); returns lo. Calls: about
    2 + log₂ log₂(high/low) + log₂(final bracket), fewer with a relative tolerance.
    """
    if not (isinstance(low, int) and isinstance(high, int)) or low < 1 or high < low:
        raise ValueError(f"need integers 1 <= low <= high, got low={low}, high={high}")
    calls: list[int] = []

    def call(n: int) -> bool:
        calls.append(n)
        return bool(succeeds(n))

    if not call(low):
        return Bisection(None, "below_range", low, calls)
    if high == low or call(high):
        return Bisection(high, "at_upper", None, calls)
    lo, hi = low, high
    while hi - lo > max(1.0, rel_tol * lo):
        mid = round(math.sqrt(lo * hi)) if hi > 2 * lo else (lo + hi) // 2
        mid = min(max(mid, lo + 1), hi - 1)
        if call(mid):
            lo = mid
        else:
            hi = mid
    return Bisection(lo, "ok", hi, calls)


def min_sufficient_attention(attention: np.ndarray, accuracy: np.ndarray, threshold: float = 0.99
                             ) -> dict[str, Any]:
    """From a trade-off grid (rows: attention sizes ``attention`` (A,), columns: MLP sizes; ``accuracy``
    (A, M)), the smallest attention size at which some MLP reaches ``threshold``, and whether every
    smaller attention size fails for every MLP (``below_all_fail``)."""
    order = np.argsort(attention)
    ok_rows = [i for i in order if (accuracy[i] >= threshold).any()]
    if not ok_rows:
        return {"min_attention_params": None, "below_all_fail": True, "any_success": False}
    first = attention[ok_rows[0]]
    below = [i for i in order if attention[i] < first]
    return {"min_attention_params": float(first), "any_success": True,
            "below_all_fail": bool(all((accuracy[i] < threshold).all() for i in below)),
            "sizes_below": len(below)}
