"""Steepest-descent geometries against independent dense computations: the sign of the gradient, the polar
factor of each matrix block by SVD, the tied model's exact reduction, the regularisation's limit, the
(non-)equivariance under a rotation of the embeddings, and a status where a sign field chatters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics import FactTask, build_model, make_objective, resolve_config
from dynamics.fields import gradient_field
from dynamics.geometry import SignDescent, SpectralDescent, make_geometry
from dynamics.solvers import Status, integrate_flow


def _setup(preset="tiny", scale=0.3, **overrides):
    config = resolve_config(preset, overrides={"init.kind": "gaussian", "init.scale": scale, **overrides})
    task = FactTask(config.task)
    model = build_model(config, task)
    objective = make_objective(model, task, config.loss)
    return config, task, model, objective, model.initial_parameters(config.init)


def _autodiff_gradient(objective, theta):
    x = theta.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    return grad


@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_sign_field_is_the_sign_of_the_per_token_gradient(eps):
    _, _, model, objective, theta = _setup()
    x = model.preconditioner * _autodiff_gradient(objective, theta)
    expected = -np.sign(x.numpy()) if eps == 0 else -(x / torch.sqrt(x**2 + eps**2)).numpy()
    field = gradient_field(objective, SignDescent(model.preconditioner, eps))(0.0, theta)
    np.testing.assert_allclose(field.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_spectral_field_is_the_polar_factor_of_each_matrix():
    config, _, model, objective, theta = _setup(**{"model.kind": "embedded", "model.dim": 24,
                                                   "loss.kind": "population"})
    grad = _autodiff_gradient(objective, theta).numpy()
    field = gradient_field(objective, SpectralDescent(model.parameter_blocks()))(0.0, theta).numpy()
    d = config.model.dim
    for block in (slice(0, d * d), slice(d * d, 2 * d * d)):
        u, s, vt = np.linalg.svd(grad[block].reshape(d, d))
        rank = int((s > 1e-12 * s[0]).sum())
        polar = u[:, :rank] @ vt[:rank]
        np.testing.assert_allclose(field[block].reshape(d, d), -polar, atol=1e-10)


@pytest.mark.parametrize("name", ["sign", "spectral"])
def test_tied_noise_token_follows_the_untied_flow_exactly(name):
    """The reduced model's tied noise token (metric P = 1/N) moves as each of the N tokens it stands for."""
    _, _, model, objective, theta = _setup(scale=0.3)
    theta = model.initial_parameters(resolve_config("tiny").init) + 0.3 * torch.randn(
        model.num_params, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    full, expand = model.untied()
    full_objective = full.population_loss
    blocks = model.parameter_blocks()
    tied = gradient_field(objective, make_geometry(name, model.preconditioner, blocks, 1e-4))
    untied = gradient_field(full_objective, make_geometry(name, full.preconditioner, full.parameter_blocks(),
                                                          1e-4))
    torch.testing.assert_close(expand(tied(0.0, theta)), untied(0.0, expand(theta)), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["sign", "spectral"])
def test_regularised_field_tends_to_the_unregularised_one_as_eps_squared(name):
    _, _, model, objective, theta = _setup()
    blocks = model.parameter_blocks()
    exact = gradient_field(objective, make_geometry(name, model.preconditioner, blocks, 0.0))(0.0, theta)
    errors = [float((gradient_field(objective, make_geometry(name, model.preconditioner, blocks, eps))(
        0.0, theta) - exact).abs().max()) for eps in (1e-4, 1e-5, 1e-6)]
    assert errors[0] > 0
    np.testing.assert_allclose(np.log10(errors[0] / errors[1]), 2.0, atol=0.05)  # O(ε²)
    np.testing.assert_allclose(np.log10(errors[1] / errors[2]), 2.0, atol=0.05)


def _rotated(model, rotation):
    """The embedded model in another orthonormal basis: E → E Q, U → U Q (the same function of θ' = QᵀθQ)."""
    twin = build_model(resolve_config("tiny", overrides={"model.kind": "embedded", "model.dim": model.dim}),
                       model.task)
    twin.E, twin.U = model.E @ rotation, model.U @ rotation
    return twin


@pytest.mark.slow  # 33 s on 2 cores
def test_spectral_flow_is_equivariant_under_a_rotation_of_the_embeddings_and_sign_flow_is_not():
    config, task, model, objective, theta = _setup(**{"model.kind": "embedded", "model.dim": 12})
    d = config.model.dim
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(5),
                                              dtype=torch.float64))
    twin = _rotated(model, rotation)
    twin_objective = make_objective(twin, task, config.loss)

    def rotate(vector):  # θ → (QᵀW_KQ Q, QᵀW_OV Q)
        w = vector.reshape(2, d, d)
        return (rotation.T @ w @ rotation).reshape(-1)

    times = np.array([0.0, 0.25])
    losses = {}
    for name in ("spectral", "sign"):
        blocks = model.parameter_blocks()
        original = gradient_field(objective, make_geometry(name, None, blocks, 1e-6))
        turned = gradient_field(twin_objective, make_geometry(name, None, blocks, 1e-6))
        if name == "spectral":  # the field itself commutes with the rotation
            torch.testing.assert_close(turned(0.0, rotate(theta)), rotate(original(0.0, theta)), rtol=1e-9,
                                       atol=1e-12)
        flows = [integrate_flow(field, start, times, rtol=1e-9, atol=1e-12)
                 for field, start in ((original, theta), (turned, rotate(theta)))]
        losses[name] = [np.array([float(obj(s)) for s in flow.states])
                        for flow, obj in zip(flows, (objective, twin_objective), strict=True)]
    spectral, sign = (np.abs(a / b - 1).max() for a, b in (losses["spectral"], losses["sign"]))
    assert spectral < 1e-10  # the same losses in either basis (measured 4e-13)
    assert sign > 0.05  # the basis matters for sign descent (measured 9.3% at t = 0.25)


def test_a_chattering_sign_field_ends_with_a_status_and_keeps_its_trajectory():
    """dθ/dt = −sign(θ) reaches 0 at t = 1 and then flips sign at every step: the solver gives up there."""
    grid = np.linspace(0.0, 3.0, 31)
    result = integrate_flow(lambda t, x: -torch.sign(x), torch.ones(1, dtype=torch.float64), grid,
                            max_steps=2000)
    assert result.status in (Status.MAX_STEPS, Status.STEP_UNDERFLOW, Status.TOO_SLOW)  # too_slow: its pace
    assert 0.99 < result.status_time < 1.1
    np.testing.assert_allclose(result.states[:, 0].numpy(), 1.0 - result.t, atol=1e-9)
