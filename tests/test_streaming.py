"""The flow's record taken point by point (a solver's observer) against the record of the stored states: the
same numbers bit for bit, for every kind of method and when a run fails; the observer sees every grid point
reached once, in order; the step budget is kept exactly and named as the user set it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.config import resolve_config
from dynamics.run import integrate_config_flow, run_flow, setup, time_grid
from dynamics.solvers import FlowProblem, SolverOptions, Status, integrate_flow, integrate_problem
from dynamics.trajectory import Recorder, record

RECORD_ARRAYS = ("t", "loss", "relation_loss", "subject_loss", "fact_loss", "p_correct", "p_relation",
                 "p_subject", "argmax_class", "attention")


def _stored_record(config):
    """The old way: integrate keeping every state, then record them all."""
    task, model, objective = setup(config)
    result = integrate_config_flow(config, model, objective, model.initial_parameters(config.init),
                                   time_grid(config))
    return result, record(model, task, result.t, result.states)


def _assert_same_record(streamed, stored):
    for name in RECORD_ARRAYS:
        a, b = getattr(streamed, name), getattr(stored, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert np.array_equal(a, b), name  # bit for bit
    assert streamed.norms.keys() == stored.norms.keys()
    for name in streamed.norms:
        assert np.array_equal(streamed.norms[name], stored.norms[name]), name


# random64 at 64 points: auto switches to cvode after the first escape (tests/test_implicit.py)
CASES = {
    "dopri5": ("tiny", {"flow.method": "dopri5"}),
    "cvode": ("tiny", {"flow.method": "cvode"}),
    "auto": ("random64", {"flow.method": "auto", "flow.points": 64, "flow.t_max": 3000.0}),
    "dopri5-budget": ("tiny", {"flow.method": "dopri5", "flow.max_steps": 40}),
    "cvode-budget": ("tiny", {"flow.method": "cvode", "flow.max_steps": 40}),
    "auto-budget": ("random64", {"flow.method": "auto", "flow.points": 64, "flow.max_steps": 120}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_streamed_record_equals_the_stored_states_record(case):
    preset, overrides = CASES[case]
    config = resolve_config(preset, overrides=overrides)
    streamed = run_flow(config)
    result, stored = _stored_record(config)
    assert streamed.states is None  # nothing kept unless asked
    _assert_same_record(streamed, stored)
    assert np.array_equal(streamed.final_state, result.states[-1].numpy())
    assert streamed.info.status == result.status and streamed.info.status_time == result.status_time
    if case.endswith("budget"):  # a failed run keeps its record up to the last grid point reached
        assert result.status == Status.MAX_STEPS and 1 < len(streamed.t) < config.flow.points
        assert streamed.info.cost.accepted_steps <= config.flow.max_steps
    else:
        assert result.status == Status.OK and len(streamed.t) == config.flow.points
    if case == "auto":
        assert "then cvode" in streamed.info.flow.method_used


def test_recorder_chunks_are_those_of_record():
    """A chunk of states evaluated together is a chunk of record(): the Recorder at chunk c gives record()'s
    numbers at chunk c bit for bit (the same evaluations), the last partial chunk recorded at the end; and
    the chunk size changes no number (one state at a time, 4, 7, all at once, the default)."""
    config = resolve_config("tiny")
    result, stored = _stored_record(config)
    task, model, _ = setup(config)
    points = len(result.t)
    reference = record(model, task, result.t, result.states, chunk=1)
    for chunk in (1, 4, 7, points, None):
        recorder = Recorder(model, task, points + 5, chunk=chunk)  # more points than given: a failed run
        for k, theta in enumerate(result.states):
            recorder.add(k, theta.clone())
        streamed = recorder.trajectory(result.t)
        _assert_same_record(streamed, record(model, task, result.t, result.states, chunk=chunk))
        # across chunk sizes the batched evaluations may group their sums differently: 1e-12 relative
        for name in RECORD_ARRAYS:
            got, want = getattr(streamed, name), getattr(reference, name)
            assert got.shape == want.shape, (chunk, name)
            if name == "argmax_class":
                np.testing.assert_array_equal(got, want, err_msg=f"chunk {chunk}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=f"chunk {chunk}: {name}")
        for name in reference.norms:
            np.testing.assert_allclose(streamed.norms[name], reference.norms[name], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="expected 0"):
        Recorder(model, task, 3).add(1, result.states[0])


def _observed(problem, method, options):
    seen: list[tuple[int, torch.Tensor]] = []
    problem.observe = lambda k, theta: seen.append((k, theta.clone()))
    problem.keep_states = True
    result = integrate_problem(problem, method, options)
    assert [k for k, _ in seen] == list(range(len(result.t)))  # every point reached, once, in order
    assert torch.equal(torch.stack([theta for _, theta in seen]), result.states)
    assert torch.equal(result.last_state, result.states[-1])
    return result


def _switching(t, x):  # dθ/dt = 1 before t = 1, −1 after: a jump the solvers must not step across
    return torch.ones_like(x) if t < 1.0 else -torch.ones_like(x)


@pytest.mark.parametrize("method", ["dopri5", "cvode", "auto"])
def test_observer_sees_the_kept_states_with_breakpoints_and_failures(method):
    grid = np.array([0.0, 0.25, 0.5, 1.5, 2.0])
    theta0 = torch.zeros(2, dtype=torch.float64)
    options = SolverOptions(rtol=1e-9, atol=1e-12)
    # breakpoints off the grid (0.75) and on it (1.5 is not a jump, but a restart): indices stay the grid's
    result = _observed(FlowProblem(_switching, theta0, grid, breakpoints=(0.75, 1.0, 1.5)), method, options)
    assert result.status == Status.OK and np.array_equal(result.t, grid)
    np.testing.assert_allclose(result.states[:, 0].numpy(), [0.0, 0.25, 0.5, 0.5, 0.0], atol=1e-8)
    # dθ/dt = θ² from 1 blows up at t = 1: the points before it are observed, nothing after
    blowup = FlowProblem(lambda t, x: x * x, torch.ones(1, dtype=torch.float64), np.linspace(0.0, 2.0, 21),
                         jacobian_vector=lambda t, x, v: 2 * x * v)
    failed = _observed(blowup, method, options.replace(max_steps=20_000))
    assert failed.status != Status.OK and 5 < len(failed.t) <= 11
    # without an observer nothing changes: the states are kept
    plain = integrate_flow(_switching, theta0, grid, method=method, rtol=1e-9, atol=1e-12,
                           breakpoints=(0.75, 1.0, 1.5))
    assert torch.equal(plain.states, result.states)


def test_result_keeps_no_states_with_an_observer_unless_asked():
    grid = np.linspace(0.0, 1.0, 6)
    problem = FlowProblem(lambda t, x: -x, torch.ones(3, dtype=torch.float64), grid,
                          observe=lambda k, theta: None)
    result = integrate_problem(problem, "dopri5", SolverOptions())
    assert result.states is None and np.array_equal(result.t, grid)
    np.testing.assert_allclose(result.last_state.numpy(), np.exp(-1.0), rtol=1e-5)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "cvode"])
def test_step_budget_is_kept_exactly(method):
    """A run never takes more accepted steps than flow.max_steps (dopri5 used to replay the grid points of
    the chunk it was in one by one after the budget ran out: 25 steps for a budget of 3), and keeps every
    grid point its accepted steps passed."""
    config = resolve_config("tiny", overrides={"flow.method": method, "flow.max_steps": 3})
    traj = run_flow(config)
    info = traj.info
    assert info.status == Status.MAX_STEPS and info.cost.accepted_steps == 3, info.cost
    assert "flow.max_steps=3 " in info.message
    grid = time_grid(config)
    assert np.array_equal(traj.t, grid[grid <= info.status_time])


@pytest.mark.parametrize("budget", [30, 200])
def test_auto_names_the_budget_the_user_set(budget):
    """auto runs spans and then cvode, each on what is left of the budget: the message names flow.max_steps
    as set (it named what was left for the part that ran out), and the parts' steps add up to it."""
    config = resolve_config("random64", overrides={"flow.method": "auto", "flow.points": 64,
                                                   "flow.max_steps": budget})
    traj = run_flow(config)
    info = traj.info
    assert info.status == Status.MAX_STEPS, info.message
    assert f"flow.max_steps={budget} exhausted" in info.message, info.message
    assert info.cost.accepted_steps == budget
    if budget == 200:  # past the switch: cvode ran out
        assert "cvode" in info.flow.method_split
