"""The block-vectorised per-fact stage detection against the per-fact loop it replaced.

``_loop_fact_stages`` below is a copy of the loop implementation (``fact_states``, ``detect_fact_stages``,
``_sigmoid_fit``), kept here as the reference; the crossing in log t and the thresholds it uses are written
here from their definitions (``_crossing``, ``_relation_known``, ``FACT_KNOWN``), not imported from the code
under test. The vectorised version
must give the same crossing times (exactly where the loop returns a recorded time t_i, within 1e-12
relative where it interpolates in log t, NaN at the same facts), learning times and widths within 1e-9
relative, and the same states and state fractions, on real flows and on hand-built records that exercise
every branch. ``crossing_times`` and ``crossing_time`` are checked column by column against ``_crossing``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.stages import crossing_time, detect_fact_stages, fact_states
from analysis.stages import detect as detect_module
from analysis.stages.detect import crossing_times, relation_threshold
from analysis.timeline.events import KNOWN
from dynamics import resolve_config, run_flow
from dynamics.trajectory import FactClass

CROSSING_RTOL = 1e-12
FIT_RTOL = 1e-9


# --- definitions, written independently of the code under test ------------------------------------------

FACT_KNOWN = 0.5  # p(a*) above which a fact is recalled / known (docs: "p(a*) > 1/2")


def _relation_known(R: int) -> float:
    """p(A_r) above which a fact's relation is known: a majority of the mass; where chance 1/R is already
    1/2 or more, halfway from chance to certainty; never for R = 1 (A_r is every answer)."""
    if R == 1:
        return math.inf
    chance = 1.0 / R
    return (chance + 1.0) / 2.0 if chance >= 0.5 else 0.5


def _crossing(t: np.ndarray, y: np.ndarray, threshold: float, start: int = 0, downward: bool = True) -> float:
    """The first recorded y_i (i ≥ start) past the threshold; the time where the straight line between
    (log t_(i−1), y_(i−1)) and (log t_i, y_i) meets it, or t_i itself where there is no such line (i = 0,
    t_(i−1) ≤ 0, a flat step) or y_(i−1) was already past; NaN when no y_i is past."""
    def past(value: float) -> bool:
        return value < threshold if downward else value > threshold

    for i in range(start, len(y)):
        if not past(y[i]):
            continue
        if i == 0 or past(y[i - 1]) or t[i - 1] <= 0 or y[i - 1] == y[i]:
            return float(t[i])
        share = (y[i - 1] - threshold) / (y[i - 1] - y[i])  # of the way from t_(i−1) to t_i, in log t
        # the documented exp(ln t_(i−1) + f (ln t_i − ln t_(i−1))), so that f = 0 rounds as the code's does
        return float(math.exp(math.log(t[i - 1]) + share * (math.log(t[i]) - math.log(t[i - 1]))))
    return math.nan


def test_the_definitions_are_the_code_s():
    assert FACT_KNOWN == KNOWN
    for R in (1, 2, 3, 4, 8, 100):
        assert _relation_known(R) == relation_threshold(R), R
    assert _relation_known(2) == 0.75


# --- the per-fact loop implementation (reference) -------------------------------------------------------

def _loop_fact_states(traj) -> np.ndarray:
    recalled = traj.p_correct > 0.5
    hallucinating = ~recalled & (traj.p_relation > _relation_known(traj.facts.shape[1]))
    return np.where(recalled, FactClass.RECALLED,
                    np.where(hallucinating, FactClass.HALLUCINATING, FactClass.UNINFORMED)).astype(np.int8)


def _loop_fact_stages(traj) -> dict[str, np.ndarray]:
    state = _loop_fact_states(traj)
    K, S, R = state.shape
    t, known = traj.t, _relation_known(R)
    enter, leave, recall = (np.full((S, R), np.nan) for _ in range(3))
    for s in range(S):
        for r in range(R):
            column = state[:, s, r]
            halluc = np.nonzero(column == FactClass.HALLUCINATING)[0]
            if len(halluc):
                first = int(halluc[0])
                enter[s, r] = _crossing(t, traj.p_relation[:, s, r], known, max(first - 1, 0), False)
                after = np.nonzero(column[first:] != FactClass.HALLUCINATING)[0]
                if len(after):
                    i = first + int(after[0])
                    if column[i] == FactClass.RECALLED:
                        leave[s, r] = _crossing(t, traj.p_correct[:, s, r], 0.5, i - 1, downward=False)
                    else:
                        leave[s, r] = _crossing(t, traj.p_relation[:, s, r], known, i - 1, downward=True)
            recall[s, r] = _crossing(t, traj.p_correct[:, s, r], 0.5, 0, downward=False)
    learning_time, width = _loop_sigmoid_fit(t, traj.p_correct, recall)
    flat = state.reshape(K, -1)
    return dict(state=state, enter_hallucination=enter, leave_hallucination=leave, recall_time=recall,
                learning_time=learning_time, learning_width=width,
                fraction_uninformed=(flat == FactClass.UNINFORMED).mean(1),
                fraction_hallucinating=(flat == FactClass.HALLUCINATING).mean(1),
                fraction_recalled=(flat == FactClass.RECALLED).mean(1))


def _loop_sigmoid_fit(t: np.ndarray, p: np.ndarray, recall_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    K, S, R = p.shape
    x = np.log(np.where(t > 0, t, np.nan))
    learning_time = np.full((S, R), np.nan)
    width = np.full((S, R), np.nan)
    for s in range(S):
        z = np.log(np.clip(p[:, s], 1e-12, 1 - 1e-12) / np.clip(1 - p[:, s], 1e-12, 1))
        for r in range(R):
            if not np.isfinite(recall_time[s, r]):
                continue
            learning_time[s, r] = recall_time[s, r]
            zz, pp = z[:, r], p[:, s, r]
            i = int(np.argmax(pp > 0.5))
            if i == 0 or not np.isfinite(x[i - 1]):
                continue
            slope = (zz[i] - zz[i - 1]) / (x[i] - x[i - 1])
            lo, hi = i - 1, i
            while lo > 0 and np.isfinite(x[lo - 1]) and pp[lo - 1] >= 0.05 \
                    and (zz[lo] - zz[lo - 1]) / (x[lo] - x[lo - 1]) > 0.25 * slope:
                lo -= 1
            while hi + 1 < K and pp[hi + 1] <= 0.95 \
                    and (zz[hi + 1] - zz[hi]) / (x[hi + 1] - x[hi]) > 0.25 * slope:
                hi += 1
            width[s, r] = 1.0 / slope
            if hi - lo + 1 >= 3:
                fit_slope, intercept = np.polyfit(x[lo:hi + 1], zz[lo:hi + 1], 1)
                if fit_slope > 0:
                    learning_time[s, r] = math.exp(-intercept / fit_slope)
                    width[s, r] = 1.0 / fit_slope
    return learning_time, width


# --- comparison -----------------------------------------------------------------------------------------

def relative_gap(new: np.ndarray, old: np.ndarray) -> float:
    """Largest |new − old| / |old| over the entries finite in both (0 when there are none)."""
    both = np.isfinite(new) & np.isfinite(old)
    if not both.any():
        return 0.0
    return float(np.max(np.abs(new[both] - old[both]) / np.maximum(np.abs(old[both]), 1e-300)))


def assert_same_times(new: np.ndarray, old: np.ndarray, t: np.ndarray, rtol: float, name: str) -> None:
    """NaN at the same entries, equal where the loop gave a recorded time, within rtol elsewhere."""
    np.testing.assert_array_equal(np.isnan(new), np.isnan(old), err_msg=name)
    on_grid = np.isin(old, t)
    np.testing.assert_array_equal(new[on_grid], old[on_grid], err_msg=name)
    assert relative_gap(new, old) <= rtol, (name, relative_gap(new, old))


def assert_matches_loop(traj) -> dict[str, np.ndarray]:
    """detect_fact_stages(traj) against the loop; returns the loop's arrays for further checks."""
    new, old = detect_fact_stages(traj), _loop_fact_stages(traj)
    np.testing.assert_array_equal(new.state, old["state"])
    np.testing.assert_array_equal(fact_states(traj), old["state"])
    for name in ("fraction_uninformed", "fraction_hallucinating", "fraction_recalled"):
        np.testing.assert_array_equal(getattr(new, name), old[name], err_msg=name)
    for name in ("enter_hallucination", "leave_hallucination", "recall_time"):
        assert_same_times(getattr(new, name), old[name], traj.t, CROSSING_RTOL, name)
    for name in ("learning_time", "learning_width"):
        np.testing.assert_array_equal(np.isnan(getattr(new, name)), np.isnan(old[name]), err_msg=name)
        assert relative_gap(getattr(new, name), old[name]) <= FIT_RTOL, name
    # where the loop kept the crossing time (no fit), so must the vectorised version: its own, exactly
    kept = old["learning_time"] == old["recall_time"]
    np.testing.assert_array_equal(new.learning_time[kept], new.recall_time[kept])
    return old


