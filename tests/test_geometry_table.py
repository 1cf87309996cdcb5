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


def test_table_csv_and_the_figure_say_which_setting_ran(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from figures import capture_figures

    from analysis.study import geometry, plots

    setting = {"answers": "S", "start": "manifold", "time": "p", "delta": 0.05}
    rows = [{**_cell("gf", 4, 32, 0.25), **setting, "D": 4}, {**_cell("gf", 32, 4, 16.0), **setting, "D": 32}]
    drawn = capture_figures(monkeypatch, plots)
    text = geometry.finish(tmp_path, SimpleNamespace(figure=None), rows)
    first = text.splitlines()[0]
    assert first.startswith("D=S answers per relation, manifold start; T_R, T_S: when the mean p")
    header = (tmp_path / "table.csv").read_text().splitlines()[0].split(",")
    assert {"answers", "D", "start", "time", "delta"} <= set(header)
    fig = drawn[0]
    assert "one answer per fact" in fig._suptitle.get_text() and "manifold start" in fig._suptitle.get_text()
    assert "first reach 0.95" in fig.axes[0].get_title()


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
        return [tuple(p.values())[:-4] for p in geometry.plan(study_args("geometry", **options)).points()]

    assert points(quick=True) == [(k, S, R) for S, R in ((4, 32), (16, 4)) for k in ("gf", "sign", "signsgd")]
    full = points()
    assert len(full) == 7 * 6 + 2 and full[-2:] == [("onehot", 16, 4, 32), ("hadamard", 16, 4, 32)]
    assert points(rows="adam", pairs="8x2", embeddings_point="") == [("adam", 8, 2)]
    assert points(quick=True, embeddings_point="8x2x16")[-1] == ("hadamard", 8, 2, 16)


def test_the_setting_options_reach_every_point_and_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    """--answers-per-relation, --start, --time and --delta become every point's values (so the point store
    and table.csv record them); a value not allowed, or --delta without --time p, is refused before any
    work."""
    from analysis.cli import main
    from analysis.study import geometry
    from analysis.study.runner import study_args

    args = study_args("geometry", quick=True, answers_per_relation="S", start="manifold", time="p",
                      delta=0.05)
    points = geometry.plan(args).points()
    assert points and all(p["answers"] == "S" and p["start"] == "manifold" and p["time"] == "p"
                          and p["delta"] == 0.05 for p in points)
    default = geometry.plan(study_args("geometry", quick=True)).points()[0]
    assert (default["answers"], default["start"], default["time"], default["delta"]) == ("4", "constant",
                                                                                       "midpoint", None)
    monkeypatch.setattr(geometry, "run_point", lambda *a: pytest.fail("ran a point"))
    for argv, needle in ((["--answers-per-relation", "1"], "--answers-per-relation='1': allowed"),
                         (["--answers-per-relation", "R"], "--answers-per-relation='R': allowed"),
                         (["--start", "gaussian"], "--start='gaussian': allowed: constant, manifold"),
                         (["--time", "t90"], "--time='t90': allowed: midpoint"),
                         (["--delta", "0.05"], "--delta=0.05: has no effect with --time midpoint"),
                         (["--time", "p", "--delta", "1.5"], "--delta=1.5: allowed: a number in (0, 1)"),
                         (["--answers-per-relation", "S"], "--embeddings-point='16x4x32': model.dim=32")):
        assert main(["study", "geometry", "--out", str(tmp_path / "g"), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "g").exists()


def test_one_answer_per_fact_and_the_manifold_start_reach_the_config():
    from analysis.study.geometry import Setting, task_config

    config = task_config(8, 2, ROWS["gf"], Setting("S", "manifold"))
    assert (config.task.answers_per_relation, config.task.facts) == (8, "structured")
    assert (config.init.kind, config.init.alpha, config.init.beta) == ("manifold", 0.01, 0.01)
    config = task_config(8, 2, ROWS["gf"], Setting("2"))
    assert (config.task.answers_per_relation, config.task.facts) == (2, "random")
    assert config.init.kind == "constant"


def test_the_definition_of_T_reads_the_losses_or_p():
    """--time midpoint reads the losses' midpoint crossings, --time p the first time the weighted mean p
    reaches 1 − δ (here p(A_r) = p(subject) = t/10 on two equally weighted facts)."""
    from types import SimpleNamespace

    from analysis.study.geometry import Setting, learning_times

    t = np.linspace(0.0, 10.0, 101)
    p = np.repeat((t / 10)[:, None, None], 2, axis=2)
    traj = SimpleNamespace(t=t, relation_loss=np.maximum(4.0 - t, 0.0), subject_loss=np.maximum(8.0 - t, 0.0),
                           p_relation=p, p_subject=p * 0.5 + 0.5 * p ** 2, fact_weights=np.full((1, 2), 0.5))
    T_R, T_S = learning_times(traj, Setting())
    assert T_R == pytest.approx(2.0, rel=0.05) and T_S == pytest.approx(4.0, rel=0.05)
    assert learning_times(traj, Setting(time="p", delta=0.1))[0] == pytest.approx(9.0, rel=1e-3)
    assert learning_times(traj, Setting(time="p", delta=0.5))[0] == pytest.approx(5.0, rel=1e-3)
    assert learning_times(traj, Setting(time="p", delta=0.5))[1] > 5.0  # p(subject) below p(A_r)


@pytest.mark.slow
def test_each_setting_option_changes_the_learning_times(monkeypatch):
    """On one tiny gradient flow (8 × 2, to t = 400): D, the start and the definition of T (and δ) each move
    T_R or T_S, and every row records the setting it ran in."""
    from dataclasses import replace

    from analysis.study import geometry
    from analysis.study.geometry import Setting

    monkeypatch.setitem(geometry.ROWS, "gf", replace(ROWS["gf"], t_max=400.0))
    base = Setting()
    cells = {name: run_point(8, 2, "gf", setting, points=48) for name, setting in (
        ("base", base), ("D", replace(base, answers="S")), ("start", replace(base, start="manifold")),
        ("p", replace(base, time="p", delta=0.1)), ("p05", replace(base, time="p", delta=0.05)))}
    for name, cell in cells.items():
        assert cell["status"] == "ok" and math.isfinite(cell["T_R"]) and math.isfinite(cell["T_S"]), name
        if name != "base":
            moved = max(abs(cell[k] / cells["base"][k] - 1) for k in ("T_R", "T_S"))
            assert moved > 0.05, (name, moved)
    assert cells["p05"]["T_S"] > cells["p"]["T_S"] > cells["base"]["T_S"]  # p = 0.95 after 0.9 after midway
    assert cells["D"]["D"] == 8 and cells["D"]["answers"] == "S" and cells["base"]["D"] == 4
    assert (cells["p05"]["time"], cells["p05"]["delta"], cells["start"]["start"]) == ("p", 0.05, "manifold")


def test_the_eps_ladder_runs_the_sign_and_spectral_rows_at_each_eps_and_is_refused_in_one_line(
        tmp_path, capsys, monkeypatch):
    from analysis.cli import main
    from analysis.study import geometry
    from analysis.study.runner import study_args

    args = study_args("geometry", rows="gf,sign,spectral", pairs="8x2", embeddings_point="",
                      eps_ladder="1e-5,1e-4,1e-6")
    points = sorted((p["row"], p.get("eps", 0.0)) for p in geometry.plan(args).points())
    assert points == [("gf", 0.0)] + [(k, e) for k in ("sign", "spectral") for e in (1e-6, 1e-5, 1e-4)]
    row = geometry.ladder_row(ROWS["sign"], 1e-6)  # a guard for a field 100 times stiffer, with its margin
    assert (row.eps, row.max_steps) == (1e-6, 1000 * ROWS["sign"].max_steps)
    assert geometry.ladder_row(ROWS["sign"], 1e-3).max_steps == 10 * ROWS["sign"].max_steps
    assert geometry.ladder_row(ROWS["sign"], None) is ROWS["sign"]
    monkeypatch.setattr(geometry, "run_point", lambda *a, **k: pytest.fail("ran a point"))
    for argv, needle in ((["--eps-ladder", "1e-4,1e-5"], "--eps-ladder='1e-4,1e-5': allowed: three or more"),
                         (["--eps-ladder", "1e-4,x,1e-6"], "--eps-ladder='1e-4,x,1e-6': allowed"),
                         (["--eps-ladder", "1e-4,1e-5,2"], "--eps-ladder='1e-4,1e-5,2': allowed"),
                         (["--rows", "gf,adam", "--eps-ladder", "1e-4,1e-5,1e-6"],
                          "has no effect without a sign or spectral row")):
        assert main(["study", "geometry", "--out", str(tmp_path / "g"), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "g").exists()


def test_finish_extrapolates_each_ladder_to_eps_0_and_says_what_is_not_within_2_percent(
        tmp_path, monkeypatch):
    """T_R = 1 + 2e3·ε (exact at any three ε), T_S = 2 + 30·√ε at 4 × 32; at 32 × 4 the ε = 1e-6 run stopped
    before T_S: its T_S limit comes from the other four ε, and T_S there changes far more than 2% with no
    fit that settles (T_S = 2 + 2e5·ε + 1e9·ε²: the two last triples' limits differ by more than 2%)."""
    import csv
    from types import SimpleNamespace

    from figures import capture_figures

    from analysis.study import geometry, plots

    ladder = (1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
    rows = [_cell("gf", 4, 32, 0.5), _cell("gf", 32, 4, 8.0)]
    for S, R, t_S in ((4, 32, lambda e: 2 + 30 * e ** 0.5), (32, 4, lambda e: 2 + 2e5 * e + 1e9 * e * e)):
        for e in ladder:
            stopped = (S, e) == (32, 1e-6)
            rows.append({**_cell("sign", S, R, 1.0), "eps": e, "T_R": 5.0 if stopped else 1 + 2e3 * e,
                         "T_S": 9.0 if stopped else t_S(e), "status": "too_slow" if stopped else "ok",
                         "t_end": 0.5 if stopped else 8.0})  # a stopped run's midpoints are not used
    drawn = capture_figures(monkeypatch, plots)
    text = geometry.finish(tmp_path, SimpleNamespace(figure=None), rows)
    limits = {int(r["S"]): r for r in csv.DictReader((tmp_path / "limit.csv").open())}
    assert float(limits[4]["T_R"]) == pytest.approx(1.0, rel=1e-9)
    assert float(limits[4]["T_S"]) == pytest.approx(2.0, rel=1e-6)
    assert float(limits[4]["T_S_order"]) == pytest.approx(0.5, rel=1e-6)
    assert limits[4]["within"] == "True" and limits[4]["note"] == ""
    assert limits[32]["within"] == "False" and float(limits[32]["T_R"]) == pytest.approx(1.0, rel=1e-9)
    assert "T_S: changes" in limits[32]["note"] and "ε=1e-06 too_slow at t=0.5" in limits[32]["note"]
    assert limits[32]["eps"] == "0.0001 3e-05 1e-05 3e-06 1e-06"
    assert "sign→0" in text and "NOT within 2%" in text and "slope sign→0:" in text
    assert "slope sign@1e-05:" in text and "slope gf: 0.67" in text
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert any("ε → 0, Richardson" in t for t in legend) and any("(ε=1e-06)" in t for t in legend)
