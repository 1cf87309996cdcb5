"""Automatic stage detection on trajectories (docs/design.md §5). Reads ``Trajectory`` records only.

**Aggregate stages.** A stage is an interval of log t on which the loss sits on a plateau whose level
matches a reference entropy of the run's own table (``Trajectory.levels``):

    init           loss ≈ log |A|
    marginal       loss ≈ H(A)     (only when H(A) differs from log |A|); neither component known
    hallucination  loss ≈ H(A|R);  relation known (relation-only loss ≈ 0), subject not
    subject_first  loss ≈ H(A|S);  subject known (subject-only loss ≈ 0), relation not
    recall         loss ≈ 0

A point is labelled with the nearest level within ``tolerance`` whose condition holds, on curves smoothed
by a running median in log t (robust to SGD noise). Runs of a label shorter than ``min_decades`` are not
plateaus. An intermediate level that cannot be told apart from log |A| or 0 (e.g. D = 1) is never a
candidate, so a curve without an intermediate plateau gets none. The boundary between two consecutive
stages is where the smoothed loss crosses the midpoint of their levels.

**Per-fact stages.** A fact is *recalled* when p(a*) > 1/2, *hallucinating* when not recalled but its
relation mass p(A_r) is above :func:`relation_threshold` (1/2 when R > 2), *uninformed* otherwise (the
three :class:`~dynamics.trajectory.FactClass` values). Per fact: the times it enters and leaves the
hallucinating state, the time it is recalled, and a learning time from a sigmoid fit in log t:
logit p(a*) ≈ (log t − μ)/w by least squares over the steep rise through p(a*) = 1/2 (within
[0.05, 0.95], see ``_sigmoid_fit``); learning time e^μ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dynamics.trajectory import FactClass, Trajectory

STAGE_LEVELS = {"init": "log|A|", "marginal": "H(A)", "hallucination": "H(A|R)",
                "subject_first": "H(A|S)", "recall": "0"}
INTERMEDIATE = ("marginal", "hallucination", "subject_first")


@dataclass(frozen=True)
class DetectorSettings:
    """Tuning of the aggregate detector; the defaults work on flows and on SGD/Adam runs."""

    tolerance: float = 0.05  # nats: how far the smoothed loss may sit from a level on its plateau
    known_fraction: float = 0.2  # a component is known when its loss < fraction × its uniform-output loss
    min_decades: float = 0.15  # shortest intermediate plateau, in decades of t
    smooth_decades: float = 0.06  # running-median window, in decades of t
    min_level_gap: float = 0.15  # an intermediate level must be this far from log|A| and from 0
    flat_ratio: float = 0.3  # a plateau's slope in log t must be below this fraction of the slope around it


@dataclass
class Stage:
    """One detected stage: the boundaries (transition times) and the plateau it contains."""

    name: str
    t_start: float
    t_end: float | None  # None when the stage still runs at the end of the record
    level: float  # median loss on the plateau
    expected_level: float
    level_name: str
    plateau_start: float
    plateau_end: float


@dataclass
class StageReport:
    """The aggregate stages of one trajectory."""

    stages: list[Stage]
    transitions: list[dict[str, Any]]
    levels: dict[str, float]
    candidates: list[str]  # the stage names this table allows (intermediate ones only when distinct)
    settings: DetectorSettings = field(default_factory=DetectorSettings)

    @property
    def names(self) -> list[str]:
        """Stage names in time order."""
        return [s.name for s in self.stages]

    @property
    def intermediate(self) -> list[str]:
        """Names of the intermediate stages found (empty when there is no intermediate plateau)."""
        return [n for n in self.names if n in INTERMEDIATE]

    def summary(self) -> str:
        """One line: the sequence of stages, or that there is no intermediate plateau."""
        chain = " → ".join(self.names) if self.stages else "no plateau found"
        if self.stages and not self.intermediate:
            chain += " (no intermediate plateau)"
        return chain

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``stages.json`` holds, less the theory)."""
        return {"summary": self.summary(), "sequence": self.names, "intermediate": self.intermediate,
                "stages": [asdict(s) for s in self.stages], "transitions": self.transitions,
                "levels": self.levels, "candidates": self.candidates, "settings": asdict(self.settings)}


