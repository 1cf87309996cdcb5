"""A sweep's work and planning (``analysis/sweep/run.py``) on small hand-made inputs, without worker
processes: one-line errors, what a point needs and the notes about it, a point's result for every case of
what it needs, the merge of discrete-run columns into a kept row, and one row of a real tiny flow. Written
for the survivors of ``python tests/mutation.py analysis/sweep/run.py --head --sample 200 --seed 1 -- ...``
(docs/testing.md); every expectation is written out by hand.
"""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest

from analysis.stages import INTERMEDIATE
from analysis.sweep import run as sweep_run
from analysis.sweep.directory import SweepDirectory
from analysis.sweep.grid import point_id
from analysis.sweep.run import ROW, TRAIN, TRAJECTORY, PointResult, SweepOptions
from dynamics.config import resolve_config
from dynamics.errors import ConfigError, RunError
from dynamics.run import run_flow

TINY = resolve_config("tiny", None, ["flow.t_max=30", "flow.points=24"])


def test_describe_is_one_line_of_at_most_300_characters():
    assert sweep_run.describe(ValueError("a\n  b\tc ")) == "ValueError: a b c"
    exact = ValueError("x" * (300 - len("ValueError: ")))
    assert sweep_run.describe(exact) == f"ValueError: {'x' * 288}"
    cut = sweep_run.describe(ValueError("y" * 400))
    assert cut == "ValueError: " + "y" * 287 + "…" and len(cut) == 300


def test_an_error_row_and_the_error_columns_of_a_discrete_run():
    err = RunError("broke")
    assert sweep_run.error_row({"init.scale": 0.1}, err) == {
        "init.scale": 0.1, "status": "error", "status_time": None, "message": "RunError: broke"}
    assert sweep_run.train_columns(err) == {"train_status": "error", "train_final_loss": None,
                                            "train_stages": None, "train_message": "RunError: broke"}


@pytest.mark.parametrize("row, kept, train, keep, expected", [
    (None, True, True, True, {ROW}),
    ({"status": "error"}, True, False, False, {ROW}),
    ({"status": "ok"}, True, False, False, set()),
    ({"status": "ok"}, False, False, False, set()),
    ({"status": "ok"}, False, False, True, {TRAJECTORY}),
    ({"status": "ok"}, True, False, True, set()),
    ({"status": "ok"}, True, True, False, {TRAIN}),
    ({"status": "ok", "train_status": "error"}, True, True, False, {TRAIN}),
    ({"status": "ok", "train_status": "ok"}, True, True, False, set()),
    ({"status": "ok", "train_status": None}, False, True, True, {TRAIN, TRAJECTORY}),
])
def test_what_a_point_needs(row, kept, train, keep, expected):
    options = SweepOptions(train=train, keep_trajectories=keep)
    assert sweep_run._needs(row, kept, options) == frozenset(expected)


def test_counts_and_lists_in_notes():
    assert sweep_run.counted(1) == "1 point" and sweep_run.counted(0) == "0 points"
    assert sweep_run.counted(2) == "2 points"
    assert sweep_run._listed(["c", "a", "b"]) == "a, b, c"
    assert sweep_run._listed(["d", "c", "a", "b"]) == "a, b, c and 1 more"
    assert sweep_run._listed(["e", "d", "c", "a", "b"]) == "a, b, c and 2 more"


def test_the_notes_count_retried_trained_and_kept_points():
    notes = []
    needs = {"p1": frozenset({ROW}), "p2": frozenset({ROW}), "p3": frozenset({TRAIN, TRAJECTORY}),
             "p4": frozenset({TRAIN}), "p5": frozenset()}
    rows = {"p1": {"status": "error"}, "p2": {"status": "ok"}, "p3": {"status": "ok"}}
    sweep_run._report_needs(needs, rows, notes.append)
    assert notes == ["1 point that failed with an error before tried again",
                     "2 points finished without --train: their discrete runs are computed now",
                     "1 point finished without --keep-trajectories: their flows are recomputed (with their "
                     "batches) to keep the trajectories"]
    notes.clear()
    sweep_run._report_needs({"p2": frozenset({ROW}), "p5": frozenset()}, rows, notes.append)
    assert notes == []


def test_a_note_is_one_line_on_stderr(capsys):
    sweep_run.note("something")
    assert capsys.readouterr().err == "factrecall: note: something\n"


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "ray"}, "--backend='ray': must be local or dask"),
    ({"scheduler": "tcp://x:1"}, "--scheduler='tcp://x:1': only used with --backend dask; allowed: omit it, "
                                 "or add --backend dask"),
])
def test_a_backend_or_scheduler_is_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as err:
        sweep_run.run_sweep(TINY, {"init.scale": [0.1]}, tmp_path / "out", **kwargs)
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()


