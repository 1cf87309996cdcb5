"""Capacity search: bisection on synthetic monotone oracles, failure paths, the written files, the CLI's
bad inputs, and the acceptance grids (the longer ones marked slow)."""

from __future__ import annotations

import csv
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from figures import assert_png, assert_readable, capture_figures

from analysis.capacity import (
    Experiment,
    Point,
    TrialRecord,
    TrialSettings,
    bisect_largest,
    build_experiment,
    guarded,
    min_sufficient_attention,
    run_capacity,
)
from analysis.cli import main
from analysis.loglog import fit_power_law
from dynamics.errors import RunError


# --- bisection on synthetic oracles -------------------------------------------------------------------
@pytest.mark.parametrize("low,high,true", [(1, 100, 37), (8, 32, 8), (8, 32, 31), (2, 1000, 999),
                                           (3, 4, 3)])
def test_bisection_finds_the_largest_success(low, high, true):
    result = bisect_largest(lambda n: n <= true, low, high)
    assert result.capacity == true and result.status == "ok"
    assert result.low_fail == true + 1  # the bracket is tight: true succeeded, true + 1 failed
    # two end points, a doubly-logarithmic geometric phase, then plain halving
    bound = 3 + math.ceil(math.log2(high - low + 1)) + math.ceil(math.log2(max(2.0, math.log2(high / low))))
    assert len(result.calls) <= bound


def test_bisection_range_ends_and_relative_tolerance():
    assert bisect_largest(lambda n: False, 4, 64).status == "below_range"
    assert bisect_largest(lambda n: False, 4, 64).capacity is None
    top = bisect_largest(lambda n: True, 4, 64)
    assert (top.capacity, top.status, top.calls) == (64, "at_upper", [4, 64])
    coarse = bisect_largest(lambda n: n <= 500, 10, 5000, rel_tol=0.1)
    assert coarse.capacity <= 500 < coarse.low_fail <= coarse.capacity * 1.1 + 1
    exact = bisect_largest(lambda n: n <= 500, 10, 5000)
    assert len(coarse.calls) < len(exact.calls)
    with pytest.raises(ValueError):
        bisect_largest(lambda n: True, 0, 10)
    with pytest.raises(ValueError):
        bisect_largest(lambda n: True, 10, 9)


def test_bisection_never_calls_outside_the_range_or_twice():
    for true in range(3, 60):
        calls = bisect_largest(lambda n, t=true: n <= t, 3, 60).calls
        assert len(calls) == len(set(calls)) and all(3 <= c <= 60 for c in calls)


def fit_result(status: str, accuracy: float, steps: int = 10):
    stored = status == "stored"
    return SimpleNamespace(status="ok" if status != "nonfinite" else status, stored=stored, accuracy=accuracy,
                           steps=steps, wall_seconds=0.01, message="")


def test_failed_and_diverged_trials_are_failures_and_crashes_surface():
    def trial(n):
        if n == 23:
            raise RunError("training stopped early (simulated)")
        if n == 11:
            return fit_result("nonfinite", 0.0), 0.1
        if n == 14:
            return fit_result("stored", float("nan"))  # a NaN accuracy is never a success
        return fit_result("stored" if n <= 20 else "not_stored", 1.0 if n <= 20 else 0.3)

    log: list[TrialRecord] = []
    seen: list[TrialRecord] = []
    result = bisect_largest(guarded(trial, log, on_record=seen.append), 8, 64)
    assert seen == log
    by_size = {r.size: r for r in log}
    assert result.calls == [8, 64, 23, 14, 11, 9, 10]
    assert by_size[23].status == "error" and "stopped early" in by_size[23].message
    assert by_size[14].status == "nonfinite" and by_size[11].status == "nonfinite" and by_size[11].lr == 0.1
    assert not any(by_size[n].stored for n in (64, 23, 14, 11)) and by_size[10].stored
    assert result.capacity == 10  # failed trials bound the search exactly as unsuccessful trainings do
    assert [r.size for r in log] == result.calls


@pytest.mark.parametrize("crash", [RuntimeError("CUDA out of memory"), TypeError("bad argument"),
                                   FloatingPointError("overflow")])
def test_a_crashing_trial_is_not_a_failed_trial(crash):
    """A trial that raises anything but RunError is a bug or a machine problem, not a model that did not
    store: it surfaces instead of ending the bisection as a failure."""
    def trial(n):
        if n == 64:
            raise crash
        return fit_result("stored", 1.0)

    log: list[TrialRecord] = []
    with pytest.raises(type(crash)):
        bisect_largest(guarded(trial, log), 8, 64)
    assert [r.size for r in log] == [8]


