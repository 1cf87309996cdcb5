"""Where the first-order theory is shown: only where its assumptions hold (``theory_applies`` decides).

Every run kind that the theory does not describe (sign and spectral flows, data schedules, fine-tuning,
Adam / signSGD / Muon runs, frozen blocks, the transformer) gets no t_R, t_S, ratio, predicted line in
``loss.png`` nor ``theory_*`` sweep value, and one line ``theory: not applicable (<reason>)`` instead;
``stages.json`` records the reason.
"""

from __future__ import annotations

import json

import pytest

from analysis.simulate import simulate
from analysis.stages import analyse_trajectory, format_stage_table, theory_applies, theory_for
from analysis.stages import plots as stage_plots
from analysis.sweep import plots as sweep_plots
from analysis.sweep.run import summarise
from dynamics import FactTask, resolve_config, run_flow, run_training
from dynamics.records import RunInfo, TrainInfo
from dynamics.solvers.results import Cost, Status

NUMBERS = ("sigma_r", "sigma_s", "t_R", "t_S", "relation_first")


def tiny(**overrides):
    return resolve_config("tiny", overrides=overrides)


def info(kind: str = "flow", optimizer: str | None = None, phases=None, old_subjects=None) -> RunInfo:
    return RunInfo(kind=kind, status=Status.OK, status_time=None, message="", final_loss=0.0, num_params=1,
                   cost=Cost(), train=None if optimizer is None else TrainInfo(optimizer=optimizer, lr=0.1),
                   phases=phases or [], old_subjects=old_subjects)


@pytest.mark.parametrize("overrides, needle", [
    ({"flow.geometry": "sign", "flow.geometry_eps": 1e-4}, "flow.geometry='sign'"),
    ({"flow.geometry": "spectral", "flow.geometry_eps": 1e-4}, "flow.geometry='spectral'"),
    ({"data.zipf": 0.75}, "data.zipf=0.75"),
    ({"data.zipf_end": 1.0}, "data.zipf_end=1.0"),
    ({"data.zipf": 0.5, "data.zipf_end": 0.0}, "data.zipf_end=0.0"),
    ({"data.warmup_subjects": 0.5, "data.warmup_time": 50.0}, "data.warmup_subjects=0.5"),
    ({"data.holdout": 1}, "data.holdout=1"),
    ({"data.freeze": "a"}, "data.freeze='a'"),
    ({"init.from_run": "runs/old"}, "init.from_run='runs/old'"),
    ({"model.kind": "transformer", "model.dim": 16, "model.heads": 2, "model.head_dim": 4,
      "model.mlp_width": 8, "loss.kind": "sampled", "model.attention": "softmax"},
     "model.kind='transformer'"),
])
def test_run_kinds_outside_the_theory_are_named(overrides, needle):
    config = tiny(**overrides)
    applies, reason = theory_applies(config)
    assert applies is False and needle in reason
    task = FactTask(config.task)
    theory = theory_for(config, task.facts, task.fact_weights)
    assert theory["applicable"] is False and needle in theory["reason"]
    assert all(theory[key] is None for key in NUMBERS)


@pytest.mark.parametrize("overrides", [{}, {"data.zipf": 0.0}, {"data.zipf": 0.0, "data.zipf_end": 0.0},
                                       {"flow.modified_lr": 0.1}])
def test_the_plain_flow_and_its_equivalents_keep_the_theory(overrides):
    # a trained exponent of 0 is the task's uniform frequencies; GD's modified flow agrees with the
    # gradient flow to first order
    assert theory_applies(tiny(**overrides)) == (True, "")


def test_discrete_runs_other_than_gd_and_sgd_are_outside():
    config = tiny()
    for optimizer in ("gd", "sgd"):
        assert theory_applies(config, info=info("train", optimizer)) == (True, "")
    for optimizer in ("adam", "signsgd", "muon", "muon_svd"):
        applies, reason = theory_applies(config, info=info("train", optimizer))
        assert not applies and f"train.optimizer={optimizer!r}" in reason
    # the flow's geometry is not the discrete run's: an SGD run beside a sign flow keeps the theory
    signed = tiny(**{"flow.geometry": "sign", "flow.geometry_eps": 1e-4})
    assert theory_applies(signed, info=info("train", "sgd")) == (True, "")
    assert not theory_applies(signed, info=info("flow"))[0]


def test_the_record_of_a_schedule_or_a_fine_tune_is_read_too():
    # a schedule passed to run_flow from Python, or a start from another run, shows in the record only
    config = tiny()
    S = config.task.subjects
    plain = [{"start": 0.0, "end": None, "subjects": [0, S], "replay": 0.0, "zipf": 0.0, "zipf_end": None}]
    assert theory_applies(config, info=info(phases=plain)) == (True, "")
    two = [dict(plain[0], end=10.0, subjects=[0, 2]), dict(plain[0], start=10.0)]
    applies, reason = theory_applies(config, info=info(phases=two))
    assert not applies and "phases" in reason
    applies, reason = theory_applies(config, info=info(old_subjects=2))
    assert not applies and reason.startswith("a start from another run of 2 subjects")


@pytest.fixture(scope="module")
def sign_run(tmp_path_factory):
    """A sign flow of the tiny task that ends at t = 5 (the theory's t_R = 27.6 would lie far beyond)."""
    config = tiny(**{"flow.geometry": "sign", "flow.geometry_eps": 1e-4, "flow.t_max": 5.0})
    out = tmp_path_factory.mktemp("sign") / "run"
    return config, out, simulate(config, out)["flow"]


