"""Stage figures (docs/design.md §5): every function writes a real PNG from a Trajectory and plain data; the
Figure it saves is checked for its title, legend, stage names, reference levels and axis limits."""

from __future__ import annotations

import numpy as np
import pytest
from figures import assert_png, assert_readable, capture_figures, legend_labels, texts

import analysis.stages.plots as plots_module
from analysis.plotting import time_window
from analysis.stages import (
    fact_order,
    plot_fact_fractions,
    plot_fact_heatmap,
    plot_losses,
    plot_stage_losses,
    predicted_times,
    theory_for,
)
from dynamics import FactTask, resolve_config, run_flow

CURVE_LABELS = ["loss", "relation-only loss", "subject-only loss"]


@pytest.fixture
def drawn(monkeypatch):
    """The Figures the stage plots save, in order."""
    return capture_figures(monkeypatch, plots_module)


@pytest.fixture(scope="module")
def tiny():
    return run_flow(resolve_config("tiny"))


@pytest.fixture(scope="module")
def tiny_theory():
    config = resolve_config("tiny")
    task = FactTask(config.task)
    return theory_for(config, task.facts, task.fact_weights)


STAGES = [
    {"name": "init", "t_start": 0.0, "t_end": 20.0, "level": 1.38, "expected_level": 1.386},
    {"name": "hallucination", "t_start": 35.0, "t_end": 55.0, "level": 0.70, "expected_level": 0.693},
    {"name": "recall", "t_start": 90.0, "t_end": None, "level": 0.01, "expected_level": 0.0},
]


@pytest.mark.parametrize("use_theory", [True, False])
def test_stage_losses_png(tmp_path, tiny, tiny_theory, use_theory, drawn):
    path = tmp_path / "loss.png"
    plot_stage_losses(tiny, STAGES, tiny_theory if use_theory else None, path, title="tiny")
    assert_png(path)
    (fig,) = drawn
    ax = fig.axes[0]
    assert ax.get_title() == "tiny" and ax.get_xscale() == "log" and ax.get_ylabel() == "loss (nats)"
    marks = [f"t_R (theory) = {tiny_theory['t_R']:.3g}", f"t_S (theory) = {tiny_theory['t_S']:.3g}"]
    assert legend_labels(ax) == CURVE_LABELS + (marks if use_theory else [])
    # every stage named in its band, every reference level written beside its line
    assert {"init", "hallucination", "recall"} <= set(texts(ax))
    # tiny's answers are uniform within a relation: its plateau level H(A|R) is log D, named so
    shown = {"log|A|": "log|A|", "H(A|R)": "H(A|R) = log D", "0": "0"}
    for name in ("log|A|", "H(A|R)", "0"):
        assert f"{shown[name]} = {tiny.levels[name]:.3f}" in texts(ax)
        # written in the right margin, outside the axes, where no curve, stage name or time mark crosses it
        (label,) = [t for t in ax.texts if t.get_text() == f"{shown[name]} = {tiny.levels[name]:.3f}"]
        assert label.get_position()[0] > 1.0 and label.get_ha() == "left"
    if use_theory:  # t_R and t_S told apart: each in the colour of the curve it predicts
        colors = {line.get_label().split()[0]: line.get_color() for line in ax.get_lines()}
        assert (colors["t_R"], colors["t_S"]) == (colors["relation-only"], colors["subject-only"])
    left, right = time_window(tiny.t)
    if use_theory:  # widened to show both predicted times
        times = (tiny_theory["t_R"], tiny_theory["t_S"])
        left, right = min(left, min(times) / 1.2), max(right, max(times) * 1.2)
    assert ax.get_xlim() == pytest.approx((left, right), rel=1e-12)
    # each curve is the record of its name
    for field, label in zip(("loss", "relation_loss", "subject_loss"), CURVE_LABELS, strict=True):
        (line,) = [line for line in ax.get_lines() if line.get_label() == label]
        np.testing.assert_array_equal(line.get_xdata(), tiny.t[tiny.t > 0])
        np.testing.assert_array_equal(line.get_ydata(), getattr(tiny, field)[tiny.t > 0], err_msg=label)


def test_stage_losses_widen_the_time_axis_to_predicted_times_beyond_the_run(tmp_path, tiny, drawn):
    theory = {"applicable": True, "t_R": 0.02, "t_S": 2e4}  # before the window's start, after the run's end
    plot_stage_losses(tiny, STAGES, theory, tmp_path / "loss.png")
    ax = drawn[0].axes[0]
    assert ax.get_xlim() == pytest.approx((0.02 / 1.2, 2e4 * 1.2), rel=1e-12)
    assert legend_labels(ax)[-2:] == ["t_R (theory) = 0.02", "t_S (theory) = 2e+04"]


