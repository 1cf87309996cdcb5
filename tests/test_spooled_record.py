"""A record held on disk while the flow goes (dynamics.rundir.Spool): the same numbers as one held in memory,
saved as the same trajectory.npz, read back memory-mapped, and nothing left on disk."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from test_streaming import _assert_same_record, _stored_record

import dynamics.rundir as rundir
from dynamics.config import resolve_config
from dynamics.run import run_flow, setup
from dynamics.rundir import PER_FACT
from dynamics.trajectory import Recorder, Trajectory, load_run


def _spool_files() -> set[str]:
    """The spool files this process holds open (unlinked: they show only in /proc/self/fd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "factrecall-record-" in target:
            found.add(target)
    return found


def test_a_spooled_record_is_the_record_in_memory_bit_for_bit():
    config = resolve_config("tiny")
    result, stored = _stored_record(config)
    task, model, _ = setup(config)
    recorder = Recorder(model, task, len(result.t) + 3, chunk=4, spool=True)  # a failed run: fewer points
    for k, theta in enumerate(result.states):
        recorder.add(k, theta.clone())
    spooled = recorder.trajectory(result.t)
    for name in PER_FACT:
        assert isinstance(getattr(spooled, name), np.memmap), name
        assert not getattr(spooled, name).flags.writeable, name
    _assert_same_record(spooled, stored)


def test_a_spooled_record_saves_the_same_file_and_loads_back_mapped(tmp_path, monkeypatch):
    config = resolve_config("tiny")
    in_memory = run_flow(config)
    monkeypatch.setattr(rundir, "SPOOL_BYTES", 0)  # every per-fact array of this tiny run goes to disk
    on_disk = run_flow(config)
    assert isinstance(on_disk.p_correct, np.memmap) and not isinstance(in_memory.p_correct, np.memmap)
    in_memory.save(tmp_path / "memory", config)
    on_disk.save(tmp_path / "disk", config)
    with zipfile.ZipFile(tmp_path / "memory" / "trajectory.npz") as a, \
            zipfile.ZipFile(tmp_path / "disk" / "trajectory.npz") as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():  # the same bytes: an old reader (np.load) reads either
            assert a.read(name) == b.read(name), name
    _, loaded = load_run(tmp_path / "disk")
    assert isinstance(loaded.fact_loss, np.memmap)  # read back in blocks, mapped: not held in memory
    _assert_same_record(loaded, in_memory)
    with np.load(tmp_path / "disk" / "trajectory.npz") as data:
        np.testing.assert_array_equal(data["p_correct"], in_memory.p_correct)


def test_a_spool_leaves_no_file_and_a_damaged_spooled_member_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "SPOOL_BYTES", 0)
    before = _spool_files()
    traj = run_flow(resolve_config("tiny"))
    assert not list(tmp_path.iterdir())
    assert all("(deleted)" in path for path in _spool_files() - before)  # mapped, without a name on disk
    traj.save(tmp_path / "run")
    path = tmp_path / "run" / "trajectory.npz"
    arrays = {name: np.asarray(value) for name, value in np.load(path).items()}
    with open(path, "wb") as handle:  # p_correct's data cut short under a good header
        with zipfile.ZipFile(handle, "w") as archive:
            for name, value in arrays.items():
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, value)
                    if name == "p_correct":
                        member.write(b"extra")
    with pytest.raises(rundir.ConfigError, match=r"cannot read trajectory.npz \(ValueError: p_correct.npy "
                       r"holds more data"):
        Trajectory.load(tmp_path / "run")


def test_stages_of_a_spooled_record_are_those_of_the_record_in_memory(tmp_path, monkeypatch):
    """simulate, then factrecall stages on the run it wrote: the analysis reads a record held on disk block by
    block and finds what it finds in memory (stages.json and stages.npz alike)."""
    from analysis.simulate import simulate
    from analysis.stages.report import analyse_run_directory

    config = resolve_config("tiny")
    simulate(config, tmp_path / "memory")
    monkeypatch.setattr(rundir, "SPOOL_BYTES", 0)
    runs = simulate(config, tmp_path / "disk")
    assert isinstance(runs["flow"].trajectory.p_correct, np.memmap)
    (_, _, loaded, payload), = analyse_run_directory(tmp_path / "disk")
    assert isinstance(loaded.p_correct, np.memmap)
    for name in ("memory", "disk"):
        assert json.loads((tmp_path / name / "stages.json").read_text()) == payload, name
    with np.load(tmp_path / "memory" / "stages.npz") as a, np.load(tmp_path / "disk" / "stages.npz") as b:
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # same arrays in, same code: exact


def test_simulate_writes_the_record_beside_the_stage_analysis(tmp_path, monkeypatch):
    """``factrecall simulate`` writes trajectory.npz (whose deflation holds no GIL) while the stage
    analysis runs, not before it: the writing waits here until the analysis has begun. The run directory
    is the one a save and an analysis one after the other write."""
    import threading

    import analysis.simulate as simulate_module

    analysing, beside = threading.Event(), []
    real_write, real_analyse = rundir.write_arrays, simulate_module._analyse

    def write(path, *args, **kwargs):
        if path.name == rundir.RECORD_FILE:
            beside.append(analysing.wait(timeout=10))
        return real_write(path, *args, **kwargs)

    def analyse(*args, **kwargs):
        analysing.set()
        return real_analyse(*args, **kwargs)

    monkeypatch.setattr(rundir, "write_arrays", write)
    monkeypatch.setattr(simulate_module, "_analyse", analyse)
    config = resolve_config("tiny")
    runs = simulate_module.simulate(config, tmp_path / "run")
    assert beside == [True]
    _, loaded = load_run(tmp_path / "run")
    np.testing.assert_array_equal(loaded.fact_loss, runs["flow"].trajectory.fact_loss)
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())["stages"]
    assert stages == runs["flow"].stages["stages"]