def test_an_invalid_point_is_an_error_row_and_needs_no_run():
    config_error = ConfigError("task.subjects=0: must be >= 1")
    result = sweep_run._point_result({"task.subjects": 0}, config_error, None, frozenset({ROW}),
                                     SweepOptions(train=True), 1.0)
    assert result.pid == point_id({"task.subjects": 0}) and result.flow is None and result.train is None
    assert result.row == {"task.subjects": 0, "status": "error", "status_time": None,
                          "message": "ConfigError: task.subjects=0: must be >= 1"}


def test_a_point_without_a_flow_is_an_error_row_with_its_discrete_columns(monkeypatch):
    monkeypatch.setattr(sweep_run, "_train", lambda config: RunError("no steps"))
    result = sweep_run._point_result({"init.scale": 0.1}, TINY, None, frozenset({ROW}),
                                     SweepOptions(train=True), 1.0)
    assert result.row == {"init.scale": 0.1, "status": "error", "status_time": None,
                          "message": "RunError: no flow was computed", "train_status": "error",
                          "train_final_loss": None, "train_stages": None,
                          "train_message": "RunError: no steps"}
    failed = sweep_run._point_result({"init.scale": 0.1}, TINY, ValueError("bad"), frozenset({ROW}),
                                     SweepOptions(), 1.0)
    assert failed.row["message"] == "ValueError: bad" and failed.flow is None
    assert "train_status" not in failed.row


@pytest.fixture(scope="module")
def flow():
    return run_flow(TINY)


def test_a_point_that_needs_only_its_discrete_run_or_trajectory_gets_no_row(monkeypatch, flow):
    ran = []
    monkeypatch.setattr(sweep_run, "_train", lambda config: ran.append(config) or RunError("no steps"))
    values = {"init.scale": 0.1}
    trained = sweep_run._point_result(values, TINY, None, frozenset({TRAIN}), SweepOptions(train=True), 1.0)
    assert trained.row is None and trained.flow is None and len(ran) == 1
    assert trained.train == sweep_run.train_columns(RunError("no steps"))
    kept = sweep_run._point_result(values, TINY, flow, frozenset({TRAJECTORY}), SweepOptions(), 1.0)
    assert kept.row is None and kept.train is None and kept.flow is flow and len(ran) == 1
    neither = sweep_run._point_result(values, TINY, flow, frozenset({TRAIN}), SweepOptions(), 1.0)
    assert neither.row is None and neither.train is None and neither.flow is None


def test_a_rows_flow_is_kept_only_when_asked(flow):
    values = {"init.scale": 0.1}
    plain = sweep_run._point_result(values, TINY, flow, frozenset({ROW}), SweepOptions(), 2.5)
    assert plain.flow is None and plain.row["status"] == "ok" and plain.row["wall_seconds"] == 2.5
    kept = sweep_run._point_result(values, TINY, flow, frozenset({ROW}), SweepOptions(keep_trajectories=True),
                                   2.5)
    assert kept.flow is flow
    both = sweep_run._point_result(values, TINY, flow, frozenset({ROW, TRAJECTORY}), SweepOptions(), 2.5)
    assert both.flow is flow


class FakeReport:
    """What summarise reads of a stage report: the stages, their names and the transitions' times."""

    def __init__(self, stages, transitions):
        self.stages, self.transitions = stages, [{"t": t} for t in transitions]
        self.names = [stage.name for stage in stages]
        self.intermediate = [name for name in self.names if name in INTERMEDIATE]


def _stage(name, t_start, t_end, level=None, expected=None):
    return SimpleNamespace(name=name, t_start=t_start, t_end=t_end, level=level, expected_level=expected)


def _fake_analysis(monkeypatch, report, times, theory, applies=True):
    monkeypatch.setattr(sweep_run, "detect_stages", lambda flow: report)
    monkeypatch.setattr(sweep_run, "measured_times", lambda flow: times)
    monkeypatch.setattr(sweep_run, "theory_for", lambda *args: theory)
    monkeypatch.setattr(sweep_run, "theory_applies", lambda *args, **kwargs: (applies, "why"))


