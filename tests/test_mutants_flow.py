"""Tests written for the mutants that survived a stratified mutation sample of the flow's inner loop
(dynamics/solvers/*, fields, curvature, steppers, training/discrete, manifold, sign_flow): each pins a
behaviour the docstrings promise, against a closed form or a hand-written computation, on problems of two to
five parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.fields import batched_gradient_field, gradient_field, gradient_field_jacobian, row_by_row
from dynamics.geometry import DiagonalMetric, ParameterBlock, SignDescent
from dynamics.manifold import check_authors_task
from dynamics.objective import gradient
from dynamics.problem import build_run
from dynamics.sign_flow import exact_sign_flow, exact_sign_refusal
from dynamics.solvers import (
    FlowProblem,
    SolverOptions,
    integrate_flow,
    integrate_flow_batch,
    integrate_problem,
)
from dynamics.solvers.filippov import integrate_sign_flow
from dynamics.solvers.pace import TIME_LIMIT, Pace, format_seconds, pace_for, steps_between, time_limit
from dynamics.solvers.preconditioner import CvodePreconditioner
from dynamics.task import FactTask
from dynamics.training import record_steps, train

F64 = torch.float64
A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, -0.2], [0.0, -0.2, 0.3]], dtype=F64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=F64)


def quadratic(theta: torch.Tensor) -> torch.Tensor:
    """L(θ) = ½ θᵀAθ − bᵀθ, ∇L = Aθ − b, H = A."""
    return 0.5 * theta @ (A @ theta) - B @ theta


class ClosedQuadratic:
    """The quadratic with a batched closed-form gradient that counts its calls and the rows it was handed."""

    def __init__(self):
        self.rows: list[int] = []

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return quadratic(theta)

    def value_and_grad(self, thetas: torch.Tensor):
        self.rows.append(thetas.shape[0])
        return 0.5 * ((thetas @ A) * thetas).sum(-1) - thetas @ B, thetas @ A - B


THETAS = torch.tensor([[0.3, -0.1, 2.0], [1.0, 0.5, -0.4]], dtype=F64)
HAND_GRADS = THETAS @ A - B  # A is symmetric: row b is A θ_b − b


# --- dynamics/fields.py -----------------------------------------------------------------------------------

def test_the_batched_field_takes_the_objectives_batched_closed_form_once_per_batch():
    objective = ClosedQuadratic()
    field = batched_gradient_field(objective)
    torch.testing.assert_close(field(0.0, THETAS), -HAND_GRADS, rtol=0, atol=1e-14)
    assert objective.rows == [2]  # one call for the whole batch, not autodiff


def test_the_batched_field_of_a_plain_function_is_its_autodiff_gradient_in_the_metric():
    P = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    field = batched_gradient_field(quadratic, P)
    torch.testing.assert_close(field(0.0, THETAS), -P * HAND_GRADS, rtol=0, atol=1e-14)


def test_the_batched_field_applies_a_non_batched_geometry_row_by_row():
    field = batched_gradient_field(ClosedQuadratic(), SignDescent(eps=0.5))
    x = HAND_GRADS
    torch.testing.assert_close(field(0.0, THETAS), -x / torch.sqrt(x * x + 0.25), rtol=0, atol=1e-14)


def test_row_by_row_stacks_the_one_flow_field():
    field = row_by_row(gradient_field(quadratic))
    torch.testing.assert_close(field(0.0, THETAS), -HAND_GRADS, rtol=0, atol=1e-14)


def test_the_gradient_is_the_objectives_closed_form_where_it_has_one():
    objective = ClosedQuadratic()
    value, grad = gradient(objective, THETAS[0])
    assert objective.rows == [3]
    assert float(value) == pytest.approx(float(quadratic(THETAS[0])), rel=1e-14)
    torch.testing.assert_close(grad, HAND_GRADS[0], rtol=0, atol=1e-14)


class GradientAlone(ClosedQuadratic):
    """The quadratic that also offers its gradient alone, counting which form was asked."""

    def __init__(self):
        super().__init__()
        self.alone: list[int] = []

    def grad(self, thetas: torch.Tensor):
        self.alone.append(thetas.shape[0])
        return thetas @ A - B


def test_fields_take_the_gradient_alone_where_the_objective_offers_it():
    objective = GradientAlone()
    one, batched = gradient_field(objective)(0.0, THETAS[0]), batched_gradient_field(objective)(0.0, THETAS)
    torch.testing.assert_close(one, -HAND_GRADS[0], rtol=0, atol=1e-14)
    torch.testing.assert_close(batched, -HAND_GRADS, rtol=0, atol=1e-14)
    assert objective.alone == [3, 2] and objective.rows == []  # never the loss with it


def test_the_dense_jacobian_is_minus_p_times_the_hessian():
    P = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    jacobian = gradient_field_jacobian(quadratic, P)
    torch.testing.assert_close(jacobian(0.0, THETAS[0]), -P[:, None] * A, rtol=0, atol=1e-14)


def test_a_sampled_loss_is_the_same_sample_for_the_same_seed():
    from dynamics.objective import make_objective
    from dynamics.run import setup

    def value(seed: int) -> float:
        overrides = {"loss.kind": "sampled", "loss.samples": 16, "loss.seed": seed}
        config = resolve_config("tiny", overrides=overrides)
        task, model, _ = setup(config)
        theta = 0.3 * torch.randn(model.num_params, generator=torch.Generator().manual_seed(0), dtype=F64)
        return float(make_objective(model, task, config.loss)(theta))

    assert value(3) == value(3) != value(4)


# --- dynamics/curvature.py --------------------------------------------------------------------------------

def test_sharpness_is_the_largest_eigenvalue_to_the_tolerance_it_promises():
    """Lanczos on a 5 × 5 quadratic with spread eigenvalues: the tridiagonal matrix needs its off-diagonal
    β_k at full precision to give λ_max to 1e-10 (in float32 they were off by ~1e-8)."""
    from dynamics.curvature import sharpness

    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=F64))
    eigenvalues = torch.tensor([0.01, 0.3, 1.7, 4.2, 9.123456789], dtype=F64)
    H = q @ torch.diag(eigenvalues) @ q.T
    P = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25], dtype=F64)
    root = P.sqrt()
    expected = float(torch.linalg.eigvalsh(root[:, None] * H * root[None, :])[-1])
    value = sharpness(lambda theta: 0.5 * theta @ (H @ theta), torch.zeros(5, dtype=F64), P)
    assert value == pytest.approx(expected, rel=1e-12)


# --- dynamics/steppers.py and dynamics/training/discrete.py ------------------------------------------------

def _one_step(optimizer: str, lr: float) -> torch.Tensor:
    theta0 = torch.tensor([0.3, -0.1, 2.0], dtype=F64)
    result = train(lambda k: quadratic, theta0, optimizer=optimizer, lr=lr, steps=1, record=np.arange(2))
    assert result.status == "ok" and (result.cost.function_evals, result.cost.accepted_steps) == (1, 1)
    torch.testing.assert_close(result.states[0], theta0, rtol=0, atol=0)
    return result.states[1]


def test_signsgd_steps_by_the_sign_of_the_gradient():
    theta0 = torch.tensor([0.3, -0.1, 2.0], dtype=F64)
    g = A @ theta0 - B  # (0.35, -1.35, 1.12)
    torch.testing.assert_close(_one_step("signsgd", 0.1), theta0 - 0.1 * torch.sign(g), rtol=0, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["muon", "muon_svd"])
def test_muon_steps_a_vector_block_by_its_normalised_gradient(optimizer):
    theta0 = torch.tensor([0.3, -0.1, 2.0], dtype=F64)
    g = A @ theta0 - B
    torch.testing.assert_close(_one_step(optimizer, 0.1), theta0 - 0.1 * g / g.norm(), rtol=0, atol=1e-15)


def test_muon_normalises_each_vector_block_on_its_own_beside_a_matrix_block():
    """θ = (W (2 × 2), a (2), b (1)) under L = ½‖θ − c‖²: a and b step by −η g/‖g‖ each (b: −η sign(g));
    W moves by its orthogonalised momentum (finite, not by the plain gradient)."""
    blocks = [ParameterBlock("W", 0, (2, 2)), ParameterBlock("a", 4, (2,)), ParameterBlock("b", 6, (1,))]
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0, -1.0, 2.0], dtype=F64)
    theta0 = torch.zeros(7, dtype=F64)
    result = train(lambda k: (lambda theta: 0.5 * ((theta - c) ** 2).sum()), theta0, optimizer="muon", lr=0.1,
                   steps=1, record=np.arange(2), blocks=blocks)
    g = theta0 - c
    step = result.states[1] - theta0
    torch.testing.assert_close(step[4:6], -0.1 * g[4:6] / g[4:6].norm(), rtol=0, atol=1e-15)
    torch.testing.assert_close(step[6:], -0.1 * torch.sign(g[6:]), rtol=0, atol=1e-15)
    assert bool(torch.isfinite(step[:4]).all()) and float((step[:4] + 0.1 * g[:4]).abs().max()) > 1e-3


def test_gd_records_its_first_loss_increase_not_its_last():
    """L = θ² with η = 1.5: θ_k+1 = −2 θ_k, so the loss rises at every step from k = 1 on."""
    result = train(lambda k: (lambda theta: (theta**2).sum()), torch.ones(1, dtype=F64), optimizer="gd",
                   lr=1.5, steps=4, record=np.arange(5))
    np.testing.assert_allclose(result.states[:, 0].numpy(), [1.0, -2.0, 4.0, -8.0, 16.0], rtol=0, atol=0)
    assert result.first_loss_increase == 1


def test_record_steps_are_integers():
    steps = record_steps(np.array([0.0, 0.25, 0.5, 9.0]), 0.1, 6)
    assert steps.dtype == np.int64 and steps.tolist() == [0, 2, 5, 6]


def test_the_polar_factor_drops_singular_values_at_rounding_level():
    """G = 10¹⁰ u vᵀ (rank 1; its second singular value comes out at ~4e-6, rounding of 10¹⁰):
    U Vᵀ = u vᵀ / (‖u‖‖v‖)."""
    from dynamics.steppers import polar_factor

    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(3, generator=generator, dtype=F64), torch.randn(2, generator=generator, dtype=F64)
    G = 1e10 * torch.outer(u, v)
    assert 0 < float(torch.linalg.svdvals(G)[1]) < 1e-4
    torch.testing.assert_close(polar_factor(G), torch.outer(u / u.norm(), v / v.norm()), rtol=0, atol=1e-12)


def test_a_loss_non_finite_at_the_start_keeps_theta0_as_the_record():
    theta0 = torch.tensor([1.0, 2.0], dtype=F64)
    result = train(lambda k: (lambda theta: theta.sum() * math.inf), theta0, optimizer="gd", lr=0.1,
                   steps=3, record=np.arange(4))
    assert result.status == "nonfinite" and result.status_time == 0.0
    assert result.steps.tolist() == [0]
    torch.testing.assert_close(result.states, theta0[None], rtol=0, atol=0)


def test_parameters_that_overflow_end_the_run_with_the_states_before():
    """L = θ² from θ0 = 1e10 with η = 1e300: θ1 = θ0 − η·2θ0 = −inf, the loss at θ0 (1e20) finite."""
    theta0 = torch.tensor([1e10], dtype=F64)
    result = train(lambda k: (lambda theta: (theta**2).sum()), theta0, optimizer="gd", lr=1e300, steps=3,
                   record=np.arange(4))
    assert result.status == "nonfinite" and result.status_time == 1e300
    assert result.steps.tolist() == [0] and result.cost.function_evals == 1


def test_a_time_axis_that_overflows_ends_the_run_at_the_last_step_it_can_place():
    """η = 1e308: t = 2η overflows, so the run stops at step 1, t = 1e308."""
    result = train(lambda k: (lambda theta: (0 * theta).sum()), torch.ones(1, dtype=F64), optimizer="gd",
                   lr=1e308, steps=3, record=np.arange(4))
    assert result.status == "nonfinite" and result.status_time == 1e308
    assert result.steps.tolist() == [0, 1]


# --- dynamics/solvers/pace.py ------------------------------------------------------------------------------

def test_a_grid_of_two_points_is_paced_and_no_margin_is_no_pace():
    assert isinstance(pace_for(np.array([0.0, 1.0]), 100), Pace)
    assert pace_for(np.array([0.0]), 100) is None
    assert pace_for(np.array([0.0, 1.0]), 100, margin=0.0) is None


def test_an_unbounded_time_is_said_in_words_and_a_zero_step_never_gets_there():
    assert format_seconds(math.inf) == "unboundedly long"
    assert steps_between(1.0, 2.0, 0.0, 1.0, 0.5) == math.inf


def test_the_time_limit_is_read_from_factrecall_time_limit(monkeypatch):
    monkeypatch.setenv("FACTRECALL_TIME_LIMIT", "10min")
    assert time_limit() == 600.0
    monkeypatch.delenv("FACTRECALL_TIME_LIMIT")
    assert time_limit() == TIME_LIMIT


# --- dynamics/solvers/preconditioner.py --------------------------------------------------------------------

class _Blocks:
    """Newton blocks of J = −diag(d): M(γ) = I + γ diag(d), solved exactly."""

    d = torch.tensor([1.0, 4.0], dtype=F64)

    def at(self, t, theta):
        return self

    @staticmethod
    def _into(value, out):
        return value if out is None else out.copy_(value)

    def factor(self, gamma):
        return lambda r, out=None: self._into(r / (1 + gamma * self.d), out)

    def product(self):
        return lambda v, out=None: self._into(self.d * v, out)


def test_the_preconditioner_counts_one_setup_per_fresh_jacobian():
    preconditioner = CvodePreconditioner(_Blocks(), torch.zeros(2, dtype=F64))
    y, jnew = np.zeros(2), [0]
    preconditioner.setup(0.0, y, y, False, jnew, 0.5)
    assert jnew == [1]
    preconditioner.setup(0.1, y, y, True, jnew, 0.25)  # only γ changed: the blocks are kept
    assert jnew == [0]
    assert (preconditioner.counts.setups, preconditioner.counts.factorisations) == (1, 2)
    z = np.zeros(2)
    preconditioner.solve(0.1, y, y, np.array([1.25, 2.0]), z, 0.25, 0.0, 0)
    np.testing.assert_allclose(z, [1.0, 1.0], rtol=0, atol=1e-15)


def test_the_preconditioners_jacobian_product_is_minus_the_blocks_and_counted():
    preconditioner = CvodePreconditioner(_Blocks(), torch.zeros(2, dtype=F64))
    y, jv = np.zeros(2), np.zeros(2)
    preconditioner.setup(0.0, y, y, False, [0], 0.5)
    preconditioner.jacobian_vector(0.0, y, y, np.array([1.0, 2.0]), jv)
    np.testing.assert_allclose(jv, [-1.0, -8.0], rtol=0, atol=0)
    assert preconditioner.counts.products == 1


def test_a_jacobian_product_before_any_setup_is_refused():
    preconditioner = CvodePreconditioner(_Blocks(), torch.zeros(2, dtype=F64))
    with pytest.raises(RuntimeError, match="^cvode asked for J·v before setting its preconditioner up$"):
        preconditioner.jacobian_vector(0.0, np.zeros(2), np.zeros(2), np.ones(2), np.zeros(2))


# --- dynamics/solvers/sliding.py ----------------------------------------------------------------------------

HALF_NORM = lambda theta: 0.5 * (theta**2).sum()  # noqa: E731  (∇L = θ)


def test_sliding_holds_the_entries_whose_metric_is_zero():
    """dθ/dt = −sign(P θ), P = (1, 0), θ0 = (1, 2): θ1 = max(1 − t, 0), θ2 stays at 2."""
    field = gradient_field(HALF_NORM, SignDescent(torch.tensor([1.0, 0.0], dtype=F64)))
    times = np.array([0.0, 0.5, 1.5, 3.0])
    result = integrate_flow(field, torch.tensor([1.0, 2.0], dtype=F64), times, method="sliding")
    assert result.status == "ok" and result.status_time is None and result.message == ""
    assert result.cost.function_evals > 0
    expected = np.stack([np.maximum(1 - times, 0.0), np.full(4, 2.0)], axis=1)
    np.testing.assert_allclose(result.states.numpy(), expected, rtol=0, atol=1e-12)


def test_sliding_stopped_by_its_budget_says_when():
    field = gradient_field(quadratic, SignDescent())
    result = integrate_flow(field, torch.tensor([1.0, 0.2, -0.5], dtype=F64), np.array([0.0, 1.0, 3.0]),
                            method="sliding", max_steps=3)
    assert result.status == "max_steps" and 0.0 <= result.status_time < 3.0
    assert result.message.startswith("step budget flow.max_steps=3 exhausted at t=")


@pytest.mark.parametrize("geometry", [DiagonalMetric(), SignDescent(eps=0.1)], ids=["euclidean", "smoothed"])
def test_sliding_refuses_a_field_that_is_not_the_exact_sign_flow(geometry):
    field = gradient_field(HALF_NORM, geometry)
    with pytest.raises(ConfigError, match=r"^flow\.method='sliding': integrates the ε = 0 sign flow"):
        integrate_flow(field, torch.ones(2, dtype=F64), np.array([0.0, 1.0]), method="sliding")


def test_sliding_with_an_observer_hands_back_the_last_state():
    """States not kept (an observer sees them): the result's last state is still θ(t_end) = (0, 2)."""
    field = gradient_field(HALF_NORM, SignDescent(torch.tensor([1.0, 0.0], dtype=F64)))
    seen = []
    problem = FlowProblem(field, torch.tensor([1.0, 2.0], dtype=F64), np.array([0.0, 0.5, 3.0]),
                          observe=lambda k, theta: seen.append(k))
    result = integrate_problem(problem, "sliding", SolverOptions())
    assert result.states is None and seen == [0, 1, 2]
    torch.testing.assert_close(result.last_state, torch.tensor([0.0, 2.0], dtype=F64), rtol=0, atol=1e-12)


