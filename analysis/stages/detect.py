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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dynamics.io import release
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


def crossing_times(t: np.ndarray, Y: np.ndarray, threshold: float, start: np.ndarray | int = 0,
                   downward: bool = True) -> np.ndarray:
    """:func:`crossing_time` of every column of Y (K, M), column m searched from index start_m ≥ 0 (M,).

    For column y: the first i ≥ start where y_i is past the threshold (y_i < threshold when ``downward``,
    y_i > threshold otherwise), NaN when there is none. The time is t_i when i = 0, when y_(i−1) is already
    past, when t_(i−1) ≤ 0 or when y_(i−1) = y_i; otherwise the log-t interpolation
    exp(ln t_(i−1) + f (ln t_i − ln t_(i−1))) with f = (y_(i−1) − threshold)/(y_(i−1) − y_i).
    """
    K, M = Y.shape
    cols = np.arange(M)
    past = Y < threshold if downward else Y > threshold
    hits = past & (np.arange(K)[:, None] >= np.asarray(start))
    i = hits.argmax(0)  # 0 where there is no hit: told apart by hits[i]
    prev = np.maximum(i - 1, 0)
    y_prev, y_i, t_prev, t_i = Y[prev, cols], Y[i, cols], t[prev], t[i]
    exact = (i == 0) | past[prev, cols] | (t_prev <= 0) | (y_prev == y_i)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_prev = np.log(np.where(t_prev > 0, t_prev, 1.0))
        frac = (y_prev - threshold) / (y_prev - y_i)
        interpolated = np.exp(log_prev + frac * (np.log(t_i) - log_prev))
    return np.where(hits[i, cols], np.where(exact, t_i, interpolated), np.nan)


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


# The per-fact analysis works on blocks of subjects of about this many record entries (K × subjects × R),
# so that its temporaries stay bounded however large the table.
FACT_BLOCK_ELEMENTS = 2**22


def subject_blocks(K: int, S: int, R: int) -> Iterator[slice]:
    """Consecutive slices of the S subjects, each covering about FACT_BLOCK_ELEMENTS entries of a (K, S, R)
    record (at least one subject)."""
    step = max(1, FACT_BLOCK_ELEMENTS // max(K * R, 1))
    for first in range(0, S, step):
        yield slice(first, min(first + step, S))


def fact_states(traj: Trajectory) -> np.ndarray:
    """(K, S, R) state of every fact at every time: uninformed, hallucinating or recalled, as
    :class:`~dynamics.trajectory.FactClass` values (int8)."""
    K, S, R = traj.p_correct.shape
    known = relation_threshold(traj.facts.shape[1])
    state = np.empty((K, S, R), dtype=np.int8)
    for block in subject_blocks(K, S, R):
        # RECALLED = 2 where p(a*) > 1/2, else HALLUCINATING = 1 where p(A_r) > known, else UNINFORMED = 0:
        # in int8 throughout (np.where of the enum values made two int64 temporaries of each block)
        recalled = (traj.p_correct[:, block] > 0.5).view(np.int8)
        np.maximum(recalled << 1, (traj.p_relation[:, block] > known).view(np.int8), out=state[:, block])
        release(traj.p_correct, traj.p_relation)  # a record held on disk: its read blocks leave memory
    return state


def detect_fact_stages(traj: Trajectory) -> FactStages:
    """Per-fact stage times and learning times (see the module docstring), a block of subjects at a time."""
    state = fact_states(traj)
    K, S, R = state.shape
    t = traj.t
    known = relation_threshold(R)
    enter = np.full((S, R), np.nan)
    leave = np.full((S, R), np.nan)
    recall = np.full((S, R), np.nan)
    counts = np.zeros((len(FactClass), K), dtype=np.int64)
    for block in subject_blocks(K, S, R):
        columns = state[:, block].reshape(K, -1)
        times = _stage_times(t, columns, traj.p_correct[:, block].reshape(K, -1),
                             traj.p_relation[:, block].reshape(K, -1), known)
        for out, values in zip((enter, leave, recall), times, strict=True):
            out[block] = values.reshape(-1, R)
        for c in FactClass:
            counts[c] += np.count_nonzero(columns == c, axis=1)
        release(traj.p_correct, traj.p_relation)
    learning_time, width = _sigmoid_fit(t, traj.p_correct, recall)
    fraction = counts / (S * R)  # what the mean over facts of (state == c) gives, bit for bit
    return FactStages(t=t.copy(), state=state, enter_hallucination=enter, leave_hallucination=leave,
                      recall_time=recall, learning_time=learning_time, learning_width=width,
                      fraction_uninformed=fraction[FactClass.UNINFORMED],
                      fraction_hallucinating=fraction[FactClass.HALLUCINATING],
                      fraction_recalled=fraction[FactClass.RECALLED])


def _stage_times(t: np.ndarray, state: np.ndarray, p_correct: np.ndarray, p_relation: np.ndarray,
                 known: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(enter hallucination, leave it, recall time), each (M,), of the M facts whose (K, M) columns are given.

    A fact enters where p(A_r) first crosses ``known`` upward, searched from the point before its first
    hallucinating one; it leaves at its first later non-hallucinating point i, where p(a*) crosses 1/2
    upward if it is recalled there, else where p(A_r) falls through ``known``, searched from i − 1. Its
    recall time is the first upward crossing of 1/2 by p(a*). NaN where an event never happens.
    """
    K, M = state.shape
    cols = np.arange(M)
    halluc = state == FactClass.HALLUCINATING
    first = halluc.argmax(0)
    ever = halluc[first, cols]
    enter = crossing_times(t, p_relation, known, np.maximum(first - 1, 0), downward=False)
    after = ~halluc & (np.arange(K)[:, None] >= first)
    i = after.argmax(0)
    start = np.maximum(i - 1, 0)
    leave = np.where(state[i, cols] == FactClass.RECALLED,
                     crossing_times(t, p_correct, 0.5, start, downward=False),
                     crossing_times(t, p_relation, known, start, downward=True))
    recall = crossing_times(t, p_correct, 0.5, 0, downward=False)
    return np.where(ever, enter, np.nan), np.where(ever & after[i, cols], leave, np.nan), recall


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
    for block in subject_blocks(K, S, R):
        fitted = _sigmoid_fit_block(x, p[:, block].reshape(K, -1), recall_time[block].reshape(-1))
        learning_time[block], width[block] = (values.reshape(-1, R) for values in fitted)
        release(p)
    return learning_time, width


def _sigmoid_fit_block(x: np.ndarray, p: np.ndarray,
                       recall_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_sigmoid_fit` of the M facts whose p(a*) are the columns of p (K, M); x = ln t (K,), NaN
    where t ≤ 0.

    With z = logit p, i the first point with p > 1/2 and g_k = (z_k − z_(k−1))/(x_k − x_(k−1)), the window
    [lo, hi] starts at [i − 1, i]; it grows left to lo − 1 while lo > 0, x_(lo−1) is finite,
    p_(lo−1) ≥ 0.05 and g_lo > g_i/4, and right to hi + 1 while hi + 1 < K, p_(hi+1) ≤ 0.95 and
    g_(hi+1) > g_i/4. Then w = 1/g_i, replaced with the least-squares line over the window when it holds at
    least three points and its slope is positive. Facts with i = 0 or x_(i−1) not finite keep their
    crossing time and no width.
    """
    K, M = p.shape
    learning_time = np.where(np.isfinite(recall_time), recall_time, np.nan)
    if K < 2:
        return learning_time, np.full(M, np.nan)  # no point before a crossing: nothing to fit
    cols = np.arange(M)
    z = np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, 1))
    i = (p > 0.5).argmax(0)
    prev = np.maximum(i - 1, 0)
    fit = np.isfinite(recall_time) & (i > 0) & np.isfinite(x[prev])
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.diff(z, axis=0) / np.diff(x)[:, None]  # row k − 1 holds g_k
    slope = g[prev, cols]
    lo, hi = _rise_window(x, p, g, slope, i)
    with np.errstate(divide="ignore"):
        width = np.where(fit, 1.0 / slope, np.nan)
    line = fit & (hi - lo + 1 >= 3)
    mu, fit_slope = _window_line(x, z, lo, hi, line)
    better = line & (fit_slope > 0)
    with np.errstate(divide="ignore", over="ignore"):
        learning_time = np.where(better, np.exp(mu), learning_time)
        width = np.where(better, 1.0 / fit_slope, width)
    return learning_time, width


