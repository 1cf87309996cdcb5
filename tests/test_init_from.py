"""Starting from another run (``init.from_run``, ``simulate --init-from``): the run is read and checked
before anything starts. A damaged ``trajectory.npz``, a final state that is not a vector of finite
floats, a ``config.json`` that is not the run's, or a task or model other than the run's is one line
(ConfigError); a fine-tune records where it started as an absolute path. Also the recorder's two
bookkeeping checks (states past ``points``, ``states`` read back)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.cli import main
from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.run import run_flow, setup
from dynamics.start import starting_state
from dynamics.trajectory import Recorder, Trajectory

OLD = resolve_config("tiny", None, ["task.facts=random", "flow.t_max=50", "flow.points=20"])
FAST = ["--set", "flow.t_max=50", "--set", "flow.points=20", "--quiet"]


@pytest.fixture(scope="module")
def old_flow() -> Trajectory:
    return run_flow(OLD)


@pytest.fixture
def source(tmp_path, old_flow) -> Path:
    """A run directory of OLD (config.json, trajectory.npz with its final state, summary.json)."""
    directory = tmp_path / "old"
    old_flow.save(directory, OLD)
    return directory


def start(directory: Path, **overrides):
    """The start of a fine-tune of OLD from ``directory`` with 2 subjects added (and ``overrides``)."""
    config = OLD.override({"init.from_run": str(directory), "task.subjects": OLD.task.subjects + 2,
                           **overrides})
    return starting_state(config, setup(config)[1])


def rewrite_npz(path: Path, change) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    change(arrays)
    np.savez(path, **arrays)


def corrupt_member(path: Path, member: str) -> None:
    """Overwrite the start of ``member``'s deflate stream: the archive's directory still reads, the data
    does not (zlib.error when the member is read)."""
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(member).header_offset
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[offset + 26:offset + 30])
    start_of_data = offset + 30 + name_length + extra_length
    data[start_of_data:start_of_data + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def test_a_good_source_starts_from_its_final_state(source, old_flow):
    grown = start(source)
    assert grown.old_subjects == OLD.task.subjects
    assert grown.theta0.shape[0] > old_flow.final_state.shape[0]  # two subjects' tokens added
    same = starting_state(OLD.override({"init.from_run": str(source)}), setup(OLD)[1])  # nothing added
    np.testing.assert_array_equal(same.theta0.numpy(), old_flow.final_state)


DAMAGED = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "not an archive": lambda p: p.write_bytes(np.random.default_rng(0).bytes(2048)),
    "corrupt data": lambda p: corrupt_member(p, "final_state.npy"),
    "final state of text": lambda p: rewrite_npz(p, lambda a: a.update(final_state=np.array(["a", "b"]))),
    "final state of integers": lambda p: rewrite_npz(p, lambda a: a.update(
        final_state=a["final_state"].astype(np.int64))),
    "final state a matrix": lambda p: rewrite_npz(p, lambda a: a.update(
        final_state=a["final_state"].reshape(2, -1))),
    "final state with NaN": lambda p: rewrite_npz(p, lambda a: a.update(
        final_state=np.full_like(a["final_state"], np.nan))),
    "final state too short": lambda p: rewrite_npz(p, lambda a: a.update(final_state=a["final_state"][1:])),
    "no facts table": lambda p: rewrite_npz(p, lambda a: a.pop("facts")),
    "pickled facts": lambda p: rewrite_npz(p, lambda a: a.update(facts=np.array([{}], dtype=object))),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_source_is_one_line(source, case):
    DAMAGED[case](source / "trajectory.npz")
    with pytest.raises(ConfigError) as caught:
        start(source)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "init.from_run" in message


def test_a_source_without_final_state_says_so(source):
    rewrite_npz(source / "trajectory.npz", lambda a: a.pop("final_state"))
    with pytest.raises(ConfigError, match="holds no final state"):
        start(source)


def test_damaged_sources_on_the_command_line_are_one_line(capsys, tmp_path, source):
    for name, damage in (("empty", DAMAGED["empty"]), ("corrupt", DAMAGED["corrupt data"])):
        copy = tmp_path / name
        shutil.copytree(source, copy)
        damage(copy / "trajectory.npz")
        capsys.readouterr()
        code = main(["simulate", "--init-from", str(copy), "--out", str(tmp_path / f"new-{name}"), *FAST])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "trajectory.npz" in err, err
    code = main(["simulate", "--init-from", "", "--out", str(tmp_path / "fresh"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "factrecall: error: --init-from='': must not be empty; omit it for " \
                                        "the default"
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize("key, value", [("noise_tokens", 5), ("subjects", 6), ("seed", 1),
                                        ("answers_per_relation", 3)])
def test_an_edited_source_config_is_refused(source, key, value):
    """config.json changed after the run: the digest recorded with the trajectory says so, even where
    the change leaves every array's shape as it was (another number of tied noise tokens)."""
    tree = json.loads((source / "config.json").read_text())
    tree["task"][key] = value
    (source / "config.json").write_text(json.dumps(tree))
    with pytest.raises(ConfigError, match="changed after the run was saved"):
        start(source, **{f"task.{key}": value} if key != "subjects" else {"task.subjects": 8})


