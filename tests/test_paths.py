"""Output paths: every command refuses, before any work and in one line (exit 2), an output it cannot use
or must not overwrite; a run directory never ends holding parts of two runs; the API takes str and
pathlib.Path alike."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_hardening import one_line_error, run_cli

from analysis import rundir
from analysis.cli import main
from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_json
from dynamics.run import run_flow
from dynamics.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "flow.t_max=50", "--set", "flow.points=20"]
FAST_TRAIN = ["--set", "train.steps=50", "--set", "train.batch_size=32"]
TINY = resolve_config("tiny", None, ["flow.t_max=50", "flow.points=20", "train.steps=50",
                                     "train.batch_size=32"])
FLOW_TINY = resolve_config("tiny", None, ["flow.t_max=50", "flow.points=20"])  # no train.* for a flow run

# each command, and the function that does its work (which must not be reached when --out is refused)
COMMANDS = {
    "simulate": (["simulate", "--preset", "tiny", *FAST, "--quiet"], "analysis.simulate", "prepare_run"),
    "compare": (["compare", "--preset", "tiny", *FAST, "--lrs", "0.1", "--optimizers", "gd", "--quiet"],
                "analysis.compare.command", "compare"),
    "sweep": (["sweep", "--preset", "tiny", *FAST, "--grid", "init.scale=0.001,0.002", "--quiet"],
              "analysis.sweep.run", "_run_jobs"),
    "capacity": (["capacity", "linear", "--quick", "--quiet"], "analysis.capacity.command", "run_capacity"),
    "bench": (["bench", "--quick", "--only", "gd_evals"], "analysis.bench.command", "run_bench"),
    "study": (["study", "scale", "--quick", "--quiet"], "analysis.study.runner", "run_points"),
}


def snapshot(path: Path) -> dict[str, object]:
    """Every entry below ``path`` (links as their target, files as their bytes)."""
    found: dict[str, object] = {}
    for p in sorted(path.rglob("*")):
        key = str(p.relative_to(path))
        found[key] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return found


def no_work(monkeypatch, module: str, function: str) -> None:
    monkeypatch.setattr(f"{module}.{function}", lambda *a, **k: pytest.fail(f"{function} ran before --out "
                                                                             "was checked"))


def _unusable(tmp_path: Path, case: str, bench: bool) -> str:
    """Make the unusable output of ``case`` in ``tmp_path`` (the working directory, else empty: ``.`` is
    an empty directory, which only the rule against the working directory refuses); returns --out."""
    suffix = ".json" if bench else ""
    if case == "dangling symlink":
        (tmp_path / f"dang{suffix}").symlink_to("nowhere")
        return f"dang{suffix}"
    if case == "symlink to a directory":
        (tmp_path / "realdir").mkdir()
        (tmp_path / f"link{suffix}").symlink_to("realdir")
        return f"link{suffix}"
    if case == "existing file":
        (tmp_path / f"afile{suffix}").write_text("{}\n")  # a user's file (for bench: not a bench result)
        return f"afile{suffix}"
    if case == "existing directory":
        (tmp_path / f"adir{suffix}").mkdir()
        (tmp_path / f"adir{suffix}" / "mine.txt").write_text("mine")
        return f"adir{suffix}"
    if case == "below a file":
        (tmp_path / "afile").write_text("x")
        return f"afile/out{suffix}"
    return {"current directory": ".", "parent directory": "..", "empty": ""}[case]


CASES = ["dangling symlink", "symlink to a directory", "current directory", "parent directory",
         "existing file", "existing directory", "below a file", "empty"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_unusable_out_is_refused_before_any_work(capsys, tmp_path, monkeypatch, command, case):
    argv, module, function = COMMANDS[command]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = _unusable(work, case, command == "bench")
    if case == "existing directory" and command != "bench":
        pytest.skip("a directory holding a user's file: refused as not empty (test_hardening, test_cli)")
    no_work(monkeypatch, module, function)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, [*argv, "--out", out])
    one_line_error(code, err, "--out")
    assert snapshot(tmp_path) == before  # nothing replaced, created or removed


def _drop_write_override() -> None:
    """In the child: give up root's right to write where the permissions say no (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH), as an ordinary user is."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(99)


UNWRITABLE = """
import sys
import analysis.simulate, analysis.bench.command, analysis.sweep.run, analysis.stages.command
from analysis.cli import main
for module, name in ((analysis.simulate, "prepare_run"), (analysis.bench.command, "run_bench"),
                     (analysis.sweep.run, "_run_jobs"), (analysis.stages.command, "analyse_run_directory")):
    setattr(module, name, lambda *a, **k: sys.exit(f"{name} ran before the output was checked"))
ro = sys.argv[1]
for argv in (["simulate", "--preset", "tiny", "--out", ro + "/run", "--quiet"],
             ["bench", "--out", ro + "/bench.json"],
             ["sweep", "--preset", "tiny", "--grid", "init.scale=0.001,0.002", "--out", ro + "/sweep"],
             ["stages", ro + "/run0"]):
    print(main(argv), flush=True)
"""


