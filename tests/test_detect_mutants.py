"""Aggregate stage detection on hand-made curves that pin single rules of the detector (docs/design.md §5):

* the relation counts as known below ``known_fraction`` × log R (its uniform-output loss), not × log D;
* an intermediate level closer than ``min_level_gap`` to log|A| is never a candidate;
* a short excursion off a plateau's level inside the plateau is bridged;
* recall is terminal: a dip to 0 that the loss leaves again is no recall stage;
* the last stage ends where its plateau ends when the loss leaves it before the end of the record.

Each curve is built so that the rule decides the outcome; the levels are those of the curve's own table.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.stages import detect_stages
from dynamics.trajectory import Trajectory


def structured(S: int, R: int, D: int) -> np.ndarray:
    """A balanced table: subject s answers relation r with r·D + ⌊s·D/S⌋."""
    return np.array([[r * D + (s * D) // S for r in range(R)] for s in range(S)], dtype=np.int64)


def curves(t: np.ndarray, loss, relation_loss, subject_loss, facts: np.ndarray, D: int,
           weights: np.ndarray | None = None) -> Trajectory:
    """A record whose every fact follows the aggregate curves."""
    K, (S, R) = len(t), facts.shape

    def per_fact(values):
        return np.broadcast_to(np.asarray(values, dtype=np.float64)[:, None, None], (K, S, R)).copy()

    weights = np.full((S, R), 1.0 / (S * R)) if weights is None else weights
    return Trajectory(t=t, loss=np.asarray(loss, float), relation_loss=np.asarray(relation_loss, float),
                      subject_loss=np.asarray(subject_loss, float), fact_loss=per_fact(loss),
                      p_correct=per_fact(np.exp(-loss)), p_relation=per_fact(np.exp(-relation_loss)),
                      p_subject=per_fact(np.exp(-subject_loss)),
                      argmax_class=np.zeros((K, S, R), dtype=np.int8), facts=facts, fact_weights=weights,
                      answers_per_relation=D, attention=np.zeros((K, 4)), norms={})


def step(x: np.ndarray, x0: float, width: float = 0.03) -> np.ndarray:
    """1 before x0, 0 after: a logistic step in log10 t."""
    return 1.0 / (1.0 + np.exp((x - x0) / width))


X = np.round(np.arange(-2.0, 4.0001, 0.01), 2)  # log10 t, 0.01 decades apart
T = np.concatenate([[0.0], 10.0 ** X])
XT = np.concatenate([[X[0]], X])  # x of every record (t = 0 at the first x)


def test_the_relation_is_known_relative_to_log_R_not_log_D():
    # R = 32, D = 2: on the plateau the relation-only loss is 0.3, known (< 0.2·log 32 = 0.69) though
    # above 0.2·log 2 = 0.14; the subject stays unknown (0.69 > 0.14)
    S, R, D = 2, 32, 2
    top, har = math.log(R * D), math.log(D)
    loss = (top - har) * step(XT, 0.0) + har * step(XT, 2.5)
    relation = (math.log(R) - 0.3) * step(XT, 0.0) + 0.3 * step(XT, 2.5)
    subject = math.log(D) * step(XT, 2.5)
    report = detect_stages(curves(T, loss, relation, subject, structured(S, R, D), D))
    assert report.names == ["init", "hallucination", "recall"]


def test_a_level_within_min_level_gap_of_log_A_is_no_candidate():
    # subjects of weight 0.6 and 0.4: H(A) = 1.366, 0.020 below log|A| = log 4
    S, R, D = 2, 2, 2
    weights = np.array([[0.3, 0.3], [0.2, 0.2]])
    facts = structured(S, R, D)
    flat = np.full(len(T), math.log(4))
    traj = curves(T, flat, flat, flat, facts, D, weights)
    levels = traj.levels
    assert 0 < levels["log|A|"] - levels["H(A)"] < 0.05 and levels["H(A)"] > 0.15
    report = detect_stages(traj)
    assert report.candidates == ["init", "hallucination", "subject_first", "recall"]
    assert report.names == ["init"]


def test_a_short_excursion_inside_a_plateau_is_bridged():
    # hallucination plateau from 10^0.8 to 10^1.15 (0.35 decades) with 4 records at 10^0.96..10^0.99 0.1
    # above its level: either side alone is shorter than min_decades (0.15), the bridged plateau is not
    S, R, D = 8, 4, 8
    top, har = math.log(32), math.log(8)
    loss = (top - har) * step(XT, 0.8, 0.005) + har * step(XT, 1.15, 0.005)
    loss[(XT >= 0.955) & (XT <= 0.995)] += 0.1
    relation = math.log(R) * step(XT, 0.8, 0.005)
    subject = math.log(D) * step(XT, 1.15, 0.005)
    report = detect_stages(curves(T, loss, relation, subject, structured(S, R, D), D))
    assert report.names == ["init", "hallucination", "recall"]
    plateau = report.stages[1]
    assert plateau.plateau_start < 10 ** 0.9 and plateau.plateau_end > 10 ** 1.05


def test_recall_is_terminal_and_a_last_stage_that_is_left_ends_with_its_plateau():
    # the loss reaches 0 at 10^0 and leaves it at 10^2 for 1.73 (no level of this table: log 32 / 2)
    S, R, D = 8, 4, 8
    top = math.log(32)
    loss = top * step(XT, 0.0) + 0.5 * top * (1 - step(XT, 2.0))
    report = detect_stages(curves(T, loss, loss, loss, structured(S, R, D), D))
    assert report.names == ["init"]  # the dip to 0 is left again: not recall
    init = report.stages[0]
    assert init.t_end is not None and init.t_end == pytest.approx(init.plateau_end, rel=1e-12)
    assert init.plateau_end < 1.0  # the uniform start ends before the descent at t = 1


def test_a_terminal_recall_runs_to_the_end():
    S, R, D = 8, 4, 8
    loss = math.log(32) * step(XT, 0.0)
    report = detect_stages(curves(T, loss, loss, loss, structured(S, R, D), D))
    assert report.names == ["init", "recall"] and report.stages[-1].t_end is None
