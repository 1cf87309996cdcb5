"""First-order theory (docs/design.md §4.6, §5.3: the linearised escape times).

The rates are checked three ways: against the numbers of the formula worked by hand, against the spectrum
of the flow field's Jacobian at θ = 0 (an independent linearisation of the real engine), and against the
exact linear-regime solution a_z(t) = α cosh(σ_z t) of a flow integrated from a tiny constant init.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from analysis.stages import (
    compare_times,
    escape_rates,
    marginal_signal,
    measured_times,
    midpoint_crossing,
    relation_first,
    theory_for,
)
from dynamics import (
    FactTask,
    build_model,
    gradient_field,
    integrate_flow,
    make_objective,
    resolve_config,
    run_flow,
)
from dynamics.config import Config

NUMERIC = ("sigma_r", "sigma_s", "t_R", "t_S", "relation_first")


def theory_of(config: Config) -> dict:
    task = FactTask(config.task)
    return theory_for(config, task.facts, task.fact_weights)


@pytest.fixture(scope="module")
def figure5_flow():
    return run_flow(resolve_config("figure5"))


# --- the formula ----------------------------------------------------------------------------------------

def test_figure5_predictions_match_the_hand_computation():
    # S=16, R=4, D=8, alpha=1e-5:
    #   sigma_r = (1/4) sqrt(1/8 - 1/32) = (1/4) sqrt(3/32)
    #   sigma_s = (1/16) sqrt(1/4 - 1/32) = (1/16) sqrt(7/32)
    #   t = log(1e5) / sigma
    sigma_r = 0.25 * math.sqrt(3 / 32)
    sigma_s = math.sqrt(7 / 32) / 16
    t_R, t_S = math.log(1e5) / sigma_r, math.log(1e5) / sigma_s
    # docs/design.md §5.3 quotes 150.4 and 393.9
    assert t_R == pytest.approx(150.4, abs=0.05) and t_S == pytest.approx(393.85, abs=0.05)
    assert escape_rates(16, 4, 8) == pytest.approx((sigma_r, sigma_s), rel=1e-12)
    theory = theory_of(resolve_config("figure5"))
    assert theory["applicable"] is True and theory["reasons"] == []
    assert theory["sigma_r"] == pytest.approx(sigma_r, rel=1e-12)
    assert theory["sigma_s"] == pytest.approx(sigma_s, rel=1e-12)
    assert theory["t_R"] == pytest.approx(t_R, rel=1e-12)
    assert theory["t_S"] == pytest.approx(t_S, rel=1e-12)
    assert theory["relation_first"] is True
    assert theory["marginal_signal"] == pytest.approx(0.0, abs=1e-15)  # balanced table
    json.dumps(theory)  # plain JSON-ready values


def test_relation_first_boundary_and_edge_cases():
    assert relation_first(16, 4, 8) is True  # 16/4 · sqrt(3/7) = 2.6 > 1
    assert relation_first(2, 32, 8) is False  # 2/32 · sqrt(31/7) = 0.13 < 1
    assert relation_first(4, 4, 1) is True  # D = 1: sigma_s = 0, no division by D - 1
    assert relation_first(4, 1, 4) is False  # R = 1: sigma_r = 0
    assert relation_first(1, 1, 1) is False  # both rates zero
    assert escape_rates(4, 4, 1)[1] == 0.0 and escape_rates(4, 1, 4)[0] == 0.0
    with pytest.raises(ValueError, match="D=0"):
        escape_rates(4, 4, 0)


def test_subjects_first_on_a_balanced_table():
    """S=2, R=8, D=2 (structured, balanced): S·sqrt(R-1) = 5.3 < R·sqrt(D-1) = 8, so the subject escapes
    first; the flow agrees, and both times lie within a factor 1.5 of the prediction."""
    config = resolve_config("figure5", overrides={"task.subjects": 2, "task.relations": 8,
                                                  "task.answers_per_relation": 2, "flow.t_max": 2000.0})
    theory = theory_of(config)
    assert theory["applicable"] and theory["relation_first"] is False
    assert theory["t_S"] < theory["t_R"]
    measured = measured_times(run_flow(config))
    assert measured["t_subject"] < measured["t_relation"]
    ratios = compare_times(theory, measured)
    assert 1 / 1.5 < ratios["relation_ratio"] < 1.5 and 1 / 1.5 < ratios["subject_ratio"] < 1.5


# --- assumptions: say so rather than print a wrong number -------------------------------------------------

@pytest.mark.parametrize("overrides, needle", [
    ({"init.kind": "gaussian"}, "init.kind"),
    ({"init.scale": 0.5}, "init.scale"),
    ({"model.attention": "softmax"}, "model.attention"),
    ({"task.subject_zipf": 1.0}, "zipf"),
    ({"task.relation_zipf": 0.5}, "zipf"),
    ({"task.facts": "random"}, "unbalanced"),
    ({"task.answers_per_relation": 1}, "answers_per_relation"),
    ({"task.relations": 1}, "task.relations"),
    ({"loss.kind": "sampled"}, "loss.kind"),
    ({"model.kind": "embedded", "model.embeddings": "gaussian", "loss.kind": "sampled"}, "embeddings"),
])
def test_each_failing_assumption_is_named_and_gives_no_number(overrides, needle):
    theory = theory_of(resolve_config("figure5", overrides=overrides))
    assert theory["applicable"] is False
    assert any(needle in reason for reason in theory["reasons"]), theory["reasons"]
    for key in NUMERIC:
        assert theory[key] is None, key
    assert compare_times(theory, {"t_relation": 170.0, "t_subject": 440.0})["relation_ratio"] is None
    json.dumps(theory)


def test_embedded_orthonormal_linear_is_covered():
    config = resolve_config("tiny", overrides={"model.kind": "embedded", "model.dim": 16})
    assert theory_of(config)["applicable"] is True


def test_unbalanced_table_reports_the_marginal_signal():
    config = resolve_config("figure5", overrides={"task.subjects": 4, "task.relations": 16,
                                                  "task.facts": "random"})
    task = FactTask(config.task)
    theory = theory_of(config)
    assert not theory["applicable"]
    q = np.bincount(task.facts.ravel(), weights=task.fact_weights.ravel(), minlength=16 * 8)
    assert theory["marginal_signal"] == pytest.approx(np.linalg.norm(1 / 128 - q), rel=1e-12)
    assert theory["marginal_signal"] > 0.05


def test_shape_mismatch_is_an_error():
    config = resolve_config("figure5")
    with pytest.raises(ValueError, match="task.subjects"):
        theory_for(config, np.zeros((3, 4), dtype=np.int64), np.full((3, 4), 1 / 12))


# --- independent checks of the rates on the real engine --------------------------------------------------

SMALL = {"task.subjects": 4, "task.relations": 3, "task.answers_per_relation": 2, "task.noise_tokens": 3,
         "task.seq_len": 6}


def _field_jacobian(config: Config, theta: torch.Tensor | None = None) -> tuple[np.ndarray, object]:
    task = FactTask(config.task)
    model = build_model(config, task)
    field = gradient_field(make_objective(model, task, config.loss), model.preconditioner)
    if theta is None:
        theta = torch.zeros(model.num_params, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda th: field(0.0, th), theta)
    return jac.numpy(), task


def _positive_eigenvalues(jac: np.ndarray) -> np.ndarray:
    eig = np.linalg.eigvals(jac)
    assert np.abs(eig.imag).max() < 1e-10  # P·Hessian with P diagonal positive: a real spectrum
    return np.sort(eig.real[eig.real > 1e-9])[::-1]


@pytest.mark.parametrize("theta_scale", [0.0, 1e-8])
def test_rates_are_the_growing_eigenvalues_of_the_flow_jacobian(theta_scale):
    """At θ ≈ 0 the positive spectrum of d(-P∇L)/dθ is σ_r (once per relation) and σ_s (once per subject),
    nothing else for a balanced table (EOS and noise have no first-order signal)."""
    config = resolve_config("figure5", overrides=SMALL)
    S, R, D = 4, 3, 2
    num_params = build_model(config, FactTask(config.task)).num_params
    jac, _ = _field_jacobian(config, torch.full((num_params,), theta_scale, dtype=torch.float64))
    sigma_r, sigma_s = escape_rates(S, R, D)
    assert sigma_r != pytest.approx(sigma_s, rel=0.1)  # the two are told apart
    expected = np.sort([sigma_r] * R + [sigma_s] * S)[::-1]
    positive = _positive_eigenvalues(jac)
    assert positive.shape == expected.shape
    assert positive == pytest.approx(expected, rel=1e-6)
    assert positive[0] == pytest.approx(max(sigma_r, sigma_s), rel=1e-6)


def test_marginal_signal_is_the_eos_and_noise_rate_of_an_unbalanced_table():
    """With an unbalanced table the EOS pair grows at ‖u - q‖ and the tied noise pair at (T-3)/N·‖u - q‖."""
    config = resolve_config("figure5", overrides={**SMALL, "task.facts": "random", "task.seed": 3})
    jac, task = _field_jacobian(config)
    signal = marginal_signal(task.facts, task.fact_weights, task.D)
    assert signal > 0.01
    positive = _positive_eigenvalues(jac)
    for rate in (signal, (task.T - 3) / task.N * signal):
        assert np.min(np.abs(positive - rate)) < 1e-9 * max(1.0, rate)


def test_linear_regime_of_the_flow_is_alpha_cosh_sigma_t():
    """From a tiny constant init α the relation and subject scores follow a_z(t) = α cosh(σ_z t) exactly
    to first order (v_z(0) = α·1 has no component along g_z since Σ_a (u - q)_a = 0)."""
    alpha = 1e-8
    config = resolve_config("figure5", overrides={**SMALL, "init.scale": alpha})
    task = FactTask(config.task)
    model = build_model(config, task)
    field = gradient_field(make_objective(model, task, config.loss), model.preconditioner)
    times = np.linspace(0.0, 40.0, 9)
    result = integrate_flow(field, model.initial_parameters(config.init), times, rtol=1e-10, atol=1e-20)
    assert result.status == "ok"
    a = np.stack([model.token_parameters(theta)[0].numpy() for theta in result.states])  # (K, tokens)
    sigma_r, sigma_s = escape_rates(task.S, task.R, task.D)
    S, R = task.S, task.R
    cosh_r = np.broadcast_to(alpha * np.cosh(sigma_r * times)[:, None], (len(times), R))
    cosh_s = np.broadcast_to(alpha * np.cosh(sigma_s * times)[:, None], (len(times), S))
    np.testing.assert_allclose(a[:, S:S + R], cosh_r, rtol=1e-5)
    np.testing.assert_allclose(a[:, :S], cosh_s, rtol=1e-5)
    assert a[-1, S] / alpha > 1000  # grown by three decades: the exponential regime, not a flat start


# --- measured times --------------------------------------------------------------------------------------

def test_figure5_measured_and_predicted_times_are_the_documented_ones(figure5_flow):
    """README's stage table, to the digits it prints: theory t_R = 150.4, t_S = 393.9; measured relation
    time 168.4, subject time 437.1; ratios 1.12 and 1.11."""
    theory = theory_of(resolve_config("figure5"))
    measured = measured_times(figure5_flow)
    assert (round(theory["t_R"], 1), round(theory["t_S"], 1)) == (150.4, 393.9)
    assert (round(measured["t_relation"], 1), round(measured["t_subject"], 1)) == (168.4, 437.1)
    ratios = compare_times(theory, measured)
    assert (round(ratios["relation_ratio"], 2), round(ratios["subject_ratio"], 2)) == (1.12, 1.11)
    json.dumps(ratios)


def test_midpoint_crossing_interpolates_in_log_t():
    t = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    values = np.array([4.0, 4.0, 3.0, 1.0, 0.0])  # midpoint 2: half way from t=10 to t=100 in log t
    assert midpoint_crossing(t, values) == pytest.approx(math.sqrt(10 * 100))
    rising = 4.0 - values
    assert midpoint_crossing(t, rising) == pytest.approx(math.sqrt(10 * 100))
    assert math.isnan(midpoint_crossing(t, np.full(5, 2.0)))  # no net change
    assert math.isnan(midpoint_crossing(t[:1], values[:1]))
    # crossing before the first positive time: the first positive time is an upper bound
    assert midpoint_crossing(t, np.array([4.0, 0.5, 0.2, 0.1, 0.0])) == 1.0


def test_compare_with_a_nan_measurement_is_none():
    theory = theory_of(resolve_config("figure5"))
    out = compare_times(theory, {"t_relation": float("nan"), "t_subject": 400.0})
    assert out["relation_ratio"] is None and out["t_relation"] is None
    assert out["subject_ratio"] == pytest.approx(400.0 / theory["t_S"])
    json.dumps(out, allow_nan=False)