def test_an_unwritable_directory_is_refused_before_any_work(tmp_path):
    """A directory the user cannot write: as root, the child drops the capability that lets root write
    anyway (skipped where it cannot); otherwise plain permissions."""
    ro = tmp_path / "ro"
    (ro / "run0").mkdir(parents=True)  # a run directory for stages (refused before it is read)
    ro.chmod(0o555)
    (ro / "run0").chmod(0o555)
    try:
        done = subprocess.run([sys.executable, "-c", UNWRITABLE, str(ro)], capture_output=True, text=True,
                              cwd=ROOT, timeout=300,
                              preexec_fn=_drop_write_override if os.geteuid() == 0 else None)
    finally:
        ro.chmod(0o755)
        (ro / "run0").chmod(0o755)
    if done.returncode == 99:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here: root writes everywhere")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2", "2", "2"], done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 4 and all("cannot be written" in line for line in lines), lines
    assert sorted(p.name for p in ro.iterdir()) == ["run0"] and not any((ro / "run0").iterdir())


# --- run directories of one kind are not replaced by another -------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A flow run and a --train run of the same config, made once and copied by the tests."""
    base = tmp_path_factory.mktemp("kinds")
    made = {}
    for kind, extra in (("flow", []), ("train", ["--train", *FAST_TRAIN])):
        made[kind] = base / kind
        assert main(["simulate", "--preset", "tiny", *FAST, *extra, "--out", str(made[kind]),
                     "--quiet"]) == 0
    return made


@pytest.mark.parametrize("held, asked", [("train", "flow"), ("flow", "train")])
def test_simulate_refuses_a_run_of_the_other_kind(capsys, tmp_path, monkeypatch, runs, held, asked):
    out = tmp_path / "run"
    shutil.copytree(runs[held], out)
    before = snapshot(out)
    no_work(monkeypatch, "analysis.simulate", "prepare_run")
    extra = ["--train", *FAST_TRAIN] if asked == "train" else []  # train.* is refused without --train
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, *extra, "--out", out,
                                    "--quiet"])
    one_line_error(code, err, "--train", "not")
    assert snapshot(out) == before
    with pytest.raises(ConfigError, match="--train"):  # the Python API too
        from analysis.simulate import simulate

        simulate(TINY if asked == "train" else FLOW_TINY, str(out), train=asked == "train")


def test_simulate_replaces_a_run_of_the_same_kind_and_says_so(capsys, tmp_path, runs):
    out = tmp_path / "run"
    shutil.copytree(runs["train"], out)
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, *FAST_TRAIN, "--train", "--out",
                                    out, "--quiet"])
    assert code == 0, err
    assert "holds a run of the same config and kind; it is replaced" in err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "flow", "loss.png", "train"]


def test_default_run_folders_differ_by_kind(capsys, tmp_path, monkeypatch):
    assert rundir.default_run_dir(TINY, "tiny") != rundir.default_run_dir(TINY, "tiny", train=True)
    import analysis.simulate as simulate

    used = []
    monkeypatch.setattr(simulate, "simulate", lambda config, out, train=False, progress=False:
                        used.append((Path(out), train)) or {})
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--train"]):
        code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, *extra, "--quiet"])
        assert code == 0, err
    (flow_dir, flow_train), (train_dir, train_train) = used
    assert (flow_train, train_train) == (False, True)
    assert flow_dir != train_dir and flow_dir.parent == train_dir.parent == Path("runs")
    assert "-train-" in train_dir.name and "-train-" not in flow_dir.name


# --- Trajectory.save writes a whole run directory, or refuses ------------------------------------------

@pytest.fixture(scope="module")
def flow() -> Trajectory:
    return run_flow(TINY)


def test_trajectory_save_refuses_a_directory_holding_an_analysis(tmp_path, flow, runs):
    run = tmp_path / "run"
    shutil.copytree(runs["flow"], run)  # config.json, trajectory.npz, stages.json, figures, ...
    before = snapshot(run)
    for config in (None, TINY):
        with pytest.raises(ConfigError, match="holds files a trajectory save does not write"):
            flow.save(run, config)
    assert snapshot(run) == before


def test_trajectory_save_with_config_writes_a_run_directory_stages_reads(capsys, tmp_path, flow):
    run = tmp_path / "run"
    flow.save(str(run), TINY)  # a str and a Path alike
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "summary.json", "trajectory.npz"]
    assert json.loads((run / "config.json").read_text()) == json.loads(json.dumps(TINY.to_dict()))
    flow.save(run, TINY)  # its own save: replaced
    code, _, err = run_cli(capsys, ["stages", run])
    assert code == 0, err
    # a config.json left from another save, with no config given: refused, not left beside this record
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(TINY.to_dict()))
    with pytest.raises(ConfigError, match="config.json"):
        flow.save(bare)
    assert sorted(p.name for p in bare.iterdir()) == ["config.json"]
    # a config whose task is not the record's
    with pytest.raises(ConfigError, match="task.subjects=5"):
        flow.save(tmp_path / "other", TINY.override({"task.subjects": 5}))
    assert not (tmp_path / "other").exists()


