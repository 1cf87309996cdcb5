"""dynamics.io's writers through their documented results: an .npz archive whose members pass the zip64
limit, JSON with sorted (or kept) keys and null for non-finite floats, CSV with the columns of the rows.
Written for the survivors of a mutation sample of dynamics/io.py (docs/testing.md)."""

from __future__ import annotations

import json
import zipfile

import numpy as np

from dynamics.io import atomic_write_csv, atomic_write_json, write_npz


def test_an_npz_member_larger_than_the_zip64_limit_is_written_and_read_back(monkeypatch, tmp_path):
    # a member's size is unknown while it streams, so only force_zip64 lets it pass 2 GiB; the limit is
    # lowered here so that a small array stands for a record of several GiB
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    arrays = {"t": np.arange(500, dtype=np.float64), "state": np.eye(20)}
    with open(tmp_path / "big.npz", "wb") as handle:
        write_npz(handle, arrays)
    with np.load(tmp_path / "big.npz") as loaded:
        assert sorted(loaded.files) == ["state", "t"]
        for name, value in arrays.items():
            np.testing.assert_array_equal(loaded[name], value)  # lossless: the writer's own round trip


def test_json_keys_are_sorted_unless_asked_not_to_and_non_finite_floats_are_null(tmp_path):
    payload = {"b": 1, "a": float("nan"), "c": [np.int64(3), np.array([1.0, np.inf])]}
    atomic_write_json(tmp_path / "sorted.json", payload)
    atomic_write_json(tmp_path / "kept.json", payload, sort_keys=False)
    assert list(json.loads((tmp_path / "sorted.json").read_text())) == ["a", "b", "c"]
    kept = json.loads((tmp_path / "kept.json").read_text())
    assert list(kept) == ["b", "a", "c"]
    assert kept == {"b": 1, "a": None, "c": [3, [1.0, None]]}


def test_csv_columns_are_the_rows_keys_in_order_or_the_ones_given(tmp_path):
    rows = [{"b": 1, "a": 2}, {"a": 3, "c": 4}]
    atomic_write_csv(tmp_path / "all.csv", rows)
    atomic_write_csv(tmp_path / "some.csv", rows, columns=["c", "b"])
    assert (tmp_path / "all.csv").read_text() == "b,a,c\n1,2,\n,3,4\n"
    assert (tmp_path / "some.csv").read_text() == "c,b\n,1\n4,\n"