def running_median(x: np.ndarray, y: np.ndarray, window: float) -> np.ndarray:
    """Median of y over the points with |x_j − x_i| ≤ window/2, for every i (x sorted)."""
    lo = np.searchsorted(x, x - window / 2, side="left")
    hi = np.searchsorted(x, x + window / 2, side="right")
    return np.array([np.median(y[a:b]) for a, b in zip(lo, hi, strict=True)])


def crossing_time(t: np.ndarray, y: np.ndarray, threshold: float, start: int = 0,
                  downward: bool = True) -> float:
    """First time at or after index ``start`` where y crosses ``threshold`` (interpolated in log t).

    NaN when it never does. ``downward``: from above to below; otherwise from below to above.
    """
    below = y < threshold if downward else y > threshold
    hits = np.nonzero(below[start:])[0]
    if not len(hits):
        return math.nan
    i = start + int(hits[0])
    already_past = i > 0 and bool(y[i - 1] < threshold if downward else y[i - 1] > threshold)
    if i == 0 or already_past or t[i - 1] <= 0 or y[i - 1] == y[i]:
        return float(t[i])  # nothing to interpolate: y was already past the threshold at t[i - 1]
    frac = (y[i - 1] - threshold) / (y[i - 1] - y[i])
    return float(math.exp(math.log(t[i - 1]) + frac * (math.log(t[i]) - math.log(t[i - 1]))))


def detect_stages(traj: Trajectory, settings: DetectorSettings | None = None) -> StageReport:
    """Aggregate stages of ``traj`` (see the module docstring)."""
    settings = settings or DetectorSettings()
    levels = traj.levels
    keep = traj.t > 0
    t = traj.t[keep]
    x = np.log10(t)
    smooth = {name: running_median(x, getattr(traj, name)[keep], settings.smooth_decades)
              for name in ("loss", "relation_loss", "subject_loss")}
    R = traj.facts.shape[1]
    D = traj.answers_per_relation
    relation_known = smooth["relation_loss"] < settings.known_fraction * math.log(R) if R > 1 else None
    subject_known = smooth["subject_loss"] < settings.known_fraction * math.log(D) if D > 1 else None
    candidates = _candidates(levels, settings, R, D)
    labels = _label_points(smooth["loss"], levels, candidates, relation_known, subject_known, settings)
    runs = _plateaus(labels, x, settings, len(t), smooth["loss"])
    stages, transitions = _stages_from_runs(runs, t, smooth["loss"], traj.loss[keep], levels)
    return StageReport(stages, transitions, levels, candidates, settings)


def _candidates(levels: dict[str, float], settings: DetectorSettings, R: int, D: int) -> list[str]:
    top = levels["log|A|"]
    names = ["init"]
    needs = {"marginal": True, "hallucination": R > 1 and D > 1, "subject_first": R > 1 and D > 1}
    for name in INTERMEDIATE:
        level = levels[STAGE_LEVELS[name]]
        if needs[name] and level > settings.min_level_gap and top - level > settings.min_level_gap:
            names.append(name)
    return names + ["recall"]


def _label_points(loss, levels, candidates, relation_known, subject_known, settings) -> list[str | None]:
    conditions = {
        "init": lambda i: True,
        "recall": lambda i: True,
        "marginal": lambda i: not (relation_known is not None and relation_known[i])
        and not (subject_known is not None and subject_known[i]),
        "hallucination": lambda i: bool(relation_known[i]) and not subject_known[i],
        "subject_first": lambda i: bool(subject_known[i]) and not relation_known[i],
    }
    labels: list[str | None] = []
    for i, value in enumerate(loss):
        near = [(abs(value - levels[STAGE_LEVELS[n]]), n) for n in candidates
                if abs(value - levels[STAGE_LEVELS[n]]) < settings.tolerance and conditions[n](i)]
        labels.append(min(near)[1] if near else None)
    return labels


