"""What a first run costs before and around its flow, as behaviours (no wall time): the stiffness probe
that checks a run's steps evaluates the field with the flow's own CPU settings, and an explicit flow
imports torchdiffeq without the SciPy that only its ``scipy_solver`` needs; a command run as the program
freezes what it imported, so the garbage collector does not walk torch's objects again."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import torch

from dynamics.lazy import import_deferring
from dynamics.solvers.stiffness import spectral_radius


def _flushing() -> bool:
    """Whether torch flushes denormal floats to zero now (torch has no getter for it)."""
    return float((torch.full((8,), 1e-310, dtype=torch.float64) * 1.0)[0]) == 0.0


def test_the_stiffness_probe_evaluates_a_small_field_on_one_thread():
    # a build's probe on the default thread pool cost figure5 0.3 s of CPU (0.02 s on one thread)
    threads, seen = torch.get_num_threads(), []

    def field(t, theta):
        seen.append((torch.get_num_threads(), _flushing()))
        return -3.0 * theta

    torch.set_num_threads(2)
    try:
        radius, cost = spectral_radius(field, 0.0, torch.ones(5, dtype=torch.float64))
        assert abs(radius - 3.0) < 1e-6 and cost.function_evals == len(seen) == 11
        assert set(seen) == {(1, True)}
        assert torch.get_num_threads() == 2 and not _flushing()  # restored
    finally:
        torch.set_num_threads(threads)


_PROGRAM = """
import contextlib, gc, io, json, sys
from analysis.cli import main
sys.argv = ["factrecall", *sys.argv[1:]]
with contextlib.redirect_stdout(io.StringIO()):
    status = main()  # as the console script calls it: the process's own command line
report = {"status": status, "frozen": gc.get_freeze_count(), "enabled": gc.isenabled(),
          **{name: name in sys.modules for name in ("torchdiffeq", "scipy")}}
from torchdiffeq import odeint  # the deferred scipy_solver still works, and loads SciPy when called
import torch
y = odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
           method="scipy_solver", rtol=1e-10, atol=1e-12)
print(json.dumps({**report, "y1": float(y[-1, 0]), "scipy after": "scipy" in sys.modules}))
"""


def test_a_first_run_loads_no_scipy_and_freezes_its_imports(tmp_path):
    # one process (one torch import) for both: a tiny simulate (dopri5) run as the console script runs it
    argv = ["simulate", "--preset", "tiny", "--set", "flow.t_max=2", "--set", "flow.points=8", "--quiet",
            "--out", str(tmp_path / "run")]
    done = subprocess.run([sys.executable, "-c", _PROGRAM, *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 0 and report["torchdiffeq"]
    assert not report["scipy"]  # torchdiffeq's SciPy wrapper was deferred (figure5: 0.45 CPU s)
    assert abs(report["y1"] - 0.36787944117144233) < 1e-8 and report["scipy after"]
    # the cyclic collector never walks torch's and matplotlib's objects again (figure5: 0.39 CPU s)
    assert report["enabled"] and report["frozen"] > 100_000  # torch alone holds more objects than that


def test_main_called_with_arguments_leaves_the_collector_alone(capsys):
    from analysis.cli import main

    frozen = gc.get_freeze_count()
    assert main(["config"]) == 0
    assert gc.get_freeze_count() == frozen and gc.isenabled()


def test_a_module_imported_already_is_not_stood_in_for():
    # json is imported: import_deferring returns it and leaves sys.modules as it was
    before = dict(sys.modules)
    assert import_deferring("json", "json.decoder") is json and sys.modules == before


def test_the_start_up_bench_interleaves_its_cases_and_checks_figure5_by_cpu(monkeypatch):
    from analysis.bench import startup
    from analysis.cli import COMMANDS

    cases = startup.startup_cases("OUT")  # the floor first, every command's module, figure5 last
    assert list(cases)[0] == startup.TORCH and list(cases.values())[-1][-2:] == ["--out", "OUT"]
    modules = {c.module for c in COMMANDS.values() if c.engine and c.module != "analysis.cli"}
    assert {f"`import {module}`" for module in modules} < set(cases)
    assert startup.fresh_seconds([sys.executable, "-c", "sum(range(10**6))"])[1] > 0  # the child's CPU

    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    cpu = {"torch": 1.0, "help": 0.1, "figure5": 2.0}
    monkeypatch.setattr(startup, "startup_cases", lambda out: {name: [name] for name in cpu})
    ran = []
    monkeypatch.setattr(startup, "fresh_seconds", lambda argv: ran.append(argv[0]) or (5.0, cpu[argv[0]]))
    monkeypatch.setattr(startup, "TORCH", "torch")
    result = startup.bench_end_to_end(repeats=2)
    assert ran == [*cpu, *cpu]  # round by round
    assert result["cpu_median"] == 2.0 and result["met"] and result["rows"][-1]["over_torch"] == 2.0
    rows = startup.format_startup_rows(result)
    assert rows[0].endswith("| **2.00 s** (2.00× torch) | ≤ 3 s | yes |") and len(rows) == 3
    assert rows[2] == "| start-up: help, CPU | 0.10 s (0.10× torch) | — | — |"
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # said in the row: each run compiles the project
    (row, *_) = startup.format_startup_rows(startup.bench_end_to_end(1))
    assert "(wall 5.00 s; PYTHONDONTWRITEBYTECODE set)" in row
