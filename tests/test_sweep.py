"""Sweeps: grid parsing, batching plan, resume, kill safety, failed points, batched = unbatched,
the dask backend, the acceptance phase diagrams against the first-order theory, and the CLI contract.

Short flows throughout: Figure 5 with 64 record points and ``flow.t_max`` = 1000, which covers both escapes
(theory t_S = log(1/α)/σ_s ≈ 550 at α = 1e-7) and the recall after them. The full 6 × 5 subjects ×
relations acceptance grid is marked slow (≈ 45 s on 2 cores); a 3 × 2 version runs by default.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from close import assert_close
from figures import assert_png

from analysis.cli import main
from analysis.stages import escape_rates, relation_first
from analysis.sweep import (
    MAX_BATCH,
    SweepDirectory,
    SweepOptions,
    grid_points,
    parse_grid,
    parse_values,
    plan_groups,
    point_id,
    run_sweep,
)
from analysis.sweep import plots as sweep_plots
from dynamics.config import ConfigError, resolve_config

SHORT = {"flow.points": 64, "flow.t_max": 1000.0}
STAGE_COLUMNS = ("t_first_transition", "t_second_transition", "plateau_length", "plateau_level", "t_relation",
                 "t_subject")
EXACT_COLUMNS = ("status", "stages", "intermediate", "plateau", "learned_first", "theory_relation_first",
                 "theory_t_R", "theory_t_S")


@pytest.fixture(scope="module")
def base():
    return resolve_config("figure5", overrides=SHORT)


def counting():
    """An on_point callback and the list of point ids it has seen."""
    seen: list[str] = []
    return seen, (lambda pid, row: seen.append(pid))


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def assert_rows_agree(a: list[dict], b: list[dict], keys: list[str], rel: float = 0.01) -> None:
    """Same points in the same order, same statuses and stage names, stage times within ``rel``."""
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    for left, right in zip(a, b, strict=True):
        for column in EXACT_COLUMNS:
            assert left[column] == right[column], (column, left, right)
        for column in STAGE_COLUMNS:
            if left[column] is None or right[column] is None:
                assert left[column] == right[column], (column, left[column], right[column])
            else:
                assert right[column] == pytest.approx(left[column], rel=rel), (column, left, right)


# --------------------------------------------------------------------------------------------------
# Grid values
# --------------------------------------------------------------------------------------------------

def test_parse_values_lists_and_ranges():
    assert parse_values("init.scale", "1e-5, 1e-4,") == ["1e-5", "1e-4"]
    log = parse_values("init.scale", "1e-6:1e-2:log:5")
    assert log == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2], rel=1e-12)
    assert np.diff(np.log(log)) == pytest.approx([math.log(10)] * 4, rel=1e-12)  # geometric
    assert parse_values("task.subject_zipf", "0:1:lin:3") == [0.0, 0.5, 1.0]
    assert parse_values("init.scale", "1e-3:1e-3:log:1") == [1e-3]


def test_parse_grid_types_values_through_the_config(base):
    grid = parse_grid(["init.scale=1e-5,0.0001", "task.subjects=8,16", "task.facts=random,structured",
                       "task.subject_zipf=0:1:lin:3"], base)
    assert list(grid) == ["init.scale", "task.subjects", "task.facts", "task.subject_zipf"]
    assert grid["init.scale"] == [1e-5, 1e-4] and all(type(v) is float for v in grid["init.scale"])
    assert grid["task.subjects"] == [8, 16] and all(type(v) is int for v in grid["task.subjects"])
    assert grid["task.facts"] == ["random", "structured"]
    assert grid["task.subject_zipf"] == [0.0, 0.5, 1.0]


def test_a_log_range_over_an_integer_key_gives_integers(base):
    # np.geomspace(2, 64, 6) is 2, 3.999999999999999, ...: the range must still give the integers
    grid = parse_grid(["task.subjects=2:64:log:6", "task.relations=2:10:lin:5"], base)
    assert grid == {"task.subjects": [2, 4, 8, 16, 32, 64], "task.relations": [2, 4, 6, 8, 10]}
    assert all(type(v) is int for v in grid["task.subjects"])
    with pytest.raises(ConfigError, match="task.subjects"):
        parse_grid(["task.subjects=2:10:log:4"], base)  # 3.42, 5.85: not integers


@pytest.mark.parametrize("specs, needles", [
    (["init.scale=1:2:3"], ("init.scale", "1:2:3", "start:stop:log:n")),
    (["init.scale=1e-6:1e-2:geo:5"], ("init.scale", "1e-6:1e-2:geo:5")),
    (["init.scale=1:2:log:3:4"], ("init.scale", "1:2:log:3:4")),
    (["init.scale=0:1:log:3"], ("init.scale", "0:1:log:3", "positive")),
    (["init.scale=-1e-3:1e-2:log:3"], ("init.scale", "-1e-3:1e-2:log:3")),
    (["init.scale=a:1:lin:3"], ("init.scale", "a:1:lin:3")),
    (["init.scale=1e-6:1e-2:log:0"], ("init.scale", "1e-6:1e-2:log:0")),
    (["init.scale=1e-6:1e-2:log:2.5"], ("init.scale", "1e-6:1e-2:log:2.5")),
    (["init.scale=0:1:lin:3"], ("init.scale", "0")),  # 0 is not a valid scale
    (["init.scale=, ,"], ("init.scale", "at least one value")),
    (["task.nope=1,2"], ("task.nope", "unknown key")),
    (["nope.x=1"], ("nope.x", "unknown key")),
    (["task.subjects=abc"], ("task.subjects", "abc", "integer")),
    (["task.subjects=4,0"], ("task.subjects", "0", ">= 1")),
    (["task.subjects=2.5"], ("task.subjects", "2.5")),
    (["task.facts=sorted"], ("task.facts", "sorted")),
    (["init.scale"], ("init.scale", "must look like")),
    (["=1,2"], ("=1,2",)),
    (["init.scale=1e-5", "init.scale=1e-4"], ("init.scale", "twice")),
    ([], ("--grid",)),
])
def test_bad_grids_raise_config_errors_naming_key_and_value(base, specs, needles):
    with pytest.raises(ConfigError) as info:
        parse_grid(specs, base)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_grid_points_and_ids():
    grid = {"task.subjects": [8, 16], "init.scale": [1e-5, 1e-4, 1e-3]}
    points = grid_points(grid)
    assert points[:4] == [{"task.subjects": 8, "init.scale": 1e-5}, {"task.subjects": 8, "init.scale": 1e-4},
                          {"task.subjects": 8, "init.scale": 1e-3}, {"task.subjects": 16, "init.scale": 1e-5}]
    ids = [point_id(p) for p in points]
    assert len(set(ids)) == 6 and all(i.startswith("p") and len(i) == 13 for i in ids)
    # stable: independent of key order, and the same in a later process (sha256 of the sorted JSON)
    assert point_id({"init.scale": 1e-5, "task.subjects": 8}) == ids[0]
    assert point_id({"init.scale": 1e-5}) == point_id({"init.scale": float("1e-5")})


def test_plan_groups_batches_init_only_variations(base):
    scales = [{"init.scale": s} for s in np.geomspace(1e-7, 1e-2, 40)]
    shapes = [{"task.subjects": s} for s in (8, 32)]  # the base has 16
    points = [{**shape, **scale} for shape in shapes for scale in scales[:3]] + scales
    groups = plan_groups(base, points, SweepOptions())
    # 40 init-only variations: the fewest batches of at most MAX_BATCH, balanced (not 32 + 8)
    assert sorted(len(g) for g in groups) == [3, 3, 20, 20] and 20 <= MAX_BATCH
    assert sorted(len(g) for g in plan_groups(base, scales[:MAX_BATCH], SweepOptions())) == [MAX_BATCH]
    assert sorted(len(g) for g in plan_groups(base, scales[:MAX_BATCH + 1], SweepOptions())) == [16, 17]
    assert sum(len(g) for g in groups) == len(points)
    for group in groups:  # every group is one batch key, its members in grid order
        assert len({json.dumps({k: v for k, v in p.items() if not k.startswith("init.")}, sort_keys=True)
                    for p in group}) == 1
        assert group == [p for p in points if p in group]
    # no batching: one point per group
    assert all(len(g) == 1 for g in plan_groups(base, points, SweepOptions(batch=False)))


# --------------------------------------------------------------------------------------------------
# Resume, extension, a different base config
# --------------------------------------------------------------------------------------------------

def test_rerun_computes_nothing_and_extension_computes_only_new_points(tmp_path):
    base = resolve_config("tiny")
    out = tmp_path / "sweep"
    grid = parse_grid(["init.scale=1e-4,1e-3", "task.subjects=2,4"], base)
    seen, on_point = counting()
    rows = run_sweep(base, grid, out, on_point=on_point)
    assert len(seen) == len(set(seen)) == 4 and len(rows) == 4
    assert {p.stem for p in (out / "points").glob("*.json")} == set(seen)
    results = (out / "results.csv").read_bytes()
    before = files_under(out)

    seen_again, on_point = counting()
    again = run_sweep(base, grid, out, on_point=on_point)
    assert seen_again == []
    assert_close(again, rows, rel=1e-12)  # read back from the point files, not recomputed (seen_again)
    assert (out / "results.csv").read_bytes() == results
    assert files_under(out) == before

    extended = parse_grid(["init.scale=1e-4,1e-3,1e-2", "task.subjects=2,4"], base)
    seen_new, on_point = counting()
    rows = run_sweep(base, extended, out, on_point=on_point)
    assert sorted(seen_new) == sorted(point_id(p) for p in grid_points(extended) if p["init.scale"] == 1e-2)
    assert len(rows) == 6
    header, table = read_csv(out / "results.csv")
    assert [(r["task.subjects"], r["init.scale"]) for r in table] == [
        ("2", "0.0001"), ("4", "0.0001"), ("2", "0.001"), ("4", "0.001"), ("2", "0.01"), ("4", "0.01")]
    for pid in set(seen):  # the old point files were not rewritten
        assert (out / "points" / f"{pid}.json").read_bytes() == before[f"points/{pid}.json"]
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["base"] == json.loads(json.dumps(base.to_dict()))
    assert len(manifest["grids"]) == 2


def test_a_different_base_config_is_refused_and_nothing_changes(tmp_path, capsys):
    base = resolve_config("tiny")
    out = tmp_path / "sweep"
    grid = parse_grid(["init.scale=1e-4,1e-3"], base)
    run_sweep(base, grid, out)
    before = files_under(out)
    other = base.override({"flow.t_max": 300.0})
    with pytest.raises(ConfigError, match="different base config"):
        run_sweep(other, grid, out)
    assert files_under(out) == before
    code = main(["sweep", "--preset", "tiny", "--set", "flow.t_max=300", "--grid", "init.scale=1e-4,1e-3",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "different base config" in err and str(out) in err
    assert files_under(out) == before


def test_a_sweep_written_before_a_config_key_was_added_still_resumes(tmp_path):
    base = resolve_config("tiny")
    out = tmp_path / "sweep"
    grid = parse_grid(["init.scale=1e-4,1e-3"], base)
    run_sweep(base, grid, out)
    manifest = json.loads((out / "sweep.json").read_text())
    del manifest["base"]["flow"]["modified_lr"]
    (out / "sweep.json").write_text(json.dumps(manifest))  # as written before flow.modified_lr existed
    seen, on_point = counting()
    assert len(run_sweep(base, grid, out, on_point=on_point)) == 2
    assert seen == []
    manifest["base"]["flow"]["rtol"] = 1e-7  # a real difference is still refused
    (out / "sweep.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="different base config"):
        run_sweep(base, grid, out)


@pytest.mark.parametrize("below", [False, True], ids=["out-is-a-file", "out-below-a-file"])
def test_cli_sweep_refuses_an_out_path_that_cannot_be_a_directory(below, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sweep" if below else tmp_path / "file"
    code = main(["sweep", "--preset", "tiny", "--grid", "init.scale=1e-3", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    lines = captured.err.strip("\n").splitlines()
    assert code == 2 and len(lines) == 1 and "--out" in lines[0] and "Traceback" not in captured.err
    assert (tmp_path / "file").read_text() == "x"


def test_a_non_empty_directory_without_a_sweep_is_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        SweepDirectory(out).check(resolve_config("tiny"))
    assert files_under(out) == {"notes.txt": b"mine"}


# --------------------------------------------------------------------------------------------------
# Kill safety (SIGKILL at any moment) and resume
# --------------------------------------------------------------------------------------------------

KILL_GRID = "init.scale=1e-7:1e-3:log:8"


def _sweep_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "analysis.cli", "sweep", "--set", "flow.points=64", "--set",
            "flow.t_max=1000", "--grid", KILL_GRID, "--no-batch", "--out", str(out), "--quiet"]


def _check_consistent(out: Path) -> dict[str, dict]:
    """After a kill: every point file loads, results.csv (if any) parses with only complete rows, each
    of them a finished point."""
    points = {p.stem: json.loads(p.read_text()) for p in (out / "points").glob("*.json")}
    if (out / "results.csv").exists():
        header, table = read_csv(out / "results.csv")
        assert header[:2] == ["init.scale", "status"]
        for row in table:
            assert None not in row and None not in row.values() and len(row) == len(header), row
            assert row["status"] == "ok"
        finished = {float(p["init.scale"]) for p in points.values()}
        assert {float(r["init.scale"]) for r in table} <= finished
        assert len({r["init.scale"] for r in table}) == len(table)
    return points


def test_a_killed_sweep_resumes_to_every_point_exactly_once(tmp_path, base):
    out = tmp_path / "sweep"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(_sweep_command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "points").glob("*.json"))) >= 2:  # kill as soon as two points are written
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        proc.kill()  # SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -9
    _check_consistent(out)
    points_before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "points").glob("*.json")}
    assert 1 <= len(points_before) < 8

    done = subprocess.run(_sweep_command(out), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    points = _check_consistent(out)
    assert len(points) == 8
    for name, (mtime, content) in points_before.items():  # finished points were not recomputed
        path = out / "points" / name
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
    header, table = read_csv(out / "results.csv")
    assert len(table) == 8 and len({r["init.scale"] for r in table}) == 8

    # exactly the numbers of an uninterrupted sweep (run here in 2 worker processes)
    grid = parse_grid([KILL_GRID], base)
    reference = run_sweep(base, grid, tmp_path / "uninterrupted", SweepOptions(batch=False), workers=2)
    resumed = SweepDirectory(out).rows()
    for left, right in zip(reference, resumed, strict=True):
        assert set(left) == set(right)
        for key, value in left.items():
            if key != "wall_seconds":
                assert_close(right[key], value, rel=1e-12, where=key)  # computed in other processes


# --------------------------------------------------------------------------------------------------
# Failed points, batching, backends
# --------------------------------------------------------------------------------------------------

def test_a_point_that_fails_numerically_is_a_row_with_its_status(tmp_path, base):
    grid = parse_grid(["flow.max_steps=5,200000"], base)
    rows = run_sweep(base, grid, tmp_path / "sweep")
    assert [r["flow.max_steps"] for r in rows] == [5, 200000]
    failed, ok = rows
    assert failed["status"] == "max_steps" and failed["status_time"] > 0
    assert ok["status"] == "ok" and ok["status_time"] is None
    assert failed["final_loss"] == pytest.approx(math.log(32), abs=1e-3)  # nothing learned in 5 steps
    # no escape is claimed from a run cut short
    assert failed["learned_first"] is None and failed["plateau_length"] is None
    assert ok["learned_first"] == "relation" and ok["plateau"] == "hallucination"
    header, table = read_csv(tmp_path / "sweep" / "results.csv")
    assert [r["status"] for r in table] == ["max_steps", "ok"]


@pytest.fixture(scope="module")
def scale_grid(base):
    return parse_grid(["init.scale=1e-7,1e-6,1e-5,1e-4"], base)


def test_batched_equals_unbatched(tmp_path, base, scale_grid):
    batched = run_sweep(base, scale_grid, tmp_path / "batched")
    single = run_sweep(base, scale_grid, tmp_path / "single", SweepOptions(batch=False))
    assert [r["batch_size"] for r in batched] == [4] * 4
    assert [r["batch_size"] for r in single] == [1] * 4
    assert all(r["status"] == "ok" and r["plateau"] == "hallucination" for r in batched)
    assert_rows_agree(single, batched, ["init.scale"])


@pytest.mark.slow  # 15 s; the local backend's resume is tested by default
def test_dask_backend_gives_the_local_rows_and_resumes(tmp_path, base):
    pytest.importorskip("dask.distributed")
    grid = parse_grid(["init.scale=1e-6,1e-5", "task.subjects=8,16"], base)
    local = run_sweep(base, grid, tmp_path / "local")
    out = tmp_path / "dask"
    seen, on_point = counting()
    dask_rows = run_sweep(base, grid, out, backend="dask", workers=2, on_point=on_point)
    assert len(seen) == 4
    assert_rows_agree(local, dask_rows, ["init.scale", "task.subjects"])
    _, local_table = read_csv(tmp_path / "local" / "results.csv")
    header, dask_table = read_csv(out / "results.csv")
    assert header == list(local_table[0])

    results = (out / "results.csv").read_bytes()
    seen, on_point = counting()
    again = run_sweep(base, grid, out, backend="dask", workers=2, on_point=on_point)
    assert_close(again, dask_rows, rel=1e-12)  # read back from the point files
    assert seen == [] and (out / "results.csv").read_bytes() == results  # (and no cluster was started)

    lost = point_id(grid_points(grid)[1])
    (out / "points" / f"{lost}.json").unlink()
    seen, on_point = counting()
    again = run_sweep(base, grid, out, backend="dask", workers=1, on_point=on_point)
    assert seen == [lost]
    assert_rows_agree(dask_rows, again, ["init.scale", "task.subjects"], rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Acceptance: the theory's boundary and plateau slope
# --------------------------------------------------------------------------------------------------

def boundary_mismatches(rows: list[dict]) -> list[tuple[int, int]]:
    """Cells (S, R) whose measured order differs from the theory's and that have no axis neighbour where
    the theory predicts the measured order: the measured boundary is then more than one cell away."""
    subjects = sorted({r["task.subjects"] for r in rows})
    relations = sorted({r["task.relations"] for r in rows})
    theory = {(r["task.subjects"], r["task.relations"]): r["theory_relation_first"] for r in rows}
    far = []
    for r in rows:
        S, R = r["task.subjects"], r["task.relations"]
        assert r["status"] == "ok" and r["learned_first"] in ("relation", "subject"), r
        measured = r["learned_first"] == "relation"
        if measured == theory[(S, R)]:
            continue
        i, j = subjects.index(S), relations.index(R)
        neighbours = [(subjects[a], relations[b]) for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
                      if 0 <= a < len(subjects) and 0 <= b < len(relations)]
        if not any(theory[n] == measured for n in neighbours):
            far.append((S, R))
    return far


def _phase_grid(tmp_path, subjects: str, relations: str, workers: int) -> list[dict]:
    base = resolve_config("figure5", overrides={"task.answers_per_relation": 8, "init.kind": "constant",
                                                "init.scale": 1e-5, "flow.points": 64, "flow.t_max": 20000.0})
    grid = parse_grid([f"task.subjects={subjects}", f"task.relations={relations}"], base)
    rows = run_sweep(base, grid, tmp_path / "phase", workers=workers)
    for r in rows:
        assert r["theory_relation_first"] == relation_first(r["task.subjects"], r["task.relations"], 8)
    return rows


def test_acceptance_relation_first_boundary_small_grid(tmp_path):
    rows = _phase_grid(tmp_path, "2,8,32", "2,8", workers=1)
    assert boundary_mismatches(rows) == []
    # both phases are present, so the boundary is crossed
    assert {r["learned_first"] for r in rows} == {"relation", "subject"}
    # cells far from the boundary agree outright
    by_cell = {(r["task.subjects"], r["task.relations"]): r["learned_first"] for r in rows}
    assert by_cell[(2, 2)] == by_cell[(2, 8)] == "subject"
    assert by_cell[(32, 2)] == by_cell[(32, 8)] == "relation"


@pytest.mark.slow
def test_acceptance_relation_first_boundary_full_grid(tmp_path):
    """S in {2..64} × R in {2..32}: about 45 s on 2 cores (2 worker processes)."""
    rows = _phase_grid(tmp_path, "2,4,8,16,32,64", "2,4,8,16,32", workers=2)
    assert len(rows) == 30
    assert boundary_mismatches(rows) == []
    disagree = [(r["task.subjects"], r["task.relations"]) for r in rows
                if (r["learned_first"] == "relation") != r["theory_relation_first"]]
    assert len(disagree) <= 2, disagree  # measured: (4, 2) only, beside the boundary


def test_acceptance_plateau_length_is_linear_in_log_inverse_scale(tmp_path):
    """init.scale from 1e-7 to 1e-2: plateau length against log(1/α) is a line of slope 1/σ_s − 1/σ_r.

    Above α ≈ 2e-3 the two escapes merge (no separate hallucination plateau is detected), so the line is
    fitted on the points with a plateau; t_subject − t_relation is fitted over the whole range."""
    base = resolve_config("figure5", overrides={"flow.points": 128, "flow.t_min": 1.0, "flow.t_max": 1000.0})
    grid = parse_grid(["init.scale=1e-7:1e-2:log:11"], base)
    rows = run_sweep(base, grid, tmp_path / "scale")
    assert len(rows) == 11 and all(r["status"] == "ok" for r in rows)
    sigma_r, sigma_s = escape_rates(16, 4, 8)
    slope_theory = 1 / sigma_s - 1 / sigma_r
    assert slope_theory == pytest.approx(21.15, abs=0.01)

    plateaus = [r for r in rows if r["plateau_length"] is not None]
    assert len(plateaus) >= 7 and all(r["plateau"] == "hallucination" for r in plateaus)
    x = np.array([math.log(1 / r["init.scale"]) for r in plateaus])
    y = np.array([r["plateau_length"] for r in plateaus])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    assert slope == pytest.approx(slope_theory, rel=0.01), slope  # docs/reproducing.md: 21.1 vs 21.15
    assert 1 - residual.var() / y.var() > 0.995  # linear
    assert np.all(np.diff(y) < 0)  # longer plateaus at smaller scales

    x_all = np.array([math.log(1 / r["init.scale"]) for r in rows])
    gap = np.array([r["t_subject"] - r["t_relation"] for r in rows])
    assert np.polyfit(x_all, gap, 1)[0] == pytest.approx(slope_theory, rel=0.01)


# --------------------------------------------------------------------------------------------------
# Figures and the CLI
# --------------------------------------------------------------------------------------------------

def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except Exception as exc:  # the console script would print a traceback
        pytest.fail(f"main raised {type(exc).__name__}: {exc}")
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_cli_sweep_and_sweep_plot(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(capsys, ["sweep", "--preset", "tiny", "--grid", "init.scale=1e-4,1e-3",
                                         "--out", out, "--quiet"])
    assert code == 0, err
    assert "2 points" in stdout and "sweep_lines.png" in stdout
    assert (out / "results.csv").is_file()
    assert_png(out / "sweep_lines.png")
    header, table = read_csv(out / "results.csv")
    assert [r["init.scale"] for r in table] == ["0.0001", "0.001"]
    for column in ("status", "t_first_transition", "t_second_transition", "plateau_length", "learned_first",
                   "theory_relation_first", "theory_t_R", "final_loss", "function_evals", "wall_seconds"):
        assert column in header

    code, stdout, err = run_cli(capsys, ["sweep-plot", out, "--x", "init.scale", "--value", "plateau_length"])
    assert code == 0, err
    png = out / "sweep_plateau_length_init.scale.png"
    assert_png(png)

    two = tmp_path / "two"
    code, stdout, err = run_cli(capsys, ["sweep", "--preset", "tiny", "--grid", "task.subjects=2,4",
                                         "--grid", "task.relations=2,3", "--out", two, "--quiet"])
    assert code == 0, err
    for value in ("plateau_length", "t_first_transition", "learned_first", "intermediate"):
        assert (two / f"phase_{value}.png").is_file()
    code, stdout, err = run_cli(capsys, ["sweep-plot", two, "--x", "task.subjects", "--y", "task.relations",
                                         "--value", "final_loss"])
    assert code == 0, err
    assert (two / "phase_final_loss_task.subjects_task.relations.png").is_file()


@pytest.mark.parametrize("args, needles", [
    (["--grid", "foo"], ("--grid", "foo")),
    (["--grid", "task.subjects=0"], ("task.subjects", "0")),
    (["--grid", "init.scale=1e-3", "--workers", "0"], ("--workers", "0")),
    (["--grid", "init.scale=1e-3", "--workers", "two"], ("--workers", "two")),
    (["--grid", "init.scale=1e-3", "--backend", "x"], ("--backend", "x")),
    ([], ("--grid",)),
    (["--grid", "init.scale=1e-3", "--preset", "nope"], ("--preset", "nope")),
    (["--grid", "init.scale=1e-3", "--set", "task.subjects=0"], ("task.subjects", "0")),
])
def test_cli_sweep_bad_inputs_exit_2_with_one_line(tmp_path, capsys, args, needles):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(capsys, ["sweep", "--preset", "tiny", *args, "--out", out, "--quiet"]
                                if "--preset" not in args else ["sweep", *args, "--out", out, "--quiet"])
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


def test_cli_sweep_plot_bad_inputs(tmp_path, capsys):
    code, _, err = run_cli(capsys, ["sweep-plot", tmp_path, "--x", "init.scale", "--value", "final_loss"])
    assert_one_line_error(code, err, "results.csv")
    rows = [{"init.scale": "0.001", "final_loss": "0.1", "learned_first": "relation"},
            {"init.scale": "0.0001", "final_loss": "0.2", "learned_first": "subject"}]
    with (tmp_path / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for argv, needles in (
        (["--x", "nope", "--value", "final_loss"], ("--x", "nope")),
        (["--x", "init.scale", "--value", "nope"], ("--value", "nope")),
        (["--x", "init.scale", "--value", "learned_first"], ("--value", "learned_first")),
        (["--x", "init.scale", "--y", "nope", "--value", "final_loss"], ("nope",)),
    ):
        code, _, err = run_cli(capsys, ["sweep-plot", tmp_path, *argv])
        assert_one_line_error(code, err, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_heatmap_outlines_the_theory_cells_of_the_sweeps_own_D(tmp_path, monkeypatch):
    """The boundary S·sqrt(R−1) > R·sqrt(D−1) must use the sweep's D (here 2, a column of no grid)."""
    outlined = []
    real_rect = sweep_plots._rect
    monkeypatch.setattr(sweep_plots, "_rect", lambda j, i: outlined.append((j, i)) or real_rect(j, i))
    subjects, relations = [2, 4, 8], [2, 4]
    rows = [{"task.subjects": str(S), "task.relations": str(R), "plateau_length": str(S * R),
             "theory_relation_first": str(relation_first(S, R, 2))} for S in subjects for R in relations]
    sweep_plots.plot_heatmap(rows, "task.subjects", "task.relations", "plateau_length", tmp_path / "h.png")
    expected = {(subjects.index(S), relations.index(R)) for S in subjects for R in relations
                if relation_first(S, R, 2)}
    assert set(outlined) == expected
    assert expected != {(subjects.index(S), relations.index(R)) for S in subjects for R in relations
                        if relation_first(S, R, 8)}
    assert (tmp_path / "h.png").is_file()