def _is_flat(x: np.ndarray, y: np.ndarray, a: int, b: int, settings: DetectorSettings) -> bool:
    """The smoothed loss on [a, b] is flatter than around it: a plateau, not a slow slope through a level."""
    inner = abs(float(np.polyfit(x[a:b + 1], y[a:b + 1], 1)[0]))
    lo = int(np.searchsorted(x, x[a] - settings.min_decades, side="left"))
    hi = int(np.searchsorted(x, x[b] + settings.min_decades, side="right")) - 1
    outer = abs(float(y[lo] - y[hi])) / max(float(x[hi] - x[lo]), 1e-12)
    return inner <= settings.flat_ratio * outer


def _plateaus(labels: list[str | None], x: np.ndarray, settings: DetectorSettings, n: int,
              smooth_loss: np.ndarray) -> list[tuple[str, int, int]]:
    """Maximal runs (label, first index, last index) that qualify as plateaus, in time order."""
    runs: list[tuple[str, int, int]] = []
    i = 0
    while i < n:
        if labels[i] is None:
            i += 1
            continue
        j = i
        while j + 1 < n and labels[j + 1] == labels[i]:
            j += 1
        runs.append((labels[i], i, j))
        i = j + 1
    # Bridge short unlabelled gaps inside one plateau (noise brushing the tolerance band).
    merged: list[tuple[str, int, int]] = []
    for run in runs:
        if merged and merged[-1][0] == run[0] and x[run[1]] - x[merged[-1][2]] <= settings.smooth_decades:
            merged[-1] = (run[0], merged[-1][1], run[2])
        else:
            merged.append(run)
    kept = []
    for name, a, b in merged:
        if name == "init" and a != 0:
            continue  # the uniform start is a stage only at the start
        if name == "recall" and b != n - 1:
            continue  # recall is terminal: the loss stays near 0 to the end of the record
        if name in INTERMEDIATE and (x[b] - x[a] < settings.min_decades
                                     or not _is_flat(x, smooth_loss, a, b, settings)):
            continue
        if kept and kept[-1][0] == name:
            kept[-1] = (name, kept[-1][1], b)
        else:
            kept.append((name, a, b))
    return kept


def _stages_from_runs(runs, t, smooth_loss, loss, levels) -> tuple[list[Stage], list[dict[str, Any]]]:
    bounds = []
    for (name_a, _, end_a), (name_b, start_b, _) in zip(runs[:-1], runs[1:], strict=True):
        mid = 0.5 * (levels[STAGE_LEVELS[name_a]] + levels[STAGE_LEVELS[name_b]])
        downward = levels[STAGE_LEVELS[name_b]] < levels[STAGE_LEVELS[name_a]]
        when = crossing_time(t[:start_b + 1], smooth_loss[:start_b + 1], mid, start=end_a, downward=downward)
        if math.isnan(when):
            when = float(math.sqrt(t[end_a] * t[start_b]))
        bounds.append(when)
    stages = []
    for k, (name, a, b) in enumerate(runs):
        level_name = STAGE_LEVELS[name]
        stages.append(Stage(
            name=name,
            t_start=bounds[k - 1] if k > 0 else (0.0 if a == 0 else float(t[a])),
            t_end=bounds[k] if k < len(bounds) else (None if b == len(t) - 1 else float(t[b])),
            level=float(np.median(loss[a:b + 1])), expected_level=float(levels[level_name]),
            level_name=level_name, plateau_start=float(t[a]), plateau_end=float(t[b])))
    transitions = [{"from": runs[k][0], "to": runs[k + 1][0], "t": bounds[k]} for k in range(len(bounds))]
    return stages, transitions


