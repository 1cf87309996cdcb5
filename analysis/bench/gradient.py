"""``factrecall bench``'s per-gradient section: one evaluation of the reduced model's population loss and
gradient by the blocked table of logits (S·R·|A| numbers) against the factorised matrix products, side by
side in one process, interleaved A B A B … so that a drift of the machine's speed hits both alike."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from dynamics.config import TaskConfig
from dynamics.models import ReducedModel
from dynamics.numerics import compute_settings
from dynamics.task import FactTask

# (S, R): 10^4 and 10^5 facts with D = 8 answers per relation and N = S + R noise tokens
SIZES = ((500, 20), (2000, 50))


def gradient_model(subjects: int, relations: int) -> ReducedModel:
    """The reduced linear-attention model of a random table with D = 8, N = S + R noise tokens."""
    task = FactTask(TaskConfig(subjects=subjects, relations=relations, answers_per_relation=8,
                               noise_tokens=subjects + relations, facts="random"))
    return ReducedModel(task)


def bench_gradient(sizes: tuple[tuple[int, int], ...] = SIZES, repeats: int = 5) -> list[dict[str, Any]]:
    """Median seconds of one loss-and-gradient evaluation, blocked and factorised, at random θ of scale 0.5,
    and the largest relative difference of the two gradients."""
    rows = []
    for subjects, relations in sizes:
        model = gradient_model(subjects, relations)
        theta = 0.5 * torch.randn(model.num_params, generator=torch.Generator().manual_seed(0),
                                  dtype=torch.float64)
        paths = {"blocked": model.blocked_loss_and_gradient, "factorised": model.population_loss_and_gradient}
        times: dict[str, list[float]] = {name: [] for name in paths}
        grads = {}
        with compute_settings(theta):
            for _ in range(repeats):
                for name, path in paths.items():
                    start = time.perf_counter()
                    grads[name] = path(theta)[1]
                    times[name].append(time.perf_counter() - start)
        blocked, factorised = (statistics.median(times[name]) for name in paths)
        scale = grads["blocked"].abs().max()
        difference = float((grads["blocked"] - grads["factorised"]).abs().max() / scale)
        rows.append({"facts": subjects * relations, "S": subjects, "R": relations, "blocked_seconds": blocked,
                     "factorised_seconds": factorised, "ratio": blocked / factorised,
                     "relative_difference": difference, "met": subjects * relations < 10**5
                     or blocked / factorised >= 10})
    return rows


def format_gradient_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Table rows (measure | value | target | met) for the per-gradient section."""
    out = []
    for row in rows:
        target = "≥ 10×" if row["facts"] >= 10**5 else "—"
        out.append(f"| one gradient at {row['facts']:,} facts ({row['S']} × {row['R']}): blocked "
                   f"{row['blocked_seconds'] * 1e3:.1f} ms / factorised "
                   f"{row['factorised_seconds'] * 1e3:.2f} ms "
                   f"| {row['ratio']:.1f}× | {target} | {'yes' if row['met'] else 'no'} |")
    return out
