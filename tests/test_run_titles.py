"""The figures' titles say what ran: the geometry or optimizer, the model, the start and the data regime,
and the run's status only where it did not end ok (simulate's _title)."""

from __future__ import annotations

import pytest
from figures import assert_readable, capture_figures, legend_labels

from analysis.plotting import run_title as _title
from dynamics.config import resolve_config
from dynamics.records import RunInfo


def _info(status: str = "ok", at: float | None = None) -> RunInfo:
    return RunInfo(kind="flow", status=status, status_time=at, message="", final_loss=0.1, num_params=10,
                   cost=None)


class _Traj:
    def __init__(self, info: RunInfo):
        self.info = info


@pytest.mark.parametrize("overrides,name,words", [
    ({}, "flow", ["gradient flow: S=16 R=4 D=8", "reduced model, linear attention",
                  "constant init of scale 1e-05"]),
    ({"init.kind": "manifold", "init.alpha": 0.02, "init.beta": 0.03, "task.noise_tokens": 0,
      "task.seq_len": 3}, "flow", ["manifold start α₀=0.02 β₀=0.03"]),
    ({"flow.geometry": "sign", "flow.geometry_eps": 1e-4}, "flow", ["sign flow ε=0.0001:"]),
    ({"flow.modified_lr": 0.1}, "flow", ["gradient flow (GD's modified flow, lr=0.1)"]),
    ({"train.optimizer": "sgd", "train.lr": 0.2}, "train", ["sgd lr=0.2 batch 1024:"]),
    ({"train.optimizer": "gd", "train.lr": 0.2}, "train", ["gd lr=0.2:"]),
    ({"model.kind": "transformer", "model.heads": 4, "model.head_dim": 8, "model.mlp_width": 32,
      "loss.kind": "sampled", "model.attention": "softmax"}, "flow",
     ["transformer model", "4 heads of 8", "MLP width 32"]),
    ({"model.kind": "embedded", "model.dim": 64}, "flow", ["embedded model", "orthonormal embeddings d=64"]),
    ({"data.zipf": 0.5, "data.zipf_end": 1.0}, "flow", ["Zipf 0.5→1"]),
    ({"data.holdout": 2}, "flow", ["2 held out"]),
    ({"model.kind": "embedded", "model.embeddings": "gaussian", "model.dim": 32, "loss.kind": "sampled",
      "loss.samples": 2048}, "flow", ["gaussian embeddings d=32", "loss on 2048 sampled sequences"]),
])
def test_the_title_says_what_ran(overrides, name, words):
    title = _title(resolve_config("figure5", overrides=overrides), name, _Traj(_info()))
    for word in words:
        assert word in title, (word, title)
    assert "[ok]" not in title


def test_the_title_gives_a_status_that_is_not_ok_with_its_time():
    title = _title(resolve_config("figure5"), "flow", _Traj(_info("nonfinite", 12.5)))
    assert title.startswith("gradient flow [nonfinite at t=12.5]: ")


def test_every_run_figure_carries_the_runs_title(tmp_path, monkeypatch):
    """loss.png, facts.png and fractions.png each say what ran (the title simulate builds), and what they
    show; fractions.png's y range has a margin so a fraction at 0 or 1 is not under the frame."""
    import analysis.stages.plots as plots
    from analysis.stages import analyse_trajectory
    from dynamics.run import run_flow

    config = resolve_config("tiny", overrides={"flow.t_max": 200.0, "flow.points": 24})
    traj = run_flow(config)
    drawn = capture_figures(monkeypatch, plots)
    analyse_trajectory(traj, config, tmp_path, title=_title(config, "flow", traj))
    titles = [fig.axes[0].get_title() for fig in drawn]
    assert len(titles) == 3 and all("gradient flow: S=4 R=2" in title for title in titles), titles
    assert titles[1].startswith("p(a*) of every fact") and titles[2].startswith("facts uninformed")
    low, high = drawn[2].axes[0].get_ylim()
    assert low < 0.0 and high > 1.0
    for fig in drawn:
        assert_readable(fig)


def test_the_flow_and_training_overlay_says_what_trained_and_keeps_the_theory(tmp_path, monkeypatch):
    """simulate --train's loss.png: the optimizer with its lr and batch size in the title, the theory's t_R
    and t_S marked as on the flow's own figure, and it reads on its own."""
    import analysis.stages.plots as plots
    from analysis.simulate import simulate

    config = resolve_config("tiny", overrides={"flow.t_max": 200.0, "flow.points": 24, "train.lr": 0.2,
                                               "train.optimizer": "sgd", "train.batch_size": 64})
    drawn = capture_figures(monkeypatch, plots)
    simulate(config, tmp_path / "run", train=True)
    overlay = drawn[-1]
    assert overlay.axes[0].get_title().startswith("flow vs sgd lr=0.2 batch 64: S=4 R=2")
    assert any(label.startswith("t_R (theory)") for label in legend_labels(overlay.axes[0]))
    for fig in drawn:
        assert_readable(fig)


def test_the_flow_bar_shows_the_flow_time_and_an_eta(capsys):
    """simulate's bar: the flow time reached in its description, the wall time and the time left."""
    from dynamics.progress import log_progress_bar

    update, close = log_progress_bar(1e-2, 1e2, "flow", mininterval=0.0)  # draw at every update
    update(1.0)  # half way in log t
    close()
    err = capsys.readouterr().err
    assert "flow t=1:" in err and "50%" in err and "ETA " in err and "|, t=" not in err


def test_stages_redraws_a_run_directory_with_the_runs_own_title(tmp_path, monkeypatch):
    """factrecall stages RUN_DIR redraws loss.png, facts.png and fractions.png with the title simulate
    gave them (it wrote 'RUN_DIR: run', which says nothing of what ran)."""
    import analysis.stages.plots as plots
    from analysis.simulate import simulate
    from analysis.stages.report import analyse_run_directory

    config = resolve_config("tiny", overrides={"flow.t_max": 200.0, "flow.points": 24})
    simulate(config, tmp_path / "run")
    drawn = capture_figures(monkeypatch, plots)
    analyse_run_directory(tmp_path / "run")
    assert len(drawn) == 3
    assert drawn[0].axes[0].get_title().startswith("gradient flow: S=4 R=2 D=2")


def test_a_long_title_is_wrapped_and_its_figure_makes_room_for_it():
    """The transformer's setting line is longer than a run figure is wide: it is broken after a comma and
    the top margin grows with the lines, so that no title line leaves the figure."""
    from matplotlib.figure import Figure

    from analysis.plotting import run_figure, set_run_title

    config = resolve_config("figure5_transformer")
    title = _title(config, "train", _Traj(_info()))
    assert all(len(line) <= 105 for line in title.split("\n")) and title.count("\n") >= 2
    fig = run_figure(8.3, 4.2)
    assert isinstance(fig, Figure)
    ax = fig.subplots()
    ax.plot([1, 2], [0.5, 1.5], label="curve")
    ax.legend()
    set_run_title(ax, title)
    assert_readable(fig)
