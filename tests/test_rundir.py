"""The run directory's one owner (``dynamics/rundir.py``): every file each command writes is listed by
its layout, and every array file is checked against its schema and the run's config when read (one line
for any damage) and when written."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import test_hardening
from test_hardening import one_line_error, run_cli
from test_mutants_start import rewrite_npz

from analysis.cli import main
from dynamics import rundir
from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.run import setup
from dynamics.start import starting_state
from dynamics.trajectory import Trajectory, load_run

FAST = ["--set", "flow.t_max=50", "--set", "flow.points=20"]
FAST_TRAIN = ["--set", "train.steps=50", "--set", "train.batch_size=32"]
TINY = resolve_config("tiny", None, ["flow.t_max=50", "flow.points=20"])


def written(path: Path) -> list[str]:
    """Every path under ``path``, relative to it."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def assert_listed(path: Path, layout: str) -> None:
    """Every path under ``path`` is one the layout lists, and the owner reads the kind back."""
    assert rundir.LAYOUTS[layout].foreign(path) == [], written(path)
    assert rundir.foreign_paths(path, rundir.LAYOUTS[layout].command) == []
    assert rundir.output_kind(path) == rundir.LAYOUTS[layout].command


@pytest.fixture(scope="module")  # the CLI runs of this module take about 10 s (tests marked slow)
def simulated(tmp_path_factory) -> dict[str, Path]:
    """A flow run with a timeline (a held-out subject), a --train run, each written by the CLI."""
    root = tmp_path_factory.mktemp("runs")
    runs = {"flow": (root / "flow", ["--set", "data.holdout=1"]), "train": (root / "train", ["--train",
                                                                                            *FAST_TRAIN])}
    for out, extra in runs.values():
        assert main(["simulate", "--preset", "tiny", *FAST, *extra, "--out", str(out), "--quiet"]) == 0
    return {name: out for name, (out, _) in runs.items()}


@pytest.mark.slow
def test_every_file_simulate_writes_is_listed(simulated):
    flow, train = simulated["flow"], simulated["train"]
    assert set(rundir.RUN_FILES) <= set(written(flow))  # stages and timeline included
    assert_listed(flow, "flow")
    assert rundir.run_layout(flow) == "flow"
    records = {f"{run}/{name}" for run in rundir.TRAIN_RUNS for name in rundir.RECORD_FILES}
    assert records <= set(written(train))
    assert_listed(train, "train")
    assert rundir.run_layout(train) == "train"
    assert rundir.LAYOUTS["flow"].foreign(train) and rundir.LAYOUTS["train"].foreign(flow)  # told apart


@pytest.mark.slow
def test_every_file_stages_and_sweep_write_is_listed(capsys, tmp_path):
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, ["sweep", "--preset", "tiny", *FAST, "--grid", "init.scale=0.001,0.002",
                                    "--keep-trajectories", "--quiet", "--out", out])
    assert code == 0, err
    kept = sorted((out / "trajectories").iterdir())
    assert len(kept) == 2 and all(rundir.is_complete_run(run) for run in kept)
    code, _, err = run_cli(capsys, ["stages", kept[0]])  # the stage analysis of a kept run, in place
    assert code == 0, err
    code, _, err = run_cli(capsys, ["sweep-plot", out, "--x", "init.scale", "--value", "final_loss"])
    assert code == 0, err
    figures = {"sweep_lines.png", "sweep_final_loss_init.scale.png"}
    assert {"sweep.json", "results.csv", *figures} <= set(written(out))
    assert {f"{kept[0].relative_to(out)}/{name}" for name in rundir.STAGE_FILES} <= set(written(out))
    assert_listed(out, "sweep")


@pytest.mark.slow
def test_every_file_compare_writes_is_listed(capsys, tmp_path):
    out = tmp_path / "compare"
    code, _, err = run_cli(capsys, ["compare", "--preset", "tiny", *FAST, "--lrs", "0.1", "--optimizers",
                                    "gd", "--quiet", "--out", out])
    assert code == 0, err
    assert set(rundir.COMPARE_FIGURES) <= set(written(out))
    assert_listed(out, "compare")


def test_compare_figures_are_the_layouts():
    from analysis.compare.plots import FIGURES

    assert tuple(FIGURES) == rundir.COMPARE_FIGURES


def test_every_file_capacity_writes_is_listed(tmp_path):
    from analysis.capacity.command import run_capacity
    from analysis.capacity.grids import build_experiment

    quick = build_experiment("linear", quick=True)
    smallest = dataclasses.replace(quick.points[0], high=quick.points[0].low + 2)
    run_capacity("linear", tmp_path, quick=True, progress=False,
                 experiment=dataclasses.replace(quick, points=[smallest]))
    assert {"trials.csv", "summary.json", "capacity.png"} <= set(written(tmp_path))
    assert_listed(tmp_path, "capacity")


