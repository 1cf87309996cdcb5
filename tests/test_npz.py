"""The .npz writer of run directories: what np.load reads back is exactly what was written (every dtype the
records use, NaN included), the members are deflated at the chosen level, and no pickle is ever written."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from dynamics.io import NPZ_LEVEL, STORE_BYTES, write_npz


def test_round_trip_is_exact_and_compressed_at_the_chosen_level():
    rng = np.random.default_rng(0)
    p = rng.random((64, 40, 8))
    p[3, 5, 2] = np.nan
    arrays = {"p": p, "classes": rng.integers(-1, 3, (64, 40, 8)).astype(np.int8),
              "t": np.geomspace(1, 1e6, 64), "flag": np.asarray(True), "n": np.asarray(8)}
    sizes = {}
    for level in (1, 9):
        buffer = io.BytesIO()
        write_npz(buffer, arrays, level=level)
        sizes[level] = buffer.tell()
        with np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False) as data:
            assert sorted(data.files) == sorted(arrays)
            for name, value in arrays.items():
                assert data[name].dtype == value.dtype and data[name].shape == value.shape
                np.testing.assert_array_equal(data[name], value)  # the writer's contract: lossless
        with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
            assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    raw = sum(v.nbytes for v in arrays.values())
    assert sizes[9] < sizes[1] < raw  # deflated, and the level is the one asked for
    assert NPZ_LEVEL == 1


def test_object_arrays_are_refused():
    with pytest.raises(ValueError):
        write_npz(io.BytesIO(), {"bad": np.array([{"a": 1}], dtype=object)})


def test_a_member_above_store_bytes_is_stored_and_reads_back_exactly(tmp_path):
    # the per-fact arrays of a large record are stored, not deflated (deflating 10^5 facts' record costs
    # seconds for a 3.7x smaller file); small members stay deflated, and np.load reads both kinds
    rng = np.random.default_rng(1)
    arrays = {"big": rng.random((16, 20, 8)), "small": np.geomspace(1, 1e6, 16), "n": np.asarray(8)}
    with open(tmp_path / "mixed.npz", "wb") as handle:
        write_npz(handle, arrays, store_bytes=arrays["small"].nbytes)
    with zipfile.ZipFile(tmp_path / "mixed.npz") as archive:
        kinds = {i.filename: i.compress_type for i in archive.infolist()}
    assert kinds == {"big.npy": zipfile.ZIP_STORED, "small.npy": zipfile.ZIP_DEFLATED,
                     "n.npy": zipfile.ZIP_DEFLATED}
    with np.load(tmp_path / "mixed.npz", allow_pickle=False) as data:
        for name, value in arrays.items():
            np.testing.assert_array_equal(data[name], value)  # lossless either way
    assert STORE_BYTES == 2**26


def test_a_run_with_stored_members_loads_back_as_the_deflated_one(tmp_path, monkeypatch):
    # a 10^5-fact record's per-fact members are stored; stand for it with a tiny run whose every member is
    # stored, held in memory and held on disk (spooled): both read back to the same record
    import dynamics.io as dio
    import dynamics.rundir as rundir
    from dynamics.config import resolve_config
    from dynamics.run import run_flow
    from dynamics.trajectory import load_run

    config = resolve_config("tiny")
    deflated = run_flow(config)
    deflated.save(tmp_path / "deflated", config)
    monkeypatch.setattr(dio, "STORE_BYTES", 0)
    deflated.save(tmp_path / "stored", config)
    monkeypatch.setattr(rundir, "SPOOL_BYTES", 0)
    spooled = run_flow(config)
    spooled.save(tmp_path / "spooled", config)
    for name in ("stored", "spooled"):
        with zipfile.ZipFile(tmp_path / name / "trajectory.npz") as archive:
            assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}, name
    _, reference = load_run(tmp_path / "deflated")
    for name in ("stored", "spooled"):
        _, loaded = load_run(tmp_path / name)
        for key, value in reference.arrays().items():
            np.testing.assert_array_equal(loaded.arrays()[key], value, err_msg=f"{name}: {key}")
