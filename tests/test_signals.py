"""Signals end a command with one line and exit 128 + the signal's number: SIGTERM 143 and Ctrl-C 130,
for every command (the sweep included) and at every moment (also while the libraries load)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import analysis.sweep.command as sweep_command
from analysis.cli import Terminated, main

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = "import sys\nfrom analysis.cli import main\nsys.exit(main())\n"  # what the console script runs


def test_ctrl_c_while_the_libraries_load_is_one_line(tmp_path):
    """Ctrl-C arrives while ``torch`` is imported (a stand-in package that interrupts its own import):
    one line and exit 130, not a traceback through the import machinery."""
    stub = tmp_path / "stub" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n")
    env = {"PYTHONPATH": f"{stub.parent}{':' + str(ROOT)}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CONSOLE, "simulate", "--preset", "tiny", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        "factrecall: interrupted; nothing was written for the unfinished run"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("signal_name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_sweep_stopped_by_a_signal_exits_128_plus_its_number(capsys, tmp_path, monkeypatch, signal_name,
                                                               code):
    def stopped(*args, **kwargs):
        raise Terminated() if signal_name == "SIGTERM" else KeyboardInterrupt()

    monkeypatch.setattr(sweep_command, "run_sweep", stopped)
    capsys.readouterr()
    assert main(["sweep", "--preset", "tiny", "--grid", "init.scale=0.001,0.002", "--out",
                 str(tmp_path / "sweep"), "--quiet"]) == code
    how = "terminated (SIGTERM)" if signal_name == "SIGTERM" else "interrupted"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"factrecall: {how}; no point had finished, so none is kept; rerun the same command to start again"]


SWEEP_SIGTERM = """
import os, signal, sys
import analysis.sweep.run as run
real = run.run_group
def run_group(*args, **kwargs):  # the first batch computed; SIGTERM arrives before it is saved
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return result
run.run_group = run_group
from analysis.cli import main
sys.exit(main(["sweep", "--preset", "tiny", "--set", "flow.t_max=50", "--set", "flow.points=20",
               "--grid", "init.scale=0.001,0.002", "--out", sys.argv[1], "--quiet"]))
"""


@pytest.mark.slow  # a process of its own (the exit status logic is tested in-process above)
def test_a_sweep_under_sigterm_exits_143(tmp_path):
    """A real SIGTERM during a sweep: 143 (as docs/cli.md says), one line, and a directory a rerun
    resumes."""
    out = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-c", SWEEP_SIGTERM, str(out)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 143, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("factrecall: terminated (SIGTERM); "), lines
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