def test_stage_losses_without_stages_and_with_inapplicable_theory(tmp_path, tiny, drawn):
    theory = {"applicable": False, "reasons": ["init.kind='gaussian'"], "t_R": None, "t_S": None}
    path = tmp_path / "loss.png"
    plot_stage_losses(tiny, [], theory, path)
    assert_png(path)
    (fig,) = drawn
    ax = fig.axes[0]
    assert legend_labels(ax) == CURVE_LABELS  # no predicted time marked
    assert not {"init", "hallucination", "recall"} & set(texts(ax))
    assert ax.get_xlim() == pytest.approx(time_window(tiny.t), rel=1e-12)


def test_predicted_times_only_when_applicable(tiny_theory):
    assert predicted_times(None) == {}
    assert predicted_times({"applicable": False, "t_R": 5.0, "t_S": 9.0}) == {}
    marks = predicted_times(tiny_theory)
    assert sorted(marks.values()) == pytest.approx(sorted([tiny_theory["t_R"], tiny_theory["t_S"]]))


def test_plot_losses_keeps_its_behaviour_without_the_new_options(tmp_path, tiny, drawn):
    path = tmp_path / "plain.png"
    plot_losses([("flow", tiny)], tiny.levels, path, title="plain")
    assert_png(path)
    plot_losses([("flow", tiny), ("again", tiny)], tiny.levels, tmp_path / "two.png")
    one, two = (fig.axes[0] for fig in drawn)
    assert one.get_title() == "plain" and legend_labels(one) == CURVE_LABELS
    assert legend_labels(two) == [f"{name} ({run})" for run in ("flow", "again") for name in CURVE_LABELS]


def test_fact_order_sorts_by_learning_time_with_nan_last():
    learning_time = np.array([[30.0, np.nan], [10.0, 20.0], [np.nan, 10.0]])
    order = fact_order(learning_time)
    # flat indices s·R + r; equal times keep (s, r) order; never-learned facts last, in (s, r) order
    assert order.tolist() == [2, 5, 3, 0, 1, 4]
    assert fact_order(np.full((2, 2), np.nan)).tolist() == [0, 1, 2, 3]
    times = learning_time.ravel()[order]
    finite = times[np.isfinite(times)]
    assert np.all(np.diff(finite) >= 0)


def test_fact_heatmap_png(tmp_path, tiny, drawn):
    S, R = tiny.facts.shape
    rng = np.random.default_rng(0)
    learning_time = rng.uniform(20, 80, size=(S, R))
    learning_time[0, 1] = np.nan
    path = tmp_path / "facts.png"
    plot_fact_heatmap(tiny, learning_time, path, title="facts")
    assert_png(path)
    all_nan = tmp_path / "facts_nan.png"
    plot_fact_heatmap(tiny, np.full((S, R), np.nan), all_nan)
    assert_png(all_nan)
    (some, colourbar), (none, _) = (fig.axes for fig in drawn)
    assert some.get_title() == "facts" and colourbar.get_ylabel() == "p(a*)"
    assert some.get_ylim() == (S * R - 0.5, -0.5)  # the earliest-learned fact at the top
    assert f"({S * R} facts)" in some.get_ylabel()
    assert some.get_xlim() == pytest.approx(time_window(tiny.t, margin=1.0), rel=1e-12)
    # rows in learning order, the never-learned fact (0, 1) last, below a red dashed line
    assert [tick.get_text() for tick in some.get_yticklabels()][-1] == "(0, 1)"
    assert legend_labels(some) == ["learning time", "below: never learned"]  # the red line explained
    assert_readable(drawn[0])
    (line,) = [line for line in some.get_lines() if line.get_label() == "learning time"]
    np.testing.assert_array_equal(line.get_xdata(), np.sort(learning_time[np.isfinite(learning_time)]))
    assert [h.get_ydata()[0] for h in some.get_lines() if h.get_color() == "red"] == [S * R - 1.5]
    assert legend_labels(none) == [] and not [h for h in none.get_lines() if h.get_color() == "red"]
    plot_fact_heatmap(tiny, rng.uniform(20, 80, size=(S, R)), tmp_path / "facts_all.png")
    every = drawn[-1].axes[0]  # every fact learned: no line below the learned ones
    assert legend_labels(every) == ["learning time"]
    assert not [h for h in every.get_lines() if h.get_color() == "red"]
    with pytest.raises(ValueError, match="learning_time"):
        plot_fact_heatmap(tiny, np.zeros((S + 1, R)), tmp_path / "bad.png")