def test_a_sign_flow_prints_draws_and_records_no_theory(sign_run, tmp_path, monkeypatch):
    config, out, run = sign_run
    table = format_stage_table("flow", run.stages)
    assert "ratio" not in table and "theory t_R" not in table
    lines = [line for line in table.splitlines() if "theory" in line]
    assert lines == ["  theory: not applicable (" + theory_applies(config)[1] + ")"]
    stored = json.loads((out / "stages.json").read_text())["theory"]
    assert "flow.geometry='sign'" in stored["prediction"]["reason"]
    assert stored["prediction"]["t_R"] is None and stored["ratio"]["relation_ratio"] is None
    drawn = []
    real = stage_plots.plot_losses
    monkeypatch.setattr(stage_plots, "plot_losses",
                        lambda *a, **k: drawn.append(k["predicted"]) or real(*a, **k))
    analyse_trajectory(run.trajectory, config, tmp_path)
    assert drawn == [{}]  # no predicted line: the x axis ends with the run, not at t_S = 55


def test_the_figure5_like_tiny_flow_still_gets_its_numbers(tmp_path, monkeypatch):
    config = tiny(**{"flow.t_max": 50.0, "flow.points": 16})
    drawn = []
    real = stage_plots.plot_losses
    monkeypatch.setattr(stage_plots, "plot_losses",
                        lambda *a, **k: drawn.append(k["predicted"]) or real(*a, **k))
    payload = analyse_trajectory(run_flow(config), config, tmp_path)
    assert payload["theory"]["prediction"]["applicable"] is True
    assert "theory t_R" in format_stage_table("flow", payload)
    assert sorted(drawn[0]) == ["t_R (theory)", "t_S (theory)"]


def test_an_adam_run_prints_no_theory(tmp_path):
    config = tiny(**{"train.optimizer": "adam", "train.lr": 0.01, "train.steps": 50, "train.batch_size": 16})
    payload = analyse_trajectory(run_training(config), config, tmp_path)
    assert payload["theory"]["prediction"]["applicable"] is False
    assert "train.optimizer='adam'" in format_stage_table("train", payload)


def test_sweep_rows_leave_the_theory_columns_empty_where_it_does_not_apply(sign_run):
    config, _, run = sign_run
    row = summarise({"flow.geometry": "sign"}, config, run.trajectory, None, 0.0)
    assert row["theory_applicable"] is False and "flow.geometry='sign'" in row["theory_reason"]
    for column in ("theory_t_R", "theory_t_S", "theory_plateau_length", "theory_relation_first"):
        assert row[column] is None, column
    # an unbalanced table (S = 2 < D = 4) has no escape times, but the run is one the rates describe: its
    # relation-first boundary is still set beside the measured order in phase diagrams
    small = tiny(**{"task.subjects": 2, "task.answers_per_relation": 4, "flow.t_max": 50.0,
                    "flow.points": 16})
    row = summarise({}, small, run_flow(small), None, 0.0)
    assert row["theory_applicable"] is False and "unbalanced" in row["theory_reason"]
    assert row["theory_t_R"] is None and row["theory_relation_first"] is False
    plain = tiny(**{"flow.t_max": 50.0, "flow.points": 16})
    row = summarise({}, plain, run_flow(plain), None, 0.0)
    assert row["theory_applicable"] is True and row["theory_reason"] is None
    assert row["theory_relation_first"] is not None and row["theory_t_R"] > 0


def test_sweep_heatmap_outlines_no_cell_where_the_theory_does_not_apply(tmp_path, monkeypatch):
    outlined = []
    monkeypatch.setattr(sweep_plots, "_rect", lambda j, i: outlined.append((j, i)) or
                        __import__("matplotlib.patches").patches.Rectangle((j, i), 1, 1, fill=False))
    rows = [{"task.subjects": str(S), "task.relations": "2", "plateau_length": "1.0",
             "theory_applicable": "False", "theory_relation_first": ""} for S in (8, 16)]
    rows[1]["theory_relation_first"] = "True"  # applies at S = 16: only that cell is outlined
    sweep_plots.plot_heatmap(rows, "task.subjects", "task.relations", "plateau_length", tmp_path / "h.png")
    assert outlined == [(1, 0)]  # relation_first(8, 2, 8) holds too, but no theory describes that run


def test_sweep_lines_draw_no_theory_where_no_row_has_one(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(sweep_plots, "save", lambda fig, path: figures.append(fig))
    rows = [{"flow.geometry_eps": str(eps), "plateau_length": str(eps), "theory_plateau_length": ""}
            for eps in (1e-4, 1e-3, 1e-2)]
    sweep_plots.plot_lines(rows, "flow.geometry_eps", ["plateau_length"], tmp_path / "l.png")
    for row, value in zip(rows, (5.0, 6.0, 7.0), strict=True):
        row["theory_plateau_length"] = str(value)
    sweep_plots.plot_lines(rows, "flow.geometry_eps", ["plateau_length"], tmp_path / "l.png")
    without, with_theory = (fig.axes[0] for fig in figures)
    assert len(without.get_lines()) == 1 and without.get_legend() is None
    assert [line.get_label() for line in with_theory.get_lines()][1:] == ["theory"]