def _rise_window(x: np.ndarray, p: np.ndarray, g: np.ndarray, slope: np.ndarray,
                 i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The window [lo, hi] (M,) of :func:`_sigmoid_fit_block` around the crossing points i (M,): lo is one
    past the last j ≤ i − 2 whose step j → j + 1 does not qualify (0 if none), hi the first j ≥ i whose
    step j → j + 1 does not qualify (K − 1 if none)."""
    K, M = p.shape
    cols = np.arange(M)
    rows = np.arange(K - 1)[:, None]  # row j: the step between points j and j + 1
    steep = g > 0.25 * slope
    left_stop = ~(steep & np.isfinite(x[:-1])[:, None] & (p[:-1] >= 0.05)) & (rows <= i - 2)
    last = (K - 2) - left_stop[::-1].argmax(0)
    lo = np.where(left_stop[last, cols], last + 1, 0)
    right_stop = ~(steep & (p[1:] <= 0.95)) & (rows >= i)
    j = right_stop.argmax(0)
    hi = np.where(right_stop[j, cols], j, K - 1)
    return lo, hi


def _window_line(x: np.ndarray, z: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line z ≈ b (x − μ) over rows lo..hi of every column of z (K, M) where ``use`` (M,):
    returns (μ, b) = (x̄ − z̄/b, Σ (x − x̄)(z − z̄) / Σ (x − x̄)²), window means x̄, z̄; NaN elsewhere."""
    K = len(x)
    rows = np.arange(K)[:, None]
    inside = (rows >= lo) & (rows <= hi) & use
    n = np.maximum(hi - lo + 1, 1)
    x_mean = np.where(inside, x[:, None], 0.0).sum(0) / n
    z_mean = np.where(inside, z, 0.0).sum(0) / n
    dx = np.where(inside, x[:, None] - x_mean, 0.0)  # centred in the window: no cancellation in Σ dx²
    dz = np.where(inside, z - z_mean, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.einsum("km,km->m", dx, dz) / np.einsum("km,km->m", dx, dx)
        mu = x_mean - z_mean / b
    return np.where(use, mu, np.nan), np.where(use, b, np.nan)
