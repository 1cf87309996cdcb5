"""The ε = 0 sign flow integrated event by event (dynamics/solvers/filippov.py, dynamics/sign_flow.py),
each against an independent computation: closed forms derived by hand, the smoothed flows' limit, the
four-scalar flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from dynamics import resolve_config, run_flow
from dynamics.errors import ConfigError
from dynamics.manifold import manifold_coordinates, manifold_flow, margin_target, margins
from dynamics.problem import build_run
from dynamics.sign_flow import exact_sign_flow
from dynamics.solvers.filippov import box_complementarity, integrate_sign_flow


def _quadratic(A: torch.Tensor):
    """∇L and H·x of L(θ) = ½ θᵀ A θ."""
    return (lambda theta: A @ theta), (lambda theta, x: A @ x)


def test_one_dimensional_flow_reaches_zero_at_its_distance_and_slides_there():
    """dθ/dt = −sign(θ) (L = θ²/2) from θ0 = 0.7: θ(t) = 0.7 − t until t = 0.7, then θ ≡ 0 (Filippov: at
    θ = 0 the equivalent control u = −H⁻¹·0 = 0 lies in [−1, 1], so the flow stays); no chattering."""
    times = np.array([0.0, 0.35, 0.6, 0.7, 1.0, 5.0])
    grad, hvp = _quadratic(torch.eye(1, dtype=torch.float64))
    result = integrate_sign_flow(grad, hvp, torch.tensor([0.7], dtype=torch.float64), times)
    expected = np.maximum(0.7 - times, 0.0)
    assert result.status == "ok"
    assert np.allclose(result.states[:, 0].numpy(), expected, atol=1e-12)
    assert [(round(e.t, 12), e.kind) for e in result.events] == [(0.7, "slide")]
    assert result.cost.accepted_steps < 30


def test_quadratic_with_a_crossing_and_a_sliding_line_follows_the_hand_solution():
    """L = ½ θᵀ A θ, A = [[4, 1.5], [1.5, 1]] (positive definite), θ0 = (1, 0.2); g = A θ = (4.3, 1.7).

    1. v = (−1, −1): g₂(t) = 1.7 − 2.5 t reaches 0 at t₁ = 0.68 (g₁ = 4.3 − 5.5 t = 0.56 > 0 there). On
       g₂ = 0 the equivalent control is u₂ = −A₂₁ v₁ / A₂₂ = 1.5 ∉ [−1, 1]: θ₂ crosses, v₂ = +1.
       θ(t₁) = (0.32, −0.48).
    2. v = (−1, +1): g₁ = 0.56 − 2.5 s, g₂ = −0.5 s (s = t − t₁): g₁ reaches 0 at s = 0.224, t₂ = 0.904,
       θ(t₂) = (0.096, −0.256). On g₁ = 0: u₁ = −A₁₂ v₂ / A₁₁ = −0.375 ∈ [−1, 1]: θ₁ slides along the line
       4 θ₁ + 1.5 θ₂ = 0.
    3. θ₂ = −0.256 + (t − t₂), θ₁ = −0.375 θ₂, until θ₂ = 0 at t₃ = 1.16 (g = 0: both slide, θ ≡ 0)."""
    A = torch.tensor([[4.0, 1.5], [1.5, 1.0]], dtype=torch.float64)
    times = np.array([0.0, 0.3, 0.68, 0.8, 0.904, 1.0, 1.1, 1.16, 1.5, 3.0])

    def exact(t: float) -> tuple[float, float]:
        if t <= 0.68:
            return 1.0 - t, 0.2 - t
        if t <= 0.904:
            return 0.32 - (t - 0.68), -0.48 + (t - 0.68)
        second = min(-0.256 + (t - 0.904), 0.0)
        return -0.375 * second, second

    result = integrate_sign_flow(*_quadratic(A), torch.tensor([1.0, 0.2], dtype=torch.float64), times)
    assert result.status == "ok"
    assert np.abs(result.states.numpy() - np.array([exact(t) for t in times])).max() < 1e-10
    events = [(e.t, e.index, e.kind) for e in result.events]
    assert [(i, kind) for _, i, kind in events] == [(1, "cross"), (0, "slide"), (1, "slide")]
    assert np.allclose([t for t, _, _ in events], [0.68, 0.904, 1.16], rtol=0, atol=1e-12)


def test_symmetric_zeros_slide_while_their_equivalent_control_exists():
    """An entry at zero with no Hessian coupling (H_ii = 0, ġ_i ≡ 0: L = ½ θ₁²) stays exactly where it is,
    while the other one reaches 0 and slides."""
    A = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    result = integrate_sign_flow(*_quadratic(A), torch.tensor([0.5, 0.3], dtype=torch.float64), [0.0, 1.0])
    assert result.status == "ok"
    assert np.allclose(result.states[-1].numpy(), [0.0, 0.3], atol=1e-14)


def test_a_zero_entry_without_equivalent_control_leaves_to_the_side_its_gradient_moves_to():
    """L = ½ θ₁² + θ₁ θ₂ from θ0 = (0, 0.5): g = (θ₁ + θ₂, θ₁) = (0.5, 0), H = [[1, 1], [1, 0]]. Entry 2 sits
    at 0 with H₂₂ = 0 while ġ₂ = H₂₁ v₁ = −1: no u₂ keeps it there, so it leaves to g₂ < 0, v₂ = +1; then
    g₁ = 0.5 stays and θ(t) = (−t, 0.5 + t) (a slide would have stopped with g₂ drifting off 0)."""
    A = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    theta0 = torch.tensor([0.0, 0.5], dtype=torch.float64)
    result = integrate_sign_flow(*_quadratic(A), theta0, [0.0, 0.5, 1.0])
    assert result.status == "ok"
    assert np.allclose(result.states.numpy(), [[0.0, 0.5], [-0.5, 1.0], [-1.0, 1.5]], atol=1e-12)


def test_the_complementarity_solve_gives_each_entry_at_zero_its_filippov_velocity():
    """ġ = rate + H u with u ∈ [−1, 1]: ġ_i = 0 where |u_i| < 1, ġ_i u_i ≤ 0 at ±1. H = [[15, 3, 16],
    [3, 23, 0], [16, 0, 20]], rate = (1, −4, 6): by hand u₂ = −1, then [[15, 3], [3, 23]] (u₀, u₁) = (15, 4)
    gives u = (333/336, 15/336, −1), and ġ₂ = 6 + 16·333/336 − 20 = 13/7 > 0 (θ₂ crosses down: consistent).
    Releasing the largest |u| of the all-sliding solve first (u₀ = −1 instead) is not. An entry with H_ii = 0
    and a moving gradient goes to the side it moves to."""
    H = torch.tensor([[15.0, 3.0, 16.0], [3.0, 23.0, 0.0], [16.0, 0.0, 20.0]], dtype=torch.float64)
    rate = torch.tensor([1.0, -4.0, 6.0], dtype=torch.float64)
    u = box_complementarity(H, rate, 1e-12, 1.0)
    expected = torch.tensor([333 / 336, 15 / 336, -1.0], dtype=torch.float64)
    assert torch.allclose(u, expected, rtol=0, atol=1e-12)
    assert float((rate + H @ u)[2]) == pytest.approx(13 / 7, abs=1e-12)
    none = torch.zeros((1, 1), dtype=torch.float64)
    assert box_complementarity(none, torch.tensor([2.0], dtype=torch.float64), 1e-12, 1.0).tolist() == [-1.0]


def test_two_entries_hit_together_one_slides_one_crosses_and_a_sliding_one_leaves():
    """L = ½ θᵀ A θ (g = A θ), A = [[14, 8, −15, 6], [8, 6, −9, 4], [−15, −9, 20, 0], [6, 4, 0, 40]], from
    g(0) = (0, 11/7, 139/14, 100). Entry 0 slides from the start: u₀ = −(−6 − 8 + 15)/14 = −1/14, and
    entries 1, 2 (v = −1) fall at ġ₁ = −11/7, ġ₂ = −139/14: both reach 0 at t = 1. There, by hand, the
    complementarity problem over {0, 1, 2} (free rate −(6, 4, 0) from θ₃) has the solution u = (1, 5/6, 1):
    u₁ = −(−4 + 8 − 9)/6 = 5/6 slides, ġ₀ = −6 + 14 + 8·5/6 − 15 = −1/3 and ġ₂ = −15 − 9·5/6 + 20 = −5/2 move
    entries 0 and 2 into their +1 sides: entry 1 slides, entry 2 crosses, and entry 0 leaves its slide. Then
    θ moves along (1, 5/6, 1, −1). Deciding the new entries with entry 0 held (it cannot be) and then
    releasing the largest |u| first made a cascade of crossings at t = 1."""
    A = torch.tensor([[14.0, 8.0, -15.0, 6.0], [8.0, 6.0, -9.0, 4.0], [-15.0, -9.0, 20.0, 0.0],
                      [6.0, 4.0, 0.0, 40.0]], dtype=torch.float64)
    theta0 = torch.linalg.solve(A, torch.tensor([0.0, 11 / 7, 139 / 14, 100.0], dtype=torch.float64))
    times = np.array([0.0, 0.5, 1.0, 1.1, 1.2])
    result = integrate_sign_flow(*_quadratic(A), theta0, times)
    first, second = np.array([-1 / 14, -1.0, -1.0, -1.0]), np.array([1.0, 5 / 6, 1.0, -1.0])
    exact = [theta0.numpy() + min(t, 1.0) * first + max(t - 1.0, 0.0) * second for t in times]
    assert result.status == "ok"
    assert np.abs(result.states.numpy() - np.array(exact)).max() < 1e-10
    assert [(round(e.t, 12), e.index, e.kind) for e in result.events] == [
        (0.0, 0, "slide"), (1.0, 1, "slide"), (1.0, 2, "cross"), (1.0, 0, "leave")]


def test_state_at_holds_each_sliding_piece_to_its_own_scale_not_the_runs_last():
    """Tiny task: θ(t) off the grid on the sliding pieces is found by Newton to the tolerance its piece was
    integrated with, also after the run ended where the gradient is far smaller (here: the run's last scale
    set to 1e-300; with it every off-grid state on a sliding piece failed, as the learning-time table's
    128 × 2 point did at t = 0.01 when read after t = 2.9). On the grid it gives the recorded states."""
    config = resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.geometry_eps": 0.0})
    result = exact_sign_flow(config, times=np.array([0.0, 0.25, 0.5, 1.0]))
    assert result.status == "ok"
    result._flow.reference = 1e-300
    for k, t in enumerate(result.t):
        assert torch.equal(result.state_at(float(t)), result.states[k])
    for t in (0.1, 0.3, 0.7, 0.9):
        assert torch.isfinite(result.state_at(t)).all()


def _tiny(eps: float) -> object:
    return resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.geometry_eps": eps,
                                             "flow.rtol": 1e-9, "flow.atol": 1e-12, "flow.t_max": 2.0})


@pytest.mark.slow
def test_reduced_model_exact_flow_is_the_limit_of_the_smoothed_flows():
    """Tiny task, constant start: |L_ε(t) − L_0(t)| shrinks at every fixed t as ε = 1e-3, 1e-4, 1e-5 (dopri5
    at rtol 1e-9 against the event-driven ε = 0 flow), and is below 1e-4 at ε = 1e-5. The entries whose
    gradient is 0 by symmetry (noise and EOS: their scores and value rows) stay exactly where they start,
    as in every ε-flow, up to t = 3 (L ≈ 3e-8), where H·v is 1e-7 of its largest."""
    times = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 3.0])
    exact = exact_sign_flow(_tiny(0.0), times=times)
    assert exact.status == "ok"
    symmetric = [6, 7, *range(32, 40)]
    assert torch.equal(exact.states[-1, symmetric], exact.states[0, symmetric])
    objective = build_run(_tiny(0.0)).objective
    loss0 = np.array([float(objective(state)) for state in exact.states[:-1]])
    times = times[:-1]
    gaps = [np.abs(np.asarray(run_flow(_tiny(eps), times=times).loss) - loss0)[1:]
            for eps in (1e-3, 1e-4, 1e-5)]
    assert np.all(gaps[1] < gaps[0]) and np.all(gaps[2] < gaps[1])
    assert gaps[2].max() < 1e-4


def test_manifold_start_learning_times_equal_the_four_scalar_sign_flow():
    """li2026 at 4 × 4 (D = S), manifold start: T_S and T_R of the event-driven full flow (the first times
    σ(q) reaches 0.9, read off the exact trajectory by root finding) equal the four-scalar flow's at ε = 0,
    whose rates are the constants (2√R, 1, 2√S, 1) (closed form), to 1e-9."""
    S, R = 4, 4
    config = resolve_config("li2026", overrides={"task.subjects": S, "task.relations": R,
                                                 "task.answers_per_relation": S, "flow.geometry": "sign",
                                                 "flow.geometry_eps": 0.0})
    built = build_run(config)
    result = exact_sign_flow(config, times=np.array([0.0, 1.3]), built=built)
    four = manifold_flow(S, R, "sign", 0.0)
    target = margin_target(0.1)

    def gap(t: float, which: int) -> float:
        coords, _ = manifold_coordinates(built.task, result.state_at(t).numpy()[None])
        return float(margins(coords, S, R)[which][0]) - target

    T_S, T_R = (brentq(gap, 0.0, 1.3, args=(i,), xtol=1e-14) for i in (0, 1))
    assert result.status == "ok"
    assert abs(T_S - four.T_S) < 1e-9 and abs(T_R - four.T_R) < 1e-9


@pytest.mark.slow
def test_entries_hit_together_and_released_at_the_surface_do_not_stall_the_flow():
    """The learning-time table's 128 × 2 point (random table, D = 4, noise tokens, constant start 1e-5):
    pairs of symmetric noise and EOS value entries reach 0 at one instant (their slide/±1 choices are made
    jointly, by one complementarity solve with the entries already sliding), and entries released from a
    slide sit within the sliding tolerance of 0, possibly on the wrong side (their event is a crossing a
    further tolerance past 0). Without these the flow stopped at t = 0.129 with events piling up at one
    instant; it now passes t = 3 (it still stops, at t = 4.03, where no step puts the sliding entries back
    on g_S = 0: docs/geometry.md, "ε = 0: the exact sign flow")."""
    from analysis.study.geometry import Row, Setting, task_config

    config = task_config(128, 2, Row("sign", 6.0, "sign", 0.0, method="sliding", max_steps=40000), Setting())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its many small products: 2 threads on 2 shared cores take 10 times as long
    try:
        result = exact_sign_flow(config, times=np.array([0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 6.0]))
    finally:
        torch.set_num_threads(threads)
    assert result.t[-1] >= 3.0
    objective = build_run(config).objective
    assert float(objective(result.states[5])) < 0.3 * float(objective(result.states[0]))  # 0.467 at t = 1


def test_flow_method_sliding_runs_the_exact_flow_through_run_flow():
    """``flow.method=sliding`` is accepted for the sign flow at ε = 0 (by the config and by the step
    estimate, which refuses every other method there) and gives the states of :func:`exact_sign_flow`."""
    config = resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.method": "sliding",
                                               "flow.t_max": 0.5, "flow.points": 4})
    trajectory = run_flow(config, keep_states=True)
    direct = exact_sign_flow(config)
    assert trajectory.info.status == "ok"
    assert np.allclose(trajectory.t, direct.t, rtol=0, atol=0)
    assert np.abs(trajectory.final_state - direct.states[-1].numpy()).max() < 1e-12
    with pytest.raises(ConfigError, match="flow.geometry_eps=0.0: the sign field is discontinuous"):
        run_flow(resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.t_max": 0.5}))


@pytest.mark.parametrize("overrides", [{"flow.geometry": "euclidean"}, {"flow.geometry": "spectral"},
                                       {"flow.geometry_eps": 1e-4}])
def test_flow_method_sliding_is_refused_off_the_exact_sign_flow(overrides):
    refusal = r"^flow\.method='sliding': integrates the ε = 0 sign flow only"
    with pytest.raises(ConfigError, match=refusal) as error:
        resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.method": "sliding", **overrides})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides", [{"flow.geometry": "euclidean"},
                                       {"flow.geometry": "sign", "flow.geometry_eps": 1e-4}])
def test_other_flows_are_refused_with_one_line(overrides):
    with pytest.raises(ConfigError, match=r"^flow\.geometry(_eps)?=") as error:
        exact_sign_flow(resolve_config("tiny", overrides=overrides))
    assert "\n" not in str(error.value)
