"""Hardening of the command line against failed runs, damaged run directories and outputs it must not
overwrite: each case ends in one line with exit 2 (bad input), or in a saved run with a status; never a
traceback, never lost work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import rundir
from analysis.cli import main
from analysis.plotting import figure, save
from dynamics.config import resolve_config

FAST = ["--set", "flow.t_max=50", "--set", "flow.points=20"]
FAST_TRAIN = ["--set", "train.steps=50", "--set", "train.batch_size=32"]


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except Exception as exc:
        pytest.fail(f"main raised {type(exc).__name__}: {exc} (the console script would print a traceback)")
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not named in {lines[0]!r}"
    return lines[0]


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def summary_of(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """One good tiny simulate run, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("base") / "run"
    assert main(["simulate", "--preset", "tiny", *FAST, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target


# 1. a run that fails at its first point is saved with its status; its figures degrade

@pytest.mark.parametrize("overrides", [["init.scale=1e154"], ["init.scale=1e200"], ["init.scale=1e308"],
                                       ["flow.max_steps=1"], ["flow.rtol=1e-300", "flow.atol=1e-300"]])
def test_run_failing_at_first_point_is_saved(capsys, tmp_path, overrides):
    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--set", o)]
    code, stdout, err = run_cli(capsys, ["simulate", "--preset", "tiny", *sets, "--out", out, "--quiet"])
    assert code == 0 and "Traceback" not in err
    saved = {"config.json", "trajectory.npz", "summary.json", "stages.json", "stages.npz"}
    assert saved <= set(files_under(out))
    assert summary_of(out)["status"] != "ok"
    assert "status=" in stdout and "skipped" in err  # the log-t figures that have nothing to show
    # stage detection of the saved 1-point trajectory works again from the directory
    code, _, err = run_cli(capsys, ["stages", out])
    assert code == 0, err


def test_failed_training_keeps_the_flow(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--train", "--set",
                                    "train.optimizer=sgd", "--set", "train.lr=1e308", "--out", out,
                                    "--quiet"])
    assert code == 0, err
    assert summary_of(out / "flow")["status"] == "ok"
    assert summary_of(out / "train")["status"] == "nonfinite"
    assert (out / "flow" / "trajectory.npz").is_file() and (out / "flow" / "loss.png").is_file()


def test_overflowing_time_axis_ends_nonfinite(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--train", "--set",
                                    "train.optimizer=gd", "--set", "train.lr=1e308", "--out", out, "--quiet"])
    assert code == 0, err
    summary = summary_of(out / "train")
    assert summary["status"] == "nonfinite" and "step 2" in summary["message"]
    with np.load(out / "train" / "trajectory.npz") as data:
        assert np.isfinite(data["t"]).all()


def _simulate_with_broken(capsys, monkeypatch, out, name: str, error: Exception):
    """``simulate`` into ``out`` with ``analysis.stages.report.<name>`` raising ``error``."""
    import analysis.stages.report as report

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(report, name, broken)
    return run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", out, "--quiet"])