# --- dynamics/solvers/__init__.py ---------------------------------------------------------------------------

def test_the_observer_sees_each_grid_point_once_and_no_breakpoint_off_the_grid():
    """dθ/dt = −θ with a breakpoint at t = 0.5 between the grid points 0.3 and 1: the observer is handed
    k = 0, 1, 2 with θ = e^{−t_k}, never the breakpoint's state."""
    seen = []
    times = np.array([0.0, 0.3, 1.0])
    problem = FlowProblem(lambda t, theta: -theta, torch.ones(1, dtype=F64), times, breakpoints=(0.5,),
                          observe=lambda k, theta: seen.append((k, float(theta[0]))))
    result = integrate_problem(problem, "dopri5", SolverOptions(rtol=1e-10, atol=1e-12))
    assert result.status == "ok" and [k for k, _ in seen] == [0, 1, 2]
    np.testing.assert_allclose([value for _, value in seen], np.exp(-times), rtol=1e-8)


# --- dynamics/solvers/filippov.py ---------------------------------------------------------------------------

def test_the_sign_flows_cost_counts_every_gradient_and_hessian_product():
    calls = {"grad": 0, "hvp": 0}

    def grad(theta):
        calls["grad"] += 1
        return A @ theta

    def hvp(theta, x):
        calls["hvp"] += 1
        return A @ x

    result = integrate_sign_flow(grad, hvp, torch.tensor([1.0, 0.2, -0.5], dtype=F64), [0.0, 0.5, 3.0])
    assert result.status == "ok" and calls["grad"] > 0 and calls["hvp"] > 0
    assert (result.cost.function_evals, result.cost.hvp_evals) == (calls["grad"], calls["hvp"])


