"""The model-kind registry: what each entry answers for the layers (the keys it reads, its parameter count,
its population loss, its theory), and a user's own kind registered from outside the package running end to
end (simulate, the CLI, stages, a sweep, compare) and refused cleanly once removed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamics.budget import estimate_memory
from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.models import (
    MODEL_KINDS,
    Model,
    ModelKind,
    build_model,
    get_model_kind,
    register_model,
    unregister_model,
)
from dynamics.task import FactTask

ROOT = Path(__file__).resolve().parents[1]
FAST = {"flow.t_max": 20.0, "flow.t_min": 0.05, "flow.points": 12}


class PerTokenModel(Model):
    """A user's model: one score and one value vector for every vocabulary token (no tied noise token),
    written against the Model interface alone. Its population flow is the reduced model's, whose tied
    noise token stands for the N noise tokens of this one."""

    attention = "linear"

    def __init__(self, task: FactTask, device: str = "cpu"):
        self.task = task
        self.num_params = task.vocab_size * (1 + task.num_answers)
        self.preconditioner = torch.ones(self.num_params, dtype=torch.float64, device=device)
        self.population_exact = True

    def token_parameters(self, theta):
        n = self.task.vocab_size
        return theta[..., :n], theta[..., n:].reshape(*theta.shape[:-1], n, self.task.num_answers)

    def initial_parameters(self, init):
        return torch.full((self.num_params,), init.scale, dtype=torch.float64,
                          device=self.preconditioner.device)

    def parameter_norms(self, theta):
        a, v = self.token_parameters(theta)
        return {"a": torch.linalg.norm(a), "v": torch.linalg.norm(v)}


def _per_token_parameters(config, untied):
    t = config.task
    return (t.subjects + t.relations + t.noise_tokens + 1) * (1 + t.relations * t.answers_per_relation)


PER_TOKEN = ModelKind("per_token", lambda config, task: PerTokenModel(task, config.device), reads=(),
                      parameters=_per_token_parameters, population=True, inits=("constant",),
                      summary="one score and value per vocabulary token")


@pytest.fixture
def per_token():
    register_model(PER_TOKEN)
    try:
        yield PER_TOKEN
    finally:
        unregister_model("per_token")


def _tiny(**overrides):
    return resolve_config("tiny", overrides={**FAST, **overrides})


def test_every_kind_builds_the_parameter_count_its_entry_estimates():
    configs = {"reduced": _tiny(), "embedded": _tiny(**{"model.kind": "embedded", "model.dim": 16}),
               "transformer": _tiny(**{"model.kind": "transformer", "model.attention": "softmax",
                                       "loss.kind": "sampled", "model.dim": 8, "model.heads": 2,
                                       "model.head_dim": 4, "model.mlp_width": 8})}
    assert set(configs) == set(MODEL_KINDS)
    for name, config in configs.items():
        kind, task = get_model_kind(name), FactTask(config.task)
        model = build_model(config, task)
        tied = config.loss.kind == "population"
        assert kind.parameters(config, untied=not tied) == model.num_params or tied
        assert kind.parameters(config, untied=False) == model.num_params or not tied
        assert kind.parameters(config, untied=True) == model.untied()[0].num_params
        assert kind.population == (name != "transformer")


def test_a_key_the_kind_does_not_read_is_refused_by_the_entry(per_token):
    for key, value in (("model.attention", "softmax"), ("model.dim", 32), ("model.heads", 2)):
        with pytest.raises(ConfigError, match=rf"^{key}=.*: has no effect here: model.kind='per_token' does "
                                              r"not read it \(.*read"):
            _tiny(**{"model.kind": "per_token", key: value})
    with pytest.raises(ConfigError, match=r"^loss.kind='population': model.kind='transformer' has no exact "
                                          r"population loss; allowed: loss.kind=sampled$"):
        _tiny(**{"model.kind": "transformer", "model.attention": "softmax"})
    # a start the kind's initial_parameters does not implement
    with pytest.raises(ConfigError, match=r"^init.kind='gaussian': model.kind='per_token' does not start "
                                          r"from it; allowed: constant$"):
        _tiny(**{"model.kind": "per_token", "init.kind": "gaussian"})
    with pytest.raises(ConfigError, match=r"^init.kind='manifold': model.kind='transformer' does not start "
                                          r"from it; allowed: constant, gaussian$"):
        resolve_config("tiny", overrides={"model.kind": "transformer", "model.attention": "softmax",
                                          "loss.kind": "sampled", "init.kind": "manifold",
                                          "init.scale": 1e-5})


def test_register_refuses_a_taken_name_and_keys_outside_the_model_section(per_token):
    with pytest.raises(ValueError, match="already registered"):
        register_model(PER_TOKEN)
    with pytest.raises(ValueError, match="must be model"):
        register_model(ModelKind("other", PER_TOKEN.build, reads=("task.seed",),
                                 parameters=_per_token_parameters, population=True))
    with pytest.raises(ValueError, match="built in"):
        unregister_model("reduced")


def test_an_unknown_kind_has_no_parameter_count():
    """The memory estimate asks the entry: a kind that is not registered is refused, not counted as the
    reduced model."""
    config = _tiny()
    object.__setattr__(config.model, "kind", "unregistered")  # as a config built before its kind was removed
    with pytest.raises(ConfigError, match=r"^model.kind='unregistered': must be one of reduced, embedded"):
        estimate_memory(config)


def test_a_registered_kind_follows_its_own_flow_and_has_no_theory(per_token):
    from analysis.stages.theory import theory_applies
    from dynamics.run import run_flow

    config = _tiny(**{"model.kind": "per_token"})
    flow, reduced = run_flow(config), run_flow(_tiny())
    assert flow.info.ok and flow.info.num_params == _per_token_parameters(config, True)
    np.testing.assert_allclose(flow.loss, reduced.loss, rtol=1e-6)  # the same flow, by symmetry
    applies, reason = theory_applies(config)
    assert not applies and reason.startswith("model.kind='per_token': the rates are derived for the reduced")
    assert theory_applies(_tiny()) == (True, "")


@pytest.mark.slow
def test_a_registered_kind_simulates_and_is_refused_once_removed(per_token, tmp_path, capsys):
    from analysis.cli import main
    from analysis.simulate import simulate

    config = _tiny(**{"model.kind": "per_token"})
    flow = simulate(config, tmp_path / "api")["flow"].trajectory
    assert flow.info.ok and flow.info.num_params == _per_token_parameters(config, True)
    reduced = simulate(_tiny(), tmp_path / "reduced")["flow"].trajectory
    np.testing.assert_allclose(flow.loss, reduced.loss, rtol=1e-6)  # the same flow, by symmetry
    theory = json.loads((tmp_path / "api" / "stages.json").read_text())["theory"]["prediction"]
    assert not theory["applicable"]
    assert "model.kind='per_token': the rates are derived for the reduced" in theory["reason"]
    cli = ["--preset", "tiny", "--quiet", *(f"--set={k}={v}" for k, v in FAST.items())]
    assert main(["simulate", *cli, "--set", "model.kind=per_token", "--out", str(tmp_path / "cli")]) == 0
    assert main(["stages", str(tmp_path / "cli")]) == 0
    unregister_model("per_token")
    capsys.readouterr()
    assert main(["simulate", *cli, "--set", "model.kind=per_token", "--out", str(tmp_path / "gone")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["factrecall: error: model.kind='per_token': must be one of reduced, embedded, transformer"]
    with pytest.raises(ConfigError, match=r"^model.kind='per_token': must be one of reduced, embedded, "):
        simulate(config, tmp_path / "gone")
    register_model(PER_TOKEN)  # the fixture removes it again


@pytest.mark.slow
def test_a_registered_kind_trains_sweeps_and_compares(per_token, tmp_path):
    from analysis.cli import main
    from analysis.compare import CompareSpec, compare
    from analysis.sweep import run_sweep

    config = _tiny(**{"model.kind": "per_token"})
    cli = ["--preset", "tiny", "--quiet", *(f"--set={k}={v}" for k, v in FAST.items())]
    assert main(["simulate", *cli, "--set", "model.kind=per_token", "--train", "--set", "train.steps=50",
                 "--out", str(tmp_path / "train")]) == 0
    rows = run_sweep(config, {"init.scale": [1e-3, 1e-2]}, tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(math.isfinite(r["final_loss"]) for r in rows)
    comparison = compare(config, CompareSpec(lrs=(0.2, 0.1), optimizers=("gd", "sgd", "adam"), seeds=1,
                                             batch_sizes=(64,), sharpness_points=4))
    assert [r.status for r in comparison.runs] == ["ok"] * 6
    gd = [r for r in comparison.runs if r.optimizer == "gd"]
    assert all(r.max_loss_deviation < 0.05 for r in gd)  # GD follows the toy's own flow


def test_the_documented_kind_is_the_one_tested():
    """docs/extending.md's example, run as written: the same kind as :data:`PER_TOKEN`."""
    section = (ROOT / "docs" / "extending.md").read_text().split("## A model kind")[1].split("\n## ")[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/extending.md", "exec"), namespace)
    documented = namespace["PER_TOKEN"]
    register_model(documented)
    try:
        config = _tiny(**{"model.kind": "per_token"})
        model = build_model(config, FactTask(config.task))
        assert model.num_params == documented.parameters(config, True) == _per_token_parameters(config, True)
        theta = model.initial_parameters(config.init)
        ours = PerTokenModel(FactTask(config.task))
        torch.testing.assert_close(model.population_loss(theta), ours.population_loss(theta), rtol=0, atol=0)
    finally:
        unregister_model("per_token")


def test_a_title_shows_the_keys_the_kind_reads(per_token):
    from analysis.plotting import setting_line

    assert setting_line(_tiny(**{"model.kind": "per_token"})).startswith("per_token model, constant init")
    transformer = setting_line(resolve_config("figure5_transformer"))
    assert transformer.startswith("transformer model, softmax attention, d=")
    assert "embeddings" not in transformer  # always Gaussian: model.embeddings is not read


def test_an_entry_point_registers_its_kinds_in_a_fresh_process(monkeypatch):
    """A process that never ran the registration line (a sweep's spawned worker) finds the kind through the
    entry-point group, loaded once when a kind is first looked up."""
    import dynamics.plugins as plugins

    class Point:
        def load(self):
            return lambda: register_model(PER_TOKEN)

    monkeypatch.setattr(plugins, "_LOADED", set())
    def points(group):
        return [Point()] if group == "factrecall.models" else []

    monkeypatch.setattr(plugins, "entry_points", points)
    try:
        assert get_model_kind("per_token") is PER_TOKEN
        assert _tiny(**{"model.kind": "per_token"}).model.kind == "per_token"
    finally:
        unregister_model("per_token")