def test_figure_that_fails_is_skipped_not_fatal(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, _, err = _simulate_with_broken(capsys, monkeypatch, out, "plot_fact_heatmap",
                                         RuntimeError("cannot draw"))
    assert code == 0 and "skipped facts.png (cannot draw)" in err
    assert (out / "trajectory.npz").is_file() and not (out / "facts.png").exists()


def test_failed_stage_analysis_keeps_the_run(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, stdout, err = _simulate_with_broken(capsys, monkeypatch, out, "detect_stages",
                                              IndexError("no stages"))
    assert code == 0 and "stage analysis of the flow failed (no stages)" in err
    assert "stages not analysed" in stdout
    assert {"config.json", "trajectory.npz", "summary.json"} <= set(files_under(out))


# 2. damaged inputs to `factrecall stages RUN_DIR`

def _rewrite_npz(path: Path, change) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez(path, **arrays)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _mismatch(arrays):
    arrays["loss"] = arrays["loss"][:-1]


def _decreasing(arrays):
    arrays["t"] = arrays["t"][::-1].copy()


DAMAGE = {
    "npz truncated": ("trajectory.npz", _truncate),
    "npz empty": ("trajectory.npz", lambda p: p.write_bytes(b"")),
    "npz random": ("trajectory.npz", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096))),
    "npz pickled": ("trajectory.npz", lambda p: _rewrite_npz(p, lambda a: a.update(
        t=np.array([{"a": 1}] * len(a["t"]), dtype=object)))),
    "npz missing key": ("trajectory.npz", lambda p: _rewrite_npz(p, lambda a: a.pop("p_correct"))),
    "npz lengths": ("trajectory.npz", lambda p: _rewrite_npz(p, _mismatch)),
    "npz decreasing t": ("trajectory.npz", lambda p: _rewrite_npz(p, _decreasing)),
    "config truncated": ("config.json", _truncate),
    "config not utf-8": ("config.json", lambda p: p.write_bytes(b"\xff\xfe{\x00}")),
    "summary missing": ("summary.json", lambda p: p.unlink()),
    "summary truncated": ("summary.json", _truncate),
    "summary array": ("summary.json", lambda p: p.write_text("[1, 2]")),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_run_directory_is_one_line(capsys, run_copy, case):
    name, damage = DAMAGE[case]
    damage(run_copy / name)
    before = files_under(run_copy)
    code, _, err = run_cli(capsys, ["stages", run_copy])
    one_line_error(code, err, name)
    assert files_under(run_copy) == before  # nothing rewritten


def test_one_point_trajectory_is_analysed(capsys, run_copy):
    def first_point(arrays):
        for key, values in arrays.items():
            if key not in ("facts", "fact_weights", "answers_per_relation", "config_sha256"):
                arrays[key] = values[:1]

    _rewrite_npz(run_copy / "trajectory.npz", first_point)
    code, _, err = run_cli(capsys, ["stages", run_copy])
    assert code == 0 and "Traceback" not in err


# 3. outputs that must not be overwritten

def test_compare_refuses_a_simulate_run_before_computing(capsys, run_copy, monkeypatch):
    import analysis.compare.command as command

    monkeypatch.setattr(command, "compare", lambda *a, **k: pytest.fail("computed before checking --out"))
    before = files_under(run_copy)
    code, _, err = run_cli(capsys, ["compare", "--preset", "tiny", *FAST, "--out", run_copy, "--quiet"])
    one_line_error(code, err, "simulate")
    assert files_under(run_copy) == before


def test_simulate_refuses_a_run_holding_user_files(capsys, run_copy):
    (run_copy / "notes.txt").write_text("mine")
    before = files_under(run_copy)
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", run_copy, "--quiet"])
    one_line_error(code, err, "notes.txt")
    assert files_under(run_copy) == before


def test_simulate_replaces_its_own_run(capsys, run_copy):
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", run_copy, "--quiet"])
    assert code == 0, err


def test_simulate_refuses_a_compare_and_capacity_refuses_a_run(capsys, run_copy, tmp_path, monkeypatch):
    other = tmp_path / "cmp"
    other.mkdir()
    shutil.copy(run_copy / "config.json", other / "config.json")
    (other / "compare.json").write_text("{}")
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", other, "--quiet"])
    one_line_error(code, err, "compare")
    import analysis.capacity.command as capacity

    monkeypatch.setattr(capacity, "run_capacity", lambda *a, **k: pytest.fail("ran before checking --out"))
    before = files_under(run_copy)
    code, _, err = run_cli(capsys, ["capacity", "linear", "--quick", "--out", run_copy, "--quiet"])
    one_line_error(code, err, "simulate")
    assert files_under(run_copy) == before


def test_failed_replacement_keeps_the_old_run(run_copy, monkeypatch):
    config = resolve_config("tiny", None, [o for o in FAST if o != "--set"])
    before = files_under(run_copy)
    real = os.replace

    def flaky(src, dst):
        if Path(dst) == run_copy and Path(src).name.endswith(".tmp"):  # the new run into place
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(rundir.os, "replace", flaky)
    with pytest.raises(OSError, match="disk gone"):
        with rundir.staged_run_dir(run_copy, config) as staging:
            (staging / "trajectory.npz").write_bytes(b"new")
    assert files_under(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


def test_figure_is_written_atomically_not_through_a_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    link = tmp_path / "out" / "fig.png"
    link.parent.mkdir()
    link.symlink_to(outside)
    fig = figure(2, 2)
    fig.subplots().plot([0, 1], [0, 1])
    save(fig, link)
    assert outside.read_text() == "keep"
    assert not link.is_symlink() and link.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in link.parent.iterdir()) == ["fig.png"]


def test_failed_figure_leaves_no_file(tmp_path):
    fig = figure(2, 2)
    ax = fig.subplots()
    ax.plot([1, 2], [1, 2])
    ax.set_xscale("log")
    path = tmp_path / "fig.png"

    def boom(target, **kwargs):  # a draw that fails half-way through the file
        if hasattr(target, "write"):
            target.write(b"\x89PNG partial")
        else:
            Path(target).write_bytes(b"\x89PNG partial")
        raise RuntimeError("draw failed")

    fig.savefig = boom
    with pytest.raises(RuntimeError):
        save(fig, path)
    assert list(tmp_path.iterdir()) == []


# 4. output paths checked before any computation

UNWRITABLE = Path("/sys/factrecall-x")


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a read-only /sys")
@pytest.mark.parametrize("argv", [["simulate", "--preset", "tiny", "--quiet"],
                                  ["compare", "--preset", "tiny", "--quiet"],
                                  ["capacity", "linear", "--quick", "--quiet"],
                                  ["sweep", "--preset", "tiny", "--grid", "init.scale=0.01", "--quiet"]])
def test_unwritable_out_is_one_line(capsys, argv, monkeypatch):
    import analysis.capacity.command as capacity
    import analysis.compare.command as compare_command

    monkeypatch.setattr(capacity, "run_capacity", lambda *a, **k: pytest.fail("ran before checking --out"))
    monkeypatch.setattr(compare_command, "compare", lambda *a, **k: pytest.fail("ran before checking --out"))
    code, _, err = run_cli(capsys, [*argv, "--out", UNWRITABLE])
    one_line_error(code, err, str(UNWRITABLE), "cannot be written")


# 5. empty values do not silently mean the defaults

@pytest.mark.parametrize("argv", [["simulate", "--out", ""], ["simulate", "--preset", "", "--out", "x"],
                                  ["compare", "--out", " "], ["capacity", "linear", "--out", ""],
                                  ["stages", ""]])
def test_empty_values_are_refused(capsys, argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, argv)
    one_line_error(code, err, "must not be empty")
    assert list(tmp_path.iterdir()) == []


def test_compare_whose_flow_fails_at_once_is_one_line(capsys, tmp_path):
    out = tmp_path / "cmp"
    code, _, err = run_cli(capsys, ["compare", "--preset", "tiny", "--set", "init.scale=1e154", "--lrs",
                                    "0.4", "--optimizers", "gd", "--out", out, "--quiet"])
    assert code == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "flow stopped early" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lrs", ["1e308", "0.4,100"])
def test_compare_refuses_lrs_beyond_the_flow(capsys, tmp_path, lrs, monkeypatch):
    import analysis.compare.command as command

    monkeypatch.setattr(command, "compare", lambda *a, **k: pytest.fail("computed with a bad --lrs"))
    code, _, err = run_cli(capsys, ["compare", "--preset", "tiny", *FAST, "--lrs", lrs, "--out",
                                    tmp_path / "cmp", "--quiet"])
    one_line_error(code, err, "--lrs", "flow.t_max")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["task.seed", "model.seed", "init.seed", "loss.seed", "train.seed"])
