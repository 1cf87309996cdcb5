"""The solver layer's contract: the method registry, breakpoints where a field jumps, and typed records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dynamics import RunInfo, Status, resolve_config, run_flow, run_training
from dynamics.solvers import METHODS, Cost, get_method, integrate_flow, integrate_flow_batch


def test_registry_names_every_method_once_with_its_needs():
    assert {m.kind for m in METHODS.values()} == {"explicit", "implicit", "strategy", "event"}
    assert [name for name, m in METHODS.items() if m.batched] == [n for n, m in METHODS.items()
                                                                 if m.kind == "explicit"]
    assert get_method("cvode").uses == "jacobian_vector" and get_method("bdf").uses == "jacobian"
    with pytest.raises(ValueError, match="method='rk4': must be one of dopri5"):
        get_method("rk4")
    with pytest.raises(ValueError, match="one flow at a time"):
        integrate_flow_batch(lambda t, x: -x, torch.ones(2, 1, dtype=torch.float64), np.array([0.0, 1.0]),
                             method="cvode")


def _switching_field(calls: list[float]):
    """dθ/dt = +1 before t = 1 and −2 from t = 1 on: θ(t) = t, then 1 − 2(t − 1). Records each time."""

    def field(t: float, theta: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return torch.full_like(theta, 1.0 if t < 1.0 else -2.0)

    return field


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "cvode", "radau", "auto"])
def test_breakpoint_stops_every_method_exactly_at_a_jump(method):
    grid = np.array([0.0, 0.25, 0.5, 0.75, 1.5, 2.0])  # the jump at t = 1 is not a grid point
    calls: list[float] = []
    result = integrate_flow(_switching_field(calls), torch.zeros(1, dtype=torch.float64), grid,
                            method=method, rtol=1e-10, atol=1e-12, breakpoints=[1.0],
                            jacobian=lambda t, x: torch.zeros(1, 1, dtype=torch.float64),
                            jacobian_vector=lambda t, x, v: torch.zeros_like(v))
    assert result.status == Status.OK and np.array_equal(result.t, grid)  # the breakpoint is not recorded
    exact = np.where(grid < 1.0, grid, 1.0 - 2.0 * (grid - 1.0))
    np.testing.assert_allclose(result.states[:, 0].numpy(), exact, atol=1e-9)
    # no step straddles the jump: the field is never evaluated at t ≥ 1 while θ is still on the first piece,
    # so a solver sees a smooth field on each piece and needs few steps
    assert result.cost.accepted_steps < 40


def test_without_the_breakpoint_the_jump_costs_accuracy_or_steps():
    grid = np.array([0.0, 0.25, 0.5, 0.75, 1.5, 2.0])
    with_break = integrate_flow(_switching_field([]), torch.zeros(1, dtype=torch.float64), grid, rtol=1e-10,
                                atol=1e-12, breakpoints=[1.0])
    without = integrate_flow(_switching_field([]), torch.zeros(1, dtype=torch.float64), grid, rtol=1e-10,
                             atol=1e-12)
    assert without.cost.rejected_steps > with_break.cost.rejected_steps
    assert with_break.cost.function_evals < without.cost.function_evals


def test_breakpoint_on_a_grid_point_and_budget_across_pieces():
    grid = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    result = integrate_flow(_switching_field([]), torch.zeros(1, dtype=torch.float64), grid, rtol=1e-10,
                            atol=1e-12, breakpoints=[1.0, 5.0, -1.0])  # outside the grid: ignored
    assert np.array_equal(result.t, grid)
    np.testing.assert_allclose(result.states[:, 0].numpy(), [0.0, 0.5, 1.0, 0.0, -1.0], atol=1e-9)
    short = integrate_flow(_switching_field([]), torch.zeros(1, dtype=torch.float64), grid, max_steps=3,
                           breakpoints=[1.0])
    assert short.status == Status.MAX_STEPS and short.cost.accepted_steps <= 3


def test_cost_adds_up_and_round_trips():
    a = Cost(function_evals=3, hvp_evals=1, accepted_steps=2, wall_seconds=0.5)
    b = Cost(function_evals=4, rejected_steps=1, wall_seconds=0.25)
    total = a + b
    assert (total.function_evals, total.hvp_evals, total.rejected_steps) == (7, 1, 1)
    assert total.wall_seconds == 0.75
    assert Cost.from_dict(json.loads(json.dumps(total.to_dict()))) == total


@pytest.mark.parametrize("kind", ["flow", "auto", "train"])
def test_run_info_is_what_summary_json_holds(tmp_path, kind):
    config = resolve_config("tiny", overrides={"flow.method": "auto"} if kind == "auto" else {})
    traj = run_training(config) if kind == "train" else run_flow(config)
    traj.save(tmp_path)
    payload = json.loads((tmp_path / "summary.json").read_text())
    assert payload["status"] == "ok" and payload["kind"] == ("train" if kind == "train" else "flow")
    assert traj.final_loss == traj.loss[-1]  # the record's own last loss, in memory
    assert payload["final_loss"] == pytest.approx(traj.final_loss, rel=1e-12)  # read back from summary.json
    info = RunInfo.from_dict(payload)
    assert info == traj.info and isinstance(info.status, Status) and isinstance(info.cost, Cost)
    if kind == "auto":
        assert set(info.flow.method_split) == {"dopri5", "stiffness_probes"}
        assert isinstance(info.flow.method_split["dopri5"], Cost)
    if kind == "train":
        assert info.train.optimizer == "sgd" and info.cost.function_evals == config.train.steps
