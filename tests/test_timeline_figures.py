"""timeline.png reads on its own: panel titles, the phase start in the legend, reference levels named in the
margin without overlapping (equal levels share one label), y margins; and the data-over-time study's
figure, drawn from stored results, says what ran and keeps SGD's markers beside the flow's."""

from __future__ import annotations

import numpy as np
from figures import assert_readable, capture_figures, legend_labels

import analysis.timeline.plots as timeline_plots
from analysis.plotting import label_levels
from analysis.plotting import run_title as _title
from analysis.timeline import analyse_timeline
from dynamics import resolve_config, run_flow


def test_timeline_png_reads_on_its_own(tmp_path, monkeypatch):
    config = resolve_config("tiny", overrides={"data.holdout": 1, "data.warmup_time": 40.0,
                                               "data.warmup_subjects": 0.5,
                                               "flow.t_max": 300.0, "flow.points": 32})
    traj = run_flow(config)
    drawn = capture_figures(monkeypatch, timeline_plots)
    analyse_timeline(traj, tmp_path, title=_title(config, "flow", traj))
    (fig,) = drawn
    assert_readable(fig)
    left, right = fig.axes
    assert "phase start" in legend_labels(left) and "phase start" in legend_labels(right)
    assert fig._suptitle.get_text().startswith("gradient flow: S=4 R=2") and "1 held out" in \
        fig._suptitle.get_text()
    margin = [t.get_text() for t in right.texts]
    assert any(text.startswith("log|A| = ") for text in margin) and len(margin) == 3


def test_equal_or_close_levels_share_or_spread_their_labels():
    """log D and H(A|R) equal on a task share one label; a level just above them is moved clear of it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.plot([1, 2], [0.1, 2.0], label="curve")
    ax.legend()
    ax.set_title("levels")
    label_levels(ax, {"log D": np.log(2), "H(A|R)": np.log(2), "near": np.log(2) + 0.01, "0": 0.0})
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["0 = 0.000", "log D = H(A|R) = 0.693", "near = 0.703"]
    fig.subplots_adjust(right=0.6)
    assert_readable(fig)