def test_a_first_step_far_too_long_is_cut_until_the_gradient_is_near_linear():
    """L = eᶿ − θ (g = eᶿ − 1) from θ0 = 20 with a first step of 100: θ(t) = 20 − t, then 0 (slides). The
    first step (to θ = 0.5, no event) misses linearity by ~18 ‖g‖: the step must shrink, not grow."""
    result = integrate_sign_flow(lambda theta: torch.exp(theta) - 1, lambda theta, x: torch.exp(theta) * x,
                                 torch.tensor([20.0], dtype=F64), [0.0, 19.5, 30.0], first_step=100.0,
                                 max_steps=100)
    assert result.status == "ok"
    np.testing.assert_allclose(result.states[:, 0].numpy(), [20.0, 0.5, 0.0], rtol=0, atol=1e-12)


def test_entries_released_from_a_slide_take_the_side_their_gradient_moves_to():
    """g = Aθ − b, A = [[22, −12, −7], [−12, 13, 8], [−7, 8, 5]], b = (1, 0, 0), from θ = 0: entries 1 and 2
    start at g = 0 and θ₀ moves up. Sliding both needs u = (4, −5) (outside [−1, 1]); the Filippov mode (the
    box-constrained solve, by hand) is u = (1, −0.2): entry 1 leaves upwards (ġ₁ = −0.6 < 0), entry 2 slides,
    so θ(t) = (t, t, −0.2 t) while g₀ = −1 + 11.4 t < 0."""
    A3 = torch.tensor([[22.0, -12.0, -7.0], [-12.0, 13.0, 8.0], [-7.0, 8.0, 5.0]], dtype=F64)
    b = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    times = np.array([0.0, 0.02, 0.05])
    result = integrate_sign_flow(lambda theta: A3 @ theta - b, lambda theta, x: A3 @ x,
                                 torch.zeros(3, dtype=F64), times)
    assert result.status == "ok"
    np.testing.assert_allclose(result.states.numpy(), np.outer(times, [1.0, 1.0, -0.2]), rtol=0, atol=1e-9)


