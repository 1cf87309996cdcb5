"""The training distribution over time (docs/design.md §7): phases of subject frequencies, held-out subjects.

A run trains on fact frequencies w(t)(s, r) = u(t)_s · q_r, with q the task's relation frequencies and u(t)
the subject frequencies of the phase that holds t. Phases are pieces [start, end) of flow time; each trains a
range of subjects [lo, hi) with the task's Zipf ranks restricted to that range (u_s ∝ (s + 1)^−α(t)), and may
*replay* a second range with a share ρ of the mass. The exponent α(t) may move linearly in t (an annealed
Zipf exponent). The flow integrates dθ/dt = −P ∇L_{w(t)}(θ) with a solver restart at every phase start, and
discrete training samples step k from w(k·lr).

Held-out subjects (the last ``data.holdout`` of the task) are never trained in any phase; the run records
them as it records every fact, so their loss and class over time show what the model says of subjects it
never saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .config import Config
from .errors import ConfigError
from .task import FactTask

T = TypeVar("T")


@dataclass(frozen=True)
class Phase:
    """Training from ``start`` until ``end`` (math.inf: the end of the run) on the subjects
    ``subjects = (lo, hi)`` (indices lo..hi-1) and, with share ``replay``, on ``replay_subjects``.

    Within each range, u_s ∝ (s + 1)^−α with α = ``zipf`` at ``start``, moving linearly to ``zipf_end`` at
    ``anneal_until`` and constant after it (``zipf_end`` None: constant)."""

    start: float
    end: float
    subjects: tuple[int, int]
    replay: float = 0.0
    replay_subjects: tuple[int, int] = (0, 0)
    zipf: float = 0.0
    zipf_end: float | None = None
    anneal_until: float = math.inf

    @property
    def constant(self) -> bool:
        """True when the phase's frequencies do not move with t."""
        return self.zipf_end is None or self.zipf_end == self.zipf

    def exponent(self, t: float) -> float:
        """The subject Zipf exponent α(t) of this phase."""
        if self.constant:
            return self.zipf
        span = self.anneal_until - self.start
        fraction = 1.0 if span <= 0 else min(1.0, max(0.0, (t - self.start) / span))
        return self.zipf + (self.zipf_end - self.zipf) * fraction

    def subject_weights(self, num_subjects: int, t: float) -> np.ndarray:
        """u(t): the (num_subjects,) subject frequencies of this phase at time t (zero outside its ranges)."""
        alpha = self.exponent(t)
        u = np.zeros(num_subjects)
        u[slice(*self.subjects)] = _zipf_slice(*self.subjects, alpha)
        if self.replay > 0:
            u *= 1.0 - self.replay
            u[slice(*self.replay_subjects)] += self.replay * _zipf_slice(*self.replay_subjects, alpha)
        return u


def _zipf_slice(lo: int, hi: int, alpha: float) -> np.ndarray:
    """The Zipf frequencies (s + 1)^−α of subjects lo..hi-1, normalised over that range: taken relative to
    the range's first subject (in log space), since (lo + 1)^−α itself underflows to 0 for a large α."""
    w = np.exp(-alpha * (np.log(np.arange(lo + 1, hi + 1, dtype=np.float64)) - np.log(lo + 1)))
    return w / w.sum()


@dataclass(frozen=True)
class Schedule:
    """Consecutive phases covering [0, ∞): the first starts at 0, each ends where the next starts."""

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not self.phases or self.phases[0].start != 0 or self.phases[-1].end != math.inf:
            raise ValueError("a schedule's phases must start at t = 0 and the last must end at inf")
        for before, after in zip(self.phases[:-1], self.phases[1:], strict=True):
            if before.end != after.start or not before.start < before.end:
                raise ValueError(f"phases must be consecutive and non-empty: {before} then {after}")

    @property
    def breakpoints(self) -> tuple[float, ...]:
        """Times where the training distribution jumps: every phase start after 0."""
        return tuple(phase.start for phase in self.phases[1:])

    def as_records(self) -> list[dict]:
        """The phases as plain dicts for ``summary.json`` (``end`` None: the end of the run)."""
        def finite(x: float) -> float | None:
            return None if x == math.inf else x

        return [{"start": p.start, "end": finite(p.end), "subjects": list(p.subjects), "replay": p.replay,
                 "replay_subjects": list(p.replay_subjects), "zipf": p.zipf, "zipf_end": p.zipf_end,
                 "anneal_until": finite(p.anneal_until)} for p in self.phases]

    def index(self, t: float) -> int:
        """The phase that holds t (phase k holds [start_k, end_k))."""
        starts = [phase.start for phase in self.phases]
        return max(0, int(np.searchsorted(starts, t, side="right")) - 1)

    def subject_weights(self, num_subjects: int, t: float) -> np.ndarray:
        """u(t), the subject frequencies trained at time t."""
        return self.phases[self.index(t)].subject_weights(num_subjects, t)

    def is_plain(self, num_subjects: int, zipf: float) -> bool:
        """True when this schedule trains a task's own frequencies (``num_subjects`` subjects, Zipf exponent
        ``zipf``) at every t: one constant phase on all subjects, no replay."""
        phase = self.phases[0]
        return (len(self.phases) == 1 and phase.constant and phase.replay == 0
                and phase.subjects == (0, num_subjects) and phase.zipf == zipf)


def trained_subjects(config: Config) -> int:
    """How many subjects are ever trained: the task's subjects less the held-out ones."""
    return config.task.subjects - config.data.holdout


