"""The grid of a sweep: ``--grid KEY=VALUES`` parsed and validated against the base config, the points
of its cartesian product, and each point's stable identifier.

Float values are canonicalised to 12 significant digits, so that the same number reached by two spellings
(``0.3`` and the 0.30000000000000004 of ``0:1:lin:11``) is one grid point."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from dynamics.budget import env_limit
from dynamics.config import Config
from dynamics.errors import ConfigError

SIGNIFICANT_DIGITS = 12
GRID_LIMIT = 10**5  # points of one sweep (FACTRECALL_GRID_LIMIT sets another)


def grid_limit() -> int:
    """The most points a sweep grid may have: ``FACTRECALL_GRID_LIMIT``, default :data:`GRID_LIMIT`. A range
    of more values, or axes whose product is larger, are refused before any value is made."""
    return env_limit("FACTRECALL_GRID_LIMIT", GRID_LIMIT)


def parse_values(key: str, text: str) -> list[Any]:
    """Grid values of one key: ``v1,v2,...`` or a range ``start:stop:log:n`` / ``start:stop:lin:n``."""
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 4 or parts[2] not in ("log", "lin"):
            raise ConfigError(f"--grid {key}={text!r}: a range must look like start:stop:log:n or "
                              "start:stop:lin:n")
        try:
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[3])
        except ValueError:
            raise ConfigError(f"--grid {key}={text!r}: start and stop must be numbers, n an integer"
                              ) from None
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise ConfigError(f"--grid {key}={text!r}: start and stop must be finite numbers")
        if count < 1 or (parts[2] == "log" and (start <= 0 or stop <= 0)):
            raise ConfigError(f"--grid {key}={text!r}: n must be >= 1 and log ranges positive")
        if count > grid_limit():  # refused before any value is made
            raise ConfigError(f"--grid {key}={text!r}: n = {count} values; allowed: at most {grid_limit()} "
                              "(FACTRECALL_GRID_LIMIT sets another)")
        values = np.geomspace(start, stop, count) if parts[2] == "log" else np.linspace(start, stop, count)
        return [_snap(float(v)) for v in values]
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ConfigError(f"--grid {key}={text!r}: must list at least one value")
    return values


def _snap(value: float) -> float:
    """A range value within rounding error of a non-zero integer becomes that integer (as a float), so that
    ``task.subjects=2:64:log:6`` gives 2, 4, ..., 64 instead of 3.999999999999999."""
    nearest = round(value)
    return float(nearest) if nearest != 0 and abs(value - nearest) <= 1e-9 * abs(value) else value


def canonical(value: Any) -> Any:
    """A float rounded to 12 significant digits (the shortest repr of that rounding); anything else as is."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def parse_grid(specs: Iterable[str], base: Config) -> dict[str, list[Any]]:
    """``KEY=VALUES`` strings to an ordered grid; every value is validated against ``base`` and
    canonicalised (:func:`canonical`); a value given twice counts once."""
    grid: dict[str, list[Any]] = {}
    size = 1
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid={spec!r}: must look like section.key=v1,v2 or section.key=a:b:log:n")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; allowed: each key once")
        values = parse_values(key, text)
        size *= len(values)
        if size > grid_limit():
            raise ConfigError(f"--grid {key}={text!r}: the grid would have {size} or more points; "
                              f"allowed: at most {grid_limit()} (FACTRECALL_GRID_LIMIT sets another)")
        # validate and normalise each value through the config's own coercion
        resolved = [canonical(_resolve_key(base.override({key: v}), key)) for v in values]
        grid[key] = list(dict.fromkeys(resolved))
    if not grid:
        raise ConfigError("--grid: at least one --grid KEY=VALUES is required")
    return grid


def _resolve_key(config: Config, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name) if name else getattr(config, section)


def point_id(values: dict[str, Any]) -> str:
    """A stable identifier of a grid point from its overrides."""
    text = json.dumps(values, sort_keys=True)
    return "p" + hashlib.sha256(text.encode()).hexdigest()[:12]


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, in row-major order."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]