def test_entries_hitting_zero_together_under_a_curved_loss_follow_the_hand_solution():
    """tests/test_filippov.py's joint event (entries 1 and 2 reach 0 together at t = 1, then entry 1 slides,
    entry 2 crosses and entry 0 leaves its slide) with L = ½ θᵀAθ + θ₃⁴/4: the quartic term adds 3θ₃² to H₃₃
    only, so the Hessian changes with θ while entries 0–2 move exactly as in the quadratic case (g₃ stays
    far above 0)."""
    A4 = torch.tensor([[14.0, 8.0, -15.0, 6.0], [8.0, 6.0, -9.0, 4.0], [-15.0, -9.0, 20.0, 0.0],
                       [6.0, 4.0, 0.0, 40.0]], dtype=F64)
    quartic = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64)

    def grad(theta):
        return A4 @ theta + quartic * theta**3

    def hvp(theta, x):
        return A4 @ x + 3 * quartic * theta**2 * x

    theta0 = torch.linalg.solve(A4, torch.tensor([0.0, 11 / 7, 139 / 14, 100.0], dtype=F64))
    times = np.array([0.0, 0.5, 1.0, 1.1, 1.2])
    result = integrate_sign_flow(grad, hvp, theta0, times)
    first, second = np.array([-1 / 14, -1.0, -1.0, -1.0]), np.array([1.0, 5 / 6, 1.0, -1.0])
    exact = [theta0.numpy() + min(t, 1.0) * first + max(t - 1.0, 0.0) * second for t in times]
    assert result.status == "ok"
    np.testing.assert_allclose(result.states.numpy(), exact, rtol=0, atol=1e-10)


