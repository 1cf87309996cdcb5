"""The run directory's owner (``dynamics/rundir.py``) on small hand-made inputs: a layout built at run time,
the spool's partial writes and unwritten rows, the schema checks' whole messages, and the default ``where``
of every reader. Written for the survivors of ``python tests/mutation.py dynamics/rundir.py --head --sample
200 --seed 1 -- tests/test_rundir.py ... tests/test_mutants_rundir.py`` (docs/testing.md); each expectation
is written out by hand, not computed by the module.

Equivalent mutants left (no input tells them apart):

* ``Spool.__init__``'s ``mkstemp`` without ``prefix`` or ``suffix``: the file is unlinked on the next line,
  its name is never seen.
* ``Spool.array``'s ``st_size <= size`` for ``<``: truncating a file to its own size changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

from dynamics import rundir
from dynamics.errors import ConfigError

HINT = "allowed: a directory written by factrecall simulate"


def test_a_layout_built_at_run_time_lists_the_folders_of_its_files_and_patterns():
    layout = rundir.Layout("x", "x", "test", files=("a/b/c.txt", "top.txt"), patterns=("d/p*/e.json",))
    assert layout.folders == frozenset({"a", "a/b", "d", "d/p*"})
    assert layout.allows("a/b", is_dir=True) and layout.allows("d/p1", is_dir=True)
    assert not layout.allows("top.txt", is_dir=True) and not layout.allows("q", is_dir=True)
    assert layout.allows("a/b/c.txt") and layout.allows("d/p7/e.json") and not layout.allows("d/p7/f.json")


def test_a_layout_of_top_level_files_has_no_folders():
    assert rundir.Layout("y", "y", "test", files=("one.txt",)).folders == frozenset()


class ShortWrites:
    """os.pwrite that writes at most ``most`` bytes a call, as a pipe or a signal may make it."""

    def __init__(self, most: int):
        self.most, self.calls, self.write = most, 0, os.pwrite

    def __call__(self, fd, data, offset):
        self.calls += 1
        return self.write(fd, bytes(data[:self.most]), offset)


def test_a_spool_continues_a_partial_write_where_it_stopped(monkeypatch):
    short = ShortWrites(5)
    monkeypatch.setattr(os, "pwrite", short)
    spool = rundir.Spool((3, 2), np.int32)
    spool.write(0, np.array([[1, 2], [3, 4]], dtype=np.int32))
    spool.write(2, np.array([[5, 6]], dtype=np.int32))
    assert short.calls > 3  # 16 and 8 bytes, five at a time
    np.testing.assert_array_equal(spool.array(3), [[1, 2], [3, 4], [5, 6]])


def test_a_spool_that_writes_behind_holds_what_it_was_given_in_order(monkeypatch):
    short = ShortWrites(5)  # partial writes, continued on the writer's thread too
    monkeypatch.setattr(os, "pwrite", short)
    spool = rundir.Spool((4, 2), np.int32, behind=True)
    for row in range(4):
        spool.write(row, np.array([[row, -row]], dtype=np.int32))
    np.testing.assert_array_equal(spool.array(4), [[0, 0], [1, -1], [2, -2], [3, -3]])
    assert short.calls >= 8 and spool._writer._shutdown


@pytest.mark.parametrize("when", ["next write", "array"])
def test_a_write_behind_that_failed_raises_at_the_next_write_or_the_array(monkeypatch, when):
    def full(fd, data, offset):
        raise OSError(28, "No space left on device")

    spool = rundir.Spool((3, 2), np.float64, behind=True)
    monkeypatch.setattr(os, "pwrite", full)
    spool.write(0, np.ones((1, 2)))  # handed to the writer: no error yet
    with pytest.raises(OSError, match="No space left"):
        spool.write(1, np.ones((1, 2))) if when == "next write" else spool.array(3)


def test_a_spool_reads_rows_never_written_as_zeros():
    spool = rundir.Spool((4, 3), np.float64)
    spool.write(1, np.full((1, 3), 2.5))
    array = spool.array(4)
    np.testing.assert_array_equal(array, [[0, 0, 0], [2.5, 2.5, 2.5], [0, 0, 0], [0, 0, 0]])
    assert array.dtype == np.float64 and not array.flags.writeable


@pytest.mark.parametrize("shape, rows, expected", [((5, 2), 0, (0, 2)), ((3, 0), 3, (3, 0))])
def test_an_empty_spool_is_an_empty_array_of_its_row_shape(shape, rows, expected):
    array = rundir.Spool(shape, np.float32).array(rows)
    assert array.shape == expected and array.dtype == np.float32


def test_read_arrays_names_the_directory_by_default(tmp_path):
    path = tmp_path / "timeline.npz"
    np.savez(path, t=np.zeros(3))
    with pytest.raises(ConfigError) as err:
        rundir.read_arrays(path, rundir.TIMELINE_SCHEMA)
    assert str(err.value) == (f"{str(tmp_path)!r}: its timeline.npz misses the array(s) learned, forgotten, "
                              f"relearned; {HINT}")


# --- the schema checks, on members given as name -> (shape, dtype) ----------------------------------------

SCHEMA = rundir.Schema("x.npz", required={"a": ("K",), "b": ("K", "X")}, optional={"c": ("P",), "i": ()},
                       prefixed={"n_": ("K",)}, integers=frozenset({"i"}), strings=frozenset({"s"}))
F8, I8 = np.dtype(np.float64), np.dtype(np.int64)


def _damage(members, schema=SCHEMA, sizes=None) -> str:
    with pytest.raises(rundir.Damaged) as err:
        rundir.check_shapes(members, schema, sizes)
    return str(err.value)


def test_the_schema_finds_each_arrays_dimensions():
    assert SCHEMA.dims("a") == ("K",) and SCHEMA.dims("c") == ("P",) and SCHEMA.dims("n_w") == ("K",)
    assert SCHEMA.dims("n") is None and SCHEMA.dims("z") is None


def test_check_shapes_returns_one_size_per_dimension():
    members = {"a": ((3,), F8), "b": ((3, 2), np.dtype(bool)), "c": ((5,), I8), "n_q": ((3,), F8)}
    assert rundir.check_shapes(members, SCHEMA) == {"K": 3, "X": 2, "P": 5}
    assert rundir.check_shapes(members, SCHEMA, {"P": 5, "Q": 1}) == {"K": 3, "X": 2, "P": 5, "Q": 1}


def test_check_shapes_names_what_is_missing_and_what_is_foreign():
    assert _damage({"b": ((3, 2), F8)}) == "misses the array(s) a"
    assert _damage({}) == "misses the array(s) a, b"
    assert _damage({"a": ((3,), F8), "b": ((3, 2), F8), "zz": ((1,), F8), "y": ((), F8)}) == (
        "holds array(s) it never holds: y, zz")


def test_check_shapes_checks_dtypes():
    good = {"a": ((3,), F8), "b": ((3, 2), F8)}
    assert _damage({**good, "i": ((), F8)}) == "i has dtype float64; expected integers"
    assert _damage({**good, "a": ((3,), np.dtype("<U2"))}) == "a has dtype <U2; expected numbers"
    assert _damage({**good, "c": ((3,), np.dtype(complex))}) == "c has dtype complex128; expected numbers"
    rundir.check_shapes({**good, "i": ((), np.dtype(np.uint8))}, SCHEMA)  # unsigned integers are integers
    strings = rundir.Schema("y.npz", required={"s": ()}, strings=frozenset({"s"}))
    rundir.check_shapes({"s": ((), np.dtype("<U64"))}, strings)
    assert _damage({"s": ((1,), np.dtype("<U64"))}, strings) == (
        "s has dtype <U64 and shape (1,); expected one string")
    assert _damage({"s": ((), np.dtype("S64"))}, strings) == (
        "s has dtype |S64 and shape (); expected one string")


def test_check_shapes_names_the_sizes_the_shape_should_have():
    assert _damage({"a": ((3,), F8), "b": ((4, 2), F8)}) == (
        "b has shape (4, 2); expected (K, X) with K = 3 recorded times, X = 2")
    assert _damage({"a": ((3, 1), F8), "b": ((3, 2), F8)}) == "a has shape (3, 1); expected (K,)"
    assert _damage({"a": ((3,), F8), "b": ((3, 2), F8), "c": ((4,), F8)}, sizes={"P": 5}) == (
        "c has shape (4,); expected (P,) with P = 5 parameters")
    assert _damage({"a": ((3,), F8), "b": ((3, 2), F8), "n_x": ((2,), F8)}) == (
        "n_x has shape (2,); expected (K,) with K = 3 recorded times")


def test_a_record_without_an_integer_facts_table_is_damaged():
    good = {"facts": ((4, 2), I8), "answers_per_relation": ((), I8)}
    rundir._check_table(good)
    rundir._check_table({"facts": ((4, 2), I8)})  # what is missing is check_shapes' to name
    for damaged in ({**good, "facts": ((8,), I8)}, {**good, "facts": ((4, 2), F8)},
                    {**good, "answers_per_relation": ((1,), I8)}, {**good, "answers_per_relation": ((), F8)}):
        with pytest.raises(rundir.Damaged, match="^holds no integer facts table$"):
            rundir._check_table(damaged)


def _write_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy(array: np.ndarray, version=None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


def test_npz_members_reads_both_header_versions_and_refuses_the_rest(tmp_path):
    path = tmp_path / "a.npz"
    _write_zip(path, {"a.npy": _npy(np.zeros((2, 3), np.int32), (1, 0)), "b.npy": _npy(np.ones(4), (2, 0))})
    assert rundir.npz_members(path) == {"a": ((2, 3), np.dtype(np.int32)), "b": ((4,), F8)}
    _write_zip(path, {"a.npy": _npy(np.zeros(2)), "notes.txt": b"hello"})
    with pytest.raises(ValueError, match="^notes.txt is not an array$"):
        rundir.npz_members(path)
    _write_zip(path, {"o.npy": _npy(np.array([{}, 1], dtype=object))})
    with pytest.raises(ValueError, match="^Object arrays cannot be loaded when allow_pickle=False$"):
        rundir.npz_members(path)
    _write_zip(path, {"u.npy": _npy(np.zeros(2), (3, 0))})
    with pytest.raises(ValueError, match=r"^u.npy: .npy format version \(3, 0\)$"):
        rundir.npz_members(path)


def test_one_line_is_the_type_and_the_first_line():
    assert rundir.one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert rundir.one_line(KeyError()) == "KeyError"
    assert rundir.one_line(EOFError("")) == "EOFError"


# --- a record's files: written, read back, refused ------------------------------------------------------

def _record(K=3, S=2, R=2, **changed) -> dict[str, np.ndarray]:
    """A record that follows TRAJECTORY_SCHEMA: K recorded times of an S × R table."""
    arrays = {"facts": np.arange(S * R).reshape(S, R) % 3, "answers_per_relation": np.array(3),
              "fact_weights": np.full((S, R), 1 / (S * R)), "t": np.arange(K, dtype=float),
              **{name: np.zeros(K) for name in rundir.CURVES if name != "t"},
              **{name: np.full((K, S, R), 0.5) for name in rundir.PER_FACT if name != "argmax_class"},
              "argmax_class": np.zeros((K, S, R), dtype=np.int64)}
    arrays.update(changed)
    return arrays


def _refusal(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    return str(err.value)


def test_a_record_is_written_and_read_back_with_only_the_keys_asked(tmp_path):
    run = tmp_path / "run"
    rundir.write_record(run, _record(), {"status": "ok"}, {"a": 1})
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "summary.json", "trajectory.npz"]
    assert json.loads((run / "config.json").read_text()) == {"a": 1}
    arrays = rundir.read_record(run, keys=["loss", "nothing"])
    assert list(arrays) == ["loss"]
    np.testing.assert_array_equal(arrays["loss"], np.zeros(3))
    assert set(rundir.read_record(run)) == set(_record())
    rundir.write_record(run, _record(K=4), None, {"a": 2})  # a save without a summary removes the old one
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "trajectory.npz"]
    assert rundir.read_record(run, keys=["t"])["t"].shape == (4,)


@pytest.mark.parametrize("changed, said", [
    ({"K": 0}, "records no time (t has shape (0,))"),
    ({"t": np.array([0.0, np.inf, 2.0])}, "has NaN or infinite times t"),
    ({"t": np.array([0.0, np.nan, 2.0])}, "has NaN or infinite times t"),
    ({"t": np.array([0.0, 2.0, 1.0])}, "has times t decreasing at index 2"),
    ({"t": np.array([1.0, 0.0, 0.0])}, "has times t decreasing at index 1"),
    ({"answers_per_relation": np.array(0)}, "has answers_per_relation=0; expected >= 1"),
])
def test_a_record_the_schema_allows_but_a_run_never_writes_is_refused(tmp_path, changed, said):
    rundir.write_arrays(tmp_path / "trajectory.npz", _record(**changed), rundir.TRAJECTORY_SCHEMA)
    said = f"its trajectory.npz {said}; {HINT}"
    assert _refusal(lambda: rundir.read_record(tmp_path)) == f"{str(tmp_path)!r}: {said}"
    assert _refusal(lambda: rundir.read_record(tmp_path, where="here")) == f"here: {said}"


def test_equal_times_and_one_answer_are_a_record(tmp_path):
    rundir.write_record(tmp_path, _record(t=np.array([0.0, 1.0, 1.0]), answers_per_relation=np.array(1)),
                        None, None)
    np.testing.assert_array_equal(rundir.read_record(tmp_path, keys=["t"])["t"], [0.0, 1.0, 1.0])


def test_every_reader_names_the_directory_by_default(tmp_path):
    where = repr(str(tmp_path))
    assert _refusal(lambda: rundir.read_record(tmp_path)) == f"{where}: its trajectory.npz is missing; {HINT}"
    assert _refusal(lambda: rundir.read_summary(tmp_path)) == f"{where}: its summary.json is missing; {HINT}"
    assert _refusal(lambda: rundir.read_config(tmp_path)).startswith(
        f"{where}: cannot read its config.json (FileNotFoundError: ")
    (tmp_path / "summary.json").write_text("[]")
    assert _refusal(lambda: rundir.read_summary(tmp_path)) == (
        f"{where}: cannot read its summary.json (ValueError: a JSON list, not an object)")
    (tmp_path / "summary.json").write_text('{"x": 1}')
    assert _refusal(lambda: rundir.read_summary(tmp_path, "S")).startswith("S: its summary.json is not a run "
                                                                            "summary (")
    (tmp_path / "config.json").write_bytes(b"\xff")
    assert _refusal(lambda: rundir.read_config(tmp_path, "C")).startswith(
        "C: cannot read its config.json (UnicodeDecodeError: ")


def test_a_save_target_holding_anything_else_is_refused(tmp_path):
    allowed = ("allowed: a new or empty directory, or one holding only a trajectory saved there "
               "(trajectory.npz, summary.json, config.json)")
    (tmp_path / "file").write_text("")
    where = repr(str(tmp_path / "file"))
    assert _refusal(lambda: rundir.check_save_target(tmp_path / "file", True)) == (
        f"Trajectory.save: {where} is not a directory; {allowed}")
    rundir.check_save_target(tmp_path / "new", False)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("b", "a", "d", "c"):
        (run / name).write_text("")
    (run / "trajectory.npz").mkdir()  # a folder of a record's name is not a record's file
    assert _refusal(lambda: rundir.check_save_target(run, True)) == (
        f"Trajectory.save: {str(run)!r} holds files a trajectory save does not write (a, b, c and 2 more); "
        f"{allowed}")
    for name in ("b", "c", "d"):
        (run / name).unlink()
    (run / "trajectory.npz").rmdir()
    assert "holds files a trajectory save does not write (a); " in _refusal(
        lambda: rundir.check_save_target(run, True))
    (run / "a").unlink()
    (run / "config.json").write_text("{}")
    rundir.check_save_target(run, True)
    assert "holds a config.json that this save (without config=) would leave" in _refusal(
        lambda: rundir.check_save_target(run, False))


def test_a_path_without_a_record_names_the_flag_it_came_from(tmp_path):
    where = repr(str(tmp_path))
    assert _refusal(lambda: rundir.run_directories(tmp_path)) == (
        f"RUN_DIR={where}: holds no trajectory.npz (nor flow/ or train/ with one); {HINT}")
    assert _refusal(lambda: rundir.run_directories(tmp_path, "--from")).startswith(
        f"--from={where}: holds no")
    assert _refusal(lambda: rundir.flow_record_dir(tmp_path)) == (
        f"init.from_run={where}: not a run directory (no trajectory.npz with a final state); {HINT}")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "trajectory.npz").write_bytes(b"")
    assert rundir.run_directories(tmp_path) == [tmp_path / "train"]
    assert rundir.run_layout(tmp_path) == "train" and not rundir.is_complete_run(tmp_path)
    (tmp_path / "flow").mkdir()
    (tmp_path / "flow" / "trajectory.npz").write_bytes(b"")
    assert rundir.flow_record_dir(tmp_path) == tmp_path / "flow"
    assert rundir.run_directories(tmp_path) == [tmp_path / "flow", tmp_path / "train"]
    assert rundir.flow_record_dir(tmp_path / "train") == tmp_path / "train"
    assert rundir.run_layout(tmp_path / "train") == "flow" and rundir.run_layout(tmp_path / "nothing") is None


def test_a_small_record_is_read_into_memory_and_a_large_one_mapped(tmp_path, monkeypatch):
    rundir.write_record(tmp_path, _record(), None, None)
    arrays = rundir.read_record(tmp_path)
    assert not any(isinstance(a, np.memmap) for a in arrays.values())
    monkeypatch.setattr(rundir, "SPOOL_BYTES", 0)  # every array with rows is now "large"
    mapped = rundir.read_record(tmp_path)
    assert isinstance(mapped["p_correct"], np.memmap) and isinstance(mapped["t"], np.memmap)
    assert not isinstance(mapped["answers_per_relation"], np.memmap)  # a scalar has no rows to stream
    for name, array in arrays.items():
        np.testing.assert_array_equal(mapped[name], array)


def test_a_large_member_cut_short_names_the_bytes_it_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "SPOOL_BYTES", 0)
    monkeypatch.setattr(rundir, "BLOCK_BYTES", 24)  # one row of 3 float64 a block
    whole = _npy(np.arange(12, dtype=np.float64).reshape(4, 3), (1, 0))
    _write_zip(tmp_path / "a.npz", {"a.npy": whole[:len(whole) - 36]})  # 2.5 rows of data
    with zipfile.ZipFile(tmp_path / "a.npz") as archive, pytest.raises(EOFError) as err:
        rundir._read_member(archive, "a")
    assert str(err.value) == "a.npy ends after 60 bytes of data"
    _write_zip(tmp_path / "b.npz", {"b.npy": whole + b"\0"})
    with zipfile.ZipFile(tmp_path / "b.npz") as archive, pytest.raises(ValueError) as err:
        rundir._read_member(archive, "b")
    assert str(err.value) == "b.npy holds more data than its header says"


def test_arrays_are_checked_against_the_sizes_given_before_they_are_written(tmp_path):
    arrays = {"t": np.zeros(3), **{name: np.zeros((4, 2)) for name in ("learned", "forgotten", "relearned")}}
    with pytest.raises(ValueError) as err:
        rundir.write_arrays(tmp_path / "timeline.npz", arrays, rundir.TIMELINE_SCHEMA, {"S": 5})
    assert str(err.value) == ("timeline.npz: learned has shape (4, 2); expected (S, R) with S = 5 subjects, "
                              "R = 2 relations")
    assert not (tmp_path / "timeline.npz").exists()


def test_only_a_train_run_takes_the_config_of_the_run_above_it(tmp_path):
    from dynamics.config import resolve_config

    tree = rundir.config_tree(resolve_config("tiny"))
    (tmp_path / "config.json").write_text(json.dumps(tree))
    for name in ("flow", "train", "other"):
        (tmp_path / name).mkdir()
    for name in ("flow", "train"):
        config, read = rundir.read_config(tmp_path / name)
        assert read == tree and config.task.subjects == tree["task"]["subjects"]
    assert _refusal(lambda: rundir.read_config(tmp_path / "other")).startswith(
        f"{str(tmp_path / 'other')!r}: cannot read its config.json (FileNotFoundError: ")


def test_a_reader_loads_only_the_arrays_asked_for_and_those_it_checks(tmp_path, monkeypatch):
    rundir.write_record(tmp_path, _record(), None, None)
    read, original = [], rundir._read_member

    def counted(archive, name):
        read.append(name)
        return original(archive, name)

    monkeypatch.setattr(rundir, "_read_member", counted)
    assert list(rundir.read_record(tmp_path, keys=["loss"])) == ["loss"]
    assert sorted(read) == ["answers_per_relation", "facts", "loss", "t"]
