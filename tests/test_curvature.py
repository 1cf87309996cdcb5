"""Curvature from Hessian-vector products: the Lanczos sharpness against the largest
eigenvalue of a dense Hessian, the Hessian-vector product against finite differences of the gradient, GD's
modified-flow field against −P g − (η/2) P H P g with a dense H, and the sharpness at θ ≈ 0 against the
first-order theory's σ_r (docs/design.md §4).

Small configurations only: dense Hessians are built here to check the engine, which never builds one.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from analysis.stages import escape_rates
from dynamics.config import resolve_config
from dynamics.curvature import sharpness
from dynamics.fields import gradient_field, modified_gradient_field
from dynamics.models import build_model
from dynamics.objective import gradient, hessian_vector_product, make_objective
from dynamics.run import flow_sharpness
from dynamics.task import FactTask

# Small enough for a dense Hessian: tiny's task (V = 10, |A| = 4); 40 tied reduced parameters (P ≠ I:
# the tied noise pair is scaled by 1/N), 288 embedded ones (d = 12 ≥ V, orthonormal embeddings).
SMALL = {
    "reduced linear": {},
    "reduced softmax": {"model.attention": "softmax"},
    "embedded linear": {"model.kind": "embedded", "model.dim": 12},
}


def problem(overrides: dict, theta_scale: float = 0.7, seed: int = 0):
    """(objective, θ, P) on tiny with the overrides, at a generic random θ (a Hessian with distinct
    eigenvalues of both signs, far from the symmetric start)."""
    config = resolve_config("tiny", overrides=overrides)
    task = FactTask(config.task)
    model = build_model(config, task)
    objective = make_objective(model, task, config.loss)
    gen = torch.Generator().manual_seed(seed)
    theta = theta_scale * torch.randn(model.num_params, generator=gen, dtype=torch.float64)
    return objective, theta, model.preconditioner


def dense_hessian(objective, theta: torch.Tensor) -> torch.Tensor:
    hessian = torch.autograd.functional.hessian(objective, theta)
    return 0.5 * (hessian + hessian.T)


@functools.cache
def modified_test_hessian(name: str) -> torch.Tensor:
    """The dense Hessian of the modified-flow tests' point (shared by both learning rates)."""
    objective, theta, _ = problem(SMALL[name], seed=2)
    return dense_hessian(objective, theta)


def test_small_problems_are_what_the_tests_claim():
    _, _, p_reduced = problem(SMALL["reduced linear"])
    assert p_reduced.numel() == 40 and not torch.all(p_reduced == 1.0)
    assert torch.isclose(p_reduced.min(), torch.tensor(1.0 / 3, dtype=torch.float64))  # N = 3
    _, theta, p_embedded = problem(SMALL["embedded linear"])
    assert theta.numel() == 288 and torch.all(p_embedded == 1.0)


@pytest.mark.parametrize("name", list(SMALL))
def test_lanczos_sharpness_matches_dense_hessian(name):
    objective, theta, P = problem(SMALL[name])
    H = dense_hessian(objective, theta)
    root = P.sqrt()
    scaled = root[:, None] * H * root[None, :]  # P^{1/2} H P^{1/2}
    eigenvalues = torch.linalg.eigvalsh(scaled)
    assert eigenvalues[0] < 0 < eigenvalues[-1]  # a generic point, not a minimum: the top one is picked
    exact = float(eigenvalues[-1])
    estimate = sharpness(objective, theta, P)
    assert estimate == pytest.approx(exact, rel=1e-6)
    # λ_max(P H) = λ_max(P^{1/2} H P^{1/2}): the same spectrum, so the stability margin is the same.
    product = torch.linalg.eigvals(P[:, None] * H).real.max()
    assert float(product) == pytest.approx(exact, rel=1e-8)


def test_lanczos_without_preconditioner_and_with_other_seeds():
    objective, theta, _ = problem(SMALL["reduced linear"], seed=3)
    exact = float(torch.linalg.eigvalsh(dense_hessian(objective, theta))[-1])
    for seed in (0, 1, 2):
        assert sharpness(objective, theta, None, seed=seed) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("name", ["reduced linear", "embedded linear"])
