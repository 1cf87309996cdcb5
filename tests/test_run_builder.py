"""One way to build a run: the task, model, objective, field and start of a config built once and handed on
(to the flow, the discrete run and the budget's step estimate), and the solver's defaults written once."""

from __future__ import annotations

import pytest

from dynamics.config import resolve_config


def test_the_tolerance_defaults_are_the_solvers_own():
    """flow.rtol, atol, first_step and max_steps default to SolverOptions' values (written once there), and
    so do integrate_flow's and integrate_flow_batch's keyword defaults."""
    import inspect

    from dynamics.config import Config
    from dynamics.solvers import SolverOptions, integrate_flow, integrate_flow_batch

    for name in ("rtol", "atol", "first_step", "max_steps"):
        assert getattr(Config().flow, name) == getattr(SolverOptions(), name)
        for function in (integrate_flow, integrate_flow_batch):
            assert inspect.signature(function).parameters[name].default == getattr(SolverOptions(), name)


def _count_builds(monkeypatch) -> dict[str, int]:
    """Count the tasks, models and flow fields built (the builder's own calls, by the names it calls)."""
    import dynamics.problem as problem

    counts = {"task": 0, "model": 0, "field": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(problem, "FactTask", counted("task", problem.FactTask))
    monkeypatch.setattr(problem, "build_model", counted("model", problem.build_model))
    monkeypatch.setattr(problem, "flow_functions", counted("field", problem.flow_functions))
    return counts


@pytest.mark.parametrize("overrides, train", [
    ({}, True),  # the flow's explicit step estimate at θ(0), then the flow and gd
    ({"flow.geometry": "sign", "flow.geometry_eps": 1e-3}, False),  # the estimate probes the field itself
])
def test_simulate_builds_the_task_model_and_field_once(monkeypatch, tmp_path, overrides, train):
    """The budget's step estimate and the run (and the discrete run beside it) take the same built run."""
    from analysis.simulate import simulate

    counts = _count_builds(monkeypatch)
    trained = {"train.optimizer": "gd", "train.steps": 20} if train else {}
    config = resolve_config("tiny", overrides={"flow.t_max": 2.0, "flow.points": 8, **trained, **overrides})
    runs = simulate(config, tmp_path / "run", train=train)
    assert all(run.trajectory.info.ok for run in runs.values())
    assert counts == {"task": 1, "model": 1, "field": 1}


def test_a_batch_builds_one_model_and_one_field_per_form(monkeypatch):
    """The members of a batch differ only in init.*: one task and model, the one-flow field for each member's
    step estimate and the batched field for the run."""
    from dynamics.run import run_flow_batch

    counts = _count_builds(monkeypatch)
    base = resolve_config("tiny", overrides={"flow.t_max": 2.0, "flow.points": 8, "init.kind": "gaussian"})
    runs = run_flow_batch([base.override({"init.seed": seed}) for seed in (1, 2, 3)])
    assert [run.info.flow.batch_size for run in runs] == [3, 3, 3]
    assert counts == {"task": 1, "model": 1, "field": 2}


def test_the_step_estimate_probes_the_problem_the_run_integrates(monkeypatch, tmp_path):
    """The budget's probe takes the run's own problem (BuiltRun.flow): its start is the run's, for a
    fine-tune the state it continues (not a second draw of init.*), and the run integrates that problem."""
    import torch

    import dynamics.budget as budget
    import dynamics.solvers.stiffness as stiffness
    from dynamics.run import integrate_run, prepare_run, run_flow

    source = resolve_config("tiny", overrides={"flow.t_max": 2.0, "flow.points": 8})
    run_flow(source).save(tmp_path / "source", source)
    radius, probed = stiffness.spectral_radius, []

    def recorded(field, t, theta, *args, **kwargs):
        probed.append(theta)
        return radius(field, t, theta, *args, **kwargs)

    monkeypatch.setattr(stiffness, "spectral_radius", recorded)
    monkeypatch.setattr(budget, "_ESTIMATES", {})
    built = prepare_run(source.override({"init.from_run": str(tmp_path / "source")}))
    assert len(probed) == 1 and probed[0] is built.flow.theta0 is built.start.theta0
    assert not torch.equal(probed[0], built.model.initial_parameters(built.config.init))
    trajectory = integrate_run(built)
    assert trajectory.info.ok and built.flow.observe is None  # the run's observer is on its own copy
