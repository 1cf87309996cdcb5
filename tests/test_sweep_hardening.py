"""Sweeps under failure: points that raise, killed and interrupted sweeps (no process left, the numbers of an
uninterrupted sweep for any worker count), damaged point files and manifests, canonical grid
values, options added on a rerun, and the dask backend's address checks. The tiny preset throughout, except
where a sweep must still be running when it is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from close import assert_close

import analysis.sweep.grid as sweep_grid
import analysis.sweep.run as sweep_run
from analysis.cli import main
from analysis.sweep import (
    ERROR,
    SweepDirectory,
    SweepOptions,
    grid_points,
    parse_grid,
    point_id,
    run_sweep,
)
from analysis.sweep.grid import GRID_LIMIT as MAX_POINTS
from dynamics.config import ConfigError, resolve_config
from dynamics.trajectory import Trajectory

ENV = {**os.environ, "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def tiny():
    return resolve_config("tiny")


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def counting():
    seen: list[str] = []
    return seen, (lambda pid, row: seen.append(pid))


def without_wall(rows: list[dict]) -> list[dict]:
    """Rows as compared: everything but the wall-clock seconds."""
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    """The same rows but for the wall-clock seconds: statuses, stage names and counts exactly, floats to 1e-12
    relative. The rows compared were computed in other processes or read back from point files; 1e-12 is
    far below what a change of batch or step control moves (the solver's tolerances, 1e-6 and above)."""
    assert_close(without_wall(actual), without_wall(expected), rel=1e-12)


def run_cli(capsys, argv: list) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *needles: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --------------------------------------------------------------------------------------------------
# A point that fails is a row; the rest go on
# --------------------------------------------------------------------------------------------------

def test_an_invalid_combination_is_an_error_row_and_the_rest_go_on(tmp_path, tiny, capsys):
    """flow.t_min=100 and flow.t_max=50 are each valid, together not: that point is recorded, not fatal."""
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(capsys, ["sweep", "--preset", "tiny", "--grid", "flow.t_min=0.01,100",
                                         "--grid", "flow.t_max=50,400", "--out", out, "--quiet"])
    assert code == 1, err
    assert "4 points" in stdout and "of which 1 failed with an error" in stdout
    rows = SweepDirectory(out).rows()
    by_point = {(r["flow.t_min"], r["flow.t_max"]): r for r in rows}
    bad = by_point[(100.0, 50.0)]
    assert bad["status"] == ERROR and "flow.t_min" in bad["message"] and "\n" not in bad["message"]
    assert [r["status"] for k, r in by_point.items() if k != (100.0, 50.0)] == ["ok"] * 3
    table = (out / "results.csv").read_text().splitlines()
    assert len(table) == 5 and "message" in table[0].split(",") and sum(ERROR in line for line in table) == 1
    # a rerun tries the failed point again (and only it)
    seen, on_point = counting()
    grid = parse_grid(["flow.t_min=0.01,100", "flow.t_max=50,400"], tiny)
    run_sweep(tiny, grid, out, on_point=on_point, report=lambda line: None)
    assert seen == [point_id({"flow.t_min": 100.0, "flow.t_max": 50.0})]


def test_a_failing_batch_member_does_not_take_its_batch_mates(tmp_path, tiny, monkeypatch):
    """The batched solve raises; every member is then run on its own, and only the failing one is an error."""
    real_run_flow = sweep_run.run_flow

    def batch(configs):
        raise RuntimeError("batched solve failed")

    def single(config, **kwargs):
        if config.init.scale == 1e-3:
            raise RuntimeError("this member\nfails")
        return real_run_flow(config, **kwargs)

    monkeypatch.setattr(sweep_run, "run_flow_batch", batch)
    monkeypatch.setattr(sweep_run, "run_flow", single)
    grid = parse_grid(["init.scale=1e-4,1e-3,1e-2"], tiny)
    rows = run_sweep(tiny, grid, tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["ok", ERROR, "ok"]
    assert rows[1]["message"] == "RuntimeError: this member fails"
    assert rows[0]["batch_size"] == rows[2]["batch_size"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_a_device_that_is_not_there_is_an_error_row(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--preset", "tiny", "--grid", "device=cpu,cuda", "--out", out, "--quiet"]
    code, stdout, err = run_cli(capsys, argv)
    assert code == 1 and "of which 1 failed with an error" in stdout
    rows = {r["device"]: r for r in SweepDirectory(out).rows()}
    assert rows["cpu"]["status"] == "ok" and rows["cuda"]["status"] == ERROR and rows["cuda"]["message"]


# --------------------------------------------------------------------------------------------------
# Kills and interrupts: no process left, exactly the uninterrupted numbers
# --------------------------------------------------------------------------------------------------

def live_in_group(pgid: int) -> list[int]:
    """Processes of the process group ``pgid`` that have not exited (zombies count as exited)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(entry.name))
    return live


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(entry.name))
    return found


KILL_BASE = {"flow.points": 64, "flow.t_max": 1000.0}
KILL_GRID = ["task.subjects=8,16,32", "init.scale=1e-6,1e-5,1e-4"]  # three batches of three


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("backend", ["local", "dask"])
def test_sigkill_of_a_sweep_with_workers_leaves_no_process_and_resumes_exactly(tmp_path, backend):
    if backend == "dask":
        pytest.importorskip("dask.distributed")
    out = tmp_path / "sweep"
    grid_args = [arg for spec in KILL_GRID for arg in ("--grid", spec)]
    argv = [sys.executable, "-m", "analysis.cli", "sweep", "--set", "flow.points=64", "--set",
            "flow.t_max=1000", *grid_args, "--workers", "2", "--backend", backend, "--out", str(out),
            "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            start_new_session=True)  # its own process group: the workers' too
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(children_of(proc.pid)) >= 2 and list((out / "points").glob("p*.json")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert len(children_of(proc.pid)) >= 2  # the workers (and the resource tracker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while live_in_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live_in_group(proc.pid) == [], "processes of the killed sweep are still alive"
    finally:
        if live_in_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    kept = len(list((out / "points").glob("p*.json")))
    assert 1 <= kept < 9

    base = resolve_config("figure5", overrides=KILL_BASE)
    grid = parse_grid(KILL_GRID, base)
    resumed = run_sweep(base, grid, out, report=lambda line: None)  # here, in this process
    reference = run_sweep(base, grid, tmp_path / "uninterrupted")
    assert len(resumed) == 9
    assert_same_rows(resumed, reference)
    assert not list((out / "points").glob(".*"))  # no half-written point file left


def test_numbers_do_not_depend_on_the_worker_count_or_on_resuming(tmp_path, tiny):
    grid = parse_grid(["task.subjects=2,3", "init.scale=1e-4,1e-3,1e-2"], tiny)
    one = run_sweep(tiny, grid, tmp_path / "one", workers=1)
    two = run_sweep(tiny, grid, tmp_path / "two", workers=2)
    assert [r["batch_size"] for r in one] == [3] * 6
    assert_same_rows(two, one)

    # a kill after some members of a batch were written: the batch is recomputed whole, the rest kept
    points = grid_points(grid)
    lost = [point_id(points[0]), point_id(points[4])]  # one member of each batch
    for pid in lost:
        (tmp_path / "two" / "points" / f"{pid}.json").unlink()
    seen, on_point = counting()
    resumed = run_sweep(tiny, grid, tmp_path / "two", workers=1, on_point=on_point)
    assert sorted(seen) == sorted(lost)
    assert_same_rows(resumed, one)


def test_ctrl_c_says_how_many_finished_points_are_kept(tmp_path, monkeypatch, capsys):
    real_run_group = sweep_run.run_group
    calls = []

    def interrupted_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_group(*args, **kwargs)

    monkeypatch.setattr(sweep_run, "run_group", interrupted_at_the_second)
    out = tmp_path / "sweep"
    argv = ["sweep", "--preset", "tiny", "--grid", "init.scale=1e-4,1e-3,1e-2", "--no-batch", "--out", out,
            "--quiet"]
    code, _, err = run_cli(capsys, argv)
    assert code == 130
    line = one_line(err, "interrupted", "1 point finished and kept", str(out), "resume")
    assert "nothing was written" not in line
    assert len((out / "results.csv").read_text().splitlines()) == 2  # header and the kept point

    monkeypatch.setattr(sweep_run, "run_group", real_run_group)
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0 and "3 points" in stdout


# --------------------------------------------------------------------------------------------------
# Damaged files
# --------------------------------------------------------------------------------------------------

def test_damaged_point_files_are_recomputed_with_one_line(tmp_path, tiny):
    out = tmp_path / "sweep"
    grid = parse_grid(["task.subjects=2,3", "init.scale=1e-4,1e-3,1e-2"], tiny)
    before = run_sweep(tiny, grid, out)
    ids = [point_id(p) for p in grid_points(grid)]
    damage = {ids[0]: b'{"task.subjects": 2, "init.sc', ids[1]: b"", ids[2]: b"{}", ids[3]: b"[1, 2]",
              ids[4]: (out / "points" / f"{ids[5]}.json").read_bytes()}  # another point's row
    for pid, content in damage.items():
        (out / "points" / f"{pid}.json").write_bytes(content)
    (out / "points" / "p0123456789ab.json").write_bytes(b"{")  # of no point of this grid
    lines, seen = [], []
    after = run_sweep(tiny, grid, out, on_point=lambda pid, row: seen.append(pid), report=lines.append)
    assert sorted(seen) == sorted(damage)
    assert len(lines) == 2 and lines[0].startswith("5 damaged point files recomputed")
    assert "p0123456789ab.json" in lines[1] and "left out of results.csv" in lines[1]
    assert_same_rows(after, before)
    assert len((out / "results.csv").read_text().splitlines()) == 7


@pytest.mark.parametrize("content", [b'{"base": {"task"', b"", b"[]", b"\xff\xfe{}",
                                     b'{"base": 1, "grids": []}'],
                         ids=["truncated", "empty", "array", "not-utf8", "no-base"])
def test_cli_a_damaged_sweep_json_is_one_line_and_nothing_changes(tmp_path, capsys, content):
    out = tmp_path / "sweep"
    argv = ["sweep", "--preset", "tiny", "--grid", "init.scale=1e-4,1e-3", "--out", out, "--quiet"]
    assert run_cli(capsys, argv)[0] == 0
    (out / "sweep.json").write_bytes(content)
    before = files_under(out)
    code, _, err = run_cli(capsys, argv)
    assert code == 2
    one_line(err, "sweep.json", "damaged", str(out))
    assert files_under(out) == before


@pytest.mark.parametrize("part", ["points", "results.csv"])
def test_cli_parts_of_the_wrong_kind_are_one_line(tmp_path, capsys, part):
    out = tmp_path / "sweep"
    argv = ["sweep", "--preset", "tiny", "--grid", "init.scale=1e-4,1e-3", "--out", out, "--quiet"]
    assert run_cli(capsys, argv)[0] == 0
    target = out / part
    if part == "points":
        for path in target.iterdir():
            path.unlink()
        target.rmdir()
        target.write_text("x")
    else:
        target.unlink()
        target.mkdir()
    before = files_under(out)
    code, _, err = run_cli(capsys, argv)
    assert code == 2
    one_line(err, part, str(out))
    assert files_under(out) == before


# --------------------------------------------------------------------------------------------------
# Grid values
# --------------------------------------------------------------------------------------------------

def test_grid_values_are_canonical_so_an_extension_adds_no_near_duplicate(tmp_path, tiny):
    # np.linspace(0, 1, 11) gives 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001
    assert parse_grid(["task.subject_zipf=0:1:lin:11"], tiny)["task.subject_zipf"] == [
        0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_grid(["task.subject_zipf=0.3,0.30000000000000004,0.3"], tiny) == {"task.subject_zipf": [0.3]}
    out = tmp_path / "sweep"
    run_sweep(tiny, parse_grid(["task.subject_zipf=0.3,0.7"], tiny), out)
    seen, on_point = counting()
    rows = run_sweep(tiny, parse_grid(["task.subject_zipf=0.1:0.9:lin:5"], tiny), out, on_point=on_point)
    assert sorted(row["task.subject_zipf"] for row in rows) == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert len(seen) == 3  # 0.1, 0.5 and 0.9: not 0.30000000000000004 nor 0.7000000000000001


@pytest.mark.parametrize("spec", ["init.scale=1e-4:nan:log:3", "init.scale=nan:1:lin:3",
                                  "init.scale=1e-4:inf:log:3", "init.scale=-inf:1:lin:3",
                                  "init.scale=1e-4:1e400:log:3"])
def test_cli_non_finite_range_ends_are_one_line(tmp_path, capsys, spec):
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, ["sweep", "--preset", "tiny", "--grid", spec, "--out", out, "--quiet"])
    assert code == 2
    one_line(err, spec.split("=")[0], "finite")
    assert not out.exists()


@pytest.mark.parametrize("specs", [[f"init.scale=1e-6:1:log:{10 * MAX_POINTS}"],
                                   ["init.scale=1e-3,1e-2",
                                    f"init.seed=0:{MAX_POINTS - 1}:lin:{MAX_POINTS}"]],
                         ids=["one-key", "product"])
def test_a_grid_too_large_is_refused_before_validating_it(tiny, specs, monkeypatch):
    # validating 10^5 values through the config would take minutes: the refused key's values must never
    # reach the config (counted, not timed: a wall-clock bound fails on a loaded machine)
    validated = []
    real = sweep_grid._resolve_key
    refused = specs[-1].partition("=")[0]

    def counted(config, key):
        assert key != refused, f"a value of {key} was validated before the grid's size was checked"
        validated.append(key)
        return real(config, key)

    monkeypatch.setattr(sweep_grid, "_resolve_key", counted)
    with pytest.raises(ConfigError, match=f"at most {MAX_POINTS}"):
        parse_grid(specs, tiny)
    assert len(validated) == sum(len(s.split(",")) for s in specs[:-1])  # the keys before it: each value once


def test_two_points_that_differ_only_in_init_are_one_batch(tmp_path, tiny):
    rows = run_sweep(tiny, parse_grid(["init.scale=1e-4,1e-3"], tiny), tmp_path / "sweep")
    assert [r["batch_size"] for r in rows] == [2, 2]


def test_a_batch_s_wall_time_is_shared_among_its_points(monkeypatch, tiny):
    # a clock that reads 0 s before the solve and 6 s after it: three points of one batch get 2 s each
    ticks = iter([0.0, 6.0])
    clock = SimpleNamespace(perf_counter=lambda: next(ticks), sleep=time.sleep)
    monkeypatch.setattr(sweep_run, "time", clock)
    points = grid_points(parse_grid(["init.scale=1e-4,1e-3,1e-2"], tiny))
    results = sweep_run.run_group(tiny.to_dict(), points, SweepOptions())
    assert [r.row["batch_size"] for r in results] == [3] * 3
    assert [r.row["wall_seconds"] for r in results] == [2.0] * 3


def test_a_point_whose_analysis_fails_keeps_no_trajectory(tmp_path, tiny, monkeypatch):
    real = sweep_run.summarise

    def unreadable_at_1e_3(values, *args):
        if values["init.scale"] == 1e-3:
            raise ValueError("a trajectory the analysis cannot read")
        return real(values, *args)

    monkeypatch.setattr(sweep_run, "summarise", unreadable_at_1e_3)
    out = tmp_path / "sweep"
    grid = parse_grid(["init.scale=1e-4,1e-3"], tiny)
    rows = run_sweep(tiny, grid, out, SweepOptions(keep_trajectories=True))
    good, bad = rows
    assert good["status"] == "ok" and bad["status"] == ERROR and "cannot read" in bad["message"]
    assert (out / "trajectories" / point_id({"init.scale": 1e-4})).is_dir()
    assert not (out / "trajectories" / point_id({"init.scale": 1e-3})).exists()  # no run beside an error


def test_a_training_that_failed_is_retried_on_a_rerun(tmp_path, tiny, monkeypatch):
    tiny = tiny.override({"train.steps": 100})
    grid = parse_grid(["init.scale=1e-4,1e-3"], tiny)
    out = tmp_path / "sweep"

    def out_of_memory(built, *args, **kwargs):
        raise MemoryError("out of memory")

    with monkeypatch.context() as patch:
        patch.setattr(sweep_run, "train_run", out_of_memory)
        first = run_sweep(tiny, grid, out, SweepOptions(train=True))
    assert [(r["status"], r["train_status"]) for r in first] == [("ok", ERROR)] * 2
    seen, on_point = counting()
    again = run_sweep(tiny, grid, out, SweepOptions(train=True), on_point=on_point)
    assert sorted(seen) == sorted(point_id(p) for p in grid_points(grid))
    assert [r["train_status"] for r in again] == ["ok"] * 2
    for old, new in zip(first, again, strict=True):  # the flow's columns are kept as they were
        assert_close({k: new[k] for k in old if not k.startswith("train_")},
                     {k: v for k, v in old.items() if not k.startswith("train_")}, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Options added on a rerun
# --------------------------------------------------------------------------------------------------

def test_train_and_kept_trajectories_added_on_a_rerun_are_computed(tmp_path, tiny, capsys):
    tiny = tiny.override({"train.steps": 200})
    out = tmp_path / "sweep"
    grid = parse_grid(["init.scale=1e-4,1e-3"], tiny)
    plain = run_sweep(tiny, grid, out)

    lines, (seen, on_point) = [], counting()
    trained = run_sweep(tiny, grid, out, SweepOptions(train=True), on_point=on_point, report=lines.append)
    assert len(seen) == 2 and len(lines) == 1 and "--train" in lines[0]
    for old, new in zip(plain, trained, strict=True):
        assert new["train_status"] == "ok" and new["train_final_loss"] > 0
        assert_close({k: new[k] for k in old}, old, rel=1e-12)  # the flow's numbers are kept

    lines, (seen, on_point) = [], counting()
    options = SweepOptions(train=True, keep_trajectories=True)
    kept = run_sweep(tiny, grid, out, options, on_point=on_point, report=lines.append)
    assert len(seen) == 2 and len(lines) == 1 and "--keep-trajectories" in lines[0]
    assert_close(kept, trained, rel=1e-12)
    for row in kept:
        run_dir = out / "trajectories" / point_id({"init.scale": row["init.scale"]})
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "summary.json", "trajectory.npz"]
        assert json.loads((run_dir / "config.json").read_text())["init"]["scale"] == row["init.scale"]
        # the same batch, the same numbers (the row read back from its point file: 1e-12)
        assert Trajectory.load(run_dir).final_loss == pytest.approx(row["final_loss"], rel=1e-12)
        code, stdout, err = run_cli(capsys, ["stages", run_dir])
        assert code == 0, err

    lines, (seen, on_point) = [], counting()
    run_sweep(tiny, grid, out, options, on_point=on_point, report=lines.append)
    assert seen == [] and lines == []


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------

def test_cli_scheduler_with_the_local_backend_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, ["sweep", "--preset", "tiny", "--grid", "init.scale=1e-3", "--scheduler",
                                    "tcp://127.0.0.1:8786", "--out", out, "--quiet"])
    assert code == 2
    one_line(err, "--scheduler", "--backend dask")
    assert not out.exists()


@pytest.mark.parametrize("address", ["nowhere", "xyz://host:1"])
def test_cli_a_bad_dask_address_is_one_line_and_writes_nothing(tmp_path, capsys, address):
    pytest.importorskip("dask.distributed")
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, ["sweep", "--preset", "tiny", "--grid", "init.scale=1e-3", "--backend",
                                    "dask", "--scheduler", address, "--out", out, "--quiet"])
    assert code == 2
    one_line(err, "--scheduler", address, "cannot connect")
    assert not out.exists()


def test_cli_a_point_beyond_the_memory_limit_is_refused_before_any_work(capsys, tmp_path):
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, ["sweep", "--preset", "tiny", "--grid", "task.subjects=4,100000",
                                    "--grid", "task.relations=100000", "--out", out, "--quiet"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "memory" in err
    assert not out.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "empty (no header)"),
    (b"task.subjects,final_loss\n", "a header but no rows"),
    (b"task.subjects,final_loss\n1,2\n3\n", "line 3 has 1 fields, the header 2"),
    (b"task.subjects,final_loss\n1,\xe9\n", "not UTF-8 text"),
    (b"task.subjects,final_loss\nx,2\ny,3\n", "--x='task.subjects': no numeric value"),
])
def test_cli_sweep_plot_on_a_damaged_results_csv_is_one_line(capsys, tmp_path, content, message):
    (tmp_path / "results.csv").write_bytes(content)
    code, _, err = run_cli(capsys, ["sweep-plot", tmp_path, "--x", "task.subjects", "--value", "final_loss"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_cli_sweep_plot_reads_a_results_csv_with_a_byte_order_mark(capsys, tmp_path):
    (tmp_path / "results.csv").write_bytes(b"\xef\xbb\xbftask.subjects,final_loss\n1,2\n2,3\n")
    code, out, _ = run_cli(capsys, ["sweep-plot", tmp_path, "--x", "task.subjects", "--value", "final_loss"])
    assert code == 0 and (tmp_path / "sweep_final_loss_task.subjects.png").is_file()