def test_hessian_vector_product_matches_finite_differences(name):
    objective, theta, _ = problem(SMALL[name], seed=1)
    gen = torch.Generator().manual_seed(7)
    vector = torch.randn(theta.numel(), generator=gen, dtype=torch.float64)
    vector /= vector.norm()
    eps = 1e-5
    # Central differences of the gradient (the closed form on the reduced model: an independent path).
    plus, minus = gradient(objective, theta + eps * vector)[1], gradient(objective, theta - eps * vector)[1]
    fd = (plus - minus) / (2 * eps)
    hvp = hessian_vector_product(objective, theta, vector)
    assert torch.linalg.norm(hvp - fd) <= 1e-7 * torch.linalg.norm(hvp)
    assert torch.allclose(hvp, dense_hessian(objective, theta) @ vector, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["reduced linear", "reduced softmax", "embedded linear"])
@pytest.mark.parametrize("lr", [0.05, 0.8])
def test_modified_flow_field_matches_dense_formula(name, lr):
    objective, theta, P = problem(SMALL[name], seed=2)
    g = gradient(objective, theta)[1]
    H = modified_test_hessian(name)
    expected = -P * g - 0.5 * lr * P * (H @ (P * g))
    field = modified_gradient_field(objective, P, lr)(0.0, theta)
    assert torch.allclose(field, expected, rtol=1e-10, atol=1e-13)
    # The correction is the η-term alone: the field minus the plain flow is −(η/2) P H P g.
    plain = gradient_field(objective, P)(0.0, theta)
    assert torch.allclose(field - plain, -0.5 * lr * P * (H @ (P * g)), rtol=1e-9, atol=1e-13)


def test_modified_flow_field_without_preconditioner():
    objective, theta, _ = problem(SMALL["reduced linear"], seed=4)
    g = gradient(objective, theta)[1]
    H = dense_hessian(objective, theta)
    field = modified_gradient_field(objective, None, 0.3)(0.0, theta)
    assert torch.allclose(field, -g - 0.15 * (H @ g), rtol=1e-10, atol=1e-13)


# At θ ≈ 0 the Hessian of the reduced model is block-diagonal over tokens, [[0, g_zᵀ], [g_z, 0]] on each
# (a_z, v_z), with eigenvalues ±‖g_z‖: λ_max = max(σ_r, σ_s) (EOS and noise see no signal on a balanced
# table). Structured tables are balanced whenever D divides S.
ZERO = [
    ("figure5", {}, "relation"),  # S=16, R=4, D=8: σ_r = 0.0765 > σ_s = 0.0292
    ("tiny", {}, "relation"),  # S=4, R=2, D=2: σ_r = 0.25 > σ_s = 0.125
    ("tiny", {"task.subjects": 2, "task.relations": 8, "task.answers_per_relation": 2}, "subject"),
]


@pytest.mark.parametrize("preset, overrides, first", ZERO, ids=["figure5", "tiny", "subject-first"])
def test_sharpness_at_zero_is_the_escape_rate(preset, overrides, first):
    config = resolve_config(preset, overrides={**overrides, "init.scale": 1e-8, "flow.t_max": 1.0})
    task = FactTask(config.task)
    model = build_model(config, task)
    objective = make_objective(model, task, config.loss)
    theta = model.initial_parameters(config.init)
    sigma_r, sigma_s = escape_rates(task.S, task.R, task.D)
    assert (sigma_r > sigma_s) == (first == "relation")
    value = sharpness(objective, theta, model.preconditioner)
    assert value == pytest.approx(max(sigma_r, sigma_s), rel=1e-6)
    if preset == "figure5":  # σ_r = (1/R)·sqrt(1/D − 1/(RD)) with R = 4, D = 8
        assert value == pytest.approx(np.sqrt(1 / 8 - 1 / 32) / 4, rel=1e-6)
    # flow_sharpness starts at t = 0 on the same θ(0)
    times, values = flow_sharpness(config, points=2)
    assert times[0] == 0.0
    assert values[0] == pytest.approx(max(sigma_r, sigma_s), rel=1e-6)