def test_a_row_of_a_flow_with_a_plateau(monkeypatch, flow):
    stages = [_stage("init", 0.0, 10.0, 2.0, 2.1), _stage("marginal", 10.0, 30.0, 1.5, 1.4),
              _stage("hallucination", 30.0, 70.0, 1.0, 0.9), _stage("recall", 70.0, None, 0.0, 0.0)]
    times = {"t_relation": 12.0, "t_subject": 50.0}
    _fake_analysis(monkeypatch, FakeReport(stages, [10.0, 30.0, 70.0]), times,
                   {"applicable": True, "t_R": 11.0, "t_S": 45.5, "reason": ""})
    row = sweep_run.summarise({"init.scale": 0.1}, TINY, flow, None, 3.0)
    expected = {
        "stages": "init > marginal > hallucination > recall", "intermediate": "marginal+hallucination",
        "t_first_transition": 10.0, "t_second_transition": 30.0, "plateau": "hallucination",
        "plateau_level": 1.0, "plateau_expected_level": 0.9, "plateau_length": 40.0, "t_relation": 12.0,
        "t_subject": 50.0, "learned_first": "relation", "theory_applicable": True, "theory_t_R": 11.0,
        "theory_t_S": 45.5, "theory_plateau_length": 34.5, "theory_relation_first": True,
        "theory_reason": None, "wall_seconds": 3.0, "init.scale": 0.1, "message": None, "status": "ok"}
    assert {k: row[k] for k in expected} == expected
    assert row["final_loss"] == flow.final_loss and row["function_evals"] == flow.info.cost.function_evals
    assert row["batch_size"] == 1 and "train_status" not in row


def test_a_row_of_a_flow_without_a_plateau_or_theory(monkeypatch, flow):
    stages = [_stage("init", 0.0, 10.0), _stage("subject_first", 10.0, None, 1.2, 1.1)]
    _fake_analysis(monkeypatch, FakeReport(stages, [10.0]), {"t_relation": 60.0, "t_subject": 50.0},
                   {"applicable": False, "reason": "no rates"}, applies=False)
    row = sweep_run.summarise({}, TINY, flow, None, 1.0)
    expected = {"intermediate": "subject_first", "t_first_transition": 10.0, "t_second_transition": None,
                "plateau": "subject_first", "plateau_length": None, "learned_first": "subject",
                "theory_t_R": None, "theory_plateau_length": None, "theory_relation_first": None,
                "theory_reason": "no rates"}
    assert {k: row[k] for k in expected} == expected
    _fake_analysis(monkeypatch, FakeReport([_stage("init", 0.0, None)], []),
                   {"t_relation": 5.0, "t_subject": 5.0}, {"applicable": True, "t_R": 3.0, "reason": ""})
    row = sweep_run.summarise({}, TINY, flow, None, 1.0)
    assert (row["intermediate"], row["t_first_transition"], row["plateau"], row["learned_first"],
            row["theory_plateau_length"]) == ("none", None, None, "subject", None)
    _fake_analysis(monkeypatch, FakeReport([_stage("init", 0.0, None)], []),
                   {"t_relation": math.inf, "t_subject": 5.0}, {"applicable": True, "reason": ""})
    assert sweep_run.summarise({}, TINY, flow, None, 1.0)["learned_first"] is None
    _fake_analysis(monkeypatch, FakeReport([_stage("init", 0.0, None)], []),
                   {"t_relation": 5.0, "t_subject": math.nan}, {"applicable": True, "reason": ""})
    assert sweep_run.summarise({}, TINY, flow, None, 1.0)["learned_first"] is None


def test_a_flow_cut_short_has_no_crossing_times(monkeypatch, flow):
    import dataclasses

    from dynamics.records import Status

    info = dataclasses.replace(flow.info, status=Status.MAX_STEPS, message="cut")
    cut = dataclasses.replace(flow, info=info)
    _fake_analysis(monkeypatch, FakeReport([_stage("init", 0.0, None)], []),
                   {"t_relation": 5.0, "t_subject": 6.0}, {"applicable": True, "reason": ""})
    row = sweep_run.summarise({}, TINY, cut, None, 1.0)
    assert row["t_relation"] is None and row["t_subject"] is None  # NaN, written as None
    assert row["learned_first"] is None and row["message"] == "cut" and row["status"] == "max_steps"
    silent = dataclasses.replace(flow, info=dataclasses.replace(info, message=""))
    assert sweep_run.summarise({}, TINY, silent, None, 1.0)["message"] is None


def test_a_row_with_a_discrete_run_has_its_columns(monkeypatch, flow):
    row = sweep_run.summarise({}, TINY, flow, RunError("diverged"), 1.0)
    assert row["train_status"] == "error" and row["train_message"] == "RunError: diverged"


