"""What the command line loads: printing or refusing a config, listing the presets and the help load no
numerical library (torch, SciPy, matplotlib, torchdiffeq), which only a command that computes imports,
once its input is valid. Each case runs the CLI's ``main`` in a fresh interpreter and reports which of
those modules it found loaded afterwards (a behaviour, not a time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy", "matplotlib", "torchdiffeq")

_PROBE = """
import contextlib, io, json, sys
from analysis.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        status = main(sys.argv[1:])
    except SystemExit as stop:
        status = stop.code
print(json.dumps({"status": status, "loaded": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _loaded(*argv: str) -> tuple[int, list[str]]:
    """The exit status of ``factrecall ARGV`` and the heavy modules loaded when it returned."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["status"], report["loaded"]


@pytest.mark.parametrize(("argv", "status"), [
    (["--help"], 0),
    (["presets"], 0),
    (["config"], 0),
    (["config", "--preset", "li2026", "--set", "flow.geometry=sign", "--set", "flow.geometry_eps=1e-4"], 0),
    (["simulate", "--set", "flow.t_max=-1"], 2),  # a config refusal of a command that computes
    (["simulate", "--set", "flow.method=rk4"], 2),
    (["config", "--set", "model.kind=transformer", "--set", "model.attention=linear"], 2),
    (["config", "--set", "model.kind=embedded", "--set", "model.dim=4"], 2),  # a kind's own refusal
    (["compare", "--out", "x", "--set", "train.optimizer=nope"], 2),  # refused before compare loads
    (["sweep", "--out", "x", "--set", "task.subjects=0"], 2),
])
def test_configs_and_their_refusals_load_no_numerical_library(argv, status):
    assert _loaded(*argv) == (status, [])


def test_the_probe_sees_a_library_a_command_loads():
    # the check above is not empty by construction: a module that imports torch is seen
    probe = "import sys, dynamics.geometry; dynamics.geometry.SignDescent; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr


def test_the_capacity_command_loads_scipy_only_for_the_linear_reference_line():
    # SciPy's root finder draws the linear model's reference line; importing the command (every capacity
    # run, transformer included) used to load it at the top of capacity/plots.py
    probe = "import sys, analysis.capacity.command; print('scipy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
