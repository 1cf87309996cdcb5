"""Batched flows (``integrate_flow_batch``, ``run_flow_batch``): several initialisations integrated as one
system must give what each gives alone, to the solver tolerance, with step control and status per member.

* The model: configs differing in ``init.scale`` (constant init) or ``init.seed`` (gaussian init), batched
  and one by one, both against a tight-tolerance reference.
* Toy fields with closed forms: a member whose field turns non-finite is frozen while the others finish;
  a member that blows up in finite time; a tiny-scale member among large ones keeps its own accuracy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynamics.config import resolve_config
from dynamics.run import batch_key, run_flow, run_flow_batch
from dynamics.solvers import integrate_flow, integrate_flow_batch

# Figure 5 with a short record grid: t_max = 1000 covers both escapes for α >= 1e-6
# (theory: t_S = log(1/α)/σ_s ≈ 473 at α = 1e-6) and the recall that follows.
SHORT = {"flow.points": 64, "flow.t_max": 1000.0}
TIGHT = {"flow.rtol": 1e-9, "flow.atol": 1e-13}
CURVES = ("loss", "relation_loss", "subject_loss")


def _max_error(a, b) -> float:
    return max(float(np.abs(getattr(a, name) - getattr(b, name)).max()) for name in CURVES)


@pytest.mark.parametrize("members", [
    [{"init.scale": s} for s in (1e-6, 1e-4, 1e-2)],
    [{"init.kind": "gaussian", "init.scale": 1e-3, "init.seed": s} for s in (0, 1)],
], ids=["constant-scales", "gaussian-seeds"])
def test_batch_matches_one_by_one_and_a_tight_reference(members):
    configs = [resolve_config("figure5", overrides={**SHORT, **m}) for m in members]
    assert len({batch_key(c) for c in configs}) == 1
    batch = run_flow_batch(configs)
    for config, flow in zip(configs, batch, strict=True):
        single = run_flow(config)
        reference = run_flow(config.override(TIGHT))
        assert flow.info.status == single.info.status == "ok"
        assert flow.info.flow.batch_size == len(configs)
        np.testing.assert_array_equal(flow.t, single.t)
        batch_error, single_error = _max_error(flow, reference), _max_error(single, reference)
        # the batch is at least as accurate as the run alone (its step is the strictest member's)
        assert batch_error < 2e-4, (config.init, batch_error)
        assert batch_error <= max(2 * single_error, 2e-5), (config.init, batch_error, single_error)
        assert _max_error(flow, single) < 2e-4
        # the per-fact record too, not only the aggregate curves
        assert np.abs(flow.p_correct - reference.p_correct).max() < 2e-4
        assert flow.info.final_loss == pytest.approx(reference.info.final_loss, abs=2e-4)
    # distinct members really are distinct trajectories
    assert _max_error(batch[0], batch[-1]) > 1e-2


@pytest.mark.parametrize("other", [{"flow.rtol": 1e-7}, {"task.subjects": 8}, {"flow.t_max": 900.0},
                                   {"loss.kind": "sampled"}])
def test_run_flow_batch_refuses_configs_differing_beyond_init(other):
    base = resolve_config("tiny")
    with pytest.raises(ValueError, match="differ only in"):
        run_flow_batch([base, base.override(other)])
    with pytest.raises(ValueError, match="differ only in"):
        run_flow_batch([base.override({"init.scale": 1e-4}), base.override({**other, "init.scale": 1e-4})])


def test_run_flow_batch_accepts_every_init_key():
    base = resolve_config("tiny")
    configs = [base, base.override({"init.scale": 1e-4}),
               base.override({"init.kind": "gaussian", "init.seed": 3, "init.scale": 1e-3})]
    flows = run_flow_batch(configs)
    assert [f.info.status for f in flows] == ["ok"] * 3
    assert [f.info.flow.batch_size for f in flows] == [3] * 3
    # each member starts from its own config's initialisation, in the order given (the batched closed form
    # and the single one group their sums differently: 1e-12 relative; the members' losses differ by far more)
    alone = [run_flow(c.override({"flow.t_max": 1.0})).loss[0] for c in configs]
    assert [f.loss[0] for f in flows] == pytest.approx(alone, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Toy fields with closed forms
# --------------------------------------------------------------------------------------------------
#
# dθ_b/dt = c_b θ_b²,  θ_b(0) = θ0:  θ_b(t) = θ0 / (1 - c_b θ0 t), blowing up at t* = 1/(c_b θ0).

THETA0 = 0.5


def _quadratic(c: torch.Tensor, cap: float | None = None):
    def field(t, theta: torch.Tensor) -> torch.Tensor:
        derivative = c[:, None] * theta**2
        if cap is None:
            return derivative
        return torch.where(theta.abs() > cap, torch.full_like(derivative, math.nan), derivative)

    return field


def _quadratic_exact(c: float, t: np.ndarray) -> np.ndarray:
    return THETA0 / (1.0 - c * THETA0 * t)


def test_a_member_turning_nonfinite_is_frozen_and_the_others_finish():
    # member 1's field turns NaN once θ > CAP, at t_fail = (1/θ0 - 1/CAP)/c = 1.875; the others never do
    c = torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)
    cap = 8.0
    t_fail = (1 / THETA0 - 1 / cap) / 1.0
    times = np.linspace(0.0, 3.0, 61)
    theta0 = torch.full((3, 2), THETA0, dtype=torch.float64)
    result = integrate_flow_batch(_quadratic(c, cap), theta0, times, rtol=1e-9, atol=1e-12)
    assert result.status == "ok"
    assert result.member_status == ["ok", "nonfinite", "ok"]
    assert result.member_status_time[0] is None and result.member_status_time[2] is None
    # the failure is seen at a stage time of the step that crosses t_fail
    assert result.member_status_time[1] == pytest.approx(t_fail, abs=0.02)
    assert len(result.t) == len(times) and np.array_equal(result.t, times)
    for b in (0, 2):  # the survivors match their exact solutions over the whole grid
        exact = _quadratic_exact(float(c[b]), times)
        np.testing.assert_allclose(result.states[:, b, 0].numpy(), exact, rtol=1e-7)
        np.testing.assert_allclose(result.states[:, b, 1].numpy(), exact, rtol=1e-7)
    assert torch.isfinite(result.states[:, 1]).all()  # frozen, not propagated as NaN


def _kept(result, b: int) -> int:
    """How many leading grid points of member ``b`` are exact (and kept by run_flow_batch)."""
    return result.member_kept[b]


def test_the_kept_states_of_a_frozen_member_are_accurate():
    # CAP = 10 is reached at t = 1.9, a grid point: the freezing stage comes just after it
    c = torch.tensor([0.5, 1.0], dtype=torch.float64)
    times = np.linspace(0.0, 3.0, 61)
    theta0 = torch.full((2, 1), THETA0, dtype=torch.float64)
    result = integrate_flow_batch(_quadratic(c, 10.0), theta0, times, rtol=1e-9, atol=1e-12)
    assert result.member_status == ["ok", "nonfinite"]
    keep = _kept(result, 1)
    assert keep >= 30  # everything up to t = 1.45 at least
    kept = result.states[:keep, 1, 0].numpy()
    np.testing.assert_allclose(kept, _quadratic_exact(1.0, times[:keep]), rtol=1e-6)


def test_a_member_blowing_up_does_not_stop_the_batch():
    # member 1 blows up at t* = 2 < t_max = 3 (dθ/dt = θ² never turns non-finite: its step shrinks to
    # underflow first); the others are finite on [0, 3]
    c = torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)
    times = np.linspace(0.0, 3.0, 61)
    theta0 = torch.full((3, 1), THETA0, dtype=torch.float64)
    result = integrate_flow_batch(_quadratic(c), theta0, times, rtol=1e-6, atol=1e-10)
    alone = integrate_flow(lambda t, th: th**2, torch.full((1,), THETA0, dtype=torch.float64), times,
                           rtol=1e-6, atol=1e-10)
    assert alone.status in ("nonfinite", "step_underflow")
    assert result.member_status[1] == alone.status
    assert result.member_status_time[1] == pytest.approx(2.0, abs=1e-3)
    assert result.member_status[0] == result.member_status[2] == "ok"
    assert len(result.t) == len(times)
    for b in (0, 2):
        np.testing.assert_allclose(result.states[:, b, 0].numpy(), _quadratic_exact(float(c[b]), times),
                                   rtol=1e-4)
    keep = _kept(result, 1)  # the blown-up member keeps its exact states before t* = 2
    assert 35 <= keep <= 40
    np.testing.assert_allclose(result.states[:keep, 1, 0].numpy(), _quadratic_exact(1.0, times[:keep]),
                               rtol=1e-4)


# Logistic growth dθ/dt = θ(1 - θ): θ(t) = θ0 e^t / (1 - θ0 + θ0 e^t).

def _logistic_exact(theta0: float, t: np.ndarray) -> np.ndarray:
    growth = np.exp(t)
    return theta0 * growth / (1 - theta0 + theta0 * growth)


def test_a_tiny_member_meets_the_tolerance_on_its_own_scale():
    """Per-member error norm: a tiny-scale member batched with large-scale ones is as accurate as alone
    (relative error at tolerance level), not diluted by the easy members."""
    times = np.linspace(0.0, 30.0, 31)
    tiny = 1e-9
    scales = [tiny, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    rtol, atol = 1e-6, 1e-30  # atol far below the tiny member: its tolerance is relative

    def field(t, theta):
        return theta * (1 - theta)

    theta0 = torch.tensor(scales, dtype=torch.float64)[:, None]
    batch = integrate_flow_batch(field, theta0, times, rtol=rtol, atol=atol)
    alone = integrate_flow(field, torch.tensor([tiny], dtype=torch.float64), times, rtol=rtol, atol=atol)
    assert batch.member_status == ["ok"] * len(scales)
    error_batch = np.abs(batch.states[:, 0, 0].numpy() / _logistic_exact(tiny, times) - 1).max()
    error_alone = np.abs(alone.states[:, 0].numpy() / _logistic_exact(tiny, times) - 1).max()
    assert error_batch < 20 * rtol, error_batch
    # an RMS over the whole batch would let the tiny member's error grow by up to sqrt(B) (measured 2.7x)
    assert error_batch <= 1.2 * error_alone + 1e-12, (error_batch, error_alone)
    for b, scale in enumerate(scales[1:], start=1):
        relative = np.abs(batch.states[:, b, 0].numpy() / _logistic_exact(scale, times) - 1).max()
        assert relative < 20 * rtol


def test_a_tiny_and_a_large_init_scale_of_the_model_batched_keep_the_tiny_one_accurate():
    configs = [resolve_config("figure5", overrides={**SHORT, "init.scale": s}) for s in (1e-7, 1e-2)]
    tiny, _ = run_flow_batch(configs)
    reference = run_flow(configs[0].override(TIGHT))
    alone = run_flow(configs[0])
    assert _max_error(tiny, reference) <= max(2 * _max_error(alone, reference), 2e-5)
    assert tiny.info.status == "ok"
