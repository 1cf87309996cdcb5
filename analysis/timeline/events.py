"""Per-fact events and per-group curves of a run whose training data change over time.

Groups of subjects, read from the record: *unseen* subjects have fact weight 0 (held out: never trained);
for a run started from another run's state, subjects below the old run's count are *old* and the rest
*new*; otherwise every trained subject is *trained*. A fact counts as known while p(a*) ≥ 1/2.

Per fact: ``learned`` (for a fact not known before the run, the first time p(a*) rises to 1/2 from below,
never for one that stays at or above 1/2 from its first record on), ``forgotten`` (for a fact known
before the run, the first time p(a*) falls below 1/2) and ``relearned`` (after that, the first time it is
back at 1/2); times are interpolated linearly in log t between records, NaN where the event never happens.
A fact is known before the run when p(a*) ≥ 1/2 at t = 0 and its subject was trained before
(:func:`trained_before`): an old subject of a run started from another run's state, never a new one (its
chance p(a*) at the start is no knowledge to forget).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from dynamics.io import release
from dynamics.task import FactClass
from dynamics.trajectory import Trajectory

from ..stages import crossing_times, fact_states, subject_blocks

KNOWN = 0.5  # p(a*) at which a fact counts as known


def groups_of(traj: Trajectory) -> dict[str, np.ndarray]:
    """Subject indices by group (see the module docstring); empty groups are left out."""
    S = traj.facts.shape[0]
    unseen = traj.fact_weights.sum(1) == 0
    subjects = np.arange(S)
    old = traj.info.old_subjects if traj.info is not None else None
    groups = {"unseen": subjects[unseen]}
    if old is not None:
        groups["old"] = subjects[(subjects < old) & ~unseen]
        groups["new"] = subjects[(subjects >= old) & ~unseen]
    else:
        groups["trained"] = subjects[~unseen]
    return {name: index for name, index in groups.items() if len(index)}


@dataclass
class FactEvents:
    """(S, R) event times, NaN where the event never happens."""

    learned: np.ndarray
    forgotten: np.ndarray
    relearned: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (what ``timeline.npz`` holds)."""
        return dataclasses.asdict(self)


def trained_before(traj: Trajectory) -> np.ndarray:
    """(S,) whether each subject was trained before the run started: for a run started from another run's
    state (``info.old_subjects``), its old subjects; for a fresh run from its initialisation, none; for a
    bare record without a run record (``info`` None), every subject (its history is unknown, so a fact
    known at its first record counts as known before)."""
    S = traj.p_correct.shape[1]
    info = getattr(traj, "info", None)
    if info is None:
        return np.ones(S, dtype=bool)
    return np.arange(S) < (info.old_subjects or 0)


def fact_events(traj: Trajectory) -> FactEvents:
    """The learned / forgotten / relearned time of every fact (see the module docstring), a block of
    subjects at a time."""
    t, p = traj.t, traj.p_correct
    K, S, R = p.shape
    before = trained_before(traj)
    learned, forgotten, relearned = (np.full((S, R), np.nan) for _ in range(3))
    for block in subject_blocks(K, S, R):
        column = p[:, block].reshape(K, -1)
        known = np.repeat(before[block], R) & (column[0] >= KNOWN)  # known before the run: can be forgotten
        below = column < KNOWN
        first_below = below.argmax(0)  # 0 when never below
        ever_below = below[first_below, np.arange(column.shape[1])]
        dropped = known & ever_below
        # a fact not known before is learned when it rises through 1/2 after its first record below
        times = (np.where(~known & ever_below, crossing_times(t, column, KNOWN, first_below, downward=False),
                          np.nan),
                 np.where(dropped, crossing_times(t, column, KNOWN, np.maximum(first_below - 1, 0),
                                                  downward=True), np.nan),
                 np.where(dropped, crossing_times(t, column, KNOWN, first_below, downward=False), np.nan))
        for out, values in zip((learned, forgotten, relearned), times, strict=True):
            out[block] = values.reshape(-1, R)
        release(p)  # a record held on disk: its read blocks leave memory
    return FactEvents(learned, forgotten, relearned)


@dataclass
class GroupCurves:
    """Per group, at every recorded time (K,): mean p(a*), mean loss −log p(a*), and the fractions of its
    facts recalled (p(a*) > 1/2) and hallucinating (not recalled, but the relation's answers hold the
    majority of the mass), as the stage detector classifies facts. Means are over subjects uniformly and
    over relations with the run's relation frequencies."""

    t: np.ndarray
    p_correct: dict[str, np.ndarray]
    loss: dict[str, np.ndarray]
    recalled: dict[str, np.ndarray]
    hallucinating: dict[str, np.ndarray]


def _relation_weights(traj: Trajectory) -> np.ndarray:
    q = traj.fact_weights.sum(0)
    return q / q.sum()


def group_curves(traj: Trajectory, groups: dict[str, np.ndarray]) -> GroupCurves:
    """The curves of every group (see :class:`GroupCurves`)."""
    q = _relation_weights(traj)

    def mean(values: np.ndarray, index: np.ndarray) -> np.ndarray:
        return (values[:, index].mean(1) * q).sum(-1)

    state = fact_states(traj)
    recalled = (state == FactClass.RECALLED).astype(float)
    hallucinating = (state == FactClass.HALLUCINATING).astype(float)
    return GroupCurves(
        t=traj.t,
        p_correct={g: mean(traj.p_correct, i) for g, i in groups.items()},
        loss={g: mean(traj.fact_loss, i) for g, i in groups.items()},
        recalled={g: mean(recalled, i) for g, i in groups.items()},
        hallucinating={g: mean(hallucinating, i) for g, i in groups.items()})


def unseen_summary(traj: Trajectory, curves: GroupCurves) -> dict[str, float] | None:
    """What the model says of subjects it never saw: their mean loss at the start, its largest and smallest
    values and when, at the end; beside log|A| (no knowledge at all), log D (the relation known, the answer
    a uniform guess among its D answers: the best a model can do for a subject it never saw, when answers
    are drawn uniformly) and H(A|R) of the trained facts (what the relation alone tells of their answers);
    and the largest fraction of their facts answered by a confident wrong answer of the right relation
    (hallucinating)."""
    if "unseen" not in curves.loss:
        return None
    loss, halluc = curves.loss["unseen"], curves.hallucinating["unseen"]
    peak = int(np.argmax(loss))
    D = traj.answers_per_relation
    num_answers = traj.facts.shape[1] * D
    low = int(np.argmin(loss))
    return {"loss_start": float(loss[0]), "loss_max": float(loss[peak]), "t_loss_max": float(traj.t[peak]),
            "loss_min": float(loss[low]), "t_loss_min": float(traj.t[low]),
            "loss_end": float(loss[-1]), "log_answers": math.log(num_answers), "log_D": math.log(D),
            "H(A|R)": traj.levels["H(A|R)"],
            "max_fraction_hallucinating": float(halluc.max()),
            "final_fraction_hallucinating": float(halluc[-1])}


def phase_slices(traj: Trajectory) -> list[tuple[dict, slice]]:
    """Each phase of the run's schedule with the slice of recorded times inside it [start, end]."""
    phases = (traj.info.phases if traj.info is not None else None) or [{"start": 0.0, "end": None}]
    slices = []
    for phase in phases:
        end = math.inf if phase["end"] is None else phase["end"]
        inside = np.nonzero((traj.t >= phase["start"]) & (traj.t <= end))[0]
        if len(inside):
            slices.append((phase, slice(int(inside[0]), int(inside[-1]) + 1)))
    return slices
