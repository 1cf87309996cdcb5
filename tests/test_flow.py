"""The flow engine (docs/design.md §4) against closed-form solutions, independent of the project's models.

* Saxe et al.'s two-layer linear network: with whitened inputs and a balanced, aligned small
  initialisation every singular mode follows a logistic curve in closed form.
* Statuses: a finite-time blow-up, a field that turns NaN, an exhausted step budget, an ordinary run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynamics.fields import gradient_field
from dynamics.run import log_time_grid
from dynamics.solvers import integrate_flow

# --------------------------------------------------------------------------------------------------
# 1. Two-layer linear network: logistic learning of each mode
# --------------------------------------------------------------------------------------------------
#
# Target map Σ = U diag(s) V^T (n×n); network W2 W1 with W1 (h×n), W2 (n×h); whitened inputs, so
#     L(W1, W2) = 1/2 ||W2 W1 - Σ||_F^2.
# Balanced aligned init W1 = √u0 Q V^T, W2 = U √u0 Q^T (Q: h×n orthonormal columns). Writing
# W1 = Σ_i a_i q_i v_i^T, W2 = Σ_i b_i u_i q_i^T, the flow dW1/dt = W2^T (Σ - W2 W1),
# dW2/dt = (Σ - W2 W1) W1^T keeps this form with
#     da_i/dt = b_i (s_i - a_i b_i),   db_i/dt = a_i (s_i - a_i b_i),
# so a_i = b_i forever and the mode strength u_i = a_i b_i = u_i^T W2 W1 v_i obeys
#     du/dt = (a² + b²)(s - u) = 2u(s - u),   u(t) = s u0 e^{2st} / (s - u0 + u0 e^{2st}),
# reaching u_f at t = (1 / 2s) ln[u_f (s - u0) / (u0 (s - u_f))]  (time constant τ = 1).

N_IN, HIDDEN = 3, 4
STRENGTHS = np.array([3.0, 1.5, 0.5])
U0 = 1e-3


def orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q


def linear_network_problem():
    gen = torch.Generator().manual_seed(0)
    U, V, Qh = orthogonal(N_IN, gen), orthogonal(N_IN, gen), orthogonal(HIDDEN, gen)
    Q = Qh[:, :N_IN]
    sigma = U @ torch.diag(torch.as_tensor(STRENGTHS)) @ V.T
    W1 = math.sqrt(U0) * Q @ V.T
    W2 = math.sqrt(U0) * U @ Q.T
    theta0 = torch.cat([W1.reshape(-1), W2.reshape(-1)])

    def unpack(theta):
        return theta[:HIDDEN * N_IN].reshape(HIDDEN, N_IN), theta[HIDDEN * N_IN:].reshape(N_IN, HIDDEN)

    def loss(theta):
        w1, w2 = unpack(theta)
        return 0.5 * ((w2 @ w1 - sigma) ** 2).sum()

    def modes(theta):  # (n, n) matrix U^T W2 W1 V: diagonal = mode strengths
        w1, w2 = unpack(theta)
        return U.T @ w2 @ w1 @ V

    return loss, theta0, modes


def logistic(s: np.ndarray, u0: float, t: np.ndarray) -> np.ndarray:
    g = np.exp(2 * s * t)
    return s * u0 * g / (s - u0 + u0 * g)


def learning_time(s: np.ndarray, u0: float, uf: np.ndarray) -> np.ndarray:
    return np.log(uf * (s - u0) / (u0 * (s - uf))) / (2 * s)


def test_linear_network_modes_follow_the_logistic_closed_form():
    loss, theta0, modes = linear_network_problem()
    grid = log_time_grid(1e-3, 20.0, 80)
    result = integrate_flow(gradient_field(loss), theta0, grid, rtol=1e-6, atol=1e-12)
    assert result.status == "ok" and result.status_time is None
    assert len(result.t) == len(grid) and np.array_equal(result.t, grid)

    M = torch.stack([modes(x) for x in result.states]).numpy()  # (K, n, n)
    strengths = np.diagonal(M, axis1=1, axis2=2)  # (K, n)
    expected = logistic(STRENGTHS[None, :], U0, grid[:, None])
    assert np.max(np.abs(strengths - expected) / expected) < 1e-4
    # The modes stay decoupled (off-diagonal entries stay at round-off relative to the modes).
    off = M - np.einsum("ki,ij->kij", strengths, np.eye(N_IN))
    assert np.max(np.abs(off)) < 1e-9
    # Every mode is learned by t_max = 20 (the weakest to within 499 e^{-20} ≈ 1e-6).
    assert np.allclose(strengths[-1], STRENGTHS, rtol=1e-5)

    # Stronger modes are learned first: the first grid time past half strength is ordered by s.
    first_half = [grid[np.argmax(strengths[:, i] > STRENGTHS[i] / 2)] for i in range(N_IN)]
    assert first_half[0] < first_half[1] < first_half[2]


def test_linear_network_learning_times():
    loss, theta0, modes = linear_network_problem()
    uf = STRENGTHS / 2
    times = learning_time(STRENGTHS, U0, uf)
    # Independent numbers: s=3 needs ln(2999)/6, s=0.5 needs ln(499)/1.
    assert times[0] == pytest.approx(math.log(2999) / 6, rel=1e-12)
    assert times[2] == pytest.approx(math.log(499), rel=1e-12)
    assert np.all(np.diff(times) > 0)  # stronger modes first

    grid = np.concatenate([[0.0], np.sort(times)])
    result = integrate_flow(gradient_field(loss), theta0, grid, rtol=1e-6, atol=1e-12)
    assert result.status == "ok"
    reached = [float(modes(result.states[1 + i])[i, i]) for i in range(N_IN)]
    assert np.allclose(reached, uf, rtol=1e-4)
    # Just before its learning time each mode is still below u_f, just after it is above.
    for i in range(N_IN):
        around = np.array([0.0, 0.97 * times[i], 1.03 * times[i]])
        res = integrate_flow(gradient_field(loss), theta0, around, rtol=1e-6, atol=1e-12)
        before, after = (float(modes(x)[i, i]) for x in res.states[1:])
        assert before < uf[i] < after


# --------------------------------------------------------------------------------------------------
# 2. Statuses
# --------------------------------------------------------------------------------------------------

def square(t, theta: torch.Tensor) -> torch.Tensor:
    return theta**2


@pytest.mark.parametrize("chunk", [32, 4])
def test_finite_time_blow_up_keeps_the_states_before_it(chunk):
    grid = np.linspace(0.0, 2.0, 101)  # t = 1 is a grid point; blow-up of 1/(1 - t) happens there
    theta0 = torch.tensor([1.0], dtype=torch.float64)
    result = integrate_flow(square, theta0, grid, rtol=1e-6, atol=1e-12, chunk=chunk)
    assert result.status in ("nonfinite", "step_underflow"), (result.status, result.message)
    assert result.status_time == pytest.approx(1.0, rel=0.05)
    assert result.message
    # Every grid point strictly before the blow-up (0, 0.02, ..., 0.98) is kept, none after it.
    assert np.array_equal(result.t, grid[:50])
    assert result.states.shape == (50, 1)
    exact = 1.0 / (1.0 - result.t)
    assert np.allclose(result.states[:, 0].numpy(), exact, rtol=1e-4)


def test_field_turning_nan_gives_nonfinite():
    def field(t, theta):
        return torch.where(theta < 0.5, torch.ones_like(theta), torch.full_like(theta, math.nan))

    grid = np.linspace(0.0, 1.0, 11)
    result = integrate_flow(field, torch.zeros(2, dtype=torch.float64), grid)
    assert result.status == "nonfinite"
    assert np.array_equal(result.t, grid[:len(result.t)])
    assert 5 <= len(result.t) <= 6  # 0 .. 0.4 always reached (θ = t), nothing past 0.5
    # The failure is reported at the solver stage that first saw NaN: past θ = 0.5, within one step.
    assert result.t[-1] <= 0.5 < result.status_time <= 1.0
    assert np.allclose(result.states.numpy(), np.repeat(result.t[:, None], 2, axis=1), atol=1e-10)


def test_step_budget_gives_max_steps():
    grid = log_time_grid(1e-3, 100.0, 20)
    theta0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    result = integrate_flow(lambda t, x: -x, theta0, grid, max_steps=5)
    assert result.status == "max_steps"
    assert result.status_time is not None and 0 < result.status_time < 100.0
    assert "max_steps" in result.message
    assert len(result.t) < len(grid)
    # The trajectory up to the failure is kept (integrate_flow's docstring): every grid point
    # that the accepted steps passed before the budget ran out.
    reached = grid[grid <= result.status_time]
    assert len(reached) > 1  # the five steps pass several grid points of this log grid
    assert np.array_equal(result.t, reached), (result.t, result.status_time)
    expected = np.exp(-result.t)[:, None] * np.array([1.0, 2.0])
    assert np.allclose(result.states.numpy(), expected, rtol=1e-5)


def test_ok_run_covers_the_grid_across_chunks():
    grid = log_time_grid(1e-3, 10.0, 100)  # more grid points than one chunk
    theta0 = torch.tensor([1.0, -3.0], dtype=torch.float64)
    rates = torch.tensor([1.0, 0.3], dtype=torch.float64)
    result = integrate_flow(lambda t, x: -rates * x, theta0, grid, rtol=1e-9, atol=1e-12, chunk=32)
    assert result.status == "ok" and result.status_time is None
    assert len(result.t) == len(grid) and result.states.shape == (len(grid), 2)
    assert np.array_equal(result.t, grid)
    assert torch.equal(result.states[0], theta0)
    expected = np.exp(-np.outer(grid, rates.numpy())) * theta0.numpy()
    assert np.allclose(result.states.numpy(), expected, rtol=1e-7, atol=1e-12)
    assert result.cost.accepted_steps > 0 and result.cost.function_evals >= 6 * result.cost.accepted_steps


def test_progress_is_called_with_increasing_times():
    seen: list[float] = []
    grid = log_time_grid(1e-2, 5.0, 40)
    result = integrate_flow(lambda t, x: -x, torch.ones(1, dtype=torch.float64), grid, progress=seen.append)
    assert result.status == "ok"
    assert len(seen) == result.cost.accepted_steps
    assert np.all(np.diff(seen) > 0) and seen[-1] == pytest.approx(5.0, rel=0.5)


# --------------------------------------------------------------------------------------------------
# 3. Time grid
# --------------------------------------------------------------------------------------------------

def test_log_time_grid():
    grid = log_time_grid(0.01, 100.0, 6)
    assert grid.shape == (6,) and grid.dtype == np.float64
    assert np.allclose(grid, [0.0, 0.01, 0.1, 1.0, 10.0, 100.0], rtol=1e-12, atol=0)
    assert grid[1] == 0.01 and grid[-1] == pytest.approx(100.0, rel=1e-15)
    longer = log_time_grid(1e-3, 819.2, 256)
    assert longer.shape == (256,) and longer[0] == 0.0
    ratios = np.diff(np.log(longer[1:]))
    assert np.allclose(ratios, math.log(819.2 / 1e-3) / 254, rtol=1e-9)
    assert np.all(np.diff(longer) > 0)