def test_mlp_trial_stores_a_few_maps_and_not_many():
    """mlp_trial itself (the fast suite's only run of it): 16 maps in a width-32 MLP are stored, 512 in a
    width-2 one are not; both end with status ok (a finished training), not an error."""
    from analysis.capacity import mlp_trial

    settings = TrialSettings(optimizer="adamw", lrs=(3e-2,), steps=600)
    small, lr = mlp_trial(16, d=8, width=32, num_classes=None, seed=0, settings=settings)
    assert small.status == "ok" and small.stored and small.accuracy == 1.0 and lr == 3e-2
    large, _ = mlp_trial(512, d=8, width=2, num_classes=None, seed=0, settings=settings)
    assert large.status == "ok" and not large.stored and large.accuracy < 0.5 and large.steps == 600


# --- fits -----------------------------------------------------------------------------------------------
def test_power_law_fit_recovers_exponent_and_covers_it():
    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(10, 1000, 8), 3)
    y = 0.3 * x**1.4 * np.exp(0.05 * rng.standard_normal(x.size))
    fit = fit_power_law(x, y)
    assert abs(fit["exponent"] - 1.4) < 0.05 and fit["ci_low"] < 1.4 < fit["ci_high"]
    exact = fit_power_law(x, 2 * x**0.5)
    assert math.isclose(exact["exponent"], 0.5, rel_tol=1e-12) and exact["ci_high"] - exact["ci_low"] < 1e-9
    assert math.isnan(fit_power_law(np.array([5.0]), np.array([3.0]))["exponent"])


def test_min_sufficient_attention():
    acc = np.array([[0.1, 0.2, 0.3], [0.5, 0.995, 1.0], [0.999, 1.0, 1.0]])
    info = min_sufficient_attention(np.array([100.0, 200.0, 400.0]), acc)
    assert info["min_attention_params"] == 200.0 and info["below_all_fail"]
    assert min_sufficient_attention(np.array([1.0, 2.0]), np.zeros((2, 2)))["min_attention_params"] is None


# --- files ------------------------------------------------------------------------------------------
def synthetic_experiment(kind: str = "linear") -> Experiment:
    """Capacity = params^0.75 exactly; the top of each range diverges (a RunError: a failed trial)."""

    def trial_for(params):
        def trial(n, seed):
            if n == 4 * params:
                raise RunError("diverged")
            return fit_result("stored" if n <= int(params**0.75) else "not_stored", 1.0)
        return trial

    points = [Point(f"p={p}", p, 1, 4 * p, trial_for(p), shape={"d": p}) for p in (16, 64, 256, 1024)]
    return Experiment(kind, points, TrialSettings(), 0.0, "parameters", "test trend")


def test_run_capacity_writes_csv_summary_and_figure(tmp_path, monkeypatch, capsys):
    """The files, a figure that says what ran and reads on its own (plain log ticks, no minor tick labels
    over each other), and a bar over the trials with k/N and an estimate of the time left."""
    import analysis.capacity.plots as plots

    drawn = capture_figures(monkeypatch, plots)
    summary = run_capacity("mlp", tmp_path / "out", seeds=2, progress=True,
                           experiment=synthetic_experiment("mlp"))
    err = capsys.readouterr().err
    planned = 2 * sum(2 + math.ceil(math.log2(4 * p)) for p in (16, 64, 256, 1024))
    assert re.search(rf"capacity mlp: +\d+%.*\d+/{planned} \[\d\d:\d\d<", err), err  # k/N [elapsed<left
    assert "[mlp] p=16 seed=0 size=" in err  # each trial's line, above the bar
    narrow = dict(summary, results=[r for r in summary["results"] if r["params"] >= 256])  # < 1 decade
    plots.plot_capacity(narrow, tmp_path / "narrow.png")
    for fig in drawn:
        assert_readable(fig)
        for axis in (fig.axes[0].xaxis, fig.axes[0].yaxis):
            assert not [t for t in axis.get_minorticklabels() if t.get_text()]
    fig = drawn[0]
    assert fig.axes[0].get_title().startswith("Facts stored against parameters\none-hidden-layer MLP memory, "
                                              "M = 32 classes\nfull grid, 4 sizes × 2 seed(s); adamw lr 0.1")
    with open(tmp_path / "out" / "trials.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["point"] for r in rows} == {"p=16", "p=64", "p=256", "p=1024"}
    assert any(r["status"] == "error" and "diverged" in r["message"] for r in rows)
    assert [r["capacity"] for r in summary["results"]] == [int(p**0.75) for p in (16, 64, 256, 1024)
                                                           for _ in range(2)]
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert abs(saved["fit"]["exponent"] - 0.75) < 0.01 and saved["fit"]["points"] == 8
    assert_png(tmp_path / "out" / "capacity.png")
    assert not list((tmp_path / "out").glob(".*.tmp"))


# --- CLI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["capacity", "attention"], "KIND='attention': allowed linear, mlp, transformer, tradeoff"),
    (["capacity", "linear", "--seeds", "0"], "--seeds='0': must be one integer >= 1"),
    (["capacity", "linear", "--seeds", "x"], "--seeds='x'"),
    (["capacity", "linear", "--device", "tpu"], "--device='tpu'"),
    (["capacity", "linear", "--device", "cudafoo"], "--device='cudafoo': must be cpu or cuda[:N]"),
    (["capacity", "linear", "--device", "cuda:7"], "device='cuda:7': not available"),
    (["capacity"], "the following arguments are required: KIND"),
])
def test_cli_bad_inputs_exit_2_with_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_cli_out_below_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["capacity", "linear", "--quick", "--out", str(tmp_path / "file" / "out")]) == 2
    assert "lies below a file" in capsys.readouterr().err