def test_discrete_columns_are_merged_into_the_kept_row(tmp_path):
    directory = SweepDirectory(tmp_path)
    directory.check(TINY)
    directory.write_manifest(TINY, None, {"init.scale": [0.1]})
    values = {"init.scale": 0.1}
    pid = point_id(values)
    held = {"init.scale": 0.1, "status": "ok", "final_loss": 0.5}
    columns = {"train_status": "ok", "train_final_loss": 0.25, "train_stages": "a > b"}
    row = sweep_run._save(directory, TINY, PointResult(pid, values, train=columns), held)
    assert row == {**held, **columns} and held == {"init.scale": 0.1, "status": "ok", "final_loss": 0.5}
    assert directory.point_row(pid) == {**held, **columns}
    bare = sweep_run._save(directory, TINY, PointResult(pid, values), None)
    assert bare == values


def _directory(tmp_path, grid) -> SweepDirectory:
    directory = SweepDirectory(tmp_path)
    directory.check(TINY)
    directory.write_manifest(TINY, None, grid)
    return directory


def test_the_jobs_of_a_sweep_with_damaged_and_foreign_point_files(tmp_path):
    grid = {"init.scale": [0.1, 0.2, 0.3]}
    directory = _directory(tmp_path, grid)
    ids = [point_id({"init.scale": v}) for v in grid["init.scale"]]
    (directory.points_dir / f"{ids[0]}.json").write_text("[]")
    directory.save_point(ids[1], {"init.scale": 0.2, "status": "ok"})
    for name in ("pforeign00001", "pforeign00002"):
        (directory.points_dir / f"{name}.json").write_text("{}")
    notes = []
    jobs = sweep_run.plan_jobs(directory, TINY, grid, SweepOptions(), notes.append)
    assert notes == [f"1 damaged point file recomputed ({ids[0]}.json: not a point (an empty or non-object "
                     "JSON))",
                     "2 damaged point files of no point of this grid left out of results.csv "
                     "(pforeign00001.json, pforeign00002.json)"]
    assert len(jobs) == 1 and jobs[0].points == [{"init.scale": v} for v in grid["init.scale"]]
    assert jobs[0].wanted == {ids[0]: frozenset({ROW}), ids[2]: frozenset({ROW})}
    (directory.points_dir / f"{ids[2]}.json").write_text("{")
    notes.clear()
    sweep_run.plan_jobs(directory, TINY, grid, SweepOptions(), notes.append)
    assert notes[0].startswith(f"2 damaged point files recomputed ({min(ids[0], ids[2])}.json: ")


def test_a_sweep_with_every_point_done_has_no_job(tmp_path):
    grid = {"init.scale": [0.1]}
    directory = _directory(tmp_path, grid)
    directory.save_point(point_id({"init.scale": 0.1}), {"init.scale": 0.1, "status": "ok"})
    notes = []
    assert sweep_run.plan_jobs(directory, TINY, grid, SweepOptions(), notes.append) == [] and notes == []


def test_a_discrete_run_is_not_refused_for_what_its_flow_would_need(monkeypatch):
    """The discrete run is built without the flow's checks: a step limit that refuses the flow (checked
    here) leaves it alone; its columns are its status, final loss and stage names."""
    from analysis.stages import detect_stages
    from dynamics.run import prepare_run

    config = TINY.override({"train.steps": 40, "train.batch_size": 16, "flow.t_max": 4000.0})
    monkeypatch.setenv("FACTRECALL_STEP_LIMIT", "45")
    with pytest.raises(ConfigError, match="above the limit of 45"):
        prepare_run(config)
    trained = sweep_run._train(config)
    assert not isinstance(trained, Exception), trained
    assert sweep_run.train_columns(trained) == {
        "train_status": trained.info.status.value, "train_final_loss": trained.final_loss,
        "train_stages": " > ".join(detect_stages(trained).names)}
    report = FakeReport([_stage("init", 0.0, 5.0), _stage("recall", 5.0, None)], [5.0])
    monkeypatch.setattr(sweep_run, "detect_stages", lambda run: report)
    assert sweep_run.train_columns(trained)["train_stages"] == "init > recall"


def test_invalid_points_run_one_by_one():
    points = [{"task.subjects": 0}, {"task.subjects": -1}, {"init.scale": 0.1}, {"init.scale": 0.2}]
    groups = sweep_run.plan_groups(TINY, points, SweepOptions())
    assert groups == [[points[0]], [points[1]], [points[2], points[3]]]


def test_the_progress_bar_counts_points(tmp_path, capsys):
    sweep_run.run_sweep(TINY, {"init.scale": [0.1, 0.2]}, tmp_path / "out", progress=True)
    err = capsys.readouterr().err
    assert "sweep:" in err and "0/2 " in err and "?point/s" in err, err  # its name, total and unit