def test_an_entry_whose_gradient_dips_through_zero_inside_a_step_is_not_missed():
    """L = 5x² + y·((x − ½)² − 10⁻⁴): g = (10x + 2y(x − ½), (x − ½)² − 10⁻⁴) from (1, 0). x = 1 − t throughout
    (g_x > 0); g_y < 0 only for t ∈ (0.49, 0.51), where y turns up: y(0.8) = −0.49 + 0.02 − 0.29 = −0.76.
    g_y is positive again at the end of a step over the dip: only the step's interpolant sees it."""

    def grad(theta):
        x, y = theta[0], theta[1]
        return torch.stack([10 * x + 2 * y * (x - 0.5), (x - 0.5) ** 2 - 1e-4])

    def hvp(theta, w):
        x, y = float(theta[0]), float(theta[1])
        return torch.tensor([[10 + 2 * y, 2 * (x - 0.5)], [2 * (x - 0.5), 0.0]], dtype=F64) @ w

    result = integrate_sign_flow(grad, hvp, torch.tensor([1.0, 0.0], dtype=F64), [0.0, 0.3, 0.8])
    assert result.status == "ok"
    # an entry released at g = 0 meets its next event 1e-9·‖g‖∞ past 0 (module docstring): ~3e-7 in y here
    np.testing.assert_allclose(result.states.numpy(), [[1.0, 0.0], [0.7, -0.3], [0.2, -0.76]], rtol=0,
                               atol=1e-6)