def test_grids_are_well_formed():
    for kind in ("linear", "mlp", "transformer", "tradeoff"):
        for quick in (True, False):
            exp = build_experiment(kind, quick)
            assert exp.points and all(1 <= p.low <= p.high for p in exp.points)
    assert [p.params for p in build_experiment("linear", True).points] == [64, 256, 1024, 4096]
    full = build_experiment("linear", False)
    assert [p.shape["d"] for p in full.points] == [8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256]
    assert all(p.low == p.shape["d"] and p.high == p.shape["d"] ** 2 // 2 for p in full.points)


# --- acceptance -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_acceptance_linear_quick_grid(tmp_path):
    summary = run_capacity("linear", tmp_path, quick=True, seeds=2, progress=False)
    assert 1.5 <= summary["fit_vs_d"]["exponent"] <= 2.0
    assert summary["orthonormal_capacity_at_least_d"]


@pytest.mark.slow
def test_acceptance_mlp_quick_grid(tmp_path):
    summary = run_capacity("mlp", tmp_path, quick=True, seeds=1, progress=False)
    assert 0.8 <= summary["fit"]["exponent"] <= 1.2


@pytest.mark.slow
def test_acceptance_transformer_quick_grid(tmp_path):
    summary = run_capacity("transformer", tmp_path, quick=True, seeds=1, progress=False)
    assert 0.7 <= summary["fit"]["exponent"] <= 1.3


@pytest.mark.slow  # ~21-35 s on 2 cores
def test_acceptance_tradeoff_minimum_attention(tmp_path):
    info = run_capacity("tradeoff", tmp_path, quick=True, seeds=1, progress=False)["tradeoff"]
    assert info["min_attention_params"] is not None and info["sizes_below"] >= 1 and info["below_all_fail"]


def test_orthonormal_linear_memory_capacity_is_at_least_d():
    """Fast part of the linear acceptance: orthonormal embeddings store N = d associations for every d
    of the quick grid (and a monotone search from N = 1 therefore returns ≥ d)."""
    from analysis.capacity import linear_trial

    settings = build_experiment("linear", True).settings
    for d in (8, 16, 32, 64):
        result, _ = linear_trial(d, d=d, seed=0, settings=settings, embeddings="orthonormal")
        assert result.stored and result.accuracy == 1.0


def test_tradeoff_figure_reads_on_its_own(tmp_path, monkeypatch):
    """tradeoff.png: what ran in the title, the minimum-attention line explained in a legend, every cell's
    accuracy written, and it reads on its own (assert_readable)."""
    import analysis.capacity.plots as plots

    info = {"attention_params": [64, 128, 256, 512], "mlp_params": [0, 256, 1024],
            "accuracy": [[0.2, 0.5, 0.7], [0.6, 0.9, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
            "min_attention_params": 256}
    summary = {"kind": "tradeoff", "quick": True, "seeds": 1, "points": 12, "tradeoff": info,
               "model": "one-layer transformer: attention heads × MLP width",
               "settings": {"optimizer": "adam", "lrs": [0.01], "steps": 1500, "threshold": 0.99}}
    drawn = capture_figures(monkeypatch, plots)
    plots.plot_tradeoff(summary, tmp_path / "tradeoff.png")
    (fig,) = drawn
    assert_readable(fig)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Accuracy over attention × MLP size: minimum attention 256 parameters"
                                     "\none-layer transformer: attention heads × MLP width\nquick grid")
    assert len([t for t in ax.texts if t.get_text()]) == 12
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["minimum sufficient attention (rows above)"]
