"""``device=cuda``: the same numbers as the CPU, on a machine that has a GPU (skipped everywhere else).

The engine computes in float64 on whichever device holds θ; only the rounding of reductions differs between
devices, so a run on the GPU must match the CPU run to far below the solver tolerance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.cli import main
from dynamics.config import resolve_config
from dynamics.run import run_flow, run_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# a random table big enough to pass through the stiff plateau, small enough for seconds on either device
TABLE = {"task.subjects": 32, "task.relations": 4, "task.noise_tokens": 36, "task.facts": "random",
         "flow.t_max": 3000.0, "flow.points": 64}


@pytest.mark.parametrize("method,jacobian", [("dopri5", "difference"), ("cvode", "hvp"), ("auto", "hvp")])
def test_flow_on_cuda_matches_cpu(method, jacobian):
    overrides = {**TABLE, "flow.method": method, "flow.jacobian": jacobian, "flow.rtol": 1e-7,
                 "flow.atol": 1e-13}
    cpu = run_flow(resolve_config("figure5", overrides=overrides))
    gpu = run_flow(resolve_config("figure5", overrides={**overrides, "device": "cuda"}))
    assert gpu.info.status == cpu.info.status == "ok"
    assert np.array_equal(gpu.t, cpu.t)
    np.testing.assert_allclose(gpu.loss, cpu.loss, atol=1e-6)
    np.testing.assert_allclose(gpu.p_correct, cpu.p_correct, atol=1e-6)


def test_training_on_cuda_matches_cpu():
    overrides = {"flow.t_max": 200.0, "flow.points": 32, "train.optimizer": "sgd", "train.steps": 400,
                 "train.lr": 0.5, "train.batch_size": 64}
    cpu = run_training(resolve_config("tiny", overrides=overrides))
    gpu = run_training(resolve_config("tiny", overrides={**overrides, "device": "cuda"}))
    assert np.array_equal(gpu.t, cpu.t)
    np.testing.assert_allclose(gpu.loss, cpu.loss, atol=1e-9)


def test_simulate_on_cuda(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["simulate", "--preset", "tiny", "--out", str(out), "--quiet", "--set", "device=cuda",
                 "--set", "flow.t_max=50", "--set", "flow.points=20"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["kind"] == "flow"