def record(t: np.ndarray, p_correct: np.ndarray, p_relation: np.ndarray) -> SimpleNamespace:
    """What detect_fact_stages reads of a Trajectory: t, p_correct, p_relation and the table's shape."""
    K, S, R = p_correct.shape
    return SimpleNamespace(t=t, p_correct=p_correct, p_relation=p_relation,
                           facts=np.zeros((S, R), dtype=np.int64))


# --- crossing_times -------------------------------------------------------------------------------------

@pytest.mark.parametrize("downward", [True, False])
def test_crossing_times_matches_crossing_time_column_by_column(downward):
    rng = np.random.default_rng(1 + downward)
    K, M = 40, 500
    t = np.concatenate([[0.0], np.sort(rng.uniform(0.01, 1e4, K - 1))])
    Y = rng.uniform(0, 1, (K, M))
    Y[:, ::3] = np.round(Y[:, ::3] * 4) / 4  # values exactly at the threshold, repeated values
    Y[:, 1::7] = np.cumsum(rng.normal(0, 0.1, (K, len(range(1, M, 7)))), axis=0) + 0.5
    start = rng.integers(0, K + 2, M)  # a start past the end finds nothing
    start[:20] = 0
    got = crossing_times(t, Y, 0.5, start, downward=downward)
    want = np.array([_crossing(t, Y[:, m], 0.5, int(start[m]), downward) for m in range(M)])
    assert np.isnan(want).any() and np.isfinite(want).any()
    assert_same_times(got, want, t, CROSSING_RTOL, "crossing_times")
    one_by_one = np.array([crossing_time(t, Y[:, m], 0.5, int(start[m]), downward) for m in range(M)])
    assert_same_times(one_by_one, want, t, CROSSING_RTOL, "crossing_time")
    # a scalar start is every column's start
    want0 = np.array([_crossing(t, Y[:, m], 0.5, 0, downward) for m in range(M)])
    assert_same_times(crossing_times(t, Y, 0.5, 0, downward=downward), want0, t, CROSSING_RTOL, "start=0")