# --- dynamics/solvers/explicit.py and implicit.py ----------------------------------------------------------

def test_an_explicit_run_hands_back_its_last_step_to_continue_with():
    result = integrate_flow(lambda t, theta: -theta, torch.ones(1, dtype=F64), np.linspace(0.0, 1.0, 5))
    assert result.status == "ok" and 0 < result.last_step <= 1.0


def test_an_implicit_run_with_its_budget_spent_stops_at_its_start():
    problem = FlowProblem(lambda t, theta: -theta, torch.ones(1, dtype=F64), np.array([0.0, 0.5, 1.0]))
    result = integrate_problem(problem, "cvode", SolverOptions(max_steps=10, spent=10))
    assert (result.status, result.status_time) == ("max_steps", 0.0)
    assert result.message == "step budget flow.max_steps=10 exhausted at t=0"
    np.testing.assert_array_equal(result.t, [0.0])


def test_cvode_giving_up_on_a_field_turning_nan_says_which_solver_gave_up():
    result = integrate_flow(lambda t, theta: theta**2 if float(theta[0]) < 10 else theta * math.nan,
                            torch.ones(1, dtype=F64), np.array([0.0, 0.5, 2.0]), method="cvode")
    assert result.status == "nonfinite" and 0.85 < result.status_time < 0.95  # θ = 1/(1 − t) = 10 at 0.9
    assert result.message.endswith("(CVODE: step size underflow)")


