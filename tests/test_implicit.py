"""Implicit (stiff-aware) integrators against closed-form solutions and against a tight dopri5 reference.

* A stiff linear gradient flow dθ/dt = −Aθ (eigenvalues of A from 0.05 to 200): exact e^{−At}θ0; the
  implicit methods take steps limited by accuracy, dopri5 by stability.
* Saxe et al.'s two-layer linear network (the logistic modes of tests/test_flow.py).
* The engine's contract: grid, statuses with their time and the states before, progress, step budget.
* On the simulator: figure5 through cvode matches a tight dopri5 reference, with the same stages.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from test_flow import N_IN, STRENGTHS, U0, linear_network_problem, logistic

from analysis.stages import detect_stages
from dynamics.config import ConfigError, resolve_config
from dynamics.fields import gradient_field, gradient_field_jacobian, gradient_field_jacobian_vector
from dynamics.run import log_time_grid, run_flow
from dynamics.solvers import integrate_flow, spectral_radius

METHODS = ["cvode", "bdf", "radau", "lsoda"]


def _jacobians(loss):
    return {"jacobian_vector": gradient_field_jacobian_vector(loss),
            "jacobian": gradient_field_jacobian(loss)}


def stiff_quadratic():
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    rates = torch.tensor([200.0, 3.0, 0.4, 0.05], dtype=torch.float64)
    a = q @ torch.diag(rates) @ q.T
    theta0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)

    def loss(theta):
        return 0.5 * theta @ (a @ theta)

    def exact(t):
        return np.stack([(q @ torch.diag(torch.exp(-rates * s)) @ q.T @ theta0).numpy() for s in t])

    return loss, theta0, exact


@pytest.mark.parametrize("method", METHODS)
def test_stiff_linear_flow_matches_its_exponential(method):
    loss, theta0, exact = stiff_quadratic()
    grid = log_time_grid(1e-3, 60.0, 60)
    result = integrate_flow(gradient_field(loss), theta0, grid, method=method, rtol=1e-8, atol=1e-12,
                            **_jacobians(loss))
    assert result.status == "ok" and result.status_time is None, result.message
    assert np.array_equal(result.t, grid)
    np.testing.assert_allclose(result.states.numpy(), exact(grid), rtol=1e-5, atol=1e-9)


def test_implicit_steps_are_bounded_by_accuracy_not_stability():
    loss, theta0, exact = stiff_quadratic()
    grid = log_time_grid(1e-3, 30.0, 60)
    explicit = integrate_flow(gradient_field(loss), theta0, grid, rtol=1e-6, atol=1e-10)
    implicit = integrate_flow(gradient_field(loss), theta0, grid, method="cvode", rtol=1e-6, atol=1e-10,
                              **_jacobians(loss))
    # dopri5 needs t_max·λ_max/3.3 ≈ 1800 steps; BDF a few hundred evaluations of f and of J·v together.
    assert explicit.cost.accepted_steps > 1500
    assert implicit.cost.function_evals + implicit.cost.hvp_evals < explicit.cost.function_evals / 10
    for result in (explicit, implicit):
        np.testing.assert_allclose(result.states.numpy(), exact(grid), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_two_layer_linear_network_closed_form(method):
    loss, theta0, modes = linear_network_problem()
    grid = log_time_grid(1e-3, 20.0, 80)
    result = integrate_flow(gradient_field(loss), theta0, grid, method=method, rtol=1e-8, atol=1e-13,
                            **_jacobians(loss))
    assert result.status == "ok", result.message
    strengths = np.stack([np.diag(modes(x).numpy()) for x in result.states])
    expected = logistic(STRENGTHS[None, :], U0, grid[:, None])
    assert np.max(np.abs(strengths - expected) / expected) < 1e-4
    assert np.allclose(strengths[-1], STRENGTHS, rtol=1e-5)
    assert strengths.shape == (len(grid), N_IN)


@pytest.mark.parametrize("method", METHODS)
def test_blow_up_keeps_the_states_before_it(method):
    grid = np.linspace(0.0, 2.0, 101)  # dθ/dt = θ², θ(0) = 1: θ = 1/(1 − t) blows up at t = 1
    theta0 = torch.tensor([1.0], dtype=torch.float64)
    result = integrate_flow(lambda t, x: x**2, theta0, grid, method=method, rtol=1e-6, atol=1e-12,
                            max_steps=20_000, jacobian_vector=lambda t, x, v: 2 * x * v,
                            jacobian=lambda t, x: torch.diag(2 * x))
    # LSODA creeps on towards the singularity (θ = 1e5 at t = 1 − 1e-5) until its step budget runs out, or
    # the pace stop sees that coming (too_slow)
    assert result.status in ("nonfinite", "step_underflow", "max_steps", "too_slow"), (result.status,
                                                                                       result.message)
    assert result.status_time == pytest.approx(1.0, rel=0.05)
    assert 45 <= len(result.t) <= 51
    assert np.array_equal(result.t, grid[:len(result.t)])
    # (errors grow with θ on the way to a blow-up: 1e-3 at θ = 50 for BDF at rtol 1e-6; Radau's last
    # step can land just past t = 1 with a large finite θ, which no test of the state can tell apart)
    before = result.t < 1.0
    exact = 1.0 / (1.0 - result.t[before])
    np.testing.assert_allclose(result.states[before, 0].numpy(), exact, rtol=5e-3)


@pytest.mark.parametrize("method", METHODS)
def test_field_turning_nan_gives_nonfinite(method):
    def field(t, theta):
        return torch.where(theta < 0.5, torch.ones_like(theta), torch.full_like(theta, math.nan))

    grid = np.linspace(0.0, 1.0, 11)
    result = integrate_flow(field, torch.zeros(2, dtype=torch.float64), grid, method=method,
                            jacobian_vector=lambda t, x, v: torch.zeros_like(v),
                            jacobian=lambda t, x: torch.zeros(2, 2, dtype=torch.float64))
    assert result.status == "nonfinite"
    # (an implicit step may stride over t = 0.5, where θ = t meets the NaN: its grid points are dropped)
    assert result.t[-1] <= 0.5 <= result.status_time <= 1.0
    np.testing.assert_allclose(result.states.numpy(), np.repeat(result.t[:, None], 2, axis=1), atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_step_budget_and_progress(method):
    grid = log_time_grid(1e-3, 100.0, 20)
    theta0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    options = {"method": method, "jacobian_vector": lambda t, x, v: -v,
               "jacobian": lambda t, x: -torch.eye(2, dtype=torch.float64)}
    seen: list[float] = []
    full = integrate_flow(lambda t, x: -x, theta0, grid, progress=seen.append, **options)
    assert full.status == "ok" and np.array_equal(full.t, grid)
    assert len(seen) == full.cost.accepted_steps and np.all(np.diff(seen) > 0)
    short = integrate_flow(lambda t, x: -x, theta0, grid, max_steps=5, **options)
    assert short.status == "max_steps" and "max_steps" in short.message
    assert 0 < short.status_time < 100.0 and len(short.t) < len(grid)
    np.testing.assert_allclose(short.states.numpy(), np.exp(-short.t)[:, None] * [1.0, 2.0], rtol=1e-4)


@functools.cache
def figure5_reference():
    return run_flow(resolve_config("figure5", overrides={"flow.rtol": 1e-10, "flow.atol": 1e-14}))


@pytest.mark.parametrize("method,jacobian", [("cvode", "difference"), ("cvode", "hvp"),
                                             pytest.param("bdf", "hvp", marks=pytest.mark.slow),  # 22 s
                                             pytest.param("radau", "hvp", marks=pytest.mark.slow),  # 30 s
                                             ("lsoda", "hvp")])
def test_figure5_matches_a_tight_dopri5_reference(method, jacobian):
    reference = figure5_reference()
    traj = run_flow(resolve_config("figure5", overrides={"flow.method": method, "flow.jacobian": jacobian,
                                                         "flow.rtol": 1e-8, "flow.atol": 1e-14}))
    assert traj.info.status == "ok" and traj.info.flow.method == method
    if method == "cvode":
        assert (traj.info.cost.hvp_evals > 0) == (jacobian == "hvp")
    elif method != "lsoda":  # LSODA asks for J only once it has switched to its stiff (BDF) mode
        assert traj.info.cost.jacobian_evals > 0
    assert np.max(np.abs(traj.loss - reference.loss)) < 1e-4
    ours, theirs = detect_stages(traj), detect_stages(reference)
    assert ours.names == theirs.names == ["init", "hallucination", "recall"]
    for a, b in zip(ours.transitions, theirs.transitions, strict=True):
        assert a["t"] == pytest.approx(b["t"], rel=0.01)


def test_auto_switches_to_cvode_when_the_flow_turns_stiff_for_long():
    # figure5's plateau is stiff but short: dopri5 throughout (the stiffness probes are counted).
    figure5 = run_flow(resolve_config("figure5", overrides={"flow.method": "auto"}))
    assert figure5.info.flow.method == "auto" and figure5.info.flow.method_used.startswith("dopri5 (no long")
    explicit5 = run_flow(resolve_config("figure5"))
    assert figure5.info.cost.hvp_evals == 0
    assert set(figure5.info.flow.method_split) == {"dopri5", "stiffness_probes"}
    # spans of ~24 steps, each a solver restart: within 10% of one dopri5 call
    assert figure5.info.cost.function_evals <= 1.1 * explicit5.info.cost.function_evals
    # random64 sits on its stiff plateau for thousands of time units: cvode takes over after the first escape.
    config = resolve_config("random64", overrides={"flow.points": 64})
    auto = run_flow(config.override({"flow.method": "auto"}))
    assert "stiff" in auto.info.flow.method_used and "then cvode" in auto.info.flow.method_used, auto.info
    switched = float(auto.info.flow.method_used.split("t=")[1].split(" ")[0])
    split = auto.info.flow.method_split  # the cost of each part adds up to the run's
    assert set(split) == {"dopri5", "stiffness_probes", "cvode"} and split["dopri5"].hvp_evals == 0
    for key in ("function_evals", "hvp_evals", "accepted_steps"):
        assert sum(getattr(part, key) for part in split.values()) == getattr(auto.info.cost, key)
    assert split["stiffness_probes"].function_evals > 0  # differenced J·v by default
    assert auto.t[np.argmax(auto.loss < 2.2)] < switched  # after the first escape (loss 4.16 -> 2.08)
    explicit = run_flow(config)
    assert auto.info.status == "ok" and np.array_equal(auto.t, explicit.t)
    # the accuracy docs/performance.md asks of every method: loss within 1e-4 (measured: 6.8e-5)
    assert np.max(np.abs(auto.loss - explicit.loss)) < 1e-4
    assert auto.info.cost.function_evals < 0.7 * explicit.info.cost.function_evals


@pytest.mark.parametrize("subjects,relations,answers,t", [(20, 3, 4, 200.0), (24, 4, 3, 300.0)])
def test_plateau_stiffness_is_a_block_of_r_times_d_minus_1_modes(subjects, relations, answers, t):
    """What makes the plateau stiff, measured on the dense Jacobian J = −PH of a random table between its
    two escapes: exactly R(D−1) eigenvalues in [−ρ, −ρ/10] (each relation's answers, pinned to uniform),
    a gap of more than 10× below them, and S growing subject modes, the fastest at the theory's σ_s
    (docs/design.md §4). The stiffness ratio ρ/σ_s (> 30 here) is what bounds every explicit step
    (docs/stiff-flows.md)."""
    from analysis.stages import escape_rates
    from dynamics import FactTask, build_model, make_objective

    config = resolve_config("figure5", overrides={
        "task.subjects": subjects, "task.relations": relations, "task.answers_per_relation": answers,
        "task.noise_tokens": subjects + relations, "task.facts": "random"})
    task = FactTask(config.task)
    model = build_model(config, task)
    objective = make_objective(model, task, config.loss)
    field = gradient_field(objective, model.preconditioner)
    flow = integrate_flow(field, model.initial_parameters(config.init), np.array([0.0, t]), rtol=1e-9,
                          atol=1e-15)
    theta = flow.states[-1]
    assert math.log(answers) - 0.35 < float(objective(theta)) < math.log(answers) + 0.05  # on the plateau
    jacobian = gradient_field_jacobian(objective, model.preconditioner)
    eigenvalues = np.linalg.eigvals(jacobian(0.0, theta).numpy())
    assert np.abs(eigenvalues.imag).max() < 1e-12  # J is similar to the symmetric −P^½ H P^½
    real = np.sort(eigenvalues.real)
    radius, stiff = -real[0], relations * (answers - 1)
    assert np.sum(real < -radius / 10) == stiff
    assert real[stiff - 1] < 10 * real[stiff]  # the gap: both negative, the first 10× further out
    sigma_s = escape_rates(subjects, relations, answers)[1]
    assert np.sum(real > 1e-3 * radius) == subjects
    assert real[-1] == pytest.approx(sigma_s, rel=0.15)
    assert radius / sigma_s > 30


@pytest.mark.parametrize("given", [False, True])
def test_spectral_radius_of_a_linear_field(given):
    """Power iteration on J·v (given, or differences of the field) finds max |λ| of a known spectrum."""
    eigenvalues = torch.tensor([-0.7, -0.3, 0.05, -0.01, -0.5], dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1),
                                           dtype=torch.float64))
    matrix = basis @ torch.diag(eigenvalues) @ basis.T
    field = lambda t, theta: matrix @ theta  # noqa: E731
    product = (lambda t, theta, v: matrix @ v) if given else None  # noqa: E731
    radius, cost = spectral_radius(field, 0.0, torch.ones(5, dtype=torch.float64), product, iterations=40)
    assert radius == pytest.approx(0.7, rel=1e-4)
    expected = (0, 40) if given else (41, 0)
    assert (cost.function_evals, cost.hvp_evals) == expected


def test_dense_jacobian_methods_refuse_large_models():
    config = resolve_config("random64", overrides={"flow.method": "bdf"})
    with pytest.raises(ConfigError, match="flow.method='bdf'.*cvode"):
        run_flow(config)


def test_run_flow_batch_runs_implicit_methods_member_by_member():
    """run_flow_batch takes cvode (one member at a time): each member is its own init's flow, in order,
    against an independent tight dopri5 reference."""
    from dynamics.run import run_flow_batch

    base = resolve_config("tiny", overrides={"flow.method": "cvode", "flow.rtol": 1e-8, "flow.atol": 1e-14})
    configs = [base.override({"init.scale": s}) for s in (1e-5, 1e-3)]
    members = run_flow_batch(configs)
    assert [m.info.flow.method for m in members] == ["cvode", "cvode"]
    references = [run_flow(c.override({"flow.method": "dopri5", "flow.rtol": 1e-9})) for c in configs]
    assert np.max(np.abs(references[0].loss - references[1].loss)) > 1e-2  # the members differ
    for member, reference in zip(members, references, strict=True):
        assert np.array_equal(member.t, reference.t)
        assert np.max(np.abs(member.loss - reference.loss)) < 1e-6


# figure5's table drawn at random, to t = 1500: auto switches to cvode on its plateau (at t ≈ 140)
AUTO_SWITCHES = {"task.facts": "random", "flow.t_max": 1500.0, "flow.method": "auto"}


@pytest.mark.slow
def test_flow_sharpness_follows_auto_after_its_switch_to_cvode():
    """The sharpness along the flow (compare) on a flow where auto does hand over to cvode: the same
    values as along dopri5's flow."""
    from dynamics.run import flow_sharpness, integrate_config_flow, log_time_grid, setup

    config = resolve_config("figure5", overrides=AUTO_SWITCHES)
    _, model, objective = setup(config)
    times = log_time_grid(config.flow.t_min, config.flow.t_max, 7)  # flow_sharpness's grid at points=6
    result = integrate_config_flow(config, model, objective, model.initial_parameters(config.init), times)
    assert "cvode" in result.method_split and result.method_split["cvode"].function_evals > 0
    _, auto = flow_sharpness(config, points=6, iterations=20)
    _, explicit = flow_sharpness(config.override({"flow.method": "dopri5"}), points=6, iterations=20)
    np.testing.assert_allclose(auto, explicit, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_rejected_steps_of_implicit_methods_are_unknown_not_zero(method):
    """CVODE's and SciPy's wrappers do not report error-test failures: the count is None (null in
    summary.json), never a 0 that would claim none happened; dopri5 counts its own."""
    loss, theta0, _ = stiff_quadratic()
    grid = log_time_grid(1e-3, 30.0, 20)
    result = integrate_flow(gradient_field(loss), theta0, grid, method=method, **_jacobians(loss))
    assert result.status == "ok" and result.cost.rejected_steps is None
    explicit = integrate_flow(gradient_field(loss), theta0, grid)
    assert explicit.cost.rejected_steps > 0  # this stiff flow makes dopri5 reject steps
    assert (explicit.cost + result.cost).rejected_steps is None
