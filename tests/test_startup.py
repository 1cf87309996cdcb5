"""What a first run costs before and around its flow, as behaviours (no wall time): the stiffness probe
that checks a run's steps evaluates the field with the flow's own CPU settings, and an explicit flow
imports torchdiffeq without the SciPy that only its ``scipy_solver`` needs."""

from __future__ import annotations

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


_FLOW = """
import json, sys
from dynamics.config import resolve_config
from dynamics.run import run_flow
trajectory = run_flow(resolve_config("tiny", overrides={"flow.t_max": 2.0, "flow.points": 8}))
loaded = {name: name in sys.modules for name in ("torchdiffeq", "scipy")}
from torchdiffeq import odeint  # the deferred scipy_solver still works, and loads SciPy when called
import torch
y = odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
           method="scipy_solver", rtol=1e-10, atol=1e-12)
print(json.dumps({**loaded, "ok": trajectory.info.ok, "y1": float(y[-1, 0]),
                  "scipy after": "scipy" in sys.modules}))
"""


def test_an_explicit_flow_imports_torchdiffeq_without_scipy():
    done = subprocess.run([sys.executable, "-c", _FLOW], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torchdiffeq"] and report["ok"]
    assert not report["scipy"]  # torchdiffeq's SciPy wrapper was deferred
    assert abs(report["y1"] - 0.36787944117144233) < 1e-8 and report["scipy after"]


def test_a_module_imported_already_is_not_stood_in_for():
    # json is imported: import_deferring returns it and leaves sys.modules as it was
    before = dict(sys.modules)
    assert import_deferring("json", "json.decoder") is json and sys.modules == before