def _phase_rows(subjects, relations):
    """Rows of a sweep over S × R with D = 2: a plateau only where S ≥ 8 (blank elsewhere), lengths up to
    five digits, and the learned-first category."""
    return [{"task.subjects": str(S), "task.relations": str(R),
             "plateau_length": str(1234.5 * S * R) if S >= 8 else "",
             "learned_first": "relation" if S > R else "subject",
             "theory_relation_first": str(relation_first(S, R, 2))} for S in subjects for R in relations]


def test_phase_diagrams_read_on_their_own(tmp_path, monkeypatch):
    """A phase diagram says what the sweep ran and what it shows, names its blank cells and its theory
    marks in a legend that reads on white, keeps every value inside its cell, puts each category's name in
    the middle of its colour band, and reads on its own (assert_readable)."""
    from figures import assert_readable, capture_figures

    base = resolve_config("tiny")
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"base": base.to_dict(), "grids": [{"task.subjects": [2, 4, 8, 16], "task.relations": [2, 8]}]}))
    title = sweep_plots.sweep_title(tmp_path)
    assert title.startswith("S=2…16 R=2…8 D=2 N=3 T=6") and "reduced model, linear attention" in title
    drawn = capture_figures(monkeypatch, sweep_plots)
    rows = _phase_rows([2, 4, 8, 16], [2, 8])
    for value in ("plateau_length", "learned_first"):
        sweep_plots.plot_heatmap(rows, "task.subjects", "task.relations", value, tmp_path / f"{value}.png",
                                 title)
    numbers, categories = drawn
    for fig in drawn:
        assert_readable(fig)
        assert fig._suptitle.get_text().startswith("Sweep of task.subjects × task.relations: S=2…16")
    ax = numbers.axes[0]
    assert ax.get_title() == "length of the intermediate plateau (flow time)"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[0] == "grey: no plateau" and labels[1].startswith("theory predicts relation first")
    mark = ax.get_legend().legend_handles[1]
    assert mark.get_markerfacecolor() not in ("white", "w", (1, 1, 1, 1))  # seen on the white legend
    renderer = numbers.canvas.get_renderer()
    cells = [text for text in ax.texts if text.get_text()]
    assert len(cells) == 4  # the four cells with a plateau, each written
    for text in cells:
        box = text.get_window_extent(renderer)
        x, y = text.get_position()
        cell = ax.transData.transform([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)])
        assert min(cell[:, 0]) < box.x0 and box.x1 < max(cell[:, 0]), text.get_text()
    colorbar = categories.axes[-1]
    assert [t.get_text() for t in colorbar.get_yticklabels()] == ["relation", "subject"]
    assert_close(tuple(colorbar.get_ylim()), (-0.5, 1.5), abs_tol=1e-12)  # labels at the bands' middles


def test_the_results_table_is_kept_up_to_date_without_reading_point_files_again(tmp_path, monkeypatch):
    """results.csv after every job comes from the rows the sweep holds: a new sweep reads no point file, an
    extended one reads each existing file twice when it starts (the plan, the table) and never again, and
    the table equals the one rebuilt from the files."""
    reads: list[str] = []
    real = SweepDirectory.read_point

    def counted(self, path, key_sets):
        reads.append(path.name)
        return real(self, path, key_sets)

    monkeypatch.setattr(SweepDirectory, "read_point", counted)
    base = resolve_config("tiny", None, ["flow.t_max=20", "flow.points=16"])
    out = tmp_path / "s"
    run_sweep(base, {"init.scale": [1e-3, 2e-3, 3e-3, 4e-3]}, out, SweepOptions(batch=False))
    assert reads == []
    written = (out / "results.csv").read_text()
    SweepDirectory(out).write_results()
    assert (out / "results.csv").read_text() == written
    reads.clear()
    rows = run_sweep(base, {"init.scale": [1e-3, 5e-3]}, out, SweepOptions(batch=False))
    assert len(reads) == 2 * 4 and len(rows) == 5
    assert len((out / "results.csv").read_text().splitlines()) == 6
