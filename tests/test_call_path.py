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

import dynamics.budget as budget
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
# reading a derived value of a section (TaskConfig.vocabulary, DataConfig.frozen) reads the config, as a field
READS = {value.fget.__code__ for section in SECTIONS for value in vars(section).values()
         if isinstance(value, property)}
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
    making, hashing, comparing or reading a config value (the dunder methods and the properties of the
    config's sections)."""
    stops: list[tuple[str, str]] = []
    generators: list = []  # held, so that a resumed generator's frame is never mistaken for a new call

    def profile(frame, event, _arg):
        if event != "call" or (callee := _project_module(frame)) is None:
            return
        code = frame.f_code
        if frame in generators or (callee == schema.__name__ and (code.co_name.startswith("__")
                                                                  or code in READS)):
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
    """One FactTask, one model, one θ(0), one field for the flow (and the discrete run that starts from the
    same build; it trains the untied copy of the built model). Each save checks the recorded facts
    against the built task's table (no second FactTask), and the step estimate probes the run's own
    start (no second draw of θ(0))."""
    monkeypatch.setattr(budget, "_ESTIMATES", {})  # the step estimate is made (not taken from a test before)
    tasks, models, fields, starts = (collections.Counter() for _ in range(4))
    _count_calls(monkeypatch, FactTask, "__init__", tasks)
    _count_calls(monkeypatch, ReducedModel, "__init__", models)
    _count_calls(monkeypatch, ReducedModel, "initial_parameters", starts)
    _count_calls(monkeypatch, problem, "field_builder", fields)
    simulate(tiny(train), tmp_path / "run", train=train)
    assert tasks == {"setup": 1}
    # the discrete run trains the untied model (one parameter set per token) derived from the built one
    assert models == ({"_reduced": 1, "untied": 1} if train else {"_reduced": 1})
    assert starts == {"starting_state": 1}
    assert fields == {"flow_functions": 1}


# Entries beyond two where a discrete run is made, each one per distinct piece of work. The memory check,
# from the config alone, counts the flow's (tied) and the discrete run's (untied) parameters through the
# model kind's parameters(config, untied) (registry -> reduced.token_count -> task.vocab_size, once each)
# and the sampled batch's vocabulary (budget -> task.vocab_size):
MEMORY_EXTRA = {"dynamics.task": 2, "dynamics.models.registry": 1, "dynamics.models.reduced": 1}
# simulate's discrete run beside its flow also has its own saved record checked against the config
# (rundir.check_record_config, beside the one config tree) and is the built run's third step
# (dynamics.run.train_run):
TRAIN_EXTRA = {**MEMORY_EXTRA, "dynamics.rundir": 1, "dynamics.run": 1}


def _over(stops: list[tuple[str, str]], extra: dict[str, int]) -> dict[str, int]:
    """The modules entered more than twice (plus their ``extra``)."""
    return {module: count for module, count in visits(stops).items() if count > 2 + extra.get(module, 0)}


@pytest.mark.parametrize("train", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["flow", "flow-and-train"])
def test_config_path_through_simulate(train, monkeypatch, tmp_path):
    """The run is built once: build_run, the model's builder, the objective and the start are entered once
    each, and no module is entered more than twice with the config (the flow; the discrete run beside it
    adds only :data:`TRAIN_EXTRA`)."""
    monkeypatch.setattr(budget, "_ESTIMATES", {})  # the step estimate's probe is on the path
    config = tiny(train)
    stops = config_path(lambda: simulate(config, tmp_path / "run", train=train))
    callees = collections.Counter(callee for _, callee in stops)
    for builder in ("dynamics.problem.build_run", "dynamics.models.build_model",
                    "dynamics.objective.make_objective", "dynamics.start.starting_state",
                    "dynamics.run.prepare_run", "dynamics.run.integrate_run"):
        assert callees[builder] == 1, (builder, stops)
    over = _over(stops, TRAIN_EXTRA if train else {})
    assert not over, (over, stops)


@pytest.mark.parametrize("train", [False, True], ids=["run_flow", "run_training"])
def test_config_path_through_the_python_entry_points(train, monkeypatch):
    """dynamics.run.run_flow and run_training from Python build their run once as simulate does: no module
    entered more than twice (run_training: but for the memory check's :data:`MEMORY_EXTRA`)."""
    from dynamics.run import run_flow, run_training

    monkeypatch.setattr(budget, "_ESTIMATES", {})
    config = tiny(train)
    stops = config_path(lambda: run_training(config) if train else run_flow(config))
    over = _over(stops, MEMORY_EXTRA if train else {})
    assert not over, (over, stops)


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
