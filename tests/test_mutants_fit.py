"""dynamics.training.fit on a two-parameter quadratic: the steps at which accuracy is checked, the loss it
reports against torch's own Adam with the betas asked for, and the two non-finite stops. Written for the
survivors of a mutation sample of dynamics/training/fit.py (docs/testing.md)."""

from __future__ import annotations

import pytest
import torch

from dynamics.solvers.results import Status
from dynamics.training import fit

TARGET = torch.tensor([1.0, -2.0], dtype=torch.float64)


def quadratic(k):
    return lambda theta: ((theta - TARGET) ** 2).sum()


def closeness(theta):
    return float(1.0 - (theta - TARGET).abs().max())


def test_accuracy_is_checked_every_check_every_steps_and_the_run_stops_at_the_first_check_reached():
    result = fit(quadratic, closeness, torch.zeros(2, dtype=torch.float64), lr=0.2, steps=500, threshold=0.9,
                 check_every=7)
    assert result.status == Status.OK and result.stored
    assert result.steps % 7 == 0 and 0 < result.steps < 500
    assert result.accuracy >= 0.9


def test_the_reported_loss_is_the_last_steps_with_the_betas_asked_for():
    betas, steps = (0.5, 0.9), 6
    result = fit(quadratic, closeness, torch.zeros(2, dtype=torch.float64), lr=0.1, steps=steps,
                 threshold=2.0, check_every=100, betas=betas)
    assert result.status == Status.OK and not result.stored and result.steps == steps
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([theta], lr=0.1, betas=betas, eps=1e-8)
    for _ in range(steps):
        adam.zero_grad()
        loss = quadratic(0)(theta)
        loss.backward()
        adam.step()
    assert result.loss == pytest.approx(float(loss.detach()), rel=1e-12)  # the same updates, same library


def test_a_non_finite_loss_stops_the_run_at_its_step():
    def objective(k):
        return lambda theta: theta.sum() * (float("nan") if k == 3 else 1.0)

    result = fit(objective, closeness, torch.zeros(2, dtype=torch.float64), steps=50, threshold=2.0)
    assert (result.status, result.stored, result.accuracy, result.steps) == (Status.NONFINITE, False, 0.0, 3)
    assert result.message == "loss became non-finite at step 3"


def test_non_finite_parameters_stop_the_run_after_the_step_that_made_them():
    # sqrt at 0: a finite loss whose gradient is infinite, so the first update makes θ NaN
    result = fit(lambda k: lambda theta: theta.sqrt().sum(), closeness, torch.zeros(2, dtype=torch.float64),
                 steps=50, threshold=2.0)
    assert (result.status, result.stored, result.accuracy, result.steps) == (Status.NONFINITE, False, 0.0, 1)
    assert result.loss == 0.0
    assert result.message == "parameters became non-finite at step 1"
