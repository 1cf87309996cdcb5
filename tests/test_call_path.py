"""Following a config from ``analysis.simulate.simulate`` through the calls: the task, the model and the
flow's field are built once per run, and no module is re-entered to build them again.

Constructions are counted by counting wrappers (FactTask, the model kind's class, the field builder). The
path itself is measured with :func:`config_path`: every call into a project module (``dynamics``,
``analysis``) from another project module whose arguments carry the config (a :class:`Config`, one of its
sections, or the :class:`BuiltRun` that holds it) is a visit of the callee's module.
"""

from __future__ import annotations

import collections
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import dynamics.config.schema as schema
import dynamics.problem as problem
from analysis.simulate import simulate
from dynamics.config import resolve_config
from dynamics.models import ReducedModel
from dynamics.task import FactTask

TINY = {"flow.t_max": 20.0, "flow.points": 16}


def tiny(train: bool = False):
    """``tiny``, short (and, with ``train``, a short discrete run)."""
    return resolve_config("tiny", overrides={**TINY, **({"train.steps": 40} if train else {})})
SECTIONS = tuple(value for value in vars(schema).values() if isinstance(value, type)
                 and value.__module__ == schema.__name__ and value.__name__.endswith("Config"))
PROJECT = ("dynamics", "analysis")


def _project_module(frame) -> str | None:
    name = frame.f_globals.get("__name__", "")
    return name if name.split(".")[0] in PROJECT else None


def _carries_config(frame) -> bool:
    code = frame.f_code
    names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    return any(isinstance(frame.f_locals.get(name), (*SECTIONS, problem.BuiltRun)) for name in names)


def config_path(run: Callable[[], object]) -> list[tuple[str, str]]:
    """The (caller module, callee module.function) of every call ``run`` makes into a project module from
    another project module with the config among its arguments: a generator resumed is not a call, nor is
    making, hashing or comparing a config value (the dunder methods of the config's sections)."""
    stops: list[tuple[str, str]] = []
    generators: list = []  # held, so that a resumed generator's frame is never mistaken for a new call

    def profile(frame, event, _arg):
        if event != "call" or (callee := _project_module(frame)) is None:
            return
        code = frame.f_code
        if frame in generators or (callee == schema.__name__ and code.co_name.startswith("__")):
            return
        if code.co_flags & inspect.CO_GENERATOR:
            generators.append(frame)
        if not _carries_config(frame):
            return
        caller, back = None, frame.f_back
        while back is not None and (caller := _project_module(back)) is None:
            back = back.f_back
        if caller != callee:
            stops.append((str(caller), f"{callee}.{code.co_name}"))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return stops


def visits(stops: list[tuple[str, str]]) -> collections.Counter:
    """How many times each module was entered from another one."""
    return collections.Counter(callee.rsplit(".", 1)[0] for _, callee in stops)


def _count_calls(monkeypatch, owner, name: str, counts: collections.Counter) -> None:
    """Replace ``owner.name`` by a wrapper that counts its calls by the name of the calling function."""
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        counts[sys._getframe(1).f_code.co_name] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)


@pytest.mark.parametrize("train", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["flow", "flow-and-train"])
def test_task_model_and_field_are_built_once_per_simulate(train, monkeypatch, tmp_path):
    """One FactTask, one model, one field for the flow (and the discrete run that starts from the same
    build; it trains the untied copy of the built model). The one other FactTask is the run directory's
    check, on save, that the facts table of the config is the recorded one (one per saved run): a
    validation of what is written, not a second build of the run."""
    tasks, models, fields = collections.Counter(), collections.Counter(), collections.Counter()
    _count_calls(monkeypatch, FactTask, "__init__", tasks)
    _count_calls(monkeypatch, ReducedModel, "__init__", models)
    _count_calls(monkeypatch, problem, "field_builder", fields)
    simulate(tiny(train), tmp_path / "run", train=train)
    saved_runs = 2 if train else 1
    assert tasks == {"setup": 1, "check_record_config": saved_runs}
    # the discrete run trains the untied model (one parameter set per token) derived from the built one
    assert models == ({"_reduced": 1, "untied": 1} if train else {"_reduced": 1})
    assert fields == {"flow_functions": 1}


def test_config_path_through_simulate(tmp_path):
    """The run is built once: build_run, the model's builder and the objective are entered once each, and
    no module that builds a piece of the run (the task, the model, the objective, the start) is entered
    more than twice."""
    config = tiny()
    stops = config_path(lambda: simulate(config, tmp_path / "run"))
    callees = collections.Counter(callee for _, callee in stops)
    for builder in ("dynamics.problem.build_run", "dynamics.models.build_model",
                    "dynamics.objective.make_objective", "dynamics.start.starting_state",
                    "dynamics.run.prepare_run", "dynamics.run.integrate_run"):
        assert callees[builder] == 1, (builder, stops)
    counted = visits(stops)
    for module in ("dynamics.run", "dynamics.start", "dynamics.objective", "dynamics.models",
                   "analysis.simulate", "analysis.rundir", "analysis.stages.report"):
        assert counted[module] <= 2, (module, stops)


if __name__ == "__main__":  # the whole path, printed: python tests/test_call_path.py [--train]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        train = "--train" in sys.argv
        config = tiny(train)
        path = config_path(lambda: simulate(config, Path(tmp) / "run", train=train))
    for caller, callee in path:
        print(f"{caller} -> {callee}")
    print(f"{len(path)} stops in {len(visits(path))} modules")
    for module, count in visits(path).most_common():
        print(f"{count:3d} {module}")