def test_crossing_times_infinite_threshold():
    t = np.array([0.0, 1.0, 2.0, 4.0])
    Y = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    for downward in (True, False):
        for start in (0, 2):
            want = [_crossing(t, Y[:, m], math.inf, start, downward) for m in range(2)]
            got = crossing_times(t, Y, math.inf, np.full(2, start), downward=downward)
            np.testing.assert_array_equal(got, want)


# --- real flows -----------------------------------------------------------------------------------------

def test_figure5_flow_matches_loop():
    traj = run_flow(resolve_config("figure5"))
    old = assert_matches_loop(traj)
    assert np.isfinite(old["recall_time"]).all()


def test_random_table_flow_matches_loop(monkeypatch):
    traj = run_flow(resolve_config("figure5", overrides={
        "task.subjects": 40, "task.relations": 6, "task.facts": "random", "flow.t_max": 20000.0}))
    K, S, R = traj.p_correct.shape
    monkeypatch.setattr(detect_module, "FACT_BLOCK_ELEMENTS", K * R * 7)  # blocks of 7 subjects, last of 5
    old = assert_matches_loop(traj)
    assert np.isfinite(old["enter_hallucination"]).any()


# --- hand-built records: every branch -------------------------------------------------------------------

T_HAND = np.concatenate([[0.0], np.logspace(-1, 3, 41)])  # t = 0 first, then 0.1 decades apart
K_HAND = len(T_HAND)


def rise(center: float, steepness: float = 1.2, low: float = 0.01, high: float = 0.99) -> np.ndarray:
    """A logistic rise from low to high through the middle at index center."""
    k = np.arange(K_HAND)
    return low + (high - low) / (1 + np.exp(-steepness * (k - center)))