def test_trajectory_save_without_info_leaves_no_earlier_summary(tmp_path, flow):
    import dataclasses

    flow.save(tmp_path)
    bare = dataclasses.replace(flow, info=None)
    bare.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trajectory.npz"]
    loaded = Trajectory.load(tmp_path)
    assert loaded.info is None and np.array_equal(loaded.t, flow.t)


def test_stages_refuses_a_config_json_that_is_not_the_runs(capsys, tmp_path, runs):
    """An edited config.json: found by the digest recorded with the trajectory, and (a run saved before
    the digest) by the facts table it would make."""
    for digest in (True, False):
        run = tmp_path / f"run-{digest}"
        shutil.copytree(runs["flow"], run)
        if not digest:
            with np.load(run / "trajectory.npz") as data:
                arrays = {k: data[k] for k in data.files if k != "config_sha256"}
            np.savez(run / "trajectory.npz", **arrays)
        tree = json.loads((run / "config.json").read_text())
        tree["task"]["subjects"] = 6
        (run / "config.json").write_text(json.dumps(tree))
        code, _, err = run_cli(capsys, ["stages", run])
        one_line_error(code, err, "does not match", "changed after" if digest else "task.subjects=6")


# --- bench ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_out_inside_another_commands_output_is_refused(capsys, tmp_path, monkeypatch, runs, command):
    argv, module, function = COMMANDS[command]
    no_work(monkeypatch, module, function)
    run = tmp_path / "run"
    shutil.copytree(runs["flow"], run)
    before = snapshot(run)
    code, _, err = run_cli(capsys, [*argv, "--out", run / ("inner.json" if command == "bench" else "inner")])
    one_line_error(code, err, "inside the output of factrecall simulate")
    assert snapshot(run) == before


def test_bench_refuses_a_runs_summary_and_a_directory_before_any_work(capsys, tmp_path, monkeypatch, runs):
    no_work(monkeypatch, "analysis.bench.command", "run_bench")
    run = tmp_path / "run"
    shutil.copytree(runs["flow"], run)
    (tmp_path / "mine.json").write_text('{"a": 1}')
    before = snapshot(tmp_path)
    for out, needle in ((run / "summary.json", "inside the output of factrecall simulate"),
                        (run / "bench.json", "inside the output of factrecall simulate"),
                        (tmp_path / "mine.json", "was not written by this command"),
                        (run, "must end in .json")):
        code, _, err = run_cli(capsys, ["bench", "--quick", "--out", out])
        one_line_error(code, err, needle)
    (tmp_path / "b.png").write_text("a user's figure")
    code, _, err = run_cli(capsys, ["bench", "--quick", "--out", tmp_path / "b.json"])
    one_line_error(code, err, "b.png")
    (tmp_path / "b.png").unlink()
    assert snapshot(tmp_path) == before


def test_bench_says_where_it_wrote_and_replaces_its_own_result(capsys, tmp_path, monkeypatch):
    import analysis.bench.command as command

    def fake_bench(out, **kwargs):
        results = {"quick": True, "cpu_count": 2, "scale_figure": str(out.with_suffix(".png"))}
        atomic_write_json(out, results)
        out.with_suffix(".png").write_bytes(b"png")
        return results

    monkeypatch.setattr(command, "run_bench", lambda quick, out, **kwargs: fake_bench(out))
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second replaces the first's result and figure
        code, out, err = run_cli(capsys, ["bench", "--quick"])
        assert code == 0, err
        assert out.strip().splitlines()[-1] == f"wrote {tmp_path / 'bench.json'} and {tmp_path / 'bench.png'}"


# --- str and pathlib.Path ------------------------------------------------------------------------------

def test_run_directory_functions_take_str_and_path(tmp_path, runs):
    for kind in (str, Path):
        assert rundir.output_kind(kind(runs["flow"])) == "simulate"
        assert rundir.run_layout(kind(runs["train"])) == "train"
        assert rundir.check_target(kind(runs["flow"]), FLOW_TINY, train=False) is True
        assert rundir.check_target(kind(tmp_path / "new"), TINY) is False
        with rundir.staged_run_dir(kind(tmp_path / f"staged-{kind.__name__}"), TINY) as staging:
            (staging / "x").write_text("x")
        traj = Trajectory.load(kind(runs["flow"]))
        assert traj.config_digest is not None
    from analysis.stages.report import analyse_run_directory, load_run, run_directories

    copy = tmp_path / "copy"
    shutil.copytree(runs["train"], copy)
    for kind in (str, Path):
        assert run_directories(kind(copy)) == [copy / "flow", copy / "train"]
        assert load_run(kind(copy / "flow"))[0] == TINY
        assert [name for name, *_ in analyse_run_directory(kind(copy))] == ["flow", "train"]


def test_console_script_imports_no_library_before_main():
    """What lets Ctrl-C while the libraries load be one line: ``analysis.cli`` imports none of them (of the
    engine, only the registry class and the deferred imports: the standard library)."""
    code = textwrap.dedent("""
        import sys
        import analysis.cli
        loaded = ("torch", "numpy", "dynamics.config", "dynamics.run", "scipy", "matplotlib")
        print(sorted(m for m in loaded if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
