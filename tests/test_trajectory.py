"""The trajectory record: per-fact metrics, aggregates, save/load, determinism, discrete time axis."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dynamics.config import TaskConfig, resolve_config
from dynamics.run import run_flow, run_training
from dynamics.task import FactTask
from dynamics.trajectory import FactClass, Trajectory, fact_metrics

# A short flow on the tiny task: fast, but long enough for the loss to move.
SHORT_FLOW = ["flow.t_max=50", "flow.points=20"]
# A short SGD run on the tiny task (fresh batches every step).
SHORT_SGD = ["train.optimizer=sgd", "train.steps=150", "train.batch_size=64", "train.lr=0.1"]


def _all_arrays(traj: Trajectory) -> dict[str, np.ndarray]:
    arrays = {name: getattr(traj, name) for name in Trajectory.ARRAYS}
    arrays["attention"] = traj.attention
    arrays.update({f"norm_{name}": values for name, values in traj.norms.items()})
    return arrays


def _assert_identical(a: Trajectory, b: Trajectory) -> None:
    """Bit for bit: used for two runs of the same code in one process, and for a save/load round trip, which
    is the npz writer's own contract (float64 stored as is; a tolerance would let a lossy writer through)."""
    first, second = _all_arrays(a), _all_arrays(b)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype, name
        assert first[name].shape == second[name].shape, name
        assert np.array_equal(first[name], second[name]), f"{name} differs between two identical runs"


@pytest.fixture(scope="module")
def flow_traj() -> Trajectory:
    return run_flow(resolve_config("tiny", overrides=SHORT_FLOW))


# --- fact_metrics against a hand computation ------------------------------------------------------------

def _hand_metrics(facts: np.ndarray, D: int, logits: np.ndarray) -> dict[str, np.ndarray]:
    """Loop-by-loop reference of the per-fact record, straight from the definitions."""
    S, R, _ = logits.shape
    out = {name: np.zeros((S, R)) for name in ("p_correct", "p_relation", "p_subject")}
    out["argmax_class"] = np.zeros((S, R), dtype=np.int64)
    for s in range(S):
        for r in range(R):
            z = logits[s, r]
            p = np.exp(z - z.max())
            p /= p.sum()
            out["p_correct"][s, r] = p[facts[s, r]]
            out["p_relation"][s, r] = p[r * D:(r + 1) * D].sum()  # mass of block A_r
            out["p_subject"][s, r] = sum(p[facts[s, q]] for q in range(R))  # mass on {a*(s, r')}
            top = int(np.argmax(z))
            if top == facts[s, r]:
                out["argmax_class"][s, r] = FactClass.RECALLED
            elif r * D <= top < (r + 1) * D:
                out["argmax_class"][s, r] = FactClass.HALLUCINATING
            else:
                out["argmax_class"][s, r] = FactClass.UNINFORMED
    return out


def _check_against_hand(task: FactTask, logits: np.ndarray) -> dict[str, torch.Tensor]:
    got = fact_metrics(task, torch.tensor(logits, dtype=torch.float64))
    want = _hand_metrics(task.facts, task.D, logits)
    for name in ("p_correct", "p_relation", "p_subject"):
        assert got[name].shape == (task.S, task.R), name
        np.testing.assert_allclose(got[name].numpy(), want[name], rtol=1e-12, atol=0, err_msg=name)
    np.testing.assert_allclose(got["fact_loss"].numpy(), -np.log(want["p_correct"]), rtol=1e-12)
    np.testing.assert_allclose(got["relation_loss"].numpy(), -np.log(want["p_relation"]), rtol=1e-12)
    np.testing.assert_allclose(got["subject_loss"].numpy(), -np.log(want["p_subject"]), rtol=1e-12)
    assert np.array_equal(got["argmax_class"].numpy(), want["argmax_class"])
    return got