@dataclass
class FactStages:
    """Per-fact stage times (S, R) (NaN where never) and the fractions of facts in each state (K,)."""

    t: np.ndarray
    state: np.ndarray  # (K, S, R): FactClass values (uninformed, hallucinating, recalled)
    enter_hallucination: np.ndarray
    leave_hallucination: np.ndarray
    recall_time: np.ndarray
    learning_time: np.ndarray  # e^μ of the sigmoid fit of p(a*) in log t
    learning_width: np.ndarray  # w of the fit (in units of ln t)
    fraction_uninformed: np.ndarray
    fraction_hallucinating: np.ndarray
    fraction_recalled: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays (what ``stages.npz`` holds)."""
        return dict(asdict(self))


def relation_threshold(R: int) -> float:
    """p(A_r) above which a fact's relation counts as known: a majority of the mass, or, where chance
    1/R is already 1/2 or more (R <= 2), halfway from chance to certainty (never, for R = 1)."""
    return 0.5 if R > 2 else (math.inf if R == 1 else (1 + 1 / R) / 2)


def fact_states(traj: Trajectory) -> np.ndarray:
    """(K, S, R) state of every fact at every time: uninformed, hallucinating or recalled, as
    :class:`~dynamics.trajectory.FactClass` values (int8)."""
    recalled = traj.p_correct > 0.5
    hallucinating = ~recalled & (traj.p_relation > relation_threshold(traj.facts.shape[1]))
    return np.where(recalled, FactClass.RECALLED,
                    np.where(hallucinating, FactClass.HALLUCINATING, FactClass.UNINFORMED)).astype(np.int8)


def detect_fact_stages(traj: Trajectory) -> FactStages:
    """Per-fact stage times and learning times (see the module docstring)."""
    state = fact_states(traj)
    K, S, R = state.shape
    t = traj.t
    known = relation_threshold(R)
    enter = np.full((S, R), np.nan)
    leave = np.full((S, R), np.nan)
    recall = np.full((S, R), np.nan)
    for s in range(S):
        for r in range(R):
            column = state[:, s, r]
            halluc = np.nonzero(column == FactClass.HALLUCINATING)[0]
            if len(halluc):
                first = int(halluc[0])
                enter[s, r] = crossing_time(t, traj.p_relation[:, s, r], known, max(first - 1, 0), False)
                after = np.nonzero(column[first:] != FactClass.HALLUCINATING)[0]
                if len(after):
                    i = first + int(after[0])
                    # leaving means recalled (p(a*) rises past 1/2) or uninformed again (p(A_r) falls)
                    if column[i] == FactClass.RECALLED:
                        leave[s, r] = crossing_time(t, traj.p_correct[:, s, r], 0.5, i - 1, downward=False)
                    else:
                        leave[s, r] = crossing_time(t, traj.p_relation[:, s, r], known, i - 1, downward=True)
            recall[s, r] = crossing_time(t, traj.p_correct[:, s, r], 0.5, 0, downward=False)
    learning_time, width = _sigmoid_fit(t, traj.p_correct, recall)
    flat = state.reshape(K, -1)
    return FactStages(t=t.copy(), state=state, enter_hallucination=enter, leave_hallucination=leave,
                      recall_time=recall, learning_time=learning_time, learning_width=width,
                      fraction_uninformed=(flat == FactClass.UNINFORMED).mean(1),
                      fraction_hallucinating=(flat == FactClass.HALLUCINATING).mean(1),
                      fraction_recalled=(flat == FactClass.RECALLED).mean(1))


def _sigmoid_fit(t: np.ndarray, p: np.ndarray, recall_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per fact, a least-squares fit logit p(a*) = (ln t − μ)/w over the steep rise through p = 1/2.

    The fitted points are the contiguous stretch around the first crossing of 1/2 on which p stays in
    [0.05, 0.95] and logit p still climbs at more than a quarter of its slope at the crossing, so an
    earlier plateau (e.g. p = 1/D while hallucinating) does not bend the fit. Returns (e^μ, w); a fact
    never recalled gets NaN; a rise resolved by fewer than three points keeps its crossing time.
    """
    K, S, R = p.shape
    x = np.log(np.where(t > 0, t, np.nan))
    learning_time = np.full((S, R), np.nan)
    width = np.full((S, R), np.nan)
    for s in range(S):
        # logit p one subject at a time: the whole (K, S, R) table of it would be a copy of the record
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
