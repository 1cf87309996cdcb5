"""Work beyond reason refused before it starts (memory, steps, grid size: one line with the estimate and the
limit, exit 2, nothing written), SIGTERM handled like Ctrl-C, argparse's own errors, YAML config files and
``stages`` on a ``--train`` directory."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import main
from dynamics.budget import check_flow_steps, check_memory, estimate_memory, format_bytes
from dynamics.config import resolve_config

LIMIT = "16G"  # a fixed limit: the refusals must not depend on what this machine has free right now
FAST = ["--set", "flow.t_max=50", "--set", "flow.points=20"]
# the project's largest real workload (docs/performance.md): 10^5 facts by cvode, ~4 GB measured
LARGE = {"task.subjects": 2000, "task.relations": 50, "task.noise_tokens": 2050, "task.facts": "random",
         "flow.t_max": 435148, "flow.method": "cvode"}


def one_line(capsys, argv: list[str], code: int = 2) -> str:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def fixed_memory_limit(monkeypatch):
    monkeypatch.setenv("FACTRECALL_MEMORY_LIMIT", LIMIT)


MEMORY_CASES = [
    (["task.relations=1e9"], [], "flow working vectors"),
    (["task.answers_per_relation=1e9"], [], "flow one record chunk of states"),
    (["task.subjects=1e9"], [], "flow working vectors 16 × parameters 5000000020"),
    (["task.subjects=100000", "task.relations=100000"], [], "flow working vectors"),  # the record: on disk
    (["flow.points=1e9"], [], "flow curves flow.points × 12 = 1000000000 × 12"),
    (["model.kind=embedded", "model.dim=1000000"], [], "parameters = 64 × 2000000000000"),
    (["model.kind=transformer", "model.attention=softmax", "loss.kind=sampled", "model.heads=1000000"], [],
     "(128 + 6000000 + 64) transformer activations"),  # heads × seq_len attention weights per position
    (["loss.kind=sampled", "loss.samples=1e10"], [], "loss.samples × (answers"),
    (["train.batch_size=1e10"], ["--train"], "train.batch_size × (answers"),
    (["task.noise_tokens=1e9"], ["--train"], "(4 + 1 × 1000000007)"),
    (["task.seq_len=1e15"], ["--train"], "train.batch_size × noise positions"),
]


@pytest.mark.parametrize("sets,flags,largest", MEMORY_CASES)
def test_memory_beyond_the_limit_is_refused_before_any_work(capsys, monkeypatch, tmp_path, sets, flags,
                                                            largest):
    def no_model(*args, **kwargs):  # refused from the config alone: no model is built, nothing integrated
        raise AssertionError("built a model although the memory check refuses the config")
    for module in ("dynamics.run", "dynamics.problem"):  # the run's and the step estimate's
        monkeypatch.setattr(f"{module}.setup", no_model)
    out = tmp_path / "run"
    line = one_line(capsys, ["simulate", "--preset", "tiny", *[a for s in sets for a in ("--set", s)], *flags,
                             "--out", out, "--quiet"])
    assert line.startswith("factrecall: error: memory: this config needs about ")
    assert "above the limit of 16.0 GB (FACTRECALL_MEMORY_LIMIT)" in line and largest in line
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_record_beyond_the_free_disk_is_refused_before_any_work(capsys, monkeypatch, tmp_path):
    """The per-fact record is held on disk as the run goes (beyond 64 MiB an array): a record larger than
    the disk has free is refused in one line before anything is built."""
    monkeypatch.setattr("dynamics.budget.disk_free", lambda directory: 10 * 2**30)
    monkeypatch.setattr("dynamics.problem.setup", lambda *a, **k: pytest.fail("built although refused"))
    out = tmp_path / "run"
    line = one_line(capsys, ["simulate", "--preset", "tiny", "--set", "task.subjects=100000", "--set",
                             "flow.points=100000", "--out", out, "--quiet"])
    assert line.startswith("factrecall: error: disk: this config's record needs about 614.7 GB on disk as it "
                           "runs, above the 10.0 GB free in ")
    assert "largest part: flow per-fact records flow.points × task.subjects × task.relations = 100000 × " \
           "100000 × 2, beyond 64 MiB an array" in line
    assert not out.exists()


def test_the_largest_real_workload_fits_on_a_23_gb_machine(monkeypatch):
    """The 10^5-fact run (docs/performance.md: 0.95 GB peak with its record on disk): estimated within a
    factor 2 of that, and not refused at 23 GB; with --train (the SGD run's untied states besides) still
    below."""
    config = resolve_config("figure5", overrides=LARGE)
    estimate = estimate_memory(config).total
    assert 0.48 * 2**30 < estimate < 1.9 * 2**30, format_bytes(estimate)
    monkeypatch.setenv("FACTRECALL_MEMORY_LIMIT", "23G")
    check_memory(config)
    check_memory(config, train=True)
    assert check_flow_steps(config) is None  # cvode: no stiffness bound on its steps, no probe


def test_memory_limit_variable_is_checked(capsys, monkeypatch):
    monkeypatch.setenv("FACTRECALL_MEMORY_LIMIT", "lots")
    line = one_line(capsys, ["simulate", "--preset", "tiny", "--out", "x"])
    assert "FACTRECALL_MEMORY_LIMIT='lots': must be a size of at least one byte" in line
    monkeypatch.setenv("FACTRECALL_MEMORY_LIMIT", "100M")  # below the interpreter alone: tiny is refused
    assert "above the limit of 100.0 MB" in one_line(capsys, ["simulate", "--preset", "tiny", "--out", "x"])


@pytest.mark.parametrize("sets,needle", [
    (["task.seq_len=1e15"], "flow.method='dopri5': about 7.8"),
    (["flow.modified_lr=1e6"], "flow.method='dopri5' with flow.modified_lr=1e+06: about 3.79e+06"),
    (["task.seq_len=1e15", "flow.method=auto"],
     "flow.method='auto': about 1.96e+16 dopri5 steps to flow.t_min"),
])
def test_a_flow_too_stiff_for_its_explicit_method_is_refused(capsys, tmp_path, sets, needle):
    line = one_line(capsys, ["simulate", "--preset", "tiny", *[a for s in sets for a in ("--set", s)],
                             "--out", tmp_path / "run", "--quiet"])
    assert needle in line and "allowed: flow.method=cvode" in line and "limit of 2e+06" in line
    assert not list(tmp_path.iterdir())


def test_stiffness_estimate_leaves_ordinary_flows_and_small_budgets_alone():
    for preset in ("tiny", "figure5", "figure5_softmax", "random64"):
        estimate = check_flow_steps(resolve_config(preset))
        assert estimate is not None and estimate.steps < 1000  # dopri5 takes a few hundred steps on these
    # a budget the user set small is a choice: the run fails at it and is saved with its status
    assert check_flow_steps(resolve_config("tiny", overrides={"flow.max_steps": 1})).steps < 100
    assert check_flow_steps(resolve_config("tiny", overrides={"task.seq_len": 1e15,
                                                              "flow.method": "cvode"})) is None


@pytest.mark.parametrize("lrs,needle", [("1e-300", "needs 4e+302 steps"),
                                        ("5e-324", "needs more than 1.8e308 steps"),
                                        ("0.1,1e-300", "--lrs=1e-300 (flow.t_max / lr)")])
def test_compare_refuses_step_counts_beyond_the_limit(capsys, tmp_path, lrs, needle):
    line = one_line(capsys, ["compare", "--preset", "tiny", "--lrs", lrs, "--optimizers", "gd",
                             "--out", tmp_path / "cmp", "--quiet"])
    assert needle in line and "above the limit of 1e+09 steps" in line
    assert not list(tmp_path.iterdir())


def test_compare_checks_memory_for_its_largest_batch(capsys, tmp_path):
    line = one_line(capsys, ["compare", "--preset", "tiny", "--batch-sizes", "64,10000000000",
                             "--out", tmp_path / "cmp", "--quiet"])
    assert "memory:" in line and "train.batch_size × (answers" in line and "10000000000" in line


def test_capacity_refuses_seeds_beyond_the_step_limit(capsys, tmp_path):
    argv = ["capacity", "linear", "--quick", "--seeds", "100000000", "--out", tmp_path / "c"]
    line = one_line(capsys, argv)
    assert "--seeds=100000000: needs 8.19e+12 steps, above the limit of 1e+09" in line
    assert not list(tmp_path.iterdir())


def test_argparse_errors_carry_the_error_prefix(capsys):
    """argparse's standard form: ``PROG: error: MESSAGE``, the subcommand's PROG for its own arguments."""
    assert one_line(capsys, ["simulate", "--bogus"]) == "factrecall: error: unrecognized arguments: --bogus"
    assert one_line(capsys, ["compare", "--preset", "tiny"]) == \
        "factrecall compare: error: the following arguments are required: --out"
    assert one_line(capsys, ["nosuch"]).startswith("factrecall: error: argument command: invalid choice")


SIGTERM_SCRIPT = """
import os, signal, sys
import analysis.simulate as simulate
real = simulate._analyse
def analyse(*args, **kwargs):  # the run is staged in .run.XXXX.tmp by now: SIGTERM arrives here
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)
simulate._analyse = analyse
from analysis.cli import main
sys.exit(main(["simulate", "--preset", "tiny", "--set", "flow.t_max=50", "--set", "flow.points=20",
               "--out", sys.argv[1], "--quiet"]))
