"""Every setting has an effect or is refused: batched flows build the field of their config (the same code
as a single run), and keys that a run would accept and not read are refused in one line.

* Batches: a batched run of a modified-flow, a sign-geometry and an annealed-Zipf config equals its
  unbatched runs to the solver tolerance (and differs from the plain flow, so the option took effect); every
  key of the schema is either built by the batched path or makes the flow refuse batching (then it runs
  one by one, and a sweep plans it as single points).
* Validation: each key that a run kind does not read, and each data-schedule key that would change nothing,
  is refused with one line naming the key and the value (exit 2 through the CLI).
* The Python API takes numpy scalars and ``pathlib.Path`` where it takes numbers and paths.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import main
from analysis.sweep.run import SweepOptions, plan_groups
from dynamics.config import Config, ConfigError, resolve_config
from dynamics.run import batch_refusal, run_flow, run_flow_batch, setup
from dynamics.schedule import _zipf_slice
from dynamics.start import Start

# A short tiny flow from a Gaussian start (members differ in init.seed), for batched-vs-single comparisons.
SHORT = {"flow.t_max": 20.0, "flow.points": 12, "init.kind": "gaussian", "init.scale": 1e-2}
# Batched and single runs take different steps (the batch's is the strictest member's): both meet
# rtol = 1e-6 on their own, so their curves agree to well under 1e-4 (measured: < 1e-6).
BATCH_TOLERANCE = 1e-4


def _members(overrides: dict) -> list[Config]:
    base = resolve_config("tiny", overrides={**SHORT, **overrides})
    return [base.override({"init.seed": seed}) for seed in (0, 1)]


def _assert_batch_equals_single(configs: list[Config]) -> list:
    batch = run_flow_batch(configs)
    for config, flow in zip(configs, batch, strict=True):
        single = run_flow(config)
        assert flow.info.status == single.info.status == "ok"
        assert flow.info.flow.batch_size == len(configs)
        np.testing.assert_array_equal(flow.t, single.t)
        np.testing.assert_allclose(flow.loss, single.loss, rtol=0, atol=BATCH_TOLERANCE)
        np.testing.assert_allclose(flow.p_correct, single.p_correct, rtol=0, atol=BATCH_TOLERANCE)
        np.testing.assert_allclose(flow.final_state, single.final_state, rtol=0, atol=BATCH_TOLERANCE)
    return batch


@pytest.mark.parametrize("option", [{"flow.modified_lr": 1.0},
                                    {"flow.geometry": "sign", "flow.geometry_eps": 1e-3},
                                    {"data.zipf": 0.0, "data.zipf_end": 2.0}],
                         ids=["modified", "sign", "annealed-zipf"])
def test_a_batched_flow_is_the_flow_of_its_config(option):
    configs = _members(option)
    assert batch_refusal(configs[0]) is None
    batch = _assert_batch_equals_single(configs)
    # the option took effect in the batch: not the plain gradient flow
    plain = run_flow(resolve_config("tiny", overrides={**SHORT, "init.seed": 0}))
    assert np.abs(batch[0].loss - plain.loss).max() > 50 * BATCH_TOLERANCE
    assert batch[0].info.flow.modified_lr == configs[0].flow.modified_lr


# Every key of the schema with a value away from its default (and what that value needs besides), and
# whether a flow with it is batched ("batched") or integrated one member at a time ("refused"). init.* keys
# are what members differ in; ``device`` has only cpu here.
TRANSFORMER = {"model.kind": "transformer", "model.attention": "softmax", "loss.kind": "sampled",
               "loss.samples": 64, "model.dim": 8, "model.heads": 2, "model.head_dim": 2,
               "model.mlp_width": 4}
KEYS: dict[str, tuple[dict, str] | None] = {
    "task.subjects": ({"task.subjects": 5}, "batched"),
    "task.relations": ({"task.relations": 3}, "batched"),
    "task.answers_per_relation": ({"task.answers_per_relation": 3}, "batched"),
    "task.noise_tokens": ({"task.noise_tokens": 2}, "batched"),
    "task.seq_len": ({"task.seq_len": 5}, "batched"),
    "task.facts": ({"task.facts": "random"}, "batched"),
    "task.subject_zipf": ({"task.subject_zipf": 1.0}, "batched"),
    "task.relation_zipf": ({"task.relation_zipf": 1.0}, "batched"),
    "task.seed": ({"task.facts": "random", "task.seed": 3}, "batched"),
    "model.kind": ({"model.kind": "embedded", "model.dim": 12}, "batched"),
    "model.attention": ({"model.attention": "softmax"}, "batched"),
    "model.dim": ({"model.kind": "embedded", "model.dim": 16}, "batched"),
    "model.embeddings": ({"model.kind": "embedded", "model.dim": 16, "model.embeddings": "hadamard"},
                         "batched"),
    "model.seed": ({"model.kind": "embedded", "model.dim": 12, "model.seed": 2}, "batched"),
    "model.heads": (TRANSFORMER, "batched"),
    "model.head_dim": (TRANSFORMER, "batched"),
    "model.mlp_width": ({**TRANSFORMER, "model.mlp_width": 0}, "batched"),
    "init.kind": None, "init.scale": None, "init.seed": None, "init.alpha": None, "init.beta": None,
    "init.from_run": ({"init.from_run": "some/run"}, "refused"),
    "loss.kind": ({"loss.kind": "sampled", "loss.samples": 64}, "batched"),
    "loss.samples": ({"loss.kind": "sampled", "loss.samples": 32}, "batched"),
    "loss.seed": ({"loss.kind": "sampled", "loss.samples": 64, "loss.seed": 5}, "batched"),
    "flow.t_max": ({"flow.t_max": 10.0}, "batched"),
    "flow.t_min": ({"flow.t_min": 0.1}, "batched"),
    "flow.points": ({"flow.points": 9}, "batched"),
    "flow.method": ({"flow.method": "cvode"}, "refused"),
    "flow.rtol": ({"flow.rtol": 1e-7}, "batched"),
    "flow.atol": ({"flow.atol": 1e-11}, "batched"),
    "flow.first_step": ({"flow.first_step": 1e-2}, "batched"),
    "flow.max_steps": ({"flow.max_steps": 50_000}, "batched"),
    "flow.modified_lr": ({"flow.modified_lr": 0.5}, "batched"),
    "flow.jacobian": ({"flow.method": "cvode", "flow.jacobian": "hvp"}, "refused"),
    "flow.newton_preconditioner": ({"flow.method": "cvode", "flow.newton_preconditioner": "blocks"},
                                   "refused"),
    "flow.geometry": ({"flow.geometry": "spectral", "flow.geometry_eps": 1e-2}, "batched"),
    "flow.geometry_eps": ({"flow.geometry": "sign", "flow.geometry_eps": 1e-2}, "batched"),
    "train.optimizer": ({"train.optimizer": "adam"}, "batched"),
    "train.lr": ({"train.lr": 0.05}, "batched"),
    "train.batch_size": ({"train.batch_size": 64}, "batched"),
    "train.steps": ({"train.steps": 100}, "batched"),
    "train.seed": ({"train.seed": 4}, "batched"),
    "train.beta1": ({"train.optimizer": "adam", "train.beta1": 0.5}, "batched"),
    "train.beta2": ({"train.optimizer": "adam", "train.beta2": 0.9}, "batched"),
    "train.eps": ({"train.optimizer": "adam", "train.eps": 1e-6}, "batched"),
    "train.momentum": ({"train.optimizer": "muon", "train.momentum": 0.5}, "batched"),
    "data.holdout": ({"data.holdout": 1}, "batched"),
    "data.warmup_subjects": ({"data.warmup_subjects": 0.5, "data.warmup_time": 5.0}, "refused"),
    "data.warmup_time": ({"data.warmup_subjects": 0.5, "data.warmup_time": 5.0}, "refused"),
    "data.zipf": ({"data.zipf": 1.0}, "batched"),
    "data.zipf_end": ({"data.zipf_end": 1.0}, "batched"),
    "data.replay": ({"init.from_run": "some/run", "data.replay": 0.1}, "refused"),
    "data.freeze": ({"data.freeze": "a"}, "batched"),
    "device": None,
}


def _schema_keys() -> set[str]:
    keys = set()
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            keys |= {f"{section.name}.{f.name}" for f in dataclasses.fields(value)}
        else:
            keys.add(section.name)
    return keys


def test_every_schema_key_has_a_batching_decision():
    """A key added to the schema must be added here: built by the batched path, or a refusal to batch."""
    assert set(KEYS) == _schema_keys()
    for key, entry in KEYS.items():
        if entry is None:
            continue
        overrides, expected = entry
        config = _members(overrides)[0]
        assert (batch_refusal(config) is None) == (expected == "batched"), key


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k, e in KEYS.items() if e is not None and e[1] == "batched"])
def test_every_batched_key_gives_the_runs_alone(key):
    _assert_batch_equals_single(_members(KEYS[key][0]))


def test_refused_batches_run_one_by_one_and_a_sweep_plans_them_as_single_points():
    configs = _members({"flow.method": "cvode", "flow.t_max": 5.0})
    flows = run_flow_batch(configs)
    for config, flow in zip(configs, flows, strict=True):
        assert flow.info.flow.batch_size is None or flow.info.flow.batch_size == 1
        np.testing.assert_array_equal(flow.loss, run_flow(config).loss)  # the same code, the same numbers
    base = resolve_config("tiny", overrides=SHORT)
    points = [{"flow.method": m, "init.seed": s} for m in ("dopri5", "cvode") for s in (0, 1, 2)]
    groups = plan_groups(base, points, SweepOptions())
    assert [len(g) for g in groups] == [3, 1, 1, 1]
    assert all(p["flow.method"] == "cvode" for g in groups[1:] for p in g)
    # a point refused when its flow is set up (a replay without a run to start from) is planned alone
    replay = [{"data.replay": r, "init.seed": s} for r in (0.0, 0.2) for s in (0, 1)]
    assert [len(g) for g in plan_groups(base, replay, SweepOptions())] == [2, 1, 1]


# --------------------------------------------------------------------------------------------------
# Validation: accepted only where it has an effect
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, key", [
    ({"data.warmup_time": 400.0, "data.warmup_subjects": 0.5}, "data.warmup_time=400.0"),  # = flow.t_max
    ({"data.warmup_time": 500.0, "data.warmup_subjects": 0.5}, "data.warmup_time=500.0"),
    ({"data.warmup_subjects": 0.5}, "data.warmup_subjects=0.5"),
    ({"data.warmup_time": 50.0}, "data.warmup_time=50.0"),
    ({"data.warmup_time": 50.0, "data.warmup_subjects": 0.9}, "data.warmup_subjects=0.9"),  # ⌈0.9·4⌉ = 4
    ({"flow.geometry": "sign", "flow.geometry_eps": 1e300}, "flow.geometry_eps=1e+300"),
    ({"flow.geometry": "sign", "flow.geometry_eps": 2.0}, "flow.geometry_eps=2.0"),
    ({"flow.jacobian": "hvp"}, "flow.jacobian='hvp'"),  # dopri5 uses no Jacobian product
    ({"flow.method": "cvode", "flow.jacobian": "hvp", "flow.modified_lr": 0.1}, "flow.jacobian='hvp'"),
    ({"model.dim": 32}, "model.dim=32"),  # the reduced model has no embeddings
    ({"model.embeddings": "onehot"}, "model.embeddings='onehot'"),
    ({"model.seed": 1}, "model.seed=1"),
    ({"model.heads": 2}, "model.heads=2"),
    ({"model.kind": "embedded", "model.mlp_width": 4}, "model.mlp_width=4"),
    ({"model.kind": "embedded", "model.embeddings": "onehot", "model.seed": 1}, "model.seed=1"),
    ({**TRANSFORMER, "model.embeddings": "onehot"}, "model.embeddings='onehot'"),
    ({"task.seed": 1}, "task.seed=1"),  # a structured table is not drawn
    ({"init.seed": 1}, "init.seed=1"),  # a constant start is not drawn
    ({"loss.samples": 100}, "loss.samples=100"),  # the population loss draws no sample
    ({"loss.seed": 1}, "loss.seed=1"),
    ({"task.seq_len": 3, "task.noise_tokens": 2}, "task.noise_tokens=2"),  # no position for noise
    ({"task.subjects": 1, "task.subject_zipf": 1.0}, "task.subject_zipf=1.0"),
    ({"task.relations": 1, "task.relation_zipf": 1.0}, "task.relation_zipf=1.0"),
])
def test_a_setting_without_effect_is_one_line(overrides, key):
    with pytest.raises(ConfigError) as err:
        resolve_config("tiny", overrides=overrides)
    message = str(err.value)
    assert message.startswith(key + ":") and "\n" not in message, message
    assert "allowed" in message or "must be" in message, message


def test_a_warm_up_just_short_of_every_subject_is_accepted():
    config = resolve_config("tiny", overrides={"data.warmup_time": 50.0, "data.warmup_subjects": 0.75})
    assert config.data.warmup_subjects == 0.75  # ⌈0.75·4⌉ = 3 of 4 subjects


def test_run_time_refusals_are_one_line():
    tiny = resolve_config("tiny", overrides={"flow.t_max": 5.0})
    with pytest.raises(ConfigError, match=r"^data.replay=0.2: .*not started from another run.*--init-from"):
        run_flow(tiny.override({"data.replay": 0.2}))
    _, model, _ = setup(tiny)
    nothing_new = Start(model.initial_parameters(tiny.init), old_subjects=tiny.task.subjects)
    with pytest.raises(ConfigError, match=r"^data.replay=0.2: .*no subject beyond the 4.*subjects above 4"):
        run_flow(tiny.override({"data.replay": 0.2}), start=nothing_new)
    # the advice followed: a start with fewer subjects than the task trains replays them
    one_new = Start(model.initial_parameters(tiny.init), old_subjects=tiny.task.subjects - 1)
    assert run_flow(tiny.override({"data.replay": 0.2}), start=one_new).info.ok
    with pytest.raises(ConfigError, match=r"^flow.geometry_eps=0.001: has no effect on flow.geometry='eu"):
        run_flow(tiny.override({"flow.geometry_eps": 1e-3}))
    with pytest.raises(ConfigError, match=r"^data.freeze='a\+v': freezes every parameter block"):
        run_flow(tiny.override({"data.freeze": "a+v"}))
    with pytest.raises(ConfigError, match=r"^flow.jacobian='hvp': flow.geometry='spectral'"):
        run_flow(tiny.override({"flow.geometry": "spectral", "flow.geometry_eps": 1e-3,
                                "flow.method": "cvode", "flow.jacobian": "hvp"}))


def test_a_steep_zipf_on_new_subjects_does_not_underflow():
    weights = _zipf_slice(16, 32, 400.0)  # 17^-400 underflows; relative to subject 17 it does not
    assert np.isfinite(weights).all() and weights.sum() == pytest.approx(1.0, rel=1e-12)
    assert weights[1] / weights[0] == pytest.approx((17 / 18) ** 400, rel=1e-10)
    zipf = np.arange(3, 7) ** -1.5
    np.testing.assert_allclose(_zipf_slice(2, 6, 1.5), zipf / zipf.sum(), rtol=1e-12)
    config = resolve_config("tiny", overrides={"task.subjects": 6, "task.facts": "random", "data.zipf": 400.0,
                                               "flow.t_max": 5.0, "flow.points": 8})
    _, model, _ = setup(config)
    start = Start(model.initial_parameters(config.init), old_subjects=4)  # subjects 4, 5 are new
    traj = run_flow(config, start=start)
    assert traj.info.status == "ok", traj.info.message
    assert traj.info.phases[0]["subjects"] == [4, 6]


def test_the_cli_refuses_a_setting_without_effect_with_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["simulate", "--preset", "tiny", "--set", "data.warmup_time=50", "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("factrecall: error: data.warmup_time=50.0: a warm-up needs data.warmup_subjects")
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# The Python API: numpy scalars and paths
# --------------------------------------------------------------------------------------------------

def test_numpy_values_and_paths_are_accepted(tmp_path):
    plain = resolve_config("tiny", overrides={"task.subjects": 5, "init.scale": 0.5, "flow.t_max": 50,
                                              "data.holdout": 1, "data.zipf": 0.5})
    numpy = resolve_config("tiny", overrides={"task.subjects": np.int64(5), "init.scale": np.float32(0.5),
                                              "flow.t_max": np.int32(50), "data.holdout": np.uint8(1),
                                              "data.zipf": np.float64(0.5)})
    assert numpy == plain
    assert type(numpy.task.subjects) is int and type(numpy.flow.t_max) is float
    assert plain.override({"task.subjects": np.int64(6)}).task.subjects == 6
    assert Config.from_dict({"task": {"subjects": np.int16(3)}}).task.subjects == 3
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"task": {"subjects": 5}}))
    assert resolve_config("tiny", path).task.subjects == 5
    assert resolve_config("tiny", overrides={"init.from_run": tmp_path}).init.from_run == str(tmp_path)
    with pytest.raises(ConfigError, match=r"^task.subjects=2.5: must be an integer"):
        resolve_config("tiny", overrides={"task.subjects": np.float64(2.5)})


def test_a_sweep_takes_numpy_grids(tmp_path):
    from analysis.sweep import run_sweep

    base = resolve_config("tiny", overrides={"flow.t_max": 5.0, "flow.points": 8})
    rows = run_sweep(base, {"init.scale": np.geomspace(1e-3, 1e-2, 2), "task.subjects": np.arange(4, 6)},
                     Path(tmp_path) / "sweep")
    assert sorted((r["task.subjects"], r["status"]) for r in rows) == [(4, "ok")] * 2 + [(5, "ok")] * 2
    assert all(math.isfinite(r["final_loss"]) for r in rows)


def test_flow_sharpness_follows_the_runs_own_flow():
    """The sharpness probe integrates the run's flow (its data schedule, its frozen blocks' metric), not the
    plain flow of the task."""
    from dynamics.curvature import sharpness
    from dynamics.objective import make_objective
    from dynamics.run import flow_sharpness, metric_of

    config = resolve_config("tiny", overrides={"flow.t_max": 50.0, "task.subjects": 6,
                                               "task.facts": "random"})
    _, plain = flow_sharpness(config, points=2, iterations=20)
    for change in ({"data.zipf": 2.0}, {"data.freeze": "a"}, {"data.holdout": 2}):
        changed = config.override(change)
        times, values = flow_sharpness(changed, points=2, iterations=20)
        assert np.abs(values - plain).max() > 1e-3 * np.abs(plain).max(), change
    # at t = 0 it is λ_max of P H of the trained loss (held-out subjects at weight 0), P the run's metric
    held = config.override({"data.holdout": 2})
    task, model, _ = setup(held)
    trained = task.with_subject_weights(np.r_[np.full(4, 0.25), 0.0, 0.0])
    objective = make_objective(model.with_task(trained), trained, held.loss)
    theta = model.initial_parameters(held.init)
    _, values = flow_sharpness(held, points=2, iterations=20)
    assert values[0] == pytest.approx(sharpness(objective, theta, metric_of(held, model), 20), rel=1e-9)
