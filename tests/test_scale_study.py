"""The scale study (``factrecall study scale``, analysis/study/scale.py): the theory's times, the power-law
fit, the study's config at 10^5 facts is the documented simulate command, a small study end to end
(resumable, importable runs, files written whole)."""

from __future__ import annotations

import json
import math

import pytest
from close import assert_close
from figures import assert_png

from analysis.cli import main
from analysis.loglog import fit_power_law, power_law
from analysis.study import scale as scale_study
from analysis.study.scale import study_config, theory_times
from dynamics.config import resolve_config


def run_study(out, series, monkeypatch, capsys, *imports):
    """``factrecall study scale --quick`` over ``series`` into ``out``; returns what scale.json holds."""
    monkeypatch.setattr(scale_study, "QUICK_SERIES", series)
    argv = ["study", "scale", "--quick", "--quiet", "--out", str(out)]
    argv += [a for run in imports for a in ("--import", str(run))]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    return json.loads((out / "scale.json").read_text())


def test_theory_times_are_log_one_over_alpha_over_the_rates():
    t_r, t_s = theory_times(2000, 50)
    assert math.isclose(t_r, math.log(1e5) * 50 / math.sqrt(1 / 8 - 1 / 400), rel_tol=1e-12)
    assert math.isclose(t_s, math.log(1e5) * 2000 / math.sqrt(1 / 50 - 1 / 400), rel_tol=1e-12)
    assert theory_times(10, 1)[0] == math.inf  # one relation carries no information: σ_r = 0


def test_power_law_fit_recovers_exponent_and_prefactor():
    x = [1e2, 1e3, 1e4, 1e5]
    beta, prefactor, points = power_law(x, [0.43 * v**0.81 for v in x])
    assert math.isclose(beta, 0.81, rel_tol=1e-9) and math.isclose(prefactor, 0.43, rel_tol=1e-9)
    assert points == 4
    assert power_law([1.0, 2.0, 3.0], [None, 5.0, math.nan]) is None  # one usable point is no fit
    assert power_law([2.0, 2.0], [1.0, 5.0]) is None  # one x: no slope
    assert power_law(x[:2], [1.0, 10.0])[0] == pytest.approx(1.0)
    # with its statistics: the same line, points left out where a value is missing or not positive
    fit = fit_power_law([*x, 1e6], [0.43 * v**0.81 for v in x] + [0.0])
    assert math.isclose(fit["exponent"], beta, rel_tol=1e-12) and fit["points"] == 4
    assert math.isclose(math.exp(fit["intercept"]), prefactor, rel_tol=1e-12)


def test_study_config_at_1e5_facts_is_the_documented_simulate_command():
    documented = resolve_config(None, None, [
        "task.subjects=2000", "task.relations=50", "task.noise_tokens=2050", "task.facts=random",
        "flow.t_max=435148", "flow.method=cvode", "flow.rtol=1e-7", "flow.atol=1e-13",
        "flow.newton_preconditioner=blocks"])
    assert study_config(2000, 50).to_dict() == documented.to_dict()


def test_study_config_at_1e6_facts_is_the_documented_simulate_command():
    """Beyond 10^5 facts the study records 96 points instead of 256 (docs/scale.md, "10^6 facts")."""
    documented = resolve_config(None, None, [
        "task.subjects=20000", "task.relations=50", "task.noise_tokens=20050", "task.facts=random",
        "flow.t_max=4351477", "flow.method=cvode", "flow.rtol=1e-7", "flow.atol=1e-13",
        "flow.newton_preconditioner=blocks", "flow.points=96"])
    assert study_config(20000, 50).to_dict() == documented.to_dict()
    assert [scale_study.record_points(n) for n in (10**2, 10**5, 10**5 + 1, 10**6)] == [256, 256, 96, 96]