"""


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    """SIGTERM while the run directory is staged: exit 143, one line, and no hidden staging directory."""
    result = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip().splitlines() == [
        "factrecall: terminated (SIGTERM); nothing was written for the unfinished run"]
    assert list(tmp_path.iterdir()) == []  # neither the run nor a .run.XXXX.tmp
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # (this process's handler untouched)


def test_yaml_config_file(tmp_path, capsys):
    """A YAML config (sections of keys) resolves like the same keys given by --set, and runs."""
    path = tmp_path / "small.yaml"
    path.write_text("task:\n  subjects: 4\n  relations: 2\n  answers_per_relation: 2\n  noise_tokens: 3\n"
                    "  seq_len: 6\ninit:\n  scale: 1.0e-3\nflow:\n  t_max: 50\n  points: 20\n")
    keys = {"task.subjects": 4, "task.relations": 2, "task.answers_per_relation": 2, "task.noise_tokens": 3,
            "task.seq_len": 6, "init.scale": 1e-3, "flow.t_max": 50, "flow.points": 20}
    assert resolve_config(None, path) == resolve_config("figure5", overrides=keys)
    out = tmp_path / "run"
    assert main(["simulate", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["task"]["subjects"] == 4 and saved["flow"]["t_max"] == 50.0
    (tmp_path / "bad.yaml").write_text("task: [1, 2\n")
    line = one_line(capsys, ["simulate", "--config", tmp_path / "bad.yaml", "--out", tmp_path / "r2"])
    assert "must be valid YAML" in line


def test_stages_on_a_train_directory(tmp_path, capsys):
    """``stages`` on a ``simulate --train`` directory re-analyses both runs, flow/ and train/."""
    out = tmp_path / "run"
    assert main(["simulate", "--preset", "tiny", *FAST, "--set", "train.steps=50", "--set",
                 "train.batch_size=32", "--train", "--out", str(out), "--quiet"]) == 0
    for run in ("flow", "train"):
        os.remove(out / run / "stages.json")
    capsys.readouterr()
    assert main(["stages", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("flow:") and "\ntrain:" in printed
    for run in ("flow", "train"):  # each run's files are said to be where they are
        files = "stages.json, stages.npz, loss.png, facts.png, fractions.png"
        assert f"wrote {files} in {out / run}\n" in printed
    for run in ("flow", "train"):
        payload = json.loads((out / run / "stages.json").read_text())
        assert payload["stages"][0]["name"] == "init"
    assert not (out / "stages.json").exists()


@pytest.mark.parametrize(("text", "seconds"), [("600", 600.0), ("10min", 600.0), ("1.5h", 5400.0),
                                               ("90 s", 90.0), ("inf", float("inf"))])
def test_time_limit_variable_reads_a_duration(monkeypatch, text, seconds):
    from dynamics.solvers.pace import TIME_LIMIT, time_limit

    assert time_limit() == TIME_LIMIT
    monkeypatch.setenv("FACTRECALL_TIME_LIMIT", text)
    assert time_limit() == seconds


@pytest.mark.parametrize("text", ["ten", "0", "-5", "5 days", ""])
def test_time_limit_variable_is_checked(monkeypatch, text):
    from dynamics.errors import ConfigError
    from dynamics.solvers.pace import time_limit

    monkeypatch.setenv("FACTRECALL_TIME_LIMIT", text)
    with pytest.raises(ConfigError, match=r"^FACTRECALL_TIME_LIMIT=.*: must be a duration above 0: .*inf "
                                          r"\(no limit\)$"):
        time_limit()


def probed(monkeypatch, config, steps: int, reached: float, per_step: float) -> None:
    """The probe of ``config`` said: ``steps`` steps reached ``reached`` at ``per_step`` CPU seconds each."""
    from dynamics import budget

    estimate = budget.StepEstimate(None, config.flow.t_max, steps * config.flow.t_max / reached, steps,
                                   reached, per_step)
    monkeypatch.setitem(budget._ESTIMATES, config, estimate)


def test_a_probe_whose_steps_cost_too_much_is_refused_on_time(monkeypatch):
    from dynamics.budget import estimate_seconds
    from dynamics.errors import ConfigError

    config = resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.geometry_eps": 1e-4,
                                               "flow.t_max": 20.0})
    # 64 steps covered 0.1 of log(1 + t/t_min) (t_min = 0.01), whose end is at log(2001) ≈ 7.6: 4.9e3 steps
    # at the probe's pace in log t, 40 min at 0.5 s a step
    probed(monkeypatch, config, 64, 0.01 * math.expm1(0.1), 0.5)
    steps, seconds = estimate_seconds(budget_estimate(config), config.flow.t_min)
    assert steps == pytest.approx(640 * math.log(2001)) and seconds == pytest.approx(0.5 * steps)
    with pytest.raises(ConfigError) as refused:
        check_flow_steps(config)
    message = str(refused.value)
    assert message.startswith("flow.t_max=20: the sign flow by dopri5 needs at least 4.86e+03 steps of 0.5 s "
                              "(a probe of 64 steps reached t = 0.00105), 40.5 min of CPU, above the time "
                              "limit of 30 min (FACTRECALL_TIME_LIMIT); ")
    assert message.endswith("(FACTRECALL_TIME_LIMIT); allowed: flow.geometry_eps=0.01 or larger (a smoother "
                            "field; docs/geometry.md)")
    monkeypatch.setenv("FACTRECALL_TIME_LIMIT", "1h")  # what the limit allows, it runs
    assert check_flow_steps(config) is not None


def budget_estimate(config):
    from dynamics import budget

    return budget._ESTIMATES[config]


def test_a_probe_of_few_dear_steps_is_not_refused_on_time(monkeypatch):
    config = resolve_config("tiny", overrides={"flow.geometry": "sign", "flow.geometry_eps": 1e-4,
                                               "flow.t_max": 20.0})
    probed(monkeypatch, config, 64, 5.0, 60.0)  # ~100 steps of a minute: dear, not many
    assert check_flow_steps(config) is not None
