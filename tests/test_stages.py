"""Stage detection (docs/design.md §5): acceptance on real runs, properties on synthetic curves, the CLI.

Real runs: the figure5 flow and its SGD run, a random table (S=64, R=8), a subjects-first table (S=2,
R=32), overlapping escapes (S=4, R=16), D=1 and a large initialisation. Synthetic trajectories: a
structured table S=8, R=4, D=8 (levels log 32, H(A|R) = log 8, H(A|S) = log 4) with loss curves built from
logistic steps in log t at known boundaries, with and without Gaussian noise. Boundaries are recovered
within BOUNDARY_RTOL (5% in t; the grid spacing is 0.02 decades, about 4.7%, so this asks for sub-grid
interpolation, which the midpoint-crossing rule gives).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import main
from analysis.stages import (
    crossing_time,
    detect_fact_stages,
    detect_stages,
    fact_states,
    running_median,
)
from dynamics import resolve_config, run_flow, run_training
from dynamics.trajectory import FactClass, Trajectory

LOG8 = math.log(8)
BOUNDARY_RTOL = 0.05
THREE = ["init", "hallucination", "recall"]


# --- helpers --------------------------------------------------------------------------------------------

def stage(report, name):
    found = [s for s in report.stages if s.name == name]
    assert len(found) == 1, f"expected one {name!r} stage, got {report.names}"
    return found[0]


def assert_real_plateaus(traj: Trajectory, report, width: float = 0.05) -> None:
    """Every reported intermediate stage is a plateau of the raw loss at its expected level."""
    for s in report.stages:
        if s.name in ("init", "recall"):
            continue
        assert s.plateau_start < s.plateau_end, s
        inside = (traj.t >= s.plateau_start) & (traj.t <= s.plateau_end)
        assert inside.sum() >= 3, s
        gap = np.abs(traj.loss[inside] - s.expected_level).max()
        assert gap < width, f"{s.name}: loss strays {gap:.3f} from {s.level_name}={s.expected_level:.4f}"
        assert s.t_start <= s.plateau_start and s.t_end is not None and s.plateau_end <= s.t_end, s


def structured_facts(S: int, R: int, D: int) -> np.ndarray:
    return np.array([[r * D + (s * D) // S for r in range(R)] for s in range(S)], dtype=np.int64)


S_SYN, R_SYN, D_SYN = 8, 4, 8
FACTS_SYN = structured_facts(S_SYN, R_SYN, D_SYN)
T_SYN = np.concatenate([[0.0], np.logspace(-2, 4, 300)])  # t = 0 first, as the engine records
X_SYN = np.log10(np.maximum(T_SYN, 1e-2))
TOP, HAR, HAS = math.log(32), math.log(8), math.log(4)  # log|A|, H(A|R), H(A|S) of FACTS_SYN


def step_down(x: np.ndarray, x0: float, width: float = 0.03) -> np.ndarray:
    """1 before x0, 0 after: a logistic step in log10 t."""
    return 1.0 / (1.0 + np.exp((x - x0) / width))


def synthetic(loss, relation_loss, subject_loss, facts=FACTS_SYN, D=D_SYN, t=T_SYN) -> Trajectory:
    """A trajectory whose every fact follows the aggregate curves (per-fact arrays broadcast)."""
    K = len(t)
    S, R = facts.shape

    def per_fact(a):
        return np.broadcast_to(np.asarray(a, dtype=np.float64)[:, None, None], (K, S, R)).copy()

    p_correct, p_relation = np.exp(-loss), np.exp(-relation_loss)
    argmax = np.where(p_correct > 0.5, 0, np.where(p_relation > 0.5, 1, 2)).astype(np.int8)
    return Trajectory(t=np.asarray(t, dtype=np.float64), loss=np.asarray(loss, dtype=np.float64),
                      relation_loss=np.asarray(relation_loss, dtype=np.float64),
                      subject_loss=np.asarray(subject_loss, dtype=np.float64),
                      fact_loss=per_fact(loss), p_correct=per_fact(p_correct),
                      p_relation=per_fact(p_relation), p_subject=per_fact(np.exp(-subject_loss)),
                      argmax_class=np.broadcast_to(argmax[:, None, None], (K, S, R)).copy(),
                      facts=facts, fact_weights=np.full((S, R), 1.0 / (S * R)), answers_per_relation=D,
                      attention=np.zeros((K, 4)), norms={})


def noisy(rng, curve, sigma):
    return np.abs(curve + rng.normal(0.0, sigma, curve.shape)) if sigma else curve


def two_step(x1: float, x2: float, sigma: float, rng):
    """log|A| -> H(A|R) at 10**x1 (relation learned) -> 0 at 10**x2 (subject learned)."""
    loss = (TOP - HAR) * step_down(X_SYN, x1) + HAR * step_down(X_SYN, x2)
    relation = math.log(R_SYN) * step_down(X_SYN, x1)
    subject = math.log(D_SYN) * step_down(X_SYN, x2)
    return synthetic(noisy(rng, loss, sigma), noisy(rng, relation, sigma), noisy(rng, subject, sigma))


# --- the synthetic table's levels are what the tests assume -----------------------------------------------

def test_synthetic_table_levels():
    levels = synthetic(np.zeros(len(T_SYN)), np.zeros(len(T_SYN)), np.zeros(len(T_SYN))).levels
    assert levels["log|A|"] == pytest.approx(TOP) and levels["H(A)"] == pytest.approx(TOP)
    assert levels["H(A|R)"] == pytest.approx(HAR) and levels["H(A|S)"] == pytest.approx(HAS)


# --- property tests on synthetic curves ---------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.02])
@pytest.mark.parametrize("seed", range(6))
def test_two_step_curve_boundaries_recovered(seed, sigma):
    rng = np.random.default_rng(1000 + seed)
    x1 = rng.uniform(-0.5, 1.8)
    x2 = x1 + rng.uniform(0.5, 1.5)  # at least half a decade of plateau
    t1, t2 = 10 ** x1, 10 ** x2
    report = detect_stages(two_step(x1, x2, sigma, rng))
    assert report.names == THREE, report.summary()
    assert report.intermediate == ["hallucination"]
    init, hall, recall = report.stages
    assert init.t_start == 0.0
    assert hall.t_start == pytest.approx(t1, rel=BOUNDARY_RTOL)
    assert hall.t_end == pytest.approx(t2, rel=BOUNDARY_RTOL)
    assert init.t_end == hall.t_start and recall.t_start == hall.t_end and recall.t_end is None
    assert [(tr["from"], tr["to"]) for tr in report.transitions] == [("init", "hallucination"),
                                                                      ("hallucination", "recall")]
    assert [tr["t"] for tr in report.transitions] == [hall.t_start, hall.t_end]
    assert hall.expected_level == pytest.approx(HAR) and hall.level_name == "H(A|R)"
    assert abs(hall.level - HAR) < 0.02 + sigma
    assert t1 < hall.plateau_start < hall.plateau_end < t2


@pytest.mark.parametrize("seed", range(4))
def test_pure_noise_at_uniform_gives_only_init(seed):
    rng = np.random.default_rng(2000 + seed)
    n = len(T_SYN)
    traj = synthetic(TOP + rng.normal(0, 0.02, n), math.log(R_SYN) + rng.normal(0, 0.02, n),
                     math.log(D_SYN) + rng.normal(0, 0.02, n))
    report = detect_stages(traj)
    assert report.names == ["init"], report.summary()
    assert report.intermediate == [] and report.transitions == []
    assert report.stages[0].t_end is None  # still running at the end of the record


@pytest.mark.parametrize("seed", range(4))
def test_monotone_curve_learning_everything_together_gives_no_intermediate(seed):
    rng = np.random.default_rng(3000 + seed)
    frac = (4.0 - X_SYN) / 6.0  # linear in log t from log|A| at t = 1e-2 to 0 at t = 1e4
    traj = synthetic(noisy(rng, TOP * frac, 0.02), noisy(rng, math.log(R_SYN) * frac, 0.02),
                     noisy(rng, math.log(D_SYN) * frac, 0.02))
    report = detect_stages(traj)
    assert report.intermediate == [], report.summary()
    assert report.names == ["init", "recall"]
    # the boundary is where it crosses log|A| / 2, at t = 10; at 0.58 nats per decade, 0.02 nats of noise
    # moves the first crossing of the smoothed curve by several hundredths of a decade
    assert report.stages[0].t_end == pytest.approx(10.0, rel=0.3)


@pytest.mark.parametrize("seed", range(8))
def test_monotone_curve_with_relation_learned_first_gives_no_intermediate(seed):
    # The same straight line in log t (0.58 nats per decade: no plateau anywhere), now split as the model
    # would if it learned the relation first: relation-only loss max(L - log D, 0), within-block loss
    # the rest. The relation is known while the line passes H(A|R), so only a flatness requirement can
    # reject it; a band of +-0.05 nats around the level lasts 0.17 decades of this line, longer than
    # min_decades, and the detector must not call that a plateau.
    rng = np.random.default_rng(4000 + seed)
    loss = TOP * (4.0 - X_SYN) / 6.0
    relation = np.maximum(loss - HAR, 0.0)
    subject = np.minimum(math.log(D_SYN), loss)
    report = detect_stages(synthetic(noisy(rng, loss, 0.01), noisy(rng, relation, 0.01),
                                     noisy(rng, subject, 0.01)))
    assert report.intermediate == [], f"spurious plateau on a straight line: {report.stages}"


@pytest.mark.parametrize("seed", range(4))
def test_plateau_at_an_unmatched_level_is_not_a_stage(seed):
    # A clean, long plateau halfway between log|A| and H(A|R) (far from H(A) = log|A| and from H(A|S)),
    # with the relation known and the subject not, so that only the level rule can reject it.
    rng = np.random.default_rng(5000 + seed)
    middle = 0.5 * (TOP + HAR)
    x1, x2 = rng.uniform(0.0, 1.0), rng.uniform(2.0, 2.5)
    loss = (TOP - middle) * step_down(X_SYN, x1) + middle * step_down(X_SYN, x2)
    relation = math.log(R_SYN) * step_down(X_SYN, x1)
    subject = math.log(D_SYN) * step_down(X_SYN, x2)
    report = detect_stages(synthetic(noisy(rng, loss, 0.02), noisy(rng, relation, 0.02),
                                     noisy(rng, subject, 0.02)))
    assert report.intermediate == [], report.summary()
    assert report.names == ["init", "recall"]


def test_hallucination_level_without_the_relation_known_is_not_hallucination():
    # The loss sits at H(A|R) but the relation-only loss stays at log R: the level alone does not make
    # a hallucination stage.
    loss = (TOP - HAR) * step_down(X_SYN, 0.5) + HAR * step_down(X_SYN, 2.0)
    relation = math.log(R_SYN) * step_down(X_SYN, 2.0)
    subject = math.log(D_SYN) * step_down(X_SYN, 2.0)
    report = detect_stages(synthetic(loss, relation, subject))
    assert "hallucination" not in report.names, report.summary()


def test_subject_first_plateau_on_a_synthetic_curve():
    # log|A| -> H(A|S) = log R (subject known, relation not) -> 0.
    x1, x2 = 0.7, 2.1
    loss = (TOP - HAS) * step_down(X_SYN, x1) + HAS * step_down(X_SYN, x2)
    subject = math.log(D_SYN) * step_down(X_SYN, x1)
    relation = math.log(R_SYN) * step_down(X_SYN, x2)
    report = detect_stages(synthetic(loss, relation, subject))
    assert report.names == ["init", "subject_first", "recall"], report.summary()
    first = stage(report, "subject_first")
    assert first.level_name == "H(A|S)" and first.expected_level == pytest.approx(HAS)
    assert first.t_start == pytest.approx(10 ** x1, rel=BOUNDARY_RTOL)
    assert first.t_end == pytest.approx(10 ** x2, rel=BOUNDARY_RTOL)


def test_levels_come_from_the_runs_own_table():
    # Only 4 of the 8 answers of each block are used: H(A) = log 16 < log|A| = log 32 and
    # H(A|R) = log 4 < log D = log 8. A curve log|A| -> H(A) -> H(A|R) -> 0 is init -> marginal ->
    # hallucination -> recall; a plateau at log D (the balanced-table value) is not a hallucination here.
    S, R, D = 8, 4, 8
    facts = np.array([[r * D + s % 4 for r in range(R)] for s in range(S)], dtype=np.int64)
    top, marginal, har = math.log(32), math.log(16), math.log(4)
    zeros = np.zeros(len(T_SYN))
    levels = synthetic(zeros, zeros, zeros, facts=facts, D=D).levels
    assert levels["H(A)"] == pytest.approx(marginal) and levels["H(A|R)"] == pytest.approx(har)

    x0, x1, x2 = 0.0, 1.0, 2.5
    loss = (top - marginal) * step_down(X_SYN, x0) + (marginal - har) * step_down(X_SYN, x1) \
        + har * step_down(X_SYN, x2)
    relation = math.log(R) * step_down(X_SYN, x1)  # p(A_r) = 4/16 while only the marginal is known
    s0, s2 = step_down(X_SYN, x0), step_down(X_SYN, x2)
    subject = math.log(D) * s0 + math.log(4) * (1 - s0) * s2  # the subject's 4 answers among 16 used
    report = detect_stages(synthetic(loss, relation, subject, facts=facts, D=D))
    assert report.names == ["init", "marginal", "hallucination", "recall"], report.summary()
    assert stage(report, "hallucination").expected_level == pytest.approx(har)
    assert stage(report, "marginal").expected_level == pytest.approx(marginal)
    for name, t0 in (("marginal", 10 ** x0), ("hallucination", 10 ** x1)):
        assert stage(report, name).t_start == pytest.approx(t0, rel=BOUNDARY_RTOL)

    balanced = (top - LOG8) * step_down(X_SYN, x1) + LOG8 * step_down(X_SYN, x2)
    report = detect_stages(synthetic(balanced, relation, subject, facts=facts, D=D))
    assert "hallucination" not in report.names, report.summary()


# --- per-fact stages on synthetic curves ----------------------------------------------------------------

def test_fact_times_on_known_sigmoids():
    # Every fact has its own times: p(A_r) rises from 1/R to 1 around e^nu (crossing 1/2 where the
    # sigmoid is 1/3: ln t = nu - w_r ln 2), p(a*) = sigmoid((ln t - mu)/w) exactly, so the recall time
    # is e^mu and the sigmoid fit must give learning time e^mu and width w.
    rng = np.random.default_rng(7)
    S, R, D = 3, 4, 8
    K = len(T_SYN)
    ln_t = np.log(np.maximum(T_SYN, 1e-2))  # t = 0 is overwritten below
    nu = rng.uniform(0.0, 2.0, (S, R))
    mu = nu + rng.uniform(3.5, 5.5, (S, R))
    w, w_r = 0.3, 0.2
    p_correct = 1 / (1 + np.exp(-(ln_t[:, None, None] - mu) / w))
    p_relation = np.maximum(1 / R + (1 - 1 / R) / (1 + np.exp(-(ln_t[:, None, None] - nu) / w_r)), p_correct)
    p_correct[0], p_relation[0] = 1 / (R * D), 1 / R  # t = 0: uniform output
    loss = -np.log(p_correct).mean((1, 2))
    traj = synthetic(loss, -np.log(p_relation).mean((1, 2)), np.full(K, math.log(D)),
                     facts=structured_facts(S, R, D), D=D)
    traj.p_correct, traj.p_relation, traj.fact_loss = p_correct, p_relation, -np.log(p_correct)

    facts = detect_fact_stages(traj)
    assert facts.enter_hallucination.shape == (S, R) and facts.state.shape == (K, S, R)
    np.testing.assert_allclose(facts.enter_hallucination, np.exp(nu - w_r * math.log(2)), rtol=0.02)
    np.testing.assert_allclose(facts.recall_time, np.exp(mu), rtol=0.01)
    np.testing.assert_allclose(facts.leave_hallucination, facts.recall_time, rtol=1e-9)
    np.testing.assert_allclose(facts.learning_time, np.exp(mu), rtol=0.01)
    np.testing.assert_allclose(facts.learning_width, w, rtol=0.05)
    # the fractions, counted independently from the synthetic probabilities
    known = p_correct > 0.5
    np.testing.assert_array_equal(facts.fraction_recalled, known.reshape(K, -1).mean(1))
    np.testing.assert_array_equal(facts.fraction_hallucinating,
                                  (~known & (p_relation > 0.5)).reshape(K, -1).mean(1))
    # each fact hallucinates between its two escapes, and only there
    ln_t = ln_t[:, None, None]
    between = (ln_t > nu + 1) & (ln_t < mu - 1)
    assert between.sum(0).min() >= 10
    assert (facts.state[between] == FactClass.HALLUCINATING).all()
    assert (facts.state[ln_t < nu - 1] == FactClass.UNINFORMED).all()
    assert (facts.state[ln_t > mu + 1] == FactClass.RECALLED).all()


def test_fact_never_learned_gets_nan():
    K = len(T_SYN)
    traj = synthetic(np.full(K, TOP), np.full(K, math.log(R_SYN)), np.full(K, math.log(D_SYN)))
    facts = detect_fact_stages(traj)
    for name in ("enter_hallucination", "leave_hallucination", "recall_time", "learning_time"):
        assert np.isnan(getattr(facts, name)).all(), name
    assert (facts.fraction_uninformed == 1).all()


def test_fact_falling_back_from_recall_enters_hallucination_when_it_leaves_recall():
    # SGD noise near p(a*) = 1/2: a fact is recalled (while its relation mass keeps creeping up), dips
    # back below 1/2 for a while (hallucinating), then is recalled for good. It enters the hallucinating
    # state when p(a*) falls below 1/2, between the last recalled and the first hallucinating record,
    # not at some time extrapolated outside the record.
    t = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    p_relation = np.array([0.25, 0.3, 0.97, 0.971, 0.972, 0.973, 0.99, 0.999])
    p_correct = np.array([0.03, 0.05, 0.6, 0.61, 0.45, 0.4, 0.9, 0.99])
    traj = synthetic(-np.log(p_correct), -np.log(p_relation), np.zeros(len(t)), t=t)
    states = fact_states(traj)[:, 0, 0]
    U, H, R = FactClass.UNINFORMED, FactClass.HALLUCINATING, FactClass.RECALLED
    assert list(states) == [U, U, R, R, H, H, R, R]
    facts = detect_fact_stages(traj)
    enter = float(facts.enter_hallucination[0, 0])
    assert 4.0 <= enter <= 8.0, f"enter_hallucination = {enter}, outside [4, 8] where the fact falls back"
    assert 16.0 <= float(facts.leave_hallucination[0, 0]) <= 32.0
    assert 1.0 <= float(facts.recall_time[0, 0]) <= 2.0


# --- crossing_time and running_median by hand -----------------------------------------------------------

def test_crossing_time_interpolates_in_log_t():
    t = np.array([1.0, 10.0, 100.0, 1000.0])
    # y from 2 to 1.2 between t = 10 and 100: threshold 1.5 is 5/8 of the way, in log t
    assert crossing_time(t, np.array([3.0, 2.0, 1.2, 1.0]), 1.5) == pytest.approx(10 ** 1.625, rel=1e-12)
    assert crossing_time(t, np.array([3.0, 2.0, 1.0, 0.5]), 1.5) == pytest.approx(10 ** 1.5, rel=1e-12)
    # upward
    assert crossing_time(t, np.array([0.0, 0.2, 0.8, 1.0]), 0.5, downward=False) == pytest.approx(
        10 ** 1.5, rel=1e-12)
    # start skips an earlier crossing
    y = np.array([3.0, 1.0, 3.0, 1.0])
    assert crossing_time(t, y, 2.0) == pytest.approx(10 ** 0.5, rel=1e-12)
    assert crossing_time(t, y, 2.0, start=2) == pytest.approx(10 ** 2.5, rel=1e-12)
    # never
    assert math.isnan(crossing_time(t, np.array([3.0, 2.5, 2.2, 2.1]), 2.0))
    assert math.isnan(crossing_time(t, np.array([0.0, 1.5, 1.8, 1.9]), 2.0, downward=False))
    # below from the first point; previous point at t = 0 (no log interpolation possible)
    assert crossing_time(t, np.array([1.0, 3.0, 3.0, 3.0]), 2.0) == 1.0
    assert crossing_time(np.array([0.0, 1.0, 10.0]), np.array([3.0, 1.0, 0.5]), 2.0) == 1.0


def test_crossing_time_when_already_past_at_start():
    # y is below the threshold already at start - 1 and at start: the first time at or after start where
    # it is below is t[start]; it must never be a time extrapolated before t[start - 1] (here 10**-1).
    t = np.array([1.0, 10.0, 100.0, 1000.0])
    y = np.array([3.0, 1.0, 0.5, 0.2])
    got = crossing_time(t, y, 2.0, start=2)
    assert got == 100.0, f"crossing_time returned {got}"


def test_running_median_by_hand():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([5.0, 1.0, 3.0, 100.0, 2.0])
    # window 2: neighbours within 1 on each side
    np.testing.assert_array_equal(running_median(x, y, 2.0), [3.0, 3.0, 3.0, 3.0, 51.0])
    # window below the spacing: every point alone
    np.testing.assert_array_equal(running_median(x, y, 0.5), y)
    # uneven spacing: the window is in x, not in points
    x2 = np.array([0.0, 0.1, 0.2, 5.0])
    y2 = np.array([1.0, 9.0, 2.0, 7.0])
    np.testing.assert_array_equal(running_median(x2, y2, 0.3), [5.0, 2.0, 5.5, 7.0])


# --- acceptance on real runs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def figure5_flow() -> Trajectory:
    return run_flow(resolve_config("figure5"))


@pytest.fixture(scope="module")
def figure5_sgd() -> Trajectory:
    config = resolve_config("figure5")
    assert (config.train.optimizer, config.train.lr, config.train.batch_size, config.train.steps) == \
        ("sgd", 0.1, 1024, 8192)
    return run_training(config)


def test_figure5_flow_stages(figure5_flow):
    report = detect_stages(figure5_flow)
    assert report.names == THREE, report.summary()
    hall = stage(report, "hallucination")
    assert hall.t_start == pytest.approx(170, rel=0.10)
    assert hall.t_end == pytest.approx(440, rel=0.10)
    assert abs(hall.level - LOG8) < 0.02
    assert hall.expected_level == pytest.approx(LOG8)
    assert report.stages[-1].t_end is None
    assert_real_plateaus(figure5_flow, report)
    assert "init → hallucination → recall" in report.summary()


def test_figure5_sgd_stages_match_the_flow(figure5_flow, figure5_sgd):
    flow, sgd = detect_stages(figure5_flow), detect_stages(figure5_sgd)
    assert sgd.names == THREE, sgd.summary()
    for a, b in zip(flow.transitions, sgd.transitions, strict=True):
        assert (a["from"], a["to"]) == (b["from"], b["to"])
        assert b["t"] == pytest.approx(a["t"], rel=0.15), (a, b)
    hall = stage(sgd, "hallucination")
    assert abs(hall.level - LOG8) < 0.05


def test_figure5_every_fact_hallucinates_at_300_and_is_recalled_at_800():
    traj = run_flow(resolve_config("figure5"), times=np.array([0.0, 300.0, 800.0]))
    states = fact_states(traj)
    assert (states[0] == FactClass.UNINFORMED).all()
    assert (states[1] == FactClass.HALLUCINATING).all()
    assert (states[2] == FactClass.RECALLED).all()


def test_figure5_fact_stages(figure5_flow):
    facts = detect_fact_stages(figure5_flow)
    S, R = figure5_flow.facts.shape
    enter, leave, recall = facts.enter_hallucination, facts.leave_hallucination, facts.recall_time
    for name, values in (("enter", enter), ("leave", leave), ("recall", recall),
                         ("learning", facts.learning_time)):
        assert values.shape == (S, R), name
        assert np.isfinite(values).all(), name
    assert (enter < leave).all()
    assert (leave <= recall * (1 + 1e-9)).all()
    # per-fact times agree with the aggregate boundaries
    hall = stage(detect_stages(figure5_flow), "hallucination")
    np.testing.assert_allclose(enter, hall.t_start, rtol=0.10)
    np.testing.assert_allclose(recall, hall.t_end, rtol=0.10)
    np.testing.assert_allclose(facts.learning_time, recall, rtol=0.10)
    np.testing.assert_array_equal(facts.fraction_recalled,
                                  (figure5_flow.p_correct > 0.5).reshape(len(figure5_flow.t), -1).mean(1))
    assert facts.fraction_hallucinating.max() == 1.0 and facts.fraction_recalled[-1] == 1.0
    assert facts.fraction_uninformed[0] == 1.0


def test_random_table_hallucination_level_is_its_own_H_A_given_R():
    traj = run_flow(resolve_config("random64"))
    S, R = traj.facts.shape
    assert (S, R, traj.answers_per_relation) == (64, 8, 8)
    har = traj.levels["H(A|R)"]
    assert abs(har - LOG8) > 0.02, "this table's H(A|R) should differ from log 8"
    report = detect_stages(traj)
    assert "hallucination" in report.names, report.summary()
    hall = stage(report, "hallucination")
    assert abs(hall.level - har) < 0.02
    assert hall.expected_level == pytest.approx(har)
    assert_real_plateaus(traj, report)


def test_subjects_first_configuration():
    traj = run_flow(resolve_config("subject_first"))
    assert traj.facts.shape == (2, 32) and traj.answers_per_relation == 8
    report = detect_stages(traj)
    assert report.names == ["init", "marginal", "subject_first", "recall"], report.summary()
    assert "hallucination" not in report.names
    assert_real_plateaus(traj, report)


def test_overlapping_escapes_report_only_real_plateaus():
    config = resolve_config("figure5", overrides={"task.subjects": 4, "task.relations": 16,
                                                  "task.facts": "random", "flow.t_max": 2000})
    traj = run_flow(config)
    report = detect_stages(traj)
    assert "subject_first" not in report.names, report.summary()
    # docs/design.md §4.6: the unbalanced table's marginal is learned first, a plateau near H(A) ~70 to 190
    assert "marginal" in report.names, report.summary()
    assert report.names[0] == "init" and report.names[-1] == "recall"
    assert_real_plateaus(traj, report)


@pytest.mark.parametrize("overrides", [{"task.answers_per_relation": 1}, {"init.scale": 0.3}],
                         ids=["D=1", "large-init"])
def test_no_intermediate_stage(overrides):
    traj = run_flow(resolve_config("figure5", overrides=overrides))
    report = detect_stages(traj)
    assert report.intermediate == [], report.summary()
    assert report.names == ["init", "recall"]
    assert "no intermediate plateau" in report.summary()


def test_fact_at_chance_relation_mass_is_not_hallucinating():
    # tiny: R = 2, so at the uniform start p(A_r) = 1/2 exactly, and a hair above it once the flow moves.
    # That is chance, not "relation mass high": while the output is still uniform no fact hallucinates.
    traj = run_flow(resolve_config("tiny"))
    assert traj.facts.shape[1] == 2
    uniform = np.abs(traj.loss - traj.levels["log|A|"]) < 1e-6
    assert uniform.sum() >= 5
    states = fact_states(traj)[uniform]
    hallucinating = (states == FactClass.HALLUCINATING).mean()
    assert (states == FactClass.UNINFORMED).all(), f"{hallucinating:.0%} hallucinating at chance"


# --- the CLI --------------------------------------------------------------------------------------------

def _strict_json(text: str):
    def reject(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_cli_stages_on_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["simulate", "--preset", "tiny", "--out", str(run), "--quiet"]) == 0
    for name in ("stages.json", "stages.npz"):
        (run / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["stages", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "init" in out and "t_start" in out and "recall" in out, out
    assert "Traceback" not in err

    payload = _strict_json((run / "stages.json").read_text())
    assert {"summary", "stages", "transitions", "theory", "facts"} <= set(payload)
    assert payload["stages"][0]["name"] == "init" and payload["stages"][0]["t_start"] == 0
    assert payload["stages"][-1]["t_end"] is None
    assert payload["summary"].split(" → ")[0] == "init"

    traj = Trajectory.load(run)
    S, R = traj.facts.shape
    with np.load(run / "stages.npz", allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for name in ("enter_hallucination", "leave_hallucination", "recall_time", "learning_time",
                 "learning_width"):
        assert arrays[name].shape == (S, R), name
    assert arrays["state"].shape == (len(traj.t), S, R)
    for name in ("fraction_uninformed", "fraction_hallucinating", "fraction_recalled"):
        assert arrays[name].shape == (len(traj.t),)
    np.testing.assert_array_equal(arrays["fraction_recalled"],
                                  (traj.p_correct > 0.5).reshape(len(traj.t), -1).mean(1))


@pytest.mark.parametrize("which", ["missing", "empty", "file"])
def test_cli_stages_bad_run_dir(tmp_path, capsys, which):
    target: Path = tmp_path / "nothing-here"
    if which == "empty":
        target.mkdir()
    elif which == "file":
        target.write_text("not a run\n")
    capsys.readouterr()
    code = main(["stages", str(target)])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert "RUN_DIR" in lines[0] and "Traceback" not in err
    assert not (target.is_dir() and any(target.iterdir())), "nothing written where there is no run"