def hand_columns() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(p_correct, p_relation) per named case, each (K,)."""
    low, high = np.full(K_HAND, 0.02), np.full(K_HAND, 0.97)
    jump = np.where(np.arange(K_HAND) < 20, 0.01, 0.99)
    plateau = np.minimum(rise(15), 0.125)  # p(a*) held at 1/D while hallucinating, then the rise
    plateau[25:] = rise(28)[25:]
    flat = rise(20)
    flat[18:20] = flat[18]  # flat steps just before the crossing
    flat[21:23] = flat[21]  # and just after
    at_half = rise(20)
    at_half[19] = 0.5  # exactly at the threshold before crossing: interpolation with frac = 0
    noisy = np.clip(rise(22, 0.8) + 0.03 * np.sin(np.arange(K_HAND) * 1.7), 0, 1)
    back = np.where((np.arange(K_HAND) >= 10) & (np.arange(K_HAND) < 25), 0.8, 0.1)
    again = np.where((np.arange(K_HAND) >= 10) & (np.arange(K_HAND) < 15), 0.8, 0.1)
    again[20:30] = 0.7
    edges = np.full(K_HAND, 0.01)  # the window's bounds 0.05 and 0.95 reached exactly
    edges[17:] = [0.05, 0.2, 0.45, 0.7, 0.95] + [0.99] * (K_HAND - 22)
    forgotten = np.where((np.arange(K_HAND) >= 10) & (np.arange(K_HAND) < 15), 0.9, 0.2)
    late = np.where(np.arange(K_HAND) >= 10, 0.97, 0.1)
    return {
        "never hallucinating, never recalled": (low, low),
        "never hallucinating, recalled": (rise(20), rise(20)),
        "hallucinating then recalled": (rise(25), rise(10, high=0.999)),
        "hallucinating at t = 0 then recalled": (rise(25), high),
        "hallucinating then uninformed": (low, back),
        "hallucinating twice": (low, again),
        "hallucinating to the end": (low, rise(10)),
        "recalled at the first point": (high, high),
        "recalled at the second point": (np.where(np.arange(K_HAND) >= 1, 0.9, 0.1), high),
        "recalled at the last point": (np.where(np.arange(K_HAND) == K_HAND - 1, 0.6, 0.2), high),
        "jump: rise in two points": (jump, high),
        "plateau at 1/D before the rise": (plateau, high),
        "flat steps": (flat, high),
        "exactly 1/2 before crossing": (at_half, high),
        "noisy rise": (noisy, high),
        "slow rise": (rise(20.3, 0.3, 0.001, 0.999), high),
        "exact zeros and ones": (np.where(np.arange(K_HAND) < 20, 0.0, 1.0), high),
        "left relation, recalled later": (rise(35), back),
        "window bounds reached exactly": (edges, high),
        "recalled, then forgotten into hallucination": (forgotten, late),
    }


def test_hand_built_branches():
    cases = hand_columns()
    names = list(cases)
    S, R = 3, len(names)
    p_correct = np.empty((K_HAND, S, R))
    p_relation = np.empty((K_HAND, S, R))
    for r, name in enumerate(names):
        for s in range(S):
            shift = s * 1e-3  # a different value per subject, same shape
            p_correct[:, s, r] = np.clip(cases[name][0] * (1 - shift), 0, 1)
            p_relation[:, s, r] = np.clip(cases[name][1] * (1 - shift), 0, 1)
    old = assert_matches_loop(record(T_HAND, p_correct, p_relation))
    # the cases reach the branches they are named for
    case = {name: r for r, name in enumerate(names)}
    assert np.isnan(old["enter_hallucination"][:, case["never hallucinating, recalled"]]).all()
    assert (old["enter_hallucination"][:, case["hallucinating at t = 0 then recalled"]] == 0.0).all()
    assert np.isfinite(old["leave_hallucination"][:, case["hallucinating then uninformed"]]).all()
    assert np.isnan(old["leave_hallucination"][:, case["hallucinating to the end"]]).all()
    assert (old["recall_time"][:, case["recalled at the first point"]] == 0.0).all()
    assert np.isnan(old["learning_width"][:, case["recalled at the first point"]]).all()
    assert np.isnan(old["recall_time"][:, case["never hallucinating, never recalled"]]).all()
    jump = case["jump: rise in two points"]
    assert (old["learning_time"][:, jump] == old["recall_time"][:, jump]).all()
    assert np.isfinite(old["learning_width"][:, jump]).all()
    second = case["recalled at the second point"]
    assert (old["recall_time"][:, second] == T_HAND[1]).all()  # t_(i−1) = 0: nothing to interpolate
    assert np.isnan(old["learning_width"][:, second]).all()
    edges = case["window bounds reached exactly"]
    assert np.isfinite(old["learning_width"][:, edges]).all()
    forgotten = case["recalled, then forgotten into hallucination"]
    assert (old["enter_hallucination"][:, forgotten] == T_HAND[14]).all()  # searched from the point before
    slow = case["slow rise"]
    assert (old["learning_time"][:, slow] != old["recall_time"][:, slow]).all()


@pytest.mark.parametrize("R", [1, 2, 5])
def test_random_records(R, monkeypatch):
    """Random walks of logit p(a*) and p(A_r), with plateaus, on few relations (thresholds ∞, 3/4, 1/2)
    and a grid starting at t = 0, in blocks of 3 subjects."""
    rng = np.random.default_rng(10 + R)
    K, S = 60, 17
    t = np.concatenate([[0.0], np.logspace(-2, 4, K - 1)])
    drift = rng.uniform(-0.05, 0.4, (1, S, R))
    logit_c = np.cumsum(rng.normal(0, 0.5, (K, S, R)) + drift, axis=0) - 6
    logit_c[20:30, ::2] = logit_c[20, ::2]  # flat steps
    logit_r = np.cumsum(rng.normal(0, 0.6, (K, S, R)) + 0.1, axis=0) - 3
    p_correct = 1 / (1 + np.exp(-logit_c))
    p_relation = np.maximum(1 / (1 + np.exp(-logit_r)), p_correct)
    monkeypatch.setattr(detect_module, "FACT_BLOCK_ELEMENTS", K * R * 3)
    old = assert_matches_loop(record(t, p_correct, p_relation))
    assert np.isfinite(old["recall_time"]).any() and np.isnan(old["recall_time"]).any()


@pytest.mark.parametrize("K", [1, 2, 3])
def test_short_records(K):
    """Records of one to three points (t = 0 first): the fit has nothing or little to work on."""
    rng = np.random.default_rng(K)
    t = np.concatenate([[0.0], np.logspace(0, 1, K - 1)])[:K]
    p_correct = rng.uniform(0, 1, (K, 6, 5))
    p_relation = np.maximum(rng.uniform(0, 1, (K, 6, 5)), p_correct)
    assert_matches_loop(record(t, p_correct, p_relation))
    assert_matches_loop(record(t + 0.5, p_correct, p_relation))  # no t = 0


# --- the timeline's learned / forgotten / relearned times --------------------------------------------------

def _loop_fact_events(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-fact loop the timeline used before its events were taken a block at a time."""
    _, S, R = p.shape
    learned, forgotten, relearned = (np.full((S, R), np.nan) for _ in range(3))
    for s in range(S):
        for r in range(R):
            column = p[:, s, r]
            if column[0] < FACT_KNOWN:
                learned[s, r] = _crossing(t, column, FACT_KNOWN, 0, downward=False)
                continue
            below = np.nonzero(column < FACT_KNOWN)[0]
            if not len(below):
                continue
            forgotten[s, r] = _crossing(t, column, FACT_KNOWN, int(below[0]) - 1, downward=True)
            relearned[s, r] = _crossing(t, column, FACT_KNOWN, int(below[0]), downward=False)
    return learned, forgotten, relearned


