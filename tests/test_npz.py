"""The .npz writer of run directories: what np.load reads back is exactly what was written (every dtype the
records use, NaN included), the members are deflated at the chosen level, and no pickle is ever written."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from dynamics.io import NPZ_LEVEL, write_npz


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


def test_blocks_deflated_on_two_threads_make_one_stream_that_zip_and_numpy_read(monkeypatch, tmp_path):
    """Small blocks (so every member but the scalars spans several, each a deflate stream of its own,
    sync-flushed, the last finished): zipfile checks every member's CRC, np.load reads every array back
    exactly, in every memory order a record holds (C, Fortran, strided, 0-d, empty, memory-mapped), and
    the blocks were deflated on the writer's threads, not the caller's."""
    import threading

    import dynamics.io as dio

    monkeypatch.setattr(dio, "BLOCK_BYTES", 256)
    threads, real = set(), dio._deflate

    def deflate(*args):
        threads.add(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(dio, "_deflate", deflate)
    rng = np.random.default_rng(1)
    mapped = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", shape=(50, 7), dtype=np.float64)
    mapped[:] = rng.random((50, 7))
    mapped.flush()
    arrays = {"c": rng.random((40, 6, 3)), "f": np.asfortranarray(rng.random((30, 20))),
              "strided": rng.random((40, 40))[::3, ::2], "scalar": np.asarray(2.5), "empty": np.zeros((0, 4)),
              "mapped": np.load(tmp_path / "m.npy", mmap_mode="r"), "text": np.array(["ab", "c"]),
              "flags": rng.random(1000) < 0.5}
    path = tmp_path / "x.npz"
    with open(path, "wb") as handle:
        write_npz(handle, arrays)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert [i.filename for i in archive.infolist()] == [f"{name}.npy" for name in arrays]
        assert all(i.create_system == 3 and i.external_attr >> 16 == 0o644 for i in archive.infolist())
    with np.load(path, allow_pickle=False) as data:
        for name, value in arrays.items():
            assert data[name].dtype == value.dtype and data[name].shape == value.shape
            np.testing.assert_array_equal(data[name], value)
    assert threads and threading.get_ident() not in threads  # on the pool (its second thread when busy)


def test_a_member_is_read_a_few_blocks_ahead_of_its_deflation(monkeypatch):
    """The writer takes a member's blocks as it deflates them, never the whole member first: a record held
    on disk is read (and its pages let go) block by block, so writing it never holds it in memory."""
    import dynamics.io as dio

    monkeypatch.setattr(dio, "BLOCK_BYTES", 800)  # 100 float64 a block: 40 blocks
    pulled, ahead, real_blocks, real_deflate = [0], [], dio._npy_blocks, dio._deflate

    def blocks(value):
        for block in real_blocks(value):
            pulled[0] += 1
            yield block

    def deflate(block, level, last):
        ahead.append(pulled[0])
        return real_deflate(block, level, last)

    monkeypatch.setattr(dio, "_npy_blocks", blocks)
    monkeypatch.setattr(dio, "_deflate", deflate)
    write_npz(io.BytesIO(), {"x": np.arange(4000.0)})
    assert len(ahead) == 41  # the header and 40 blocks of rows
    assert max(taken - done for done, taken in enumerate(ahead)) <= dio.DEFLATE_THREADS + 3  # not all 41
