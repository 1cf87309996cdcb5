"""The pace stop (dynamics.solvers.pace): a flow whose pace projects far more steps than its budget stops
early with status too_slow, its trajectory so far kept, and the advice in its message works. Deterministic:
a field whose step size must shrink as the flow goes (a rotation that speeds up), no wall clock."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from dynamics.solvers import FlowProblem, SolverOptions, Status, integrate_flow, integrate_problem
from dynamics.solvers.pace import MIN_STEPS, WINDOW, Pace

SPEED = 40.0  # θ turns at angular speed SPEED·t: accuracy needs steps ~ 1/(SPEED·t), ~SPEED·t_max² steps
BUDGET = 600


def spinning(t: float, theta: torch.Tensor) -> torch.Tensor:
    """dθ/dt = SPEED·t · J θ: θ(t) = rotation of θ(0) by SPEED·t²/2."""
    w = SPEED * t
    return torch.stack([-w * theta[1], w * theta[0]])


def exact(t: np.ndarray) -> np.ndarray:
    angle = SPEED * np.asarray(t) ** 2 / 2
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def grid(t_max: float) -> np.ndarray:
    return np.concatenate([[0.0], np.geomspace(0.01, t_max, 40)])


def spin(t_max: float = 100.0, method: str = "dopri5", **options):
    theta0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    return integrate_flow(spinning, theta0, grid(t_max), method=method, max_steps=BUDGET, **options)


def advised_t_max(message: str) -> float:
    advice = re.search(r"allowed: flow\.t_max=([0-9.e+-]+) \(reached within the budget\)", message)
    return float(advice.group(1))


@pytest.mark.parametrize("method", ["dopri5", "cvode", "auto"])
def test_a_flow_that_slows_down_stops_early_with_its_trajectory(method):
    result = spin(method=method)
    assert result.status == Status.TOO_SLOW
    assert result.cost.accepted_steps == MIN_STEPS  # the first projection already says so; not 600 steps
    assert 0 < result.t[-1] <= result.status_time < 100
    assert len(result.t) > 10
    # the states kept are the flow's (to the solver's tolerance, rtol 1e-6 per step)
    np.testing.assert_allclose(result.states.numpy(), exact(result.t), atol=1e-3)
    message = result.message
    assert message.startswith(f"too slow at t={result.status_time:.6g}: ")
    assert f"more than 2 × flow.max_steps={BUDGET}" in message and "to t=100" in message
    needed = float(re.search(r"needs at least ([0-9.e+]+) steps", message).group(1))
    assert needed > 2 * BUDGET
    assert "\n" not in message


@pytest.mark.parametrize("method", ["dopri5", "cvode", "auto"])
def test_the_advised_t_max_is_reached_within_the_budget(method):
    t_max = advised_t_max(spin(method=method).message)
    assert t_max > 0
    again = spin(t_max, method=method)
    assert again.status == Status.OK and again.cost.accepted_steps <= BUDGET
    assert again.t[-1] == pytest.approx(t_max, rel=1e-12)


def test_without_the_pace_stop_the_flow_spends_its_budget():
    theta0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    problem = FlowProblem(spinning, theta0, grid(100.0))
    result = integrate_problem(problem, "dopri5", SolverOptions(max_steps=BUDGET, too_slow=0))
    assert result.status == Status.MAX_STEPS and result.cost.accepted_steps == BUDGET


def test_the_pace_is_one_for_the_pieces_between_breakpoints():
    # each piece alone takes fewer than MIN_STEPS steps before the stop: the pieces share one pace
    result = spin(breakpoints=(1.0,))
    assert result.status == Status.TOO_SLOW and result.cost.accepted_steps == MIN_STEPS


def test_a_flow_within_its_budget_is_not_stopped():
    decay = integrate_flow(lambda t, theta: -theta, torch.ones(3, dtype=torch.float64), grid(100.0),
                           max_steps=MIN_STEPS + 10)
    assert decay.status == Status.OK
    # a flow past MIN_STEPS that needs less than its budget runs to its end
    result = spin(t_max=2.4)
    assert result.status == Status.OK and result.cost.accepted_steps > MIN_STEPS


def feed(pace: Pace, times) -> list[str | None]:
    return [pace.accept(float(t)) for t in times]


def test_a_constant_step_projects_its_pace_in_log_time_to_the_end():
    h, budget = 0.01, 500
    pace = Pace(0.0, h, 100.0, budget)
    said = feed(pace, h * np.arange(1, MIN_STEPS + 1))
    assert said[:-1] == [None] * (MIN_STEPS - 1) and said[-1] is not None
    needed = float(re.search(r"needs at least ([0-9.e+]+) steps", said[-1]).group(1))
    # s = log(t + h) = log((k + 1) h) at step k: the window's pace, over what is left of s
    rate = WINDOW / math.log((MIN_STEPS + 1) / (MIN_STEPS - WINDOW + 1))
    assert needed == pytest.approx(MIN_STEPS + rate * math.log((100 / h + 1) / (MIN_STEPS + 1)), rel=1e-2)
    assert needed < 100 / h  # optimistic: the constant step needs 10^4
    # the advice: where it stopped, rounded down to two digits
    assert advised_t_max(said[-1]) == 2.5


def test_a_step_growing_like_t_has_a_constant_pace_in_log_time():
    pace = Pace(0.0, 1e-9, 1e6, budget=10)  # log(t + 1e-9) is log t to 1e-9 from t = 1 on
    q = 1.01  # t multiplied by q per step: 1/log q steps per unit of log t
    said = feed(pace, q ** np.arange(1, MIN_STEPS + 1))
    r, left = pace.projection()
    assert r == pytest.approx(1 / math.log(q), rel=1e-6)
    assert left == pytest.approx(math.log(1e6) - MIN_STEPS * math.log(q), rel=1e-6)
    needed = float(re.search(r"needs at least ([0-9.e+]+) steps", said[-1]).group(1))
    assert needed == pytest.approx(MIN_STEPS + r * left, rel=1e-2)


def test_a_window_without_progress_in_log_time_projects_no_end():
    pace = Pace(0.0, 1.0, 10.0, budget=10**9)
    said = feed(pace, [5.0] * MIN_STEPS)
    assert said[-1] is not None and "unboundedly many steps" in said[-1]


def simulate(tmp_path, capsys, name: str, *sets: str) -> str:
    from analysis.cli import main

    argv = ["simulate", "--preset", "tiny", "--quiet", "--out", str(tmp_path / name)]
    for setting in ("flow.geometry=spectral", "flow.max_steps=300", *sets):
        argv += ["--set", setting]
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.slow  # three tiny spectral flows, ~20 s of CPU
def test_simulate_prints_the_stop_on_one_line_and_both_advices_work(tmp_path, capsys):
    from dynamics.trajectory import Trajectory

    out = simulate(tmp_path, capsys, "slow", "flow.geometry_eps=1e-6")
    assert "status=too_slow" in out
    (line,) = [line.strip() for line in out.splitlines() if "too slow at t=" in line]
    assert "more than 2 × flow.max_steps=300" in line
    saved = Trajectory.load(tmp_path / "slow")
    assert saved.info.status == Status.TOO_SLOW and len(saved.t) > 1 and saved.t[-1] <= saved.info.status_time
    t_max = advised_t_max(line)
    eps = re.search(r", or flow\.geometry_eps=([0-9.e+-]+) or larger", line).group(1)
    assert float(eps) > 1e-6
    for name, setting in (("t_max", f"flow.t_max={t_max:g}"), ("eps", f"flow.geometry_eps={eps}")):
        followed = simulate(tmp_path, capsys, name, "flow.geometry_eps=1e-6", setting)
        assert "status=ok" in followed, followed