def test_fact_metrics_hand_computed_cases():
    # S=2, R=2, D=3 structured: facts a*(0,0)=0, a*(0,1)=3, a*(1,0)=1, a*(1,1)=4; A_0={0,1,2}, A_1={3,4,5}.
    task = FactTask(TaskConfig(subjects=2, relations=2, answers_per_relation=3, noise_tokens=1, seq_len=4))
    assert task.facts.tolist() == [[0, 3], [1, 4]]
    logits = np.array([
        [[3.0, 1.0, 0.0, 0.5, 0.0, 0.2],    # (0,0): argmax 0 = a*  -> recalled
         [0.1, 0.0, 0.3, 1.0, 0.2, 2.5]],   # (0,1): argmax 5 in A_1, not a*=3 -> hallucinated
        [[0.5, 1.0, 0.0, 0.0, 3.0, 0.1],    # (1,0): argmax 4 in A_1, outside A_0 -> off type
         [0.0, 0.2, 2.0, 0.1, 1.0, 0.3]],   # (1,1): argmax 2 in A_0, outside A_1 -> off type
    ])
    got = _check_against_hand(task, logits)
    RECALLED, HALLUCINATING, UNINFORMED = FactClass.RECALLED, FactClass.HALLUCINATING, FactClass.UNINFORMED
    assert got["argmax_class"].tolist() == [[RECALLED, HALLUCINATING], [UNINFORMED, UNINFORMED]]

    # Spot values by hand: uniform logits give p(a*) = 1/6, p(A_r) = 1/2, p(subject answers) = 2/6.
    flat = fact_metrics(task, torch.zeros(2, 2, 6, dtype=torch.float64))
    assert torch.allclose(flat["p_correct"], torch.full((2, 2), 1 / 6, dtype=torch.float64))
    assert torch.allclose(flat["p_relation"], torch.full((2, 2), 1 / 2, dtype=torch.float64))
    assert torch.allclose(flat["p_subject"], torch.full((2, 2), 2 / 6, dtype=torch.float64))


def test_fact_metrics_random_table_distinct_sizes():
    # S, R, D all different so that any mix-up of axes or blocks shows.
    task = FactTask(TaskConfig(subjects=5, relations=3, answers_per_relation=4, noise_tokens=2, seq_len=6,
                               facts="random", seed=3))
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(5, 3, 12))
    # Force each argmax class to occur at least once.
    logits[0, 0, task.facts[0, 0]] = 10.0                   # recalled
    other = 1 * 4 + (task.facts[1, 1] - 4 + 1) % 4
    logits[1, 1, other] = 10.0                              # hallucinated: in A_1, not a*
    logits[2, 2, 0] = 10.0                                  # off type: in A_0, asked relation 2
    got = _check_against_hand(task, logits)
    assert got["argmax_class"][0, 0] == FactClass.RECALLED
    assert got["argmax_class"][1, 1] == FactClass.HALLUCINATING
    assert got["argmax_class"][2, 2] == FactClass.UNINFORMED


def test_fact_metrics_batched_equals_per_slice():
    # record() evaluates many states at once: leading axes must not mix facts or states.
    task = FactTask(TaskConfig(subjects=3, relations=2, answers_per_relation=4, noise_tokens=2, seq_len=6,
                               facts="random", seed=1))
    logits = torch.randn(4, 3, 2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = fact_metrics(task, logits)
    for k in range(4):
        single = fact_metrics(task, logits[k])
        for name, value in single.items():
            assert batched[name].shape == (4, 3, 2), name
            assert torch.equal(batched[name][k], value), name


# --- aggregates -----------------------------------------------------------------------------------------

def test_aggregate_losses_are_frequency_weighted_means_of_fact_losses():
    # Non-uniform frequencies, so that a plain mean would differ from the weighted one.
    zipf = ["task.subject_zipf=1.0", "task.relation_zipf=0.7"]
    config = resolve_config("tiny", overrides=SHORT_FLOW + zipf)
    traj = run_flow(config)
    w = traj.fact_weights
    assert w.shape == traj.facts.shape
    assert not np.allclose(w, w.mean())
    assert np.isclose(w.sum(), 1.0)
    expected = (w * traj.fact_loss).sum(axis=(1, 2)) / w.sum()
    np.testing.assert_allclose(traj.loss, expected, rtol=1e-12)
    plain = traj.fact_loss.mean(axis=(1, 2))
    assert np.abs(plain - traj.loss).max() > 1e-6  # the test can tell weighted from unweighted
    np.testing.assert_allclose(traj.relation_loss, (w * -np.log(traj.p_relation)).sum(axis=(1, 2)),
                               rtol=1e-10)
    np.testing.assert_allclose(traj.subject_loss, (w * -np.log(traj.p_subject)).sum(axis=(1, 2)), rtol=1e-10)
    np.testing.assert_allclose(traj.p_correct, np.exp(-traj.fact_loss), rtol=1e-12)
    # the run record's final loss: the frequency-weighted loss of the facts at the last recorded time
    assert traj.info.final_loss == pytest.approx(float((w * traj.fact_loss[-1]).sum()), rel=1e-12)


# --- save / load ----------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path, flow_traj):
    flow_traj.save(tmp_path)
    loaded = Trajectory.load(tmp_path)
    _assert_identical(flow_traj, loaded)
    assert loaded.argmax_class.dtype == np.int8
    assert loaded.facts.dtype == np.int64
    assert loaded.t.dtype == np.float64
    assert loaded.norms.keys() == flow_traj.norms.keys() and flow_traj.norms
    assert loaded.info == flow_traj.info and loaded.info.status == "ok"
    # the JSON writer's own round trip (a float's repr reads back as the same float): exact
    assert json.loads((tmp_path / "summary.json").read_text()) == flow_traj.info.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "trajectory.npz"]  # no temp files


