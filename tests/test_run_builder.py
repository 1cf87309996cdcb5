"""One way to build a run: the task, model, objective, field and start of a config built once and handed on
(to the flow, the discrete run and the budget's step estimate), and the solver's defaults written once."""

from __future__ import annotations


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