# --- dynamics/solvers/auto.py -------------------------------------------------------------------------------

def test_auto_switches_a_stiff_linear_flow_to_cvode_and_says_so():
    """dθ/dt = −diag(1, 2000) θ: after the fast mode has decayed dopri5's step is held at its stability
    bound (h·ρ ≈ 3.3 ≥ 2) with thousands of steps left, so auto hands the rest to cvode."""
    rates = torch.tensor([1.0, 2000.0], dtype=F64)
    times = np.concatenate([np.linspace(0.0, 0.1, 21), [1.0, 5.0]])
    result = integrate_flow(lambda t, theta: -rates * theta, torch.ones(2, dtype=F64), times, method="auto",
                            rtol=1e-8, atol=1e-10)
    assert result.status == "ok" and result.method_used.endswith("then cvode")
    assert set(result.method_split) == {"dopri5", "stiffness_probes", "cvode"}
    expected = np.exp(-np.outer(times, rates.numpy()))
    np.testing.assert_allclose(result.states.numpy(), expected, rtol=0, atol=1e-6)


def test_auto_counts_its_spans_steps_against_the_budget():
    """A rotation (not stiff) needs thousands of dopri5 steps to t = 200: with a budget of 100 steps auto
    stops at it, having taken no more."""
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    result = integrate_flow(lambda t, theta: rotation @ theta, torch.tensor([1.0, 0.0], dtype=F64),
                            np.linspace(0.0, 200.0, 401), method="auto", max_steps=100)
    assert result.status == "max_steps" and result.cost.accepted_steps <= 100