def test_npz_loads_without_pickle_and_holds_the_record(tmp_path, flow_traj):
    flow_traj.save(tmp_path)
    K = len(flow_traj.t)
    S, R = flow_traj.facts.shape
    with np.load(tmp_path / "trajectory.npz", allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}  # raises if anything needed pickle
    for name in arrays:
        assert arrays[name].dtype != object, name
    for name in ("t", "loss", "relation_loss", "subject_loss"):
        assert arrays[name].shape == (K,), name
    for name in ("fact_loss", "p_correct", "p_relation", "p_subject", "argmax_class"):
        assert arrays[name].shape == (K, S, R), name
    assert arrays["facts"].shape == (S, R)
    for part in ("subject", "relation", "noise", "eos"):
        assert arrays[f"attention_{part}"].shape == (K,)
    assert any(name.startswith("norm_") for name in arrays)


# --- determinism ----------------------------------------------------------------------------------------

def test_flow_is_bit_identical_across_runs(flow_traj):
    again = run_flow(resolve_config("tiny", overrides=SHORT_FLOW))
    _assert_identical(flow_traj, again)
    assert again.info.cost.function_evals == flow_traj.info.cost.function_evals


def test_sgd_is_bit_identical_across_runs():
    config = resolve_config("tiny", overrides=SHORT_FLOW + SHORT_SGD)
    first, second = run_training(config), run_training(config)
    _assert_identical(first, second)
    # ...and the seed matters: another train.seed gives other batches, hence another trajectory.
    other = run_training(resolve_config("tiny", overrides=SHORT_FLOW + SHORT_SGD + ["train.seed=1"]))
    assert not np.array_equal(first.loss, other.loss)


# --- the discrete time axis -----------------------------------------------------------------------------

def test_sgd_times_are_integer_multiples_of_lr():
    lr, steps = 0.1, 150
    traj = run_training(resolve_config("tiny", overrides=SHORT_FLOW + SHORT_SGD))
    assert traj.info.status == "ok"
    k = np.rint(traj.t / lr).astype(np.int64)
    assert np.array_equal(traj.t, k * lr)  # recorded at exactly t = k·lr
    assert np.all(np.diff(k) > 0)
    assert k[0] == 0 and traj.t[0] == 0.0  # step 0: the flow's initialisation
    assert k[-1] == steps and traj.t[-1] == steps * lr  # the last step
    assert len(k) > 5  # more than the two end points: the flow's grid is followed
    assert np.isfinite(traj.loss).all()


@pytest.mark.parametrize("lr", [1e6, 1e10])
def test_diverging_gd_ends_nonfinite_and_keeps_finite_trajectory(lr):
    # Note: with init.kind=constant, linear attention and a huge lr, GD does not diverge: the first step
    # saturates the cross-entropy (loss exactly 0, gradient 0). A gaussian initialisation breaks the
    # symmetry and makes the iteration blow up within a few steps. The grid starts at t = lr so that
    # every step is recorded and the failure step is on the record grid.
    steps = 30
    config = resolve_config("tiny", overrides=[
        "train.optimizer=gd", f"train.lr={lr}", f"train.steps={steps}", "init.kind=gaussian", "init.scale=1",
        f"flow.t_min={lr}", f"flow.t_max={lr * steps}", "flow.points=40"])
    traj = run_training(config)
    info = traj.info
    assert info.status == "nonfinite", info.message
    k_fail = info.status_time / lr
    assert k_fail == round(k_fail) and 0 < k_fail <= steps
    assert info.status_time == round(k_fail) * lr
    assert len(traj.t) >= 2  # the trajectory before the failure is kept ...
    assert traj.t[0] == 0.0 and traj.t[-1] <= info.status_time  # ... and ends there
    for name, values in _all_arrays(traj).items():
        assert np.isfinite(values).all(), f"{name} holds non-finite values in the kept trajectory"
    assert math.isfinite(info.final_loss)
