"""Adam in numbers: the trainer's steps against an Adam written out by hand (numpy) on a small problem whose
objective changes from step to step, as the fresh batches of training do."""

from __future__ import annotations

import numpy as np
import torch

from dynamics.training import train

A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, -0.2], [0.0, -0.2, 0.3]])
B = np.array([1.0, -2.0, 0.5])
P = np.array([1.0, 0.5, 2.0])  # a diagonal metric: Adam sees g = P ∇L
THETA0 = np.array([0.3, -0.1, 2.0])
LR, BETA1, BETA2, EPS, STEPS = 0.05, 0.8, 0.99, 1e-6, 7


def loss_at(k: int, theta):
    """A quadratic that moves with the step k: L_k(θ) = ½ θᵀAθ − (1 + k/10) bᵀθ + ¼ Σ θ⁴."""
    a, b = torch.as_tensor(A), torch.as_tensor(B)
    return 0.5 * theta @ (a @ theta) - (1 + k / 10) * (b @ theta) + 0.25 * (theta**4).sum()


def hand_adam() -> np.ndarray:
    """θ_0 … θ_STEPS by the textbook update (Kingma & Ba, with ε added to √v̂)."""
    theta, m, v = THETA0.copy(), np.zeros(3), np.zeros(3)
    states = [theta.copy()]
    for k in range(STEPS):
        grad = P * (A @ theta - (1 + k / 10) * B + theta**3)
        m = BETA1 * m + (1 - BETA1) * grad
        v = BETA2 * v + (1 - BETA2) * grad**2
        m_hat, v_hat = m / (1 - BETA1 ** (k + 1)), v / (1 - BETA2 ** (k + 1))
        theta = theta - LR * m_hat / (np.sqrt(v_hat) + EPS)
        states.append(theta.copy())
    return np.stack(states)


def test_adam_matches_a_hand_written_update():
    result = train(lambda k: (lambda theta: loss_at(k, theta)), torch.as_tensor(THETA0), optimizer="adam",
                   lr=LR, steps=STEPS, record=np.arange(STEPS + 1), preconditioner=torch.as_tensor(P),
                   beta1=BETA1, beta2=BETA2, eps=EPS)
    assert result.status == "ok" and result.cost.function_evals == STEPS
    np.testing.assert_array_equal(result.t, np.arange(STEPS + 1) * LR)
    expected = hand_adam()
    assert np.abs(expected[-1] - THETA0).max() > 0.1  # the steps move θ: the comparison is not of θ_0
    np.testing.assert_allclose(result.states.numpy(), expected, rtol=0, atol=1e-12)
