"""The grids of ``factrecall capacity`` (the paper's Figures 1 and 4) and their small ``--quick`` versions:
for each KIND the model sizes, their parameter counts, the bisection range of the size variable and the
training settings of a trial."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dynamics.errors import ConfigError

from .trials import TrialSettings, linear_trial, mlp_trial, transformer_trial

KINDS = ("linear", "mlp", "transformer", "tradeoff")


@dataclass
class Point:
    """One model size of a capacity grid: its label, the parameter count the paper plots, the bisection
    range of the size variable, ``facts(size)`` (associations or S·R facts) and ``trial(size, seed)``."""

    label: str
    params: int
    low: int
    high: int
    trial: Callable[[int, int], Any]
    facts: Callable[[int], int] = lambda n: n
    shape: dict[str, int] = field(default_factory=dict)


@dataclass
class Experiment:
    """A capacity grid (or, for ``tradeoff``, an accuracy grid) and how to read it."""

    kind: str
    points: list[Point]
    settings: TrialSettings
    rel_tol: float
    x_label: str
    reference: str  # the paper's trend, in words


def _square(n: int) -> int:
    return n * n


def build_experiment(kind: str, quick: bool, device: str = "cpu") -> Experiment:
    """The grid of ``kind`` (quick: small sizes and budgets that run in minutes on 2 CPU cores)."""
    if kind == "linear":
        settings = TrialSettings(optimizer="adamw", lrs=(1.0,), steps=2048 if quick else 4096)
        dims = (8, 16, 32, 64) if quick else (8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256)
        points = [Point(f"d={d}", d * d, d, d * d // 2,
                        partial(_linear, d=d, settings=settings, device=device), shape={"d": d})
                  for d in dims]
        return Experiment(kind, points, settings, 0.05 if quick else 0.02, "parameters d²", "N log N ∝ d²")
    if kind == "mlp":
        settings = TrialSettings(optimizer="adamw", lrs=(3e-2,), steps=4000 if quick else 32768)
        grid = [(d, k) for d in ((8, 12, 16, 24) if quick else (8, 11, 16, 22, 32, 45, 64, 90))
                for k in ((1, 2) if quick else (1, 2, 4, 8))
                if not (quick and d * k * d < 100)]  # m·d = 64 stores fewer than M = 32 maps: below range
        points = [Point(f"d={d},m={k * d}", k * d * d, 32, 4 * k * d * d,
                        partial(_mlp, d=d, width=k * d, settings=settings, device=device),
                        shape={"d": d, "m": k * d}) for d, k in grid]
        return Experiment(kind, points, settings, 0.1 if quick else 0.02, "parameters m·d",
                          "N ∝ m·d (M = 32)")
    if kind == "transformer":
        settings = TrialSettings(optimizer="adam", lrs=(1e-2,) if quick else (1e-3, 3e-3, 1e-2),
                                 steps=4000 if quick else 16384, batch_size=1024, check_every=100)
        scales = (1.0,) if quick else (0.25, 0.5, 1.0, 2.0, 4.0)
        dims = (8, 12, 16, 24) if quick else (8, 11, 16, 22, 32, 45, 64, 90, 128, 181)
        points = []
        for d in dims:
            for c in scales:
                for c2 in scales:
                    H, dh, m = 8, max(1, int(c * d / 8)), max(1, int(c2 * d))
                    params = 4 * H * dh * d + 2 * m * d
                    high = max(3, math.ceil(math.sqrt((0.4 if quick else 1.0) * params)))
                    points.append(Point(f"d={d},H={H},dh={dh},m={m}", params, 2, high,
                                        partial(_transformer, d=d, heads=H, head_dim=dh, mlp_width=m,
                                                settings=settings, device=device),
                                        _square, {"d": d, "H": H, "dh": dh, "m": m}))
        return Experiment(kind, points, settings, 0.1 if quick else 0.02, "parameters 4·H·d_h·d + 2·m·d",
                          "facts ≈ 0.15 × parameters")
    if kind == "tradeoff":
        settings = TrialSettings(optimizer="adam", lrs=(1e-2,) if quick else (1e-3, 3e-3, 1e-2),
                                 steps=1500 if quick else 16384, batch_size=512 if quick else 1024,
                                 check_every=100)
        s, noise, d, dh = (8, 16, 16, 2) if quick else (32, 64, 32, 8)
        heads = (1, 2, 4, 8) if quick else (1, 2, 4, 8, 16, 32)
        widths = (0, 8, 32) if quick else (0, 1, 2, 4, 8, 16, 32, 64, 128)
        points = [Point(f"H={H},m={m}", 4 * H * dh * d + 2 * m * d, s, s,
                        partial(_transformer, d=d, heads=H, head_dim=dh, mlp_width=m, noise=noise,
                                settings=settings, device=device),
                        _square, {"d": d, "H": H, "dh": dh, "m": m, "attention_params": 4 * H * dh * d,
                                  "mlp_params": 2 * m * d})
                  for H in heads for m in widths]
        return Experiment(kind, points, settings, 0.0, "attention parameters 4·H·d_h·d",
                          "≈1.3k attention parameters needed at S = R = 32")
    raise ConfigError(f"KIND={kind!r}: allowed " + ", ".join(KINDS))


def _linear(n, seed, *, d, settings, device, embeddings="gaussian"):
    return linear_trial(n, d=d, seed=seed, settings=settings, embeddings=embeddings, device=device)


def _mlp(n, seed, *, d, width, settings, device):
    return mlp_trial(n, d=d, width=width, num_classes=32, seed=seed, settings=settings, device=device)


def _transformer(s, seed, *, d, heads, head_dim, mlp_width, settings, device, noise=None):
    return transformer_trial(s, d=d, heads=heads, head_dim=head_dim, mlp_width=mlp_width, seed=seed,
                             settings=settings, noise=noise, device=device)