def test_one_rule_for_every_seed(key):
    from dynamics.config import ConfigError, resolve_config

    section = key.split(".")[0]
    drawn = {"task": {"task.facts": "random"}, "model": {"model.kind": "embedded"},  # where the seed is read
             "init": {"init.kind": "gaussian"}, "loss": {"loss.kind": "sampled"}, "train": {}}[section]
    assert resolve_config("tiny", overrides={**drawn, key: 2**63 - 1}).to_dict()[section]["seed"] == 2**63 - 1
    for bad in (2**64, 2**63, -1):
        with pytest.raises(ConfigError, match=rf"{key}=.*must be an integer in \[0, 2\^63 - 1\]"):
            resolve_config("tiny", overrides={**drawn, key: bad})


def test_a_huge_value_is_cut_in_the_message():
    from dynamics.config import ConfigError, resolve_config

    with pytest.raises(ConfigError) as caught:
        resolve_config("tiny", overrides={"task.facts": "x" * 10_000})
    message = str(caught.value)
    assert len(message) < 400 and "(10002 characters)" in message and "\n" not in message


def test_deeply_nested_config_file_is_one_line(tmp_path):
    from dynamics.config import ConfigError, resolve_config

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="--config=.*nest deeper"):
        resolve_config(config_file=path)
