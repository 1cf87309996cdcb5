"""Nested comparison of numbers produced by numerical libraries.

Floats that come out of BLAS, LAPACK, numpy's fits or torch may change in their last digits with a library
version or a save/load; a test compares them with a stated relative tolerance, never with ``==``. Everything
that is not a float (strings, ints, None, the structure itself) must match exactly.
"""

from __future__ import annotations

import math


def assert_close(actual, expected, rel: float = 1e-12, abs_tol: float = 0.0, where: str = "") -> None:
    """Assert that two nested dict/list/tuple structures are equal, floats within ``rel`` (relative)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {type(actual).__name__} is not a dict"
        assert actual.keys() == expected.keys(), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_close(actual[key], expected[key], rel, abs_tol, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{where}: {type(actual).__name__} is not a sequence"
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, rel, abs_tol, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(actual, bool) and isinstance(actual, (int, float)):
        if math.isnan(expected):
            assert math.isnan(actual), f"{where}: {actual} is not nan"
        else:
            close = math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_tol)
            assert close, f"{where}: {actual} != {expected} (rel {rel})"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
