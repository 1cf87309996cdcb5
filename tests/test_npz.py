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
