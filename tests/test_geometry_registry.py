"""The geometry registry: the one list of geometry names, what each entry answers for the layers, and a user's
own geometry registered from outside the package running end to end (simulate, the CLI, stages, a batched
sweep) and refused cleanly once removed."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.fields import batched_gradient_field, gradient_field
from dynamics.geometry import GEOMETRIES, Geometry, get_geometry, register_geometry, unregister_geometry
from dynamics.objective import make_objective
from dynamics.problem import setup

ROOT = Path(__file__).resolve().parents[1]
FAST = {"flow.t_max": 2.0, "flow.t_min": 0.05, "flow.points": 8}
EPS = {"flow.geometry_eps": 1e-2}


class L1Normalised:
    """A user's geometry, ℓ1-normalised steepest descent: D(g) = x / (‖x‖₁/n + ε), x = P g, the gradient
    rescaled to mean absolute entry 1 where it is large against ε (at ε = 0 the field is singular where the
    gradient vanishes, and an adaptive solver crawls there: the entry says ``needs_eps``)."""

    name = "l1"
    smooth = False

    def __init__(self, scale: torch.Tensor | None, eps: float):
        self.scale, self.eps = scale, eps

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        x = grad if self.scale is None else self.scale * grad
        return x / (x.abs().mean(-1, keepdim=True) + self.eps)

    def negative_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return -self.direction(grad)


L1 = Geometry("l1", lambda scale, blocks, eps: L1Normalised(scale, eps), keys=("flow.geometry_eps",),
              needs_eps=True, suggested_eps=1e-3, summary="ℓ1-normalised gradient")


@pytest.fixture
def l1():
    register_geometry(L1)
    try:
        yield L1
    finally:
        unregister_geometry("l1")


def _tiny(**overrides):
    return resolve_config("tiny", overrides={**FAST, **overrides})


def test_the_geometry_registry_is_the_only_list_of_geometry_names():
    names = set(GEOMETRIES)
    for package in ("dynamics", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    listed = {e.value for e in node.elts if isinstance(e, ast.Constant)} & names
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    assert len(listed) < 2, f"{where} lists geometries {listed}"


def test_each_builtin_entry_answers_for_its_geometry():
    euclidean, sign, spectral = (get_geometry(n) for n in ("euclidean", "sign", "spectral"))
    assert euclidean.linear and euclidean.gradient_flow_theory and euclidean.keys == ()
    for entry in (sign, spectral):
        assert not entry.linear and not entry.gradient_flow_theory and entry.needs_eps
        assert entry.keys == ("flow.geometry_eps",) and entry.suggested_eps > 0 and entry.reference_eps > 0
    with pytest.raises(ConfigError, match=r"^flow.geometry='l1': must be one of euclidean, sign, spectral$"):
        get_geometry("l1")
    with pytest.raises(ValueError, match="already registered"):
        register_geometry(Geometry("sign", L1.build))
    with pytest.raises(ValueError, match="built in"):
        unregister_geometry("euclidean")


def test_a_map_of_an_unregistered_geometry_is_refused_not_taken_for_a_metric():
    config = _tiny()
    _, model, objective = setup(config)
    with pytest.raises(ValueError, match=r"geometry map named 'l1' is not registered"):
        gradient_field(objective, L1Normalised(model.preconditioner, 1e-2))


def test_a_geometry_reads_only_its_own_keys(l1):
    """A key another geometry reads is refused where this one does not; what a geometry cannot do (GD's
    modified flow, a dense Jacobian, ε = 0 where it needs ε) is refused from its entry."""
    from dynamics.run import run_flow

    register_geometry(dataclasses.replace(L1, name="l1_fixed", keys=(), needs_eps=False))
    try:
        with pytest.raises(ConfigError, match=r"^flow.geometry_eps=0.001: has no effect on "
                                              r"flow.geometry='l1_fixed' \(read by flow.geometry=sign or "
                                              r"spectral or l1\)"):
            _tiny(**{"flow.geometry": "l1_fixed", "flow.geometry_eps": 1e-3})
    finally:
        unregister_geometry("l1_fixed")
    with pytest.raises(ConfigError, match=r"^flow.modified_lr=0.1: GD's modified flow needs .*euclidean$"):
        _tiny(**{"flow.geometry": "l1", "flow.modified_lr": 0.1, **EPS})
    with pytest.raises(ConfigError, match=r"^flow.method='bdf': needs a dense Jacobian"):
        run_flow(_tiny(**{"flow.geometry": "l1", "flow.method": "bdf", **EPS}))
    with pytest.raises(ConfigError, match=r"^flow.geometry_eps=0.0: the l1 field is discontinuous .*"
                                          r"allowed: flow.geometry_eps=0.001 or larger"):
        run_flow(_tiny(**{"flow.geometry": "l1"}))


@pytest.mark.parametrize("batched", [True, False])
def test_a_batch_is_mapped_as_its_rows(l1, batched):
    """An entry that does not map batches (``batched=False``) has its batch mapped row by row; either way
    each row is the one-flow field's value."""
    config = _tiny(**{"init.kind": "gaussian", "init.scale": 0.1})
    task, model, objective = setup(config)
    unregister_geometry("l1")
    register_geometry(dataclasses.replace(L1, batched=batched))
    thetas = torch.stack([model.initial_parameters(config.override({"init.seed": s}).init) for s in (0, 1)])
    metric = L1Normalised(model.preconditioner, 1e-2)
    rows = batched_gradient_field(make_objective(model, task, config.loss), metric)(0.0, thetas)
    for theta, row in zip(thetas, rows, strict=True):
        torch.testing.assert_close(row, gradient_field(objective, metric)(0.0, theta), rtol=1e-12, atol=1e-15)