def schedule_of(config: Config, old_subjects: int | None = None) -> Schedule:
    """The schedule that ``config.data`` describes. ``old_subjects`` (a fine-tuning run started from a run
    of that many subjects): the new subjects old_subjects..n-1 are trained with the old ones replayed at
    share ``data.replay`` (with no new subject, the task's own frequencies: the run goes on).

    Without fine-tuning: a warm-up phase on the first ⌈f·n⌉ subjects (f = ``data.warmup_subjects``) until
    ``data.warmup_time``, then all n trained subjects. The exponent α is ``data.zipf`` (default
    ``task.subject_zipf``), annealed to ``data.zipf_end`` at ``flow.t_max`` when that key is set."""
    data, n = config.data, trained_subjects(config)
    alpha = config.task.subject_zipf if data.zipf is None else data.zipf
    zipf = dict(zipf=alpha, zipf_end=data.zipf_end, anneal_until=config.flow.t_max)
    if old_subjects is not None and old_subjects < n:
        return Schedule((Phase(0.0, math.inf, (old_subjects, n), data.replay, (0, old_subjects), **zipf),))
    if data.replay > 0:
        if old_subjects is None:
            why = "it is not started from another run (init.from_run)"
            advice = "start from a run with fewer subjects (--init-from RUN_DIR, or init.from_run)"
        else:
            why = (f"it trains no subject beyond the {old_subjects} of the run it starts from (task.subjects="
                   f"{config.task.subjects}, data.holdout={data.holdout})")
            advice = f"task.subjects above {old_subjects}"
        raise ConfigError(f"data.replay={data.replay!r}: replays the old subjects beside new ones, but "
                          f"{why}; allowed: 0, or {advice}")
    if data.warmup_time > 0 and data.warmup_subjects < 1:
        first = max(1, math.ceil(data.warmup_subjects * n))
        return Schedule((Phase(0.0, data.warmup_time, (0, first), **zipf),
                         Phase(data.warmup_time, math.inf, (0, n), **zipf)))
    return Schedule((Phase(0.0, math.inf, (0, n), **zipf),))


def evaluation_task(task: FactTask, config: Config) -> FactTask:
    """The task whose frequencies a run is *measured* on: the task's own, with held-out subjects at weight 0
    (what the recorded ``loss`` averages, whatever the schedule trains at the moment)."""
    if config.data.holdout == 0:
        return task
    u = task.subject_weights.copy()
    u[trained_subjects(config):] = 0.0
    return task.with_subject_weights(u / u.sum())


class TaskSchedule:
    """The task trained at each time: ``at(t)`` is the task with the schedule's subject frequencies at t, one
    object per constant phase (so a phase's caches are built once) and a fresh one per t when annealed."""

    def __init__(self, task: FactTask, schedule: Schedule):
        self.task, self.schedule = task, schedule
        self._phase_tasks: dict[int, FactTask] = {}

    def key(self, t: float) -> tuple[int, float | None]:
        """What identifies the task at t: the phase, and t itself where the phase moves with t."""
        k = self.schedule.index(t)
        return k, None if self.schedule.phases[k].constant else float(t)

    def at(self, t: float) -> FactTask:
        """The task trained at time t."""
        k, moving = self.key(t)
        if moving is not None:
            return self._task_at(t)
        if k not in self._phase_tasks:
            self._phase_tasks[k] = self._task_at(t)
        return self._phase_tasks[k]

    def _task_at(self, t: float) -> FactTask:
        return self.task.with_subject_weights(self.schedule.subject_weights(self.task.S, t))


def per_task(build: Callable[[FactTask], T], tasks: TaskSchedule) -> Callable[[float], T]:
    """t -> ``build(tasks.at(t))``, what ``build`` returns kept until the task changes (a constant phase
    builds it once): an objective, a field, a Jacobian product of the task trained at t."""
    cache: dict[tuple, T] = {}

    def at(t: float) -> T:
        key = tasks.key(t)
        if key not in cache:
            cache.clear()
            cache[key] = build(tasks.at(t))
        return cache[key]

    return at


def per_time(build: Callable[[FactTask], Callable], tasks: TaskSchedule) -> Callable:
    """A function of (t, ...) that calls ``build(tasks.at(t))(t, ...)``: a field, or a Jacobian product,
    of the task trained at t (:func:`per_task`)."""
    of = per_task(build, tasks)
    return lambda t, *args: of(t)(t, *args)


def task_schedule(config: Config, task: FactTask, old_subjects: int | None = None,
                  schedule: Schedule | None = None) -> tuple[Schedule, TaskSchedule | None]:
    """The schedule of ``config.data`` (and of a fine-tuning start from ``old_subjects`` subjects), or
    ``schedule`` when given, and the task trained at each time; None in place of the latter when the
    schedule trains ``task``'s own frequencies throughout. Refuses a schedule the config's objective cannot
    follow (a fixed sampled loss set is drawn once, from the task's frequencies)."""
    schedule = schedule or schedule_of(config, old_subjects)
    plain = schedule.is_plain(task.S, config.task.subject_zipf)
    if config.loss.kind == "sampled" and not plain:
        raise ConfigError("loss.kind='sampled': a fixed sample cannot follow a data schedule (data.* keys or "
                          "a fine-tuning start); allowed: loss.kind=population")
    return schedule, None if plain else TaskSchedule(task, schedule)