def test_fact_fractions_png(tmp_path, tiny, drawn):
    relation_known = tiny.p_relation > 0.5
    recalled_each = tiny.p_correct > 0.5
    recalled = recalled_each.mean((1, 2))
    hallucinating = (relation_known & ~recalled_each).mean((1, 2))
    uninformed = 1.0 - recalled - hallucinating
    path = tmp_path / "fractions.png"
    plot_fact_fractions(tiny.t, uninformed, hallucinating, recalled, path, title="fractions")
    assert_png(path)
    (fig,) = drawn
    ax = fig.axes[0]
    assert ax.get_title() == "fractions" and ax.get_ylim()[0] < 0.0 and ax.get_ylim()[1] > 1.0
    assert legend_labels(ax) == ["uninformed", "hallucinating", "recalled"]
    assert ax.get_xlim() == pytest.approx(time_window(tiny.t, margin=1.0), rel=1e-12)
    for line, values in zip(ax.get_lines(), (uninformed, hallucinating, recalled), strict=True):
        np.testing.assert_array_equal(line.get_ydata(), values[tiny.t > 0])
    with pytest.raises(ValueError, match="recalled"):
        plot_fact_fractions(tiny.t, uninformed, hallucinating, recalled[:-1], tmp_path / "bad.png")
    # with the run's stages: each shaded over exactly the table's boundaries and named, as on loss.png
    plot_fact_fractions(tiny.t, uninformed, hallucinating, recalled, path, title="fractions", stages=STAGES)
    staged = drawn[-1]
    assert_readable(staged)
    ax = staged.axes[0]
    assert {"init", "hallucination", "recall"} <= set(texts(ax))
    spans = sorted(tuple(float(x) for x in p.get_bbox().intervalx) for p in ax.patches
                   if p.get_alpha() == 0.12)  # axvspan's rectangles, x in data
    left, right = time_window(tiny.t, margin=1.0)
    expected = sorted((max(s["t_start"], left), right if s["t_end"] is None else min(s["t_end"], right))
                      for s in STAGES)
    assert np.allclose(spans, expected, rtol=1e-12, atol=0), (spans, expected)


def test_heatmap_rows_are_facts_or_means_of_consecutive_facts():
    from analysis.stages.plots import HEATMAP_ROWS, _binned_rows

    rng = np.random.default_rng(0)
    few = rng.random((40, 50))
    order = rng.permutation(50)
    values, edges = _binned_rows(few, order)
    np.testing.assert_array_equal(values, few[:, order].T)
    np.testing.assert_array_equal(edges, np.arange(51) - 0.5)
    many = rng.random((40, 2 * HEATMAP_ROWS + 345))
    order = rng.permutation(many.shape[1])
    values, edges = _binned_rows(many, order)
    assert values.shape == (HEATMAP_ROWS, 40) and edges[0] == -0.5 and edges[-1] == many.shape[1] - 0.5
    starts = (edges[:-1] + 0.5).astype(int)
    for i in (0, 17, HEATMAP_ROWS - 1):
        stop = int(edges[i + 1] + 0.5)
        np.testing.assert_allclose(values[i], many[:, order[starts[i]:stop]].mean(1), rtol=1e-14)


def test_a_plateau_longer_than_three_decades_keeps_its_first_escape_in_view():
    """The log-t window reaches three decades below the last time, but never hides the first escape: with
    a plateau from t = 10^3 to beyond 10^6 (a 10^6-fact run) the window starts a decade below 10^3."""
    from analysis.plotting import first_escape, time_window

    t = np.geomspace(0.5, 4e6, 256)
    stages = [{"name": "init", "t_start": 0.0, "t_end": 1879.0},
              {"name": "hallucination", "t_start": 1879.0, "t_end": 2.0e6},
              {"name": "recall", "t_start": 2.0e6, "t_end": None}]
    assert first_escape(stages) == 1879.0 and first_escape([]) is None and first_escape(None) is None
    assert time_window(t) == (4e3, 4e6 * 1.05)  # three decades below the last: the escape at 1879 cut off
    left, _ = time_window(t, keep=first_escape(stages))
    assert left == 187.9
    assert time_window(t, keep=1e6)[0] == 4e3  # an early window is not narrowed by a late escape
    assert time_window(np.geomspace(100.0, 4e6, 8), keep=1.0)[0] == 100.0  # nor widened below the data
