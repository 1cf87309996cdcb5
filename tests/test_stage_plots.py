"""Stage figures (docs/design.md §5): every function writes a real PNG from a Trajectory and plain data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path


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
def test_stage_losses_png(tmp_path, tiny, tiny_theory, use_theory):
    path = tmp_path / "loss.png"
    plot_stage_losses(tiny, STAGES, tiny_theory if use_theory else None, path, title="tiny")
    assert_png(path)


def test_stage_losses_without_stages_and_with_inapplicable_theory(tmp_path, tiny):
    theory = {"applicable": False, "reasons": ["init.kind='gaussian'"], "t_R": None, "t_S": None}
    path = tmp_path / "loss.png"
    plot_stage_losses(tiny, [], theory, path)
    assert_png(path)


def test_predicted_times_only_when_applicable(tiny_theory):
    assert predicted_times(None) == {}
    assert predicted_times({"applicable": False, "t_R": 5.0, "t_S": 9.0}) == {}
    marks = predicted_times(tiny_theory)
    assert sorted(marks.values()) == pytest.approx(sorted([tiny_theory["t_R"], tiny_theory["t_S"]]))


def test_plot_losses_keeps_its_behaviour_without_the_new_options(tmp_path, tiny):
    path = tmp_path / "plain.png"
    plot_losses([("flow", tiny)], tiny.levels, path, title="plain")
    assert_png(path)


def test_fact_order_sorts_by_learning_time_with_nan_last():
    learning_time = np.array([[30.0, np.nan], [10.0, 20.0], [np.nan, 10.0]])
    order = fact_order(learning_time)
    # flat indices s·R + r; equal times keep (s, r) order; never-learned facts last, in (s, r) order
    assert order.tolist() == [2, 5, 3, 0, 1, 4]
    assert fact_order(np.full((2, 2), np.nan)).tolist() == [0, 1, 2, 3]
    times = learning_time.ravel()[order]
    finite = times[np.isfinite(times)]
    assert np.all(np.diff(finite) >= 0)


def test_fact_heatmap_png(tmp_path, tiny):
    S, R = tiny.facts.shape
    rng = np.random.default_rng(0)
    learning_time = rng.uniform(20, 80, size=(S, R))
    learning_time[0, 1] = np.nan
    path = tmp_path / "facts.png"
    plot_fact_heatmap(tiny, learning_time, path)
    assert_png(path)
    all_nan = tmp_path / "facts_nan.png"
    plot_fact_heatmap(tiny, np.full((S, R), np.nan), all_nan)
    assert_png(all_nan)
    with pytest.raises(ValueError, match="learning_time"):
        plot_fact_heatmap(tiny, np.zeros((S + 1, R)), tmp_path / "bad.png")


def test_fact_fractions_png(tmp_path, tiny):
    relation_known = tiny.p_relation > 0.5
    recalled_each = tiny.p_correct > 0.5
    recalled = recalled_each.mean((1, 2))
    hallucinating = (relation_known & ~recalled_each).mean((1, 2))
    uninformed = 1.0 - recalled - hallucinating
    path = tmp_path / "fractions.png"
    plot_fact_fractions(tiny.t, uninformed, hallucinating, recalled, path)
    assert_png(path)
    with pytest.raises(ValueError, match="recalled"):
        plot_fact_fractions(tiny.t, uninformed, hallucinating, recalled[:-1], tmp_path / "bad.png")


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
