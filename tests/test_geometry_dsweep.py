"""analysis/geometry_dsweep.py on tiny points: the D = S row equals the four-scalar flow (Li et al.'s ODE),
the p = 0.9 crossing is read between recorded points, the theory's ratio is the linearised one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.geometry_dsweep import first_crossing, read_rows, run_point, slope


def test_first_crossing_interpolates_and_says_never():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    logit = np.array([-2.0, 0.0, 1.0, 3.0])  # linear in the margin log(p/(1−p)): 9 is 0.6 of the way
    assert first_crossing(t, 1 / (1 + np.exp(-logit)), 0.9) == pytest.approx(2 + (math.log(9) - 1) / 2)
    assert first_crossing(t, np.array([0.95, 0.5, 0.7, 0.95]), 0.9) == 0.0
    assert math.isnan(first_crossing(t, np.array([0.1, 0.5, 0.7, 0.8]), 0.9))


def test_one_answer_per_fact_row_is_the_four_scalar_flow():
    row = run_point(4, 2, "S", "euclidean", 0.0, points=400)
    assert row["D"] == 4 and row["status"] == "ok"
    # p = 0.9 read between 400 log-spaced points: the four-scalar ratio to 1e-3 (measured 5e-4)
    assert row["ratio_p90"] == pytest.approx(row["four_scalar"], rel=1e-3)
    assert row["theory"] == pytest.approx(2 * math.sqrt(1 / 3))


def test_slope_fits_log_log():
    rows = [{"S/R": x, "r": 3 * x**0.5} for x in (0.5, 2.0, 8.0)] + [{"S/R": 4.0, "r": math.nan}]
    assert slope(rows, "r") == pytest.approx(0.5)


def test_rows_read_back_as_written(tmp_path):
    import csv
    rows = [{"S": 4, "R": 2, "D": 4, "d_label": "S", "S/R": 2.0, "geometry": "sign", "ratio_p90": math.nan,
             "status": "ok"}]
    with open(tmp_path / "dsweep.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    back = read_rows(tmp_path / "dsweep.csv")
    assert back[0]["S"] == 4 and back[0]["d_label"] == "S" and math.isnan(back[0]["ratio_p90"])


def test_the_shipped_figure_reads_on_its_own(tmp_path, monkeypatch):
    """docs/geometry_dsweep.png as the CSV beside it draws it: what ran in the suptitle, the theory's dotted
    lines and the four-scalar marks in the legends, no overlapping text."""
    from pathlib import Path

    from figures import assert_readable, capture_figures

    import analysis.geometry_dsweep as dsweep

    drawn = capture_figures(monkeypatch, dsweep)
    dsweep.plot(read_rows(Path(__file__).resolve().parent.parent / "docs" / "geometry_dsweep.csv"),
                tmp_path / "dsweep.png")
    (fig,) = drawn
    assert_readable(fig)
    assert "manifold start" in fig._suptitle.get_text() and "only D changes" in fig._suptitle.get_text()
    labels = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert {"D = 4", "D = S", "four-scalar flow (Li et al.'s ODE)"} <= labels
    assert any(label.startswith("linearised theory") for label in labels)


def test_the_two_regimes_figure_reads_on_its_own_and_its_theory_lines(tmp_path, monkeypatch):
    """docs/geometry.md's figure of D = 4 against D = S from the shipped CSV: readable, each D line with its
    theory where there is one; the sign flow at D = 4 is the four-scalar flow with T_S at S = D (0.2%)."""
    from pathlib import Path

    from figures import assert_readable, capture_figures

    import analysis.geometry_dsweep as dsweep

    rows = read_rows(Path(__file__).resolve().parent.parent / "docs" / "geometry_dsweep.csv")
    drawn = capture_figures(monkeypatch, dsweep)
    dsweep.plot_regimes(rows, tmp_path / "regimes.png")
    (fig,) = drawn
    assert_readable(fig)
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]
    assert "D = 4: σ_r/σ_s (linearised)" in legends[0] and "D = S: σ_r/σ_s (linearised)" in legends[0]
    assert not any(label.startswith("D = 4:") for label in legends[1])  # no theory for spectral at D = 4
    assert "D = 4: four-scalar, T_S at S = D" in legends[2]
    for row in rows:
        if row["geometry"] == "sign" and row["d_label"] == "4":
            assert dsweep.theory_ratio(row)[0] == pytest.approx(row["ratio_p90"], rel=2e-3)