class FakeClient:
    """A dask client that runs each submitted call at once, in this process."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args, pure=True):
        self.submitted.append(args[1])
        done = fn(*args)
        return SimpleNamespace(result=lambda: done)

    def cancel(self, futures):
        raise AssertionError("nothing failed: nothing to cancel")


def _jobs(tmp_path, grid):
    directory = _directory(tmp_path, grid)
    return directory, sweep_run.plan_jobs(directory, TINY, grid, SweepOptions(), lambda text: None)


def test_jobs_go_to_the_cluster_client_when_there_is_one(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", SimpleNamespace(as_completed=iter))
    directory, jobs = _jobs(tmp_path, {"init.scale": [0.1, 0.2]})
    client, seen, table = FakeClient(), [], {}
    sweep_run._run_jobs(directory, TINY, jobs, SweepOptions(), 1, client, False,
                        lambda pid, row: seen.append(pid), table)
    assert client.submitted == [job.points for job in jobs]
    assert sorted(seen) == sorted(table) == sorted(point_id({"init.scale": v}) for v in (0.1, 0.2))
    assert all(row["status"] == "ok" for row in table.values())
    assert directory.results.is_file()


@pytest.mark.parametrize(("workers", "points", "pooled"), [(2, 2, True), (2, 1, False), (1, 2, False)])
def test_worker_processes_only_for_two_workers_and_two_jobs(tmp_path, monkeypatch, workers, points, pooled):
    """(Each point its own job: a grid over task.subjects cannot be batched.)"""
    calls = []

    def in_process(jobs, base_tree, options, count, finish):
        calls.append(count)
        for job in jobs:
            finish(sweep_run.run_group(base_tree, job.points, options, job.wanted))

    monkeypatch.setattr(sweep_run, "_run_processes", in_process)
    directory, jobs = _jobs(tmp_path, {"task.subjects": [4 + i for i in range(points)]})
    assert len(jobs) == points
    table = {}
    sweep_run._run_jobs(directory, TINY, jobs, SweepOptions(), workers, None, False, None, table)
    assert calls == ([workers] if pooled else []) and len(table) == points


def test_ctrl_c_writes_the_results_from_the_rows_held_without_reading_point_files(tmp_path, monkeypatch):
    directory, jobs = _jobs(tmp_path, {"task.subjects": [4, 5]})

    def stop(pid, row):
        raise KeyboardInterrupt

    monkeypatch.setattr(SweepDirectory, "scan", lambda *args: pytest.fail("a point file was read again"))
    table = {"pother000000": {"task.subjects": 9, "status": "ok"}}
    with pytest.raises(KeyboardInterrupt):
        sweep_run._run_jobs(directory, TINY, jobs, SweepOptions(), 1, None, False, stop, table)
    lines = directory.results.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("task.subjects,status")  # the held row, the finished one


class Planned(Exception):
    """Raised by a stand-in for plan_jobs: the sweep got as far as planning."""


def test_numpy_grid_values_are_taken_as_python_values_and_dask_is_a_backend(tmp_path, monkeypatch):
    import numpy as np

    seen = []

    def plan(directory, base, grid, options, report):
        seen.append(grid)
        raise Planned

    monkeypatch.setattr(sweep_run, "plan_jobs", plan)
    grid = {"task.subjects": np.array([4, 5]), "init.scale": np.geomspace(0.1, 1.0, 2), "train.lr": [0.5]}
    for backend in ("local", "dask"):
        with pytest.raises(Planned):
            sweep_run.run_sweep(TINY, grid, tmp_path / backend, backend=backend)
    assert seen[0] == {"task.subjects": [4, 5], "init.scale": [0.1, 1.0], "train.lr": [0.5]}
    assert [type(v) for v in seen[0]["task.subjects"] + seen[0]["init.scale"]] == [int, int, float, float]


def test_a_cluster_job_computes_only_the_points_it_wants(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", SimpleNamespace(as_completed=iter))
    grid = {"init.scale": [0.1, 0.2]}
    directory = _directory(tmp_path, grid)
    done = point_id({"init.scale": 0.1})
    directory.save_point(done, {"init.scale": 0.1, "status": "ok"})
    jobs = sweep_run.plan_jobs(directory, TINY, grid, SweepOptions(), lambda text: None)
    assert len(jobs) == 1 and len(jobs[0].points) == 2  # one batch, one member wanted
    seen = []
    sweep_run._run_jobs(directory, TINY, jobs, SweepOptions(), 1, FakeClient(), False,
                        lambda pid, row: seen.append(pid), {})
    assert seen == [point_id({"init.scale": 0.2})]
