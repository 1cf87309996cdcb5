"""A spectral flow whose gradient turns non-finite ends with status ``nonfinite`` and its time, the
trajectory up to there kept: the polar factor's SVD must not raise on a non-finite matrix."""

from __future__ import annotations

import numpy as np
import torch

from dynamics.geometry import ParameterBlock
from dynamics.geometry.maps import SpectralDescent
from dynamics.solvers import Status, integrate_flow

BLOCKS = [ParameterBlock("W", 0, (3, 2)), ParameterBlock("b", 6, (2,))]


def test_a_non_finite_matrix_maps_to_nan_and_the_other_members_are_unchanged():
    spectral = SpectralDescent(BLOCKS, eps=1e-3)
    g = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    clean = spectral.direction(g.clone())
    g[1, 2] = float("nan")
    mapped = spectral.direction(g)
    assert torch.isnan(mapped[1, :6]).all()
    assert torch.equal(mapped[0], clean[0])  # the same code on the same finite member


def test_a_spectral_flow_that_turns_non_finite_is_a_status_with_its_time():
    spectral = SpectralDescent(BLOCKS, eps=1e-3)
    # the gradient θ·log(1.5 − t) is NaN past t = 1.5
    field = lambda t, theta: spectral.negative_direction(theta * torch.log(torch.as_tensor(1.5 - t)))  # noqa: E731
    grid = np.linspace(0.0, 3.0, 7)
    result = integrate_flow(field, torch.ones(8, dtype=torch.float64), grid, method="dopri5")
    assert result.status == Status.NONFINITE
    assert 1.0 <= result.status_time <= 3.0
    assert len(result.t) >= 3 and np.all(np.asarray(result.t) <= 1.5)