@pytest.mark.slow  # six small runs: about 10 s
def test_a_registered_geometry_runs_end_to_end(l1, tmp_path, capsys):
    from analysis.cli import main
    from analysis.simulate import simulate
    from analysis.sweep import run_sweep

    config = _tiny(**{"flow.geometry": "l1", **EPS})
    runs = simulate(config, tmp_path / "api")
    flow = runs["flow"].trajectory
    assert flow.info.ok and flow.final_loss < flow.loss[0]
    assert runs["flow"].stages is not None
    reason = json.loads((tmp_path / "api" / "stages.json").read_text())["theory"]["prediction"]["reason"]
    assert "flow.geometry='l1'" in reason  # not the gradient flow: no theory
    cli = ["--preset", "tiny", "--quiet", *(f"--set={k}={v}" for k, v in {**FAST, **EPS}.items())]
    assert main(["simulate", *cli, "--set", "flow.geometry=l1", "--out", str(tmp_path / "cli")]) == 0
    assert main(["stages", str(tmp_path / "cli")]) == 0
    rows = run_sweep(config, {"init.scale": [1e-3, 1e-2]}, tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["batch_size"] == 2 for r in rows)
    assert all(math.isfinite(r["final_loss"]) for r in rows)
    unregister_geometry("l1")
    capsys.readouterr()
    assert main(["simulate", *cli, "--set", "flow.geometry=l1", "--out", str(tmp_path / "gone")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["factrecall: error: flow.geometry='l1': must be one of euclidean, sign, spectral"]
    with pytest.raises(ConfigError, match=r"^flow.geometry='l1': must be one of euclidean, sign, spectral$"):
        simulate(config, tmp_path / "gone")
    register_geometry(L1)  # the fixture removes it again


def test_an_installed_geometry_is_found_through_its_entry_point(monkeypatch):
    """A package's entry point in the group names a callable that registers its geometry; it is called on
    the registry's first use (as in a sweep's worker process, which never imported the user's module)."""
    import dynamics.plugins as plugins

    class Point:
        def load(self):
            return lambda: GEOMETRIES.register(L1)

    points = {GEOMETRIES.group: [Point()]}
    monkeypatch.setattr(plugins, "entry_points", lambda group: points.get(group, []))
    monkeypatch.setattr(plugins, "_LOADED", set())
    try:
        assert get_geometry("l1") is L1
        assert _tiny(**{"flow.geometry": "l1"}).flow.geometry == "l1"
    finally:
        unregister_geometry("l1")