def test_a_study_directory_is_a_study_not_a_sweep(tmp_path):
    for name in rundir.STUDY_FILES:
        (tmp_path / name).write_text("{}")
    (tmp_path / "points").mkdir()
    (tmp_path / "points" / "p0123.json").write_text("{}")
    assert rundir.output_kind(tmp_path) == "study"
    assert rundir.foreign_paths(tmp_path, "study") == []
    (tmp_path / "notes.txt").write_text("mine")
    assert rundir.foreign_paths(tmp_path, "study") == ["notes.txt"]


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown output kind 'nothing'"):
        rundir.output_files("nothing")


# --- reading: every array's shape checked, one line ------------------------------------------------------

base_run, run_copy = test_hardening.base_run, test_hardening.run_copy  # a CLI run, and a copy to damage


def one_line(call) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


DAMAGE = {  # array -> how it is damaged, and what the refusal must name
    "p_correct": (lambda a: a[:, :, :-1], "p_correct has shape (20, 4, 1); expected (K, S, R) with K = 20 "
                                          "recorded times, S = 4 subjects, R = 2 relations"),
    "loss": (lambda a: a[:-1], "loss has shape (19,); expected (K,) with K = 20 recorded times"),
    "fact_weights": (lambda a: a.T, "fact_weights has shape (2, 4); expected (S, R) with S = 4 subjects, "
                                    "R = 2 relations"),
    "argmax_class": (lambda a: a.astype(np.float64), "argmax_class has dtype float64; expected integers"),
    "final_state": (lambda a: a[None], "final_state has shape (1, "),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_array_is_refused_in_one_line_on_every_read(capsys, run_copy, name):
    damage, said = DAMAGE[name]
    with np.load(run_copy / "trajectory.npz") as data:
        rewrite_npz(run_copy / "trajectory.npz", **{name: damage(data[name])})
    where = repr(str(run_copy))
    assert one_line(lambda: Trajectory.load(run_copy)).startswith(f"{where}: its trajectory.npz {said}")
    assert said in one_line(lambda: load_run(run_copy))
    code, _, err = run_cli(capsys, ["stages", run_copy])
    assert said in one_line_error(code, err, "trajectory.npz")
    config = TINY.override({"init.from_run": str(run_copy), "task.subjects": 5})
    message = one_line(lambda: starting_state(config, setup(config)[1]))
    assert message.startswith(f"init.from_run={where}: its trajectory.npz {said}"), message


def test_an_array_the_record_never_holds_is_refused(run_copy):
    rewrite_npz(run_copy / "trajectory.npz", extra=np.zeros(3))
    assert "holds array(s) it never holds: extra" in one_line(lambda: Trajectory.load(run_copy))


def test_the_facts_table_is_checked_against_the_config(run_copy):
    """A record whose arrays agree with each other is still refused for a config of another table size:
    every per-fact array is checked against task.subjects and task.relations through the facts."""
    tree = json.loads((run_copy / "config.json").read_text())
    tree["task"]["subjects"] = 5
    (run_copy / "config.json").write_text(json.dumps(tree))
    assert "config.json was changed after the run was saved" in one_line(lambda: load_run(run_copy))
    rewrite_npz(run_copy / "trajectory.npz", config_sha256=None)
    assert "task.subjects=5, task.relations=2 against a facts table of shape (4, 2)" in one_line(
        lambda: load_run(run_copy))


@pytest.mark.slow
def test_stage_and_timeline_arrays_are_checked_on_write_and_read(tmp_path, simulated):
    flow = simulated["flow"]
    sizes = {"S": TINY.task.subjects, "R": TINY.task.relations}
    for name, schema in (("stages.npz", rundir.STAGES_SCHEMA), ("timeline.npz", rundir.TIMELINE_SCHEMA)):
        arrays = rundir.read_arrays(flow / name, schema, sizes)
        assert set(arrays) == set(schema.required)
        with pytest.raises(ConfigError, match=rf"its {name} .* expected \(.*S, R\) with .*S = 5 subjects"):
            rundir.read_arrays(flow / name, schema, {"S": 5})
        last = list(schema.required)[-1]  # an (S, R) table or a (K,) curve, one row short
        broken = {**arrays, last: arrays[last][:-1]}
        with pytest.raises(ValueError, match="has shape"):
            rundir.write_arrays(tmp_path / name, broken, schema)
        assert not (tmp_path / name).exists()  # refused before anything is written


def test_a_record_that_does_not_follow_the_schema_is_never_written(tmp_path, base_run):
    traj = Trajectory.load(base_run)
    broken = dataclasses.replace(traj, p_correct=traj.p_correct[:, :1])
    with pytest.raises(ValueError, match="p_correct has shape"):
        broken.save(tmp_path / "run")
    assert not (tmp_path / "run" / "trajectory.npz").exists()


def test_the_cli_side_of_output_directories_imports_no_analysis_package():
    """``analysis/rundir.py`` checks paths for every command: it takes the layouts from the owner in
    ``dynamics``, never a command's package (which would make every command load another's modules)."""
    source = Path(__file__).resolve().parents[1] / "analysis" / "rundir.py"
    imported = {node.module or "." for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.ImportFrom)
                and (node.level or (node.module or "").startswith("analysis"))}
    assert imported == set(), imported
