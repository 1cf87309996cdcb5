"""One capacity trial per model: build a memory (or a transformer on a task) of a given size, train it to
accuracy ≥ threshold with early stopping, return the :class:`dynamics.training.FitResult`.

Trials run in float32 (they are discrete trainings asking a yes/no question, not flows); every random
draw comes from a generator seeded by the trial's ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dynamics.config import TaskConfig
from dynamics.models import LinearMemory, MLPMemory, TransformerModel
from dynamics.task import FactTask
from dynamics.training import FitResult, fit


@dataclass(frozen=True)
class TrialSettings:
    """Optimiser and stopping rule of a trial. ``lrs``: tried in order until one succeeds."""

    optimizer: str = "adamw"
    lrs: tuple[float, ...] = (0.1,)
    steps: int = 4096
    weight_decay: float = 0.0
    threshold: float = 0.99
    check_every: int = 50
    batch_size: int = 1024  # transformer: fresh sequences per step
    eval_samples: int = 2048  # transformer: fixed seeded sequences on which accuracy is measured


def _first_success(run, settings: TrialSettings) -> tuple[FitResult, float]:
    """Run ``run(lr)`` for each lr in turn; return the first success (or the last result) and its lr."""
    result, lr = None, settings.lrs[0]
    for lr in settings.lrs:
        result = run(lr)
        if result.stored:
            break
    return result, lr


def linear_trial(n: int, *, d: int, seed: int, settings: TrialSettings, embeddings: str = "gaussian",
                 device: str = "cpu") -> tuple[FitResult, float]:
    """Store f = identity on n inputs in a d×d linear memory (full batch)."""
    mem = LinearMemory(n, d, embeddings=embeddings, seed=seed, dtype=torch.float32, device=device)
    return _first_success(lambda lr: fit(lambda k: mem.loss, mem.accuracy, mem.initial_parameters(),
                                         optimizer=settings.optimizer, lr=lr, steps=settings.steps,
                                         weight_decay=settings.weight_decay, threshold=settings.threshold,
                                         check_every=settings.check_every), settings)


def mlp_trial(n: int, *, d: int, width: int, num_classes: int | None, seed: int, settings: TrialSettings,
              device: str = "cpu") -> tuple[FitResult, float]:
    """Store f(i) = ⌊i·M/n⌋ (M = num_classes, or n) in an MLP memory of width m (full batch)."""
    mem = MLPMemory(n, d, width, num_classes=num_classes, seed=seed, dtype=torch.float32, device=device)
    return _first_success(lambda lr: fit(lambda k: mem.loss, mem.accuracy, mem.initial_parameters(),
                                         optimizer=settings.optimizer, lr=lr, steps=settings.steps,
                                         weight_decay=settings.weight_decay, threshold=settings.threshold,
                                         check_every=settings.check_every), settings)


def fact_task(subjects: int, relations: int, noise: int | None = None, seed: int = 0) -> FactTask:
    """Figure 4's task: D = 8, T = 32, N = S + R noise tokens (unless given), uniform, random table."""
    return FactTask(TaskConfig(subjects=subjects, relations=relations, answers_per_relation=8,
                               noise_tokens=subjects + relations if noise is None else noise, seq_len=32,
                               facts="random", seed=seed))


def transformer_trial(s: int, *, d: int, heads: int, head_dim: int, mlp_width: int, seed: int,
                      settings: TrialSettings, relations: int | None = None, noise: int | None = None,
                      device: str = "cpu") -> tuple[FitResult, float]:
    """Train the one-layer transformer on S = s subjects (R = s unless given: s² facts) with Adam on fresh
    batches; accuracy is measured on a fixed seeded sample of ``eval_samples`` sequences."""
    task = fact_task(s, s if relations is None else relations, noise, seed)
    model = TransformerModel(task, d, heads, head_dim, mlp_width, seed=seed, dtype=torch.float32,
                             device=device)
    counts, targets = task.sample(settings.eval_samples, torch.Generator().manual_seed(10_000 + seed))
    counts, targets = counts.to(device, torch.float32), targets.to(device)

    def accuracy(theta: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model.sequence_logits(theta, counts).argmax(1) == targets).float().mean())

    def run(lr: float) -> FitResult:
        generator = torch.Generator().manual_seed(20_000 + seed)

        def objective_at(k: int):
            c, t = task.sample(settings.batch_size, generator)
            c, t = c.to(device, torch.float32), t.to(device)
            return lambda theta: model.sequence_loss(theta, c, t)

        theta0 = model.standard_parameters(torch.Generator().manual_seed(30_000 + seed))
        return fit(objective_at, accuracy, theta0, optimizer=settings.optimizer, lr=lr, steps=settings.steps,
                   weight_decay=settings.weight_decay, threshold=settings.threshold,
                   check_every=settings.check_every)

    return _first_success(run, settings)
