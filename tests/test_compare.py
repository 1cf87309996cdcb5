"""``factrecall compare`` (docs/design.md §4.3, §4.5): the flow against GD, SGD and Adam from the same θ(0).

Acceptance on ``figure5``:
* GD against the flow converges at first order in lr, against GD's modified flow at second order (fitted
  over lr 0.4, 0.2, 0.1 on the full preset, t ≤ 819.2);
* SGD lr 0.1 batch 1024 stays within 0.05 of the flow's loss, and the deviation grows as the batch shrinks
  (batch 64 against 1024, two seeds each). Run to t = 300 to keep time down: that covers the first stage
  boundary (init → hallucination at t ≈ 168), where the deviation peaks (max |ΔL| at lr 0.1 is 0.034 on
  this grid, 0.031 on the full preset's);
* a learning rate beyond 2/λ_max that goes non-finite is reported with its status and step while the
  other runs finish and everything is saved. GD on figure5 never goes non-finite (cross-entropy saturates),
  so this uses ``tiny`` from a Gaussian init of scale 1, where lr 5 (lr·λ_max ≈ 19) overflows at step 302.

Then the outputs (strict JSON, tidy CSV, figures), the CLI and its bad input, and unit tests of the measures
on hand-made data.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from figures import assert_png, assert_readable, capture_figures

import analysis.compare.command as compare_command
from analysis.cli import main
from analysis.compare import (
    FIGURES,
    ComparedRun,
    CompareSpec,
    Comparison,
    Orders,
    compare,
    deviation_measures,
    fitted_order,
    format_summary,
    plot_comparison,
    run_compare,
    save_comparison,
    stage_shifts,
    tidy_rows,
)
from analysis.stages import detect_stages
from dynamics.config import ConfigError, TaskConfig, resolve_config
from dynamics.errors import RunError
from dynamics.task import FactTask
from dynamics.trajectory import Trajectory

CSV_COLUMNS = ["run", "optimizer", "lr", "batch_size", "seed", "t", "loss", "relation_loss", "subject_loss",
               "flow_loss", "loss_deviation", "param_distance"]


def by_name(result: Comparison) -> dict[str, ComparedRun]:
    return {r.name: r for r in result.runs}


def strict_json(path: Path):
    """Parse JSON refusing NaN and ±Infinity (Python's json accepts them by default; strict JSON does not)."""
    def refuse(token: str):
        raise ValueError(f"non-standard JSON constant {token} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


# --------------------------------------------------------------------------------------------------
# Acceptance: GD on figure5 — orders of convergence against the flow and the modified flow
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def figure5_gd() -> Comparison:
    return compare(resolve_config("figure5"), CompareSpec(lrs=(0.4, 0.2, 0.1), optimizers=("gd",)))


def test_gd_order_against_flow_is_one_and_against_modified_flow_is_two(figure5_gd):
    orders = figure5_gd.orders
    assert sorted(orders.gd_lrs) == [0.1, 0.2, 0.4]  # fitted over three learning rates
    assert 0.9 <= orders.gd_vs_flow <= 1.1
    assert 1.8 <= orders.gd_vs_modified_flow <= 2.2
    for run in figure5_gd.runs:
        assert run.status == "ok" and not run.diverged
        assert run.predicted_stable and run.lr_times_sharpness < 2
        # the modified flow is the better description by far: second order against first
        assert run.max_loss_deviation_modified < 0.05 * run.max_loss_deviation


def test_gd_deviation_magnitudes_on_figure5(figure5_gd):
    runs = {r.lr: r for r in figure5_gd.runs}
    # the prototype's numbers (t ≤ 800): 3.3e-2 from the flow, 1.6e-4 from the modified flow at lr 0.1
    assert 0.02 < runs[0.1].max_loss_deviation < 0.05
    assert 5e-5 < runs[0.1].max_loss_deviation_modified < 5e-4
    # parameter distance and stage-boundary shifts shrink with lr, like the loss deviation
    distances = [runs[lr].max_param_distance for lr in (0.4, 0.2, 0.1)]
    assert distances == sorted(distances, reverse=True) and distances[-1] < 0.1
    flow_boundaries = {f"{t['from']}->{t['to']}" for t in figure5_gd.flow_stages.transitions}
    assert flow_boundaries == {"init->hallucination", "hallucination->recall"}
    for boundary in flow_boundaries:
        shifts = [runs[lr].stage_shift[boundary] for lr in (0.4, 0.2, 0.1)]
        assert all(s is not None and 0 < s < 0.05 for s in shifts)  # GD lags the flow, a little
        assert 3.0 < shifts[0] / shifts[2] < 5.0  # first order: 4× the lr, about 4× the shift


def test_sharpness_along_figure5_flow(figure5_gd):
    lam = np.asarray(figure5_gd.sharpness)
    assert figure5_gd.sharpness_t[0] == 0.0 and len(lam) == len(figure5_gd.sharpness_t)
    assert np.all(np.isfinite(lam)) and np.all(lam > 0)
    # at θ ≈ 0 λ_max is σ_r = (1/R) sqrt(1/D − 1/(RD)) ≈ 0.0765 (θ(0) = 1e-5, not exactly 0); the peak
    # sits past the first escape, around 0.5
    assert lam[0] == pytest.approx(math.sqrt(1 / 8 - 1 / 32) / 4, rel=0.05)
    assert 0.3 < figure5_gd.max_sharpness < 0.8
    assert figure5_gd.stable_lr_bound == pytest.approx(2 / figure5_gd.max_sharpness)
    for run in figure5_gd.runs:
        assert run.lr_times_sharpness == pytest.approx(run.lr * figure5_gd.max_sharpness)


# --------------------------------------------------------------------------------------------------
# Acceptance: SGD on figure5 — within 0.05 of the flow at batch 1024, further off as the batch shrinks
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def figure5_sgd() -> Comparison:
    config = resolve_config("figure5", overrides={"flow.t_max": 300.0})
    spec = CompareSpec(lrs=(0.1,), optimizers=("sgd",), batch_sizes=(64, 1024), seeds=2, modified_flow=False)
    return compare(config, spec)


def test_sgd_run_covers_the_first_transition(figure5_sgd):
    transitions = figure5_sgd.flow_stages.transitions
    assert [(t["from"], t["to"]) for t in transitions] == [("init", "hallucination")]
    assert 150 < transitions[0]["t"] < 190 < 300


def test_sgd_batch_1024_stays_within_0_05_of_the_flow(figure5_sgd):
    big = [r for r in figure5_sgd.runs if r.batch_size == 1024]
    assert len(big) == 2
    for run in big:
        assert run.status == "ok"
        assert run.max_loss_deviation < 0.05
        assert abs(run.stage_shift["init->hallucination"]) < 0.02
        assert np.all(run.loss_deviation <= run.max_loss_deviation)


def test_sgd_deviation_grows_as_the_batch_shrinks(figure5_sgd):
    groups = {g.batch_size: g for g in figure5_sgd.groups}
    assert set(groups) == {64, 1024} and all(g.runs == 2 and g.diverged == 0 for g in groups.values())
    assert groups[64].mean_max_loss_deviation > groups[1024].mean_max_loss_deviation
    # cleanly: every batch-64 seed is further off than every batch-1024 seed
    assert groups[64].min_max_loss_deviation > groups[1024].max_max_loss_deviation
    runs = figure5_sgd.runs

    def mean_distance(batch: int) -> float:
        return float(np.mean([r.max_param_distance for r in runs if r.batch_size == batch]))

    assert mean_distance(64) > 1.5 * mean_distance(1024)  # the noise shows more in θ than in the loss
    # ... and the table shows it: one line per (lr, batch) with the mean and the band over seeds
    table = format_summary(figure5_sgd.to_dict())
    lines = {b: next(line for line in table.splitlines() if f"batch={b}:" in line) for b in (64, 1024)}
    for batch, line in lines.items():
        assert f"{groups[batch].mean_max_loss_deviation:.3g}" in line and "over 2 seeds" in line


# --------------------------------------------------------------------------------------------------
# Acceptance: a diverging learning rate is reported, the rest finishes and is saved
# --------------------------------------------------------------------------------------------------

DIVERGING = {"init.kind": "gaussian", "init.scale": 1.0, "flow.t_max": 1600.0}


@pytest.fixture(scope="module")
def diverging(tmp_path_factory) -> tuple[Comparison, Path, str]:
    out = tmp_path_factory.mktemp("diverging") / "cmp"
    config = resolve_config("tiny", overrides=DIVERGING)
    spec = CompareSpec(lrs=(5.0, 0.5), optimizers=("gd", "sgd"), batch_sizes=(16,), seeds=2)
    result = compare(config, spec)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        save_comparison(result, out)
    return result, out, printed.getvalue()


def test_diverging_lr_is_reported_with_its_step(diverging):
    result, _, _ = diverging
    runs = by_name(result)
    bound = result.stable_lr_bound
    assert 0.5 < bound < 5.0  # lr 5 is beyond 2/λ_max, lr 0.5 inside
    for name in ("gd_lr5", "sgd_lr5_b16_s0", "sgd_lr5_b16_s1"):
        run = runs[name]
        assert run.diverged is True and run.status == "nonfinite"
        assert isinstance(run.status_step, int) and 0 < run.status_step < run.steps + 1
        assert run.status_time == pytest.approx(run.status_step * 5.0)
        assert run.lr_times_sharpness > 2 and run.predicted_stable is False
        if run.optimizer == "gd":
            assert run.max_loss_deviation_modified is None  # no modified flow beyond the margin
        traj = run.trajectory
        assert traj.t[-1] < run.status_time and np.all(np.isfinite(traj.loss))  # the finite part is kept
    assert runs["gd_lr5"].status_step == 302
    assert runs["gd_lr5"].first_loss_increase_step == 1  # it left the flow long before overflowing
    # the seeds of SGD overflow at different steps: each keeps its own
    assert runs["sgd_lr5_b16_s0"].status_step != runs["sgd_lr5_b16_s1"].status_step
    for name in ("gd_lr0.5", "sgd_lr0.5_b16_s0", "sgd_lr0.5_b16_s1"):
        run = runs[name]
        assert run.status == "ok" and run.diverged is False and run.steps == 3200
        assert run.predicted_stable and math.isfinite(run.max_loss_deviation)
        assert run.trajectory.t[-1] == pytest.approx(1600.0)
    # lr·λ_max = 1.93, at the edge of the margin: still close to the flow, but no longer second order
    assert runs["gd_lr0.5"].lr_times_sharpness < 2 and runs["gd_lr0.5"].max_loss_deviation < 0.2
    assert runs["gd_lr0.5"].max_loss_deviation_modified is not None
    # only stable, finished GD runs enter the fit: one lr, so no order
    assert result.orders == Orders(gd_lrs=[0.5], gd_vs_flow=None, gd_vs_modified_flow=None)
    group = next(g for g in result.groups if g.lr == 5.0)
    assert group.diverged == 2 and group.mean_max_loss_deviation is None


def test_diverging_comparison_is_saved_in_full(diverging):
    result, out, printed = diverging
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "compare.json", "compare.csv", *FIGURES}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging directory left
    payload = strict_json(out / "compare.json")
    saved = {r["name"]: r for r in payload["runs"]}
    assert saved["gd_lr5"]["status"] == "nonfinite" and saved["gd_lr5"]["status_step"] == 302
    assert saved["gd_lr5"]["diverged"] is True and saved["gd_lr0.5"]["status"] == "ok"
    with open(out / "compare.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name, run in by_name(result).items():
        assert sum(r["run"] == name for r in rows) == len(run.trajectory.t)
    # the summary line names the status and the step
    line = next(line for line in printed.splitlines() if line.strip().startswith("gd_lr5 "))
    assert "nonfinite@302" in line
    assert f"wrote {out}" in printed


def test_flow_without_stage_boundary_still_plots(diverging, tmp_path):
    result, _, _ = diverging
    assert result.flow_stages.transitions == []  # a Gaussian init of scale 1: no plateau
    plot_comparison(result, tmp_path)
    for name in FIGURES:
        assert_png(tmp_path / name)


# --------------------------------------------------------------------------------------------------
# Outputs and the CLI
# --------------------------------------------------------------------------------------------------

CLI = ["compare", "--preset", "tiny", "--lrs", "0.4,0.2", "--optimizers", "gd,sgd", "--batch-sizes", "64",
       "--seeds", "1", "--quiet"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[int, str, str, Path]:
    out = tmp_path_factory.mktemp("cli") / "cmp"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([*CLI, "--out", str(out)])
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_cli_compare_writes_everything(cli_run):
    code, stdout, stderr, out = cli_run
    assert code == 0, stderr
    assert stderr == ""  # --quiet: no progress lines
    assert {p.name for p in out.iterdir()} == {"config.json", "compare.json", "compare.csv", *FIGURES}
    for name in FIGURES:
        assert_png(out / name)
    assert "GD order of convergence" in stdout and f"wrote {out}" in stdout
    for name in ("gd_lr0.4", "gd_lr0.2", "sgd_lr0.4_b64_s0", "sgd_lr0.2_b64_s0"):
        assert name in stdout


def test_compare_json_is_strict_and_complete(cli_run):
    *_, out = cli_run
    text = (out / "compare.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    payload = strict_json(out / "compare.json")
    assert set(payload) == {"config", "spec", "flow", "runs", "groups", "orders"}
    assert not any(key.startswith("_") for key in payload["flow"])
    assert payload["config"] == json.loads((out / "config.json").read_text())
    assert payload["spec"]["lrs"] == [0.4, 0.2] and payload["spec"]["optimizers"] == ["gd", "sgd"]
    assert [r["name"] for r in payload["runs"]] == ["gd_lr0.4", "gd_lr0.2", "sgd_lr0.4_b64_s0",
                                                    "sgd_lr0.2_b64_s0"]
    for run in payload["runs"]:
        assert not any(key.startswith("_") for key in run)
        for key in ("max_loss_deviation", "max_fact_deviation", "max_param_distance", "lr_times_sharpness",
                    "status", "status_step", "diverged", "stage_shift", "stages", "first_loss_increase_step"):
            assert key in run
        assert run["status"] == "ok" and run["status_step"] is None
        assert run["max_fact_deviation"] >= run["max_loss_deviation"] > 0  # the mean is at most the max
        assert ("max_loss_deviation_modified" in run) == (run["optimizer"] == "gd")
    assert payload["orders"]["gd_lrs"] == [0.4, 0.2]
    assert 0.8 < payload["orders"]["gd_vs_flow"] < 1.2
    assert 1.6 < payload["orders"]["gd_vs_modified_flow"] < 2.4


def test_compare_csv_is_tidy(cli_run):
    *_, out = cli_run
    with open(out / "compare.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    payload = strict_json(out / "compare.json")
    runs = ["flow"] + [r["name"] for r in payload["runs"]]
    assert list(dict.fromkeys(r["run"] for r in rows)) == runs  # grouped: one block per run
    config = resolve_config("tiny")
    for run in payload["runs"]:
        block = [r for r in rows if r["run"] == run["name"]]
        times = np.array([float(r["t"]) for r in block])
        assert np.all(np.diff(times) > 0) and times[0] == 0.0
        steps = times / run["lr"]
        assert np.allclose(steps, np.round(steps))  # recorded at t = k·lr
        assert times[-1] == pytest.approx(config.flow.t_max)
        assert {r["optimizer"] for r in block} == {run["optimizer"]}
        assert {float(r["lr"]) for r in block} == {run["lr"]}
        batch = "" if run["batch_size"] is None else str(run["batch_size"])
        assert {r["batch_size"] for r in block} == {batch}
        loss, flow_loss, deviation = (np.array([float(r[k]) for r in block])
                                      for k in ("loss", "flow_loss", "loss_deviation"))
        assert np.allclose(deviation, np.abs(loss - flow_loss), rtol=0, atol=1e-12)
        assert deviation.max() == pytest.approx(run["max_loss_deviation"], rel=1e-12)
        distance = np.array([float(r["param_distance"]) for r in block])
        assert distance[0] == 0.0 and distance.max() == pytest.approx(run["max_param_distance"], rel=1e-12)
    flow_block = [r for r in rows if r["run"] == "flow"]
    assert len(flow_block) == config.flow.points
    assert all(float(r["loss_deviation"]) == 0.0 for r in flow_block)


BAD = [
    pytest.param(["--lrs", "abc"], "--lrs", id="lrs-not-numbers"),
    pytest.param(["--lrs", "0.4,-0.1"], "--lrs", id="lrs-negative"),
    pytest.param(["--optimizers", "foo"], "--optimizers", id="unknown-optimizer"),
    pytest.param(["--seeds", "0"], "--seeds", id="zero-seeds"),
    pytest.param(["--seeds", "x"], "--seeds", id="seeds-not-int"),
    pytest.param(["--batch-sizes", "0"], "--batch-sizes", id="zero-batch"),
]


@pytest.mark.parametrize("extra, flag", BAD)
def test_cli_compare_bad_input_exits_2_with_one_line(extra, flag, tmp_path, capsys):
    out = tmp_path / "runs" / "cmp"
    (tmp_path / "runs").mkdir()
    argv = ["compare", "--preset", "tiny", "--out", str(out), "--quiet", *extra]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip("\n").splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in captured.err
    assert captured.out == ""
    assert not out.exists() and list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("below", [False, True], ids=["out-is-a-file", "out-below-a-file"])
def test_cli_compare_refuses_an_out_path_before_running(below, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "cmp" if below else tmp_path / "file"

    def never(*args, **kwargs):
        raise AssertionError("compare ran although --out was refused")

    monkeypatch.setattr(compare_command, "compare", never)
    assert main(["compare", "--preset", "tiny", "--out", str(out), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip("\n").splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and str(out) in lines[0]


def test_cli_compare_run_error_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    def stopped(*args, **kwargs):
        raise RunError("flow stopped early (nonfinite at t = 12.5): the discrete runs have no reference")

    monkeypatch.setattr(compare_command, "compare", stopped)
    out = tmp_path / "cmp"
    assert main(["compare", "--preset", "tiny", "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip("\n").splitlines()
    assert len(lines) == 1 and "flow stopped early" in lines[0] and "Traceback" not in captured.err
    assert not out.exists()


def test_compare_spec_rejects_bad_values():
    with pytest.raises(ConfigError, match="--lrs"):
        CompareSpec(lrs=(0.1, float("nan")))
    with pytest.raises(ConfigError, match="--optimizers"):
        CompareSpec(optimizers=())
    with pytest.raises(ConfigError, match="--batch-sizes"):
        CompareSpec(batch_sizes=())


# --------------------------------------------------------------------------------------------------
# Figures with every optimizer, seeds bands and more than one batch size
# --------------------------------------------------------------------------------------------------


def test_figures_with_all_optimizers(tmp_path, monkeypatch):
    """Every compare figure reads on its own (assert_readable: titles naming the task and model, every line
    in a legend or unlabeled by design, y margins, no overlapping text); SGD and Adam are drawn beside GD's
    lr, never on top of GD's markers; Adam's distance is to its own (sign) flow and says so."""
    import analysis.compare.plots as plots

    config = resolve_config("tiny", overrides={"flow.t_max": 40.0, "flow.points": 40})
    spec = CompareSpec(lrs=(0.4, 0.2), optimizers=("gd", "sgd", "adam"), batch_sizes=(32, 128), seeds=2,
                       sharpness_points=8)
    result = compare(config, spec)
    assert len(result.runs) == 2 + 2 * 2 * 2 + 2 * 2 * 2  # Adam at every --batch-sizes, as SGD
    assert {g.optimizer for g in result.groups} == {"sgd", "adam"}
    drawn = capture_figures(monkeypatch, plots)
    plot_comparison(result, tmp_path)
    for name in FIGURES:
        assert_png(tmp_path / name)
    for fig in drawn:
        assert_readable(fig)
        assert "S=4 R=2 D=2" in fig._suptitle.get_text() and "reduced model" in fig._suptitle.get_text()
    loss, order = drawn[0], drawn[1]
    assert [ax.get_ylabel() for ax in loss.axes[3:]] == ["|L_run − L_flow|"] * 2 + ["|L_run − L_sign flow|"]
    ax = order.axes[0]
    gd_x = {x for line in ax.lines if line.get_label().startswith("GD") for x in line.get_xdata()}
    others = [x for container in ax.containers for x in container[0].get_xdata()]
    assert gd_x == {0.2, 0.4} and others and not gd_x & set(others)
    rows = tidy_rows(result)
    expected = len(result.flow.t) + sum(len(r.trajectory.t) for r in result.runs)
    assert len(rows) == expected


def test_table_without_curvature_is_summarised_and_plotted(tmp_path, capsys):
    """R = 1, D = 1: one answer, the loss is 0 from the start, the Hessian vanishes (λ_max = 0, no
    stability bound) and every deviation is 0. The comparison must still finish, print and plot."""
    config = resolve_config("tiny", overrides={"task.relations": 1, "task.answers_per_relation": 1,
                                               "flow.t_max": 20.0, "flow.points": 24})
    out = tmp_path / "flat"
    result = run_compare(config, CompareSpec(lrs=(0.4, 0.2), optimizers=("gd",), sharpness_points=4), out,
                         quiet=True)
    assert abs(result["flow"]["max_sharpness"]) < 1e-12 and result["flow"]["stable_lr_bound"] is None
    assert result["orders"]["gd_vs_flow"] is None  # zero deviations carry no slope
    assert "no stability bound" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= set(FIGURES)
    assert strict_json(out / "compare.json")["flow"]["stable_lr_bound"] is None


# --------------------------------------------------------------------------------------------------
# Unit tests of the measures on hand-made data
# --------------------------------------------------------------------------------------------------


def test_fitted_order_is_exact_on_power_laws():
    lrs = [0.8, 0.4, 0.2, 0.1]
    assert fitted_order(lrs, [3.0 * lr**2 for lr in lrs]) == pytest.approx(2.0, abs=1e-12)
    assert fitted_order(lrs, [0.5 * lr for lr in lrs]) == pytest.approx(1.0, abs=1e-12)
    assert fitted_order(lrs, [7.0 for _ in lrs]) == pytest.approx(0.0, abs=1e-12)
    assert fitted_order([1e-3, 1e-2, 1e-1], [2e-9, 2e-6, 2e-3]) == pytest.approx(3.0, abs=1e-12)


def test_fitted_order_skips_unusable_points():
    lrs = [0.8, 0.4, 0.2, 0.1]
    # None, NaN, inf and zero deviations are left out; the rest still fit exactly
    assert fitted_order(lrs, [None, 0.16, float("nan"), 0.01]) == pytest.approx(2.0, abs=1e-12)
    assert fitted_order(lrs, [0.0, float("inf"), 0.04, 0.01]) == pytest.approx(2.0, abs=1e-12)
    assert fitted_order(lrs, [None, None, None, 0.01]) is None  # fewer than two points: no slope
    assert fitted_order([0.1], [0.01]) is None
    with pytest.raises(ValueError):
        fitted_order([0.1, 0.2], [0.01])  # lengths must match


def make_trajectory(t, loss, *, fact_loss=None, states=None, relation_loss=None, subject_loss=None,
                    task: FactTask | None = None) -> Trajectory:
    """A hand-made trajectory: the given curves, the rest filled in consistently enough for the measures."""
    task = task or FactTask(TaskConfig(subjects=2, relations=2, answers_per_relation=2, noise_tokens=1,
                                       seq_len=4))
    t = np.asarray(t, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    K, (S, R) = len(t), task.facts.shape
    if fact_loss is None:
        fact_loss = np.repeat(loss[:, None, None], S * R, axis=1).reshape(K, S, R)
    fact_loss = np.asarray(fact_loss, dtype=np.float64)
    zeros = np.zeros((K, S, R))
    return Trajectory(t=t, loss=loss,
                      relation_loss=np.zeros(K) if relation_loss is None else np.asarray(relation_loss),
                      subject_loss=np.zeros(K) if subject_loss is None else np.asarray(subject_loss),
                      fact_loss=fact_loss, p_correct=np.exp(-fact_loss), p_relation=zeros + 1.0,
                      p_subject=zeros + 1.0, argmax_class=np.zeros((K, S, R), dtype=np.int8),
                      facts=task.facts.copy(), fact_weights=task.fact_weights.copy(),
                      answers_per_relation=task.D, attention=np.zeros((K, 4)), norms={},
                      states=None if states is None else np.asarray(states, dtype=np.float64))


def test_deviation_measures_on_hand_made_trajectories():
    flow_t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    flow_loss = np.array([2.0, 1.5, 1.0, 0.6, 0.5])
    flow_facts = np.repeat(flow_loss[:, None, None], 4, axis=1).reshape(5, 2, 2)
    flow_states = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    flow = make_trajectory(flow_t, flow_loss, fact_loss=flow_facts, states=flow_states)
    run_facts = flow_facts[[0, 2, 4]].copy()
    run_facts[1, 1, 0] += 0.3  # one fact off by 0.3 at t = 2; the mean is off by 0.3/4 there
    run_loss = flow_loss[[0, 2, 4]] + np.array([0.0, 0.075, -0.02])
    run_states = np.array([[1.0, 0.0], [3.0, 0.3], [0.0, 4.0]])  # relative distances 0, 0.1, 0.2
    run = make_trajectory([0.0, 2.0, 4.0], run_loss, fact_loss=run_facts, states=run_states)
    measures = deviation_measures(run, flow)
    assert measures["max_loss_deviation"] == pytest.approx(0.075)
    assert measures["max_fact_deviation"] == pytest.approx(0.3)
    assert np.allclose(measures["loss_deviation"], [0.0, 0.075, 0.02])
    assert np.allclose(measures["flow_loss"], [2.0, 1.0, 0.5])
    assert np.allclose(measures["param_distance"], [0.0, 0.1, 0.2])
    assert measures["max_param_distance"] == pytest.approx(0.2)
    assert measures["final_param_distance"] == pytest.approx(0.2)
    # without states there is no parameter distance, only the loss measures
    bare = deviation_measures(make_trajectory(run.t, run_loss, fact_loss=run_facts), flow)
    assert "param_distance" not in bare and bare["max_loss_deviation"] == pytest.approx(0.075)
    # a run recorded at a time where the flow was not evaluated is an error, never a silent mismatch
    with pytest.raises(RuntimeError, match="not evaluated"):
        deviation_measures(make_trajectory([0.0, 2.5], [2.0, 1.0]), flow)


def staged_curves(t: np.ndarray, t_first: float, t_second: float) -> dict[str, np.ndarray]:
    """figure5-like curves: log|A| → H(A|R) = log D at t_first (relation learned) → 0 at t_second."""
    log_a, log_d, log_r = math.log(32), math.log(8), math.log(4)

    log_t = np.log(np.maximum(t, 1e-300))

    def step(t0: float) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh((log_t - math.log(t0)) / 0.1))  # a logistic step of width 0.05

    first, second = step(t_first), step(t_second)
    return {"loss": log_a - (log_a - log_d) * first - log_d * second,
            "relation_loss": log_r * (1 - first), "subject_loss": log_d * (1 - second)}


def test_stage_shifts_on_hand_made_curves():
    task = FactTask(TaskConfig())  # figure5's table: log|A| = log 32, H(A|R) = log 8
    t = np.concatenate([[0.0], np.geomspace(0.01, 3000.0, 600)])
    flow = make_trajectory(t, task=task, **staged_curves(t, 170.0, 440.0))
    transitions = detect_stages(flow).transitions
    assert [(tr["from"], tr["to"]) for tr in transitions] == [("init", "hallucination"),
                                                               ("hallucination", "recall")]
    assert transitions[0]["t"] == pytest.approx(170.0, rel=0.02)
    # the same curves on a time axis stretched by 1.1: every boundary 10% late
    late = make_trajectory(1.1 * t, task=task, **staged_curves(t, 170.0, 440.0))
    assert stage_shifts(late, transitions) == pytest.approx(
        {"init->hallucination": 0.1, "hallucination->recall": 0.1}, rel=1e-9)
    # the second boundary alone moved 20% earlier
    early = make_trajectory(t, task=task, **staged_curves(t, 170.0, 0.8 * 440.0))
    shifts = stage_shifts(early, transitions)
    assert shifts["init->hallucination"] == pytest.approx(0.0, abs=1e-5)  # the far tail of the 2nd step
    assert shifts["hallucination->recall"] == pytest.approx(-0.2, rel=0.02)
    # a run without the plateau (relation and subject learned together) misses both flow boundaries
    direct = make_trajectory(t, task=task, **staged_curves(t, 300.0, 300.0))
    assert stage_shifts(direct, transitions) == {"init->hallucination": None, "hallucination->recall": None}