def test_an_edited_config_of_a_run_saved_without_digest_is_checked_against_its_arrays(source):
    rewrite_npz(source / "trajectory.npz", lambda a: a.pop("config_sha256"))
    start(source)  # unedited: fine
    tree = json.loads((source / "config.json").read_text())
    tree["task"]["seed"] = 1  # another random table
    (source / "config.json").write_text(json.dumps(tree))
    with pytest.raises(ConfigError, match=r"facts table of task.facts='random', task.seed=1"):
        start(source, **{"task.seed": 1})


@pytest.mark.parametrize("key, value", [("task.seed", 1), ("task.noise_tokens", 5),
                                        ("model.attention", "softmax")])
def test_a_task_or_model_other_than_the_sources_is_refused(source, key, value):
    with pytest.raises(ConfigError, match=f"{key}={value!r}: a run started from init.from_run keeps"):
        start(source, **{key: value})


def test_a_train_run_starts_from_its_flow_with_the_top_config(tmp_path, old_flow):
    """``simulate --train`` keeps the flow in ``flow/``; a flow/ without its own config.json takes the
    run's (the directory above)."""
    run = tmp_path / "trained"
    old_flow.save(run / "flow")  # no config.json in flow/
    (run / "config.json").write_text(json.dumps(OLD.to_dict()))
    (run / "train").mkdir()
    theta0 = start(run).theta0
    np.testing.assert_array_equal(theta0.numpy(), start_from_flow_dir(tmp_path, old_flow).numpy())


def start_from_flow_dir(tmp_path: Path, old_flow: Trajectory) -> torch.Tensor:
    plain = tmp_path / "plain"
    old_flow.save(plain, OLD)
    return start(plain).theta0


def test_a_fine_tune_records_its_source_as_an_absolute_path(capsys, tmp_path, monkeypatch, source):
    """``--init-from`` relative to the working directory: the saved config names the source absolutely,
    so that ``--config`` of the fine-tune's config.json runs it again from anywhere."""
    import analysis.simulate as simulate_module

    # where a run starts is all that counts here: short runs, no stage or timeline analysis and figures
    monkeypatch.setattr(simulate_module, "_analyse", lambda *args, **kwargs: None)
    monkeypatch.setattr(simulate_module, "has_timeline", lambda traj: False)
    monkeypatch.chdir(tmp_path)
    short = ["--set", "flow.t_max=2", "--set", "flow.points=4", "--quiet"]
    assert main(["simulate", "--init-from", "old", "--set", "task.subjects=6", "--out", "tuned", *short]) == 0
    saved = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert saved["init"]["from_run"] == str(source) and os.path.isabs(saved["init"]["from_run"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["simulate", "--config", str(tmp_path / "tuned" / "config.json"), "--out", "again",
                 "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((elsewhere / "again" / "config.json").read_text()) == saved
    # --set init.from_run with a relative path is made absolute too
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--preset", "tiny", "--set", "task.facts=random", "--set", "init.from_run=old",
                 "--set", "task.subjects=6", "--out", "tuned2", *short]) == 0
    assert json.loads((tmp_path / "tuned2" / "config.json").read_text())["init"]["from_run"] == str(source)
    # and the Python API, given a relative path (str or pathlib.Path)
    from analysis.simulate import simulate

    simulate(OLD.override({"init.from_run": Path("old"), "task.subjects": 6, "flow.t_max": 2.0,
                           "flow.points": 4}), "tuned3")
    assert json.loads((tmp_path / "tuned3" / "config.json").read_text())["init"]["from_run"] == str(source)


# --- the recorder --------------------------------------------------------------------------------------

def test_recorder_refuses_a_state_past_its_points():
    _, model, _ = setup(OLD)
    theta = model.initial_parameters(OLD.init)
    recorder = Recorder(model, model.task, points=2, chunk=8)  # no chunk is full: nothing evaluated yet
    recorder.add(0, theta)
    recorder.add(1, theta)
    with pytest.raises(ValueError, match=r"state 2 given, expected 2 \(of 2\)"):
        recorder.add(2, theta)


def test_states_are_read_back(tmp_path, old_flow):
    P = len(old_flow.final_state)  # one parameter count for the states and the final state (checked)
    states = np.arange(len(old_flow.t) * P, dtype=np.float64).reshape(len(old_flow.t), P)
    kept = dataclasses.replace(old_flow, states=states)
    kept.save(tmp_path, OLD)
    loaded = Trajectory.load(tmp_path)
    assert loaded.states is not None and loaded.states.dtype == np.float64
    np.testing.assert_array_equal(loaded.states, states)  # stored values, not computed: exact
    np.testing.assert_array_equal(loaded.final_state, old_flow.final_state)
