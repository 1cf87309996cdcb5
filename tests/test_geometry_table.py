"""The learning-time table's pieces (analysis/study/geometry.py) on one tiny point, and its files."""

import math

import numpy as np
import pytest

from analysis.study.geometry import ROWS, decay_exponent, row_slope, run_point, slope


def test_slope_recovers_a_known_power_law():
    x = [0.125, 0.5, 2.0, 8.0, 32.0]
    assert slope(x, [3.0 * v ** 0.5 for v in x]) == pytest.approx(0.5, abs=1e-12)
    assert slope(x, [7.0 for _ in x]) == pytest.approx(0.0, abs=1e-12)
    assert slope([1.0, 2.0], [1.0, float("nan")]) is None  # one usable point


def test_row_slope_uses_only_its_row():
    cells = [{"row": "gf", "S/R": s, "ratio": s} for s in (1.0, 4.0)] + \
            [{"row": "sign", "S/R": s, "ratio": 1.0 / s} for s in (1.0, 4.0)]
    assert row_slope(cells, "gf") == pytest.approx(1.0)
    assert row_slope(cells, "sign") == pytest.approx(-1.0)


def test_decay_exponent_of_a_power_law():
    t = np.geomspace(1.0, 1e4, 50)
    assert decay_exponent(t, 5.0 / t, 10.0) == pytest.approx(-1.0, abs=1e-9)
    assert decay_exponent(t, np.exp(-t / 10), 20.0) < -5  # faster than any small power (down to the floor)
    assert math.isnan(decay_exponent(t, 1.0 / t, 1e5))  # nothing after recall


@pytest.mark.parametrize("key", ["gf", "sign"])
def test_one_point_has_finite_times_and_the_expected_plateau(key):
    # S/R = 4: the gradient flow learns relations first (a hallucination plateau, T_S/T_R > 2);
    # the sign flow's learning times are finite on the same point
    cell = run_point(8, 2, key, points=64)
    assert cell["status"] == "ok"
    assert math.isfinite(cell["T_R"]) and math.isfinite(cell["T_S"]) and cell["T_R"] > 0
    if key == "gf":
        assert cell["plateau"] and cell["ratio"] > 2.0
        assert cell["ratio"] == pytest.approx(cell["theory_ratio"], rel=0.3)
    assert cell["t_end"] == pytest.approx(ROWS[key].t_max)


def _cell(key: str, S: int, R: int, ratio: float) -> dict:
    return {"row": key, "S": S, "R": R, "S/R": S / R, "status": "ok", "t_end": 8.0, "T_R": 1.0, "T_S": ratio,
            "ratio": ratio, "plateau": ratio > 2, "stages": "init > recall", "decay": None, "final_loss": 0.1,
            "theory_ratio": ratio, "evals": 10, "seconds": 0.5}


def test_finish_writes_the_table_whole_and_reads_stored_nan_back(tmp_path, monkeypatch):
    """table.csv is renamed into place (never half-written); a NaN stored as null prints as nan."""
    import os
    from types import SimpleNamespace

    from analysis.study import geometry

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (replaced.append(os.path.basename(b)), real_replace(a, b)))
    rows = [_cell("gf", 4, 32, 0.25), _cell("gf", 32, 4, 16.0)]
    text = geometry.finish(tmp_path, SimpleNamespace(figure=None), rows)
    assert "table.csv" in replaced
    assert "decay=   nan" in text and "slope gf: 1.00" in text
    assert (tmp_path / "table.csv").read_text().count("\n") == 3


def test_unknown_row_and_bad_pairs_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from analysis.cli import main
    from analysis.study import geometry

    monkeypatch.setattr(geometry, "run_point", lambda *a: pytest.fail("ran a point"))
    for argv, needle in ((["--rows", "gf,lion"], "--rows='gf,lion': lion is not a row"),
                         (["--pairs", "4x"], "--pairs='4x': must look like SxR"),
                         (["--embeddings-point", "1x2"], "--embeddings-point='1x2'")):
        assert main(["study", "geometry", "--out", str(tmp_path / "g"), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("key", ["sgd", "adam"])
def test_a_discrete_row_runs_on_the_flows_time_axis(key, monkeypatch):
    """The discrete rows reach their runners (SGD: run_training; Adam: compare's full-batch run), 50 steps."""
    from dataclasses import replace

    from analysis.study import geometry

    monkeypatch.setitem(geometry.ROWS, key, replace(ROWS[key], t_max=50 * ROWS[key].lr))
    cell = run_point(8, 2, key, points=16)
    assert cell["row"] == key and cell["status"] == "ok"
    assert cell["t_end"] == pytest.approx(50 * ROWS[key].lr)


def test_quick_and_the_options_choose_the_points():
    from analysis.study import geometry
    from analysis.study.runner import study_args

    def points(**options):
        return [tuple(p.values()) for p in geometry.plan(study_args("geometry", **options)).points()]

    assert points(quick=True) == [(k, S, R) for S, R in ((4, 32), (16, 4)) for k in ("gf", "sign", "signsgd")]
    full = points()
    assert len(full) == 7 * 6 + 2 and full[-2:] == [("onehot", 16, 4, 32), ("hadamard", 16, 4, 32)]
    assert points(rows="adam", pairs="8x2", embeddings_point="") == [("adam", 8, 2)]
    assert points(quick=True, embeddings_point="8x2x16")[-1] == ("hadamard", 8, 2, 16)
