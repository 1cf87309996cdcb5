"""The trajectory record (``dynamics/trajectory.py``): what a save writes and a load reads back (the config,
its digest, the states, a missing summary), the refusals of a save target in whole lines, the record's
chunk size, and the Recorder's bookkeeping. Written for the survivors of ``python tests/mutation.py
dynamics/trajectory.py -- tests/test_trajectory.py tests/test_npz.py tests/test_mutants_trajectory.py``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import dynamics.trajectory as trajectory_module
from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.run import run_flow, setup
from dynamics.task import FactTask
from dynamics.trajectory import (
    DIGEST_KEY,
    RECORD_ELEMENTS,
    SAVE_ALLOWED,
    Recorder,
    Trajectory,
    config_tree,
    config_tree_digest,
    fact_metrics,
    record,
    record_chunk,
)

CONFIG = resolve_config("tiny", None, ["flow.t_max=5", "flow.points=6"])


@pytest.fixture(scope="module")
def flow() -> Trajectory:
    return run_flow(CONFIG)


def bare(flow: Trajectory) -> Trajectory:
    """The flow without its run record and digest (a fresh object each time: save sets the digest)."""
    return dataclasses.replace(flow, info=None, config_digest=None)


def test_a_save_with_config_writes_the_config_and_its_digest_and_load_reads_them(tmp_path, flow):
    P = len(flow.final_state)  # the states and the final state have one parameter count (checked)
    states = np.arange(len(flow.t) * P, dtype=np.float64).reshape(len(flow.t), P)
    dataclasses.replace(flow, states=states).save(tmp_path / "run", CONFIG)
    tree = json.loads((tmp_path / "run" / "config.json").read_text())
    assert tree == config_tree(CONFIG)
    with np.load(tmp_path / "run" / "trajectory.npz") as data:
        assert str(data[DIGEST_KEY]) == config_tree_digest(tree)
    loaded = Trajectory.load(tmp_path / "run")
    assert loaded.config_digest == config_tree_digest(tree)
    assert loaded.answers_per_relation == CONFIG.task.answers_per_relation
    assert isinstance(loaded.answers_per_relation, int)
    np.testing.assert_array_equal(loaded.states, states)  # stored values: exact
    np.testing.assert_array_equal(loaded.final_state, flow.final_state)
    dataclasses.replace(flow, states=states).save(tmp_path / "run", CONFIG)  # its own earlier save: replaced


def test_a_save_checks_the_config_and_names_the_directory(tmp_path, flow):
    other = CONFIG.override({"task.subjects": 6})
    with pytest.raises(ConfigError) as caught:
        bare(flow).save(tmp_path / "run", other)
    where = repr(str(tmp_path / "run"))
    assert str(caught.value).startswith(f"Trajectory.save: {where}: its config.json does not match its "
                                        "trajectory.npz (task.subjects=6"), caught.value


def test_a_save_without_info_removes_an_earlier_summary_and_loads_without_one(tmp_path, flow):
    flow.save(tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").is_file()
    bare(flow).save(tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()
    loaded = Trajectory.load(tmp_path / "run")
    assert loaded.info is None and loaded.config_digest is None and loaded.states is None
    np.testing.assert_array_equal(loaded.final_state, flow.final_state)


def test_load_never_unpickles(tmp_path, flow):
    bare(flow).save(tmp_path / "run")
    with np.load(tmp_path / "run" / "trajectory.npz") as data:
        arrays = {name: data[name] for name in data.files}
    np.savez(tmp_path / "run" / "trajectory.npz", **arrays, extra=np.array([{}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        Trajectory.load(tmp_path / "run")


def refusal(directory: Path, flow: Trajectory, config=None) -> str:
    with pytest.raises(ConfigError) as caught:
        bare(flow).save(directory, config)
    return str(caught.value)


def test_a_save_target_that_is_a_file_is_refused_in_one_whole_line(tmp_path, flow):
    (tmp_path / "file").write_text("")
    assert refusal(tmp_path / "file", flow) == (f"Trajectory.save: {str(tmp_path / 'file')!r} is not a "
                                                f"directory; {SAVE_ALLOWED}")


@pytest.mark.parametrize("names, listed", [(["notes.txt"], "notes.txt"),
                                           (["a", "b", "c"], "a, b, c"),
                                           (["a", "b", "c", "d"], "a, b, c and 1 more"),
                                           (["a", "b", "c", "d", "e"], "a, b, c and 2 more")])
def test_foreign_files_are_listed_three_at_most(tmp_path, flow, names, listed):
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "trajectory.npz").write_text("")  # a file a save writes: not foreign
    assert refusal(tmp_path, flow) == (f"Trajectory.save: {str(tmp_path)!r} holds files a trajectory save "
                                       f"does not write ({listed}); {SAVE_ALLOWED}")


def test_a_folder_named_like_a_saved_file_is_foreign(tmp_path, flow):
    (tmp_path / "summary.json").mkdir()
    assert "does not write (summary.json)" in refusal(tmp_path, flow)


def test_a_config_json_is_refused_only_by_a_save_without_config(tmp_path, flow):
    flow.save(tmp_path / "run", CONFIG)
    assert refusal(tmp_path / "run", flow) == (
        f"Trajectory.save: {str(tmp_path / 'run')!r} holds a config.json that this save (without config=) "
        "would leave beside another trajectory; allowed: save(directory, config), or a directory without one")
    bare(flow).save(tmp_path / "run", CONFIG)


def test_record_chunk_keeps_the_logits_evaluated_at_once_bounded():
    task = FactTask(CONFIG.task)
    per_fact = task.S * task.R
    assert record_chunk(SimpleNamespace(has_fact_record=True), task) == RECORD_ELEMENTS // (per_fact * 4)
    assert record_chunk(SimpleNamespace(has_fact_record=False), task) == RECORD_ELEMENTS // (
        per_fact * task.num_answers)
    big = FactTask(CONFIG.task.__class__(**{**dataclasses.asdict(CONFIG.task), "subjects": 2**12,
                                            "relations": 32, "answers_per_relation": 32}))
    assert big.S * big.R * big.num_answers > RECORD_ELEMENTS
    assert record_chunk(SimpleNamespace(has_fact_record=False), big) == 1


def states_of(config, count: int = 5) -> tuple[FactTask, object, torch.Tensor]:
    task, model, _ = setup(config)
    theta = model.initial_parameters(config.init)
    steps = torch.linspace(0, 1, count, dtype=theta.dtype)[:, None]
    return task, model, theta + steps * torch.sin(torch.arange(theta.numel(), dtype=theta.dtype))


def test_record_evaluates_the_chunk_it_is_given(monkeypatch):
    task, model, states = states_of(CONFIG)
    assert Recorder(model, task, 5, chunk=3).chunk == 3
    flushes = []
    original = Recorder._flush
    monkeypatch.setattr(Recorder, "_flush", lambda self: (flushes.append(self._held), original(self))[1])
    record(model, task, np.arange(5.0), states, chunk=2)
    assert [held for held in flushes if held] == [2, 2, 1]


def test_record_of_a_single_state(flow):
    task, model, states = states_of(CONFIG, count=1)
    one = record(model, task, np.array([0.0]), states)
    assert one.loss.shape == (1,)


def test_a_model_without_fact_record_is_recorded_from_its_logits():
    config = CONFIG.override({"model.attention": "softmax"})
    task, model, states = states_of(config)
    assert not model.has_fact_record
    got = record(model, task, np.arange(5.0), states)
    want = fact_metrics(task, torch.stack([model.population_logits(s) for s in states]))
    np.testing.assert_allclose(got.fact_loss, want["fact_loss"].numpy(), rtol=1e-12, atol=0)


def test_recorder_seconds_add_up_the_recording(monkeypatch):
    """A clock that moves one second per reading: each add and the final trajectory() take one second."""
    task, model, states = states_of(CONFIG, count=2)
    ticks = iter(range(100, 200))
    monkeypatch.setattr(trajectory_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    recorder = Recorder(model, task, 2, chunk=4)
    assert recorder.seconds == 0.0
    recorder.add(0, states[0])
    recorder.add(1, states[1])
    traj = recorder.trajectory(np.arange(2))  # integer times: recorded as float64
    assert recorder.seconds == 3.0
    assert traj.t.dtype == np.float64


def test_recorder_refuses_a_state_at_its_points():
    task, model, states = states_of(CONFIG, count=2)
    recorder = Recorder(model, task, points=2, chunk=8)
    recorder.add(0, states[0])
    recorder.add(1, states[1])
    with pytest.raises(ValueError, match=r"state 2 given, expected 2 \(of 2\)"):
        recorder.add(2, states[1])


def test_record_chunk_counts_four_numbers_per_fact_with_a_fact_record():
    task = SimpleNamespace(S=3, R=5, num_answers=40)
    assert record_chunk(SimpleNamespace(has_fact_record=True), task) == RECORD_ELEMENTS // (3 * 5 * 4)
    assert record_chunk(SimpleNamespace(has_fact_record=False), task) == RECORD_ELEMENTS // (3 * 5 * 40)


def test_attention_is_weighted_by_the_facts_frequencies():
    config = resolve_config("tiny", None, ["task.subjects=3", "task.subject_zipf=1.0"])
    task, model, states = states_of(config, count=3)
    got = record(model, task, np.arange(3.0), states).attention
    weights = torch.as_tensor(task.fact_weights)
    want = np.stack([(weights[..., None] * model.attention_weights(s)).sum((0, 1)).numpy() for s in states])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_recorder_trajectory_refuses_times_not_one_per_state():
    task, model, states = states_of(CONFIG, count=2)
    recorder = Recorder(model, task, 2)
    recorder.add(0, states[0])
    with pytest.raises(ValueError) as caught:
        recorder.trajectory(np.arange(2.0))
    assert str(caught.value) == "Recorder.trajectory: 2 times for 1 recorded states"


def test_check_config_refusals_are_whole_lines(tmp_path, flow):
    tail = "; allowed: a run directory as factrecall simulate wrote it"
    saved = dataclasses.replace(flow, config_digest=None)
    saved.save(tmp_path / "run", CONFIG)
    tree = config_tree(CONFIG)
    tree["flow"]["t_max"] = 6.0
    with pytest.raises(ConfigError) as caught:
        saved.check_config(CONFIG, tree)
    assert str(caught.value) == ("the run: its config.json does not match its trajectory.npz (config.json "
                                 f"was changed after the run was saved){tail}")
    cases = {"task.answers_per_relation=3 against 2 recorded": {"task.answers_per_relation": 3},
             "the facts table of task.facts='random', task.seed=0 is not the recorded one":
                 {"task.facts": "random"}}
    for what, change in cases.items():
        with pytest.raises(ConfigError) as caught:
            saved.check_config(CONFIG.override(change), source="here")
        assert str(caught.value) == f"here: its config.json does not match its trajectory.npz ({what}){tail}"