def test_small_study_end_to_end(tmp_path, monkeypatch, capsys):
    import os

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (replaced.append(os.path.basename(b)), real_replace(a, b)))
    series = {"subjects, R = 4": ((12, 4), (24, 4))}
    result = run_study(tmp_path, series, monkeypatch, capsys)
    rows = {(r["S"], r["R"]): r for r in result["rows"]}
    for row in rows.values():
        assert row["status"] == "ok" and "hallucination" in row["stages"]
        # the measured subject escape and the plateau's end sit within 25% of the first-order t_S
        assert 0.8 < row["t_subject"] / row["theory_t_S"] < 1.25, row
        assert row["plateau_start"] < row["plateau_end"] and row["plateau_length"] > 0
    fit = result["fits"]["subjects, R = 4"]
    assert 0.8 < fit["plateau_end"]["exponent"] < 1.2 and fit["theory_t_S"]["exponent"] == pytest.approx(1.0)
    assert_png(tmp_path / "scale.png")
    # the table and the result are written whole (renamed into place), never half-written
    assert {"scale.csv", "scale.json"} <= set(replaced)
    assert (tmp_path / "scale.csv").read_text().count("\n") == 3
    # resumable: finished sizes are read back, not run again
    monkeypatch.setattr(scale_study, "measure", lambda *a: pytest.fail("ran a finished size again"))
    assert_close(run_study(tmp_path, series, monkeypatch, capsys)["rows"], result["rows"], rel=1e-12)


def test_import_takes_only_a_run_of_the_study_config(tmp_path, monkeypatch, capsys):
    from analysis.simulate import simulate

    run = tmp_path / "run"
    simulate(study_config(12, 4), run)
    monkeypatch.setattr(scale_study, "measure", lambda *a: pytest.fail("ran an imported size"))
    series = {"subjects, R = 4": ((12, 4),)}  # an imported size is read back, its extra column in the CSV
    (row,) = run_study(tmp_path / "study", series, monkeypatch, capsys, run)["rows"]
    assert (row["S"], row["R"]) == (12, 4) and row["imported_from"] == str(run)
    assert "imported_from" in (tmp_path / "study" / "scale.csv").read_text()
    other = tmp_path / "other"
    simulate(study_config(12, 4).override({"flow.rtol": 1e-6}), other)
    assert main(["study", "scale", "--quick", "--out", str(tmp_path / "s2"), "--import", str(other)]) == 2
    err = capsys.readouterr().err
    assert "not the scale study's config" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s2").exists()  # refused before anything was written


def test_shipped_study_is_the_documented_one():
    """The full study shipped with the package (what docs/scale.md's tables and notebooks/scale.ipynb show):
    its sizes are SERIES, its fits are what its rows give, each row ran the study's config, and the ranges
    docs/scale.md states are the rows' own."""
    from pathlib import Path

    shipped = scale_study.shipped_study()
    assert shipped["series"] == {k: [list(s) for s in v] for k, v in scale_study.SERIES.items()}
    # fits are least squares through numpy: their last digits change with numpy's version, so relative 1e-12
    # (and absolute 1e-12 for exponents that are zero up to rounding, e.g. t_R's at fixed R)
    refitted = scale_study.fits(shipped["rows"], scale_study.SERIES)
    assert_close(refitted, shipped["fits"], rel=1e-12, abs_tol=1e-12)
    rows = shipped["rows"]
    assert {(r["S"], r["R"]) for r in rows} == {s for v in scale_study.SERIES.values() for s in v}
    for row in rows:
        assert row["status"] == "ok" and row["t_max"] == study_config(row["S"], row["R"]).flow.t_max
    subject = [r["t_subject"] / r["theory_t_S"] for r in rows]
    relation = [r["t_relation"] / r["theory_t_R"] for r in rows]
    doc = (Path(__file__).resolve().parent.parent / "docs" / "scale.md").read_text()
    assert f"{min(subject):.2f}–{max(subject):.2f} times the theory's t_S" in doc
    assert f"{min(relation):.2f}–{max(relation):.2f} times t_R" in doc
    for name, fit in shipped["fits"].items():
        plateau = fit["plateau_end"]
        assert f"{plateau['prefactor']:.3g}·N^{plateau['exponent']:.3f}" in doc, name
    no_plateau = [(r["S"], r["R"]) for r in rows if r["plateau_end"] is None]
    assert no_plateau == [(100, 1000)]  # the relation series' last size: the plateau has closed