def test_auto_on_a_flow_that_is_not_stiff_stays_explicit_and_counts_its_probes():
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    times = np.linspace(0.0, 80.0, 5)  # ~360 steps: the first span's check sees > 200 left
    result = integrate_flow(lambda t, theta: rotation @ theta, torch.tensor([1.0, 0.0], dtype=F64), times,
                            method="auto")
    assert result.status == "ok" and result.method_used == "dopri5 (no long stiff stretch)"
    split = result.method_split
    assert set(split) == {"dopri5", "stiffness_probes"} and split["stiffness_probes"].function_evals > 0
    parts = split["dopri5"].function_evals + split["stiffness_probes"].function_evals
    assert result.cost.function_evals == parts
    np.testing.assert_allclose(result.states[:, 0].numpy(), np.cos(times), rtol=0, atol=1e-4)


def test_a_batch_stops_at_its_step_budget():
    result = integrate_flow_batch(lambda t, thetas: -thetas, torch.ones(2, 1, dtype=F64),
                                  np.linspace(0.0, 50.0, 3), max_steps=5)
    assert result.status == "max_steps"


@pytest.mark.parametrize("method", ["cvode", "auto"])
def test_an_implicit_method_uses_the_given_jacobian_product_across_breakpoints(method):
    """dθ/dt = −diag(1, 2000) θ with a breakpoint at t = 0.5 off the grid: the J·v handed in is what the
    method (and auto's stiffness probe) uses in both pieces, and the states are the exponential's."""
    rates = torch.tensor([1.0, 2000.0], dtype=F64)
    seen = []

    def product(t, theta, v):
        seen.append(t)
        return -rates * v

    times = np.concatenate([np.linspace(0.0, 0.1, 21), [0.7, 1.0, 5.0]])
    result = integrate_flow(lambda t, theta: -rates * theta, torch.ones(2, dtype=F64), times, method=method,
                            rtol=1e-8, atol=1e-10, breakpoints=[0.5], jacobian_vector=product)
    assert result.status == "ok" and min(seen) < 0.5 < max(seen)
    np.testing.assert_array_equal(result.t, times)
    np.testing.assert_allclose(result.states.numpy(), np.exp(-np.outer(times, rates.numpy())), rtol=0,
                               atol=1e-6)


# --- dynamics/manifold.py and dynamics/sign_flow.py ---------------------------------------------------------

def test_the_manifold_refusal_names_what_is_allowed():
    with pytest.raises(ConfigError) as error:
        check_authors_task(FactTask(resolve_config("tiny").task))
    assert str(error.value).endswith("; allowed: preset li2026 with task.subjects, task.relations")


def test_the_exact_sign_flow_holds_a_frozen_block_where_it_starts():
    config = resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.method": "sliding",
                                               "data.freeze": "a"})
    built = build_run(config)
    block = {b.name: b for b in built.model.parameter_blocks()}["a"]
    result = exact_sign_flow(config, times=np.array([0.0, 0.5]), built=built)
    assert result.status == "ok"
    part = slice(block.start, block.start + block.size)
    torch.testing.assert_close(result.states[-1, part], result.states[0, part], rtol=0, atol=0)
    assert float((result.states[-1] - result.states[0]).abs().max()) > 0.1


def test_the_exact_sign_flow_refuses_a_data_schedule_in_one_line():
    config = resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.method": "sliding",
                                               "data.zipf_end": 2.0})
    with pytest.raises(ConfigError) as error:
        exact_sign_flow(config)
    assert str(error.value) == ("data.*: a data schedule changes the loss with t; the sliding method "
                                "integrates one loss; allowed: the task's own frequencies throughout")


def test_the_exact_sign_refusal_of_a_smoothed_flow_names_what_is_allowed():
    config = resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.geometry_eps": 0.1})
    assert exact_sign_refusal(config) == (
        "flow.geometry_eps=0.1: the sliding method integrates the ε = 0 sign flow; allowed: 0 (a smoothed "
        "flow takes dopri5, cvode or auto)")