@pytest.mark.parametrize("start_known", [False, True])
def test_fact_events_match_the_loop(start_known, monkeypatch):
    """Random walks of logit p(a*) that start below or above 1/2, cross it, fall back and rise again, on a
    grid starting at t = 0, in blocks of 3 subjects: the same events as the per-fact loop."""
    from analysis.timeline.events import fact_events

    rng = np.random.default_rng(7 + start_known)
    K, S, R = 50, 11, 4
    t = np.concatenate([[0.0], np.logspace(-1, 4, K - 1)])
    logit = np.cumsum(rng.normal(0, 0.8, (K, S, R)), axis=0) + (2.0 if start_known else -2.0)
    logit[10:20, ::3] = logit[10, ::3]  # flat steps
    p = 1 / (1 + np.exp(-logit))
    monkeypatch.setattr(detect_module, "FACT_BLOCK_ELEMENTS", K * R * 3)
    events = fact_events(SimpleNamespace(t=t, p_correct=p))
    for name, old in zip(("learned", "forgotten", "relearned"), _loop_fact_events(t, p), strict=True):
        assert_same_times(getattr(events, name), old, t, CROSSING_RTOL, name)
        assert np.isfinite(old).any() or (name == "learned") == start_known, name


def test_fact_states_at_the_thresholds_and_nan_match_the_definition():
    # fact_states forms the classes in int8 (no int64 temporaries); the classes at the boundaries (p = 1/2
    # and p(A_r) = known exactly, just above each, NaN) must still be the definition's
    R = 7  # the 7 × 7 pairs of values below: 7 subjects of 7 relations
    known = _relation_known(R)
    values = np.array([0.0, 0.5, np.nextafter(0.5, 1), known, np.nextafter(known, 1), 1.0, np.nan])
    p_correct, p_relation = (grid.reshape(1, -1, R) for grid in np.meshgrid(values, values, indexing="ij"))
    p_correct, p_relation = np.repeat(p_correct, 3, 0), np.repeat(p_relation, 3, 0)
    traj = record(np.arange(3.0), p_correct, p_relation)
    state = fact_states(traj)
    assert state.dtype == np.int8
    np.testing.assert_array_equal(state, _loop_fact_states(traj))
    assert set(np.unique(state)) == {FactClass.UNINFORMED, FactClass.HALLUCINATING, FactClass.RECALLED}
