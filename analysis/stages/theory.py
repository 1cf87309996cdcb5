"""First-order (linearised) theory of the escape from a small initialisation (docs/design.md §4.6, §5.3).

For the reduced model with linear attention, a constant initialisation of size α, uniform subject and
relation frequencies and a balanced fact table, the output distribution stays uniform, u = 1/|A|, while
the parameters are small. Near θ = 0 every token's pair (a_z, v_z) then follows a linear flow

    d a_z/dt = -v_z · g_z,    d v_z/dt = -a_z g_z,    g_z = Σ_f c_z(f) w_f (u - e_{a*(f)}),

whose growing mode has rate ‖g_z‖. For a relation r, g_r = (1/R)(u - q_r) with q_r uniform on A_r; for a
subject s, g_s = (1/S)(u - q_s) with q_s uniform on the subject's R answers. Hence

    σ_r = (1/R) · sqrt(1/D - 1/(RD)),    σ_s = (1/S) · sqrt(1/R - 1/(RD)),

and the pair reaches order one near t_R = log(1/α)/σ_r (relation) and t_S = log(1/α)/σ_s (subject).
EOS and noise see every answer: their signal is ‖u - q‖ with q the answer marginal, zero for a balanced
table. This module states those predictions only where their assumptions hold, and reads the measured
times off a :class:`~dynamics.trajectory.Trajectory` to set beside them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dynamics.config import Config
from dynamics.geometry import get_geometry
from dynamics.models.embeddings import ORTHONORMAL_EMBEDDINGS  # the embedded flow is then the reduced one
from dynamics.models.registry import MODEL_KINDS, REDUCED_THEORY, get_model_kind
from dynamics.optimizers import OPTIMIZERS, optimizers_for
from dynamics.records import RunInfo
from dynamics.task import FactTask
from dynamics.trajectory import Trajectory

from .detect import crossing_time

# The linearisation neglects O(1) prefactors against log(1/α); above this scale they are not negligible.
MAX_INIT_SCALE = 1e-2


def escape_rates(S: int, R: int, D: int) -> tuple[float, float]:
    """Linearised growth rates (σ_r, σ_s) of a relation's and a subject's (a, v) pair at θ ≈ 0.

    σ_r = (1/R) · sqrt(1/D - 1/(RD))   (= ‖g_r‖, g_r = (1/R)(u - q_r), q_r uniform on the block A_r),
    σ_s = (1/S) · sqrt(1/R - 1/(RD))   (= ‖g_s‖, g_s = (1/S)(u - q_s), q_s uniform on the R answers of s).

    Valid for a balanced table under uniform frequencies. σ_r = 0 when R = 1 (the relation carries no
    information) and σ_s = 0 when D = 1 (the relation alone determines the answer).
    """
    for name, value in (("S", S), ("R", R), ("D", D)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    sigma_r = math.sqrt(max(1.0 / D - 1.0 / (R * D), 0.0)) / R
    sigma_s = math.sqrt(max(1.0 / R - 1.0 / (R * D), 0.0)) / S
    return sigma_r, sigma_s


def relation_first(S: int, R: int, D: int) -> bool:
    """Whether the first-order theory has the relation escape before the subject: σ_r > σ_s, i.e.

    S/R · sqrt((R - 1)/(D - 1)) > 1,

    evaluated as S · sqrt(R - 1) > R · sqrt(D - 1) so that D = 1 (σ_s = 0: True when R ≥ 2) and R = 1
    (σ_r = 0: False) need no division.
    """
    escape_rates(S, R, D)  # validates the sizes
    return S * math.sqrt(R - 1) > R * math.sqrt(D - 1)


def marginal_signal(facts: np.ndarray, fact_weights: np.ndarray, answers_per_relation: int) -> float:
    """‖u - q‖: the first-order signal of EOS (and, times (T-3)/N, of the tied noise pair).

    u is uniform on the |A| = R·D answers and q(a) = Σ_{s,r: a*(s,r)=a} w_{sr} the answer marginal of the
    table under the fact frequencies. Zero for a balanced table with uniform frequencies.
    """
    facts = np.asarray(facts)
    num_answers = facts.shape[1] * answers_per_relation
    q = np.zeros(num_answers)
    np.add.at(q, facts, np.asarray(fact_weights, dtype=np.float64))
    return float(np.linalg.norm(np.full(num_answers, 1.0 / num_answers) - q))


def _unbalanced_relations(facts: np.ndarray, D: int) -> list[int]:
    """Relations r whose answers in A_r are not all used by the same number of subjects."""
    bad = []
    for r in range(facts.shape[1]):
        counts = np.bincount(facts[:, r] - r * D, minlength=D)
        if len(counts) != D or counts.min() != counts.max():
            bad.append(r)
    return bad


def _gradient_flow(geometry: str | None) -> bool:
    """Whether the flow of ``geometry`` is one whose rates the theory gives (None: no registered flow)."""
    return geometry is not None and get_geometry(geometry).gradient_flow_theory


def _table_size(config: Config) -> tuple[int, int, int]:
    task = config.task
    return task.subjects, task.relations, task.answers_per_relation


def theory_applies(config: Config, facts: np.ndarray | None = None, fact_weights: np.ndarray | None = None,
                   info: RunInfo | None = None, table: bool = True) -> tuple[bool, str]:
    """Whether the first-order theory (:func:`theory_for`) describes a run of ``config``: (True, "") or
    (False, the reasons joined by "; "). The one place that decides where t_R, t_S, their ratios, the
    predicted lines of ``loss.png`` and the ``theory_*`` columns of a sweep are shown.

    The assumptions, each a reason when it fails: the plain gradient flow (``flow.geometry`` euclidean;
    GD's modified flow agrees with it to first order and is kept), or a discrete run of gd or sgd (``info``
    of a train run; Adam, signSGD and Muon follow the sign and spectral flows); a fresh start from the
    constant initialisation with α ≤ ``MAX_INIT_SCALE`` (not ``init.from_run``); linear attention in the
    reduced model, or the embedded one with orthonormal embeddings; the population loss; every parameter
    trained (``data.freeze`` none); the task's own uniform frequencies trained at every t (no held-out
    subject, warm-up, trained or annealed Zipf exponent, nor a schedule recorded in ``info.phases``);
    a balanced table (for every r, every answer of A_r is the answer of the same number of subjects;
    checked on ``facts``, default the task's); D ≥ 2 (D = 1 has no hallucination stage) and R ≥ 2.
    ``fact_weights`` (default the task's) must be uniform 1/(S·R).

    ``table=False`` leaves out the table's own conditions (balance, D ≥ 2, R ≥ 2): whether the run is one
    the rates describe, which is what the relation-first boundary S·√(R−1) > R·√(D−1) of a sweep's phase
    diagram needs (:func:`relation_first` handles D = 1 and R = 1 itself).
    """
    reasons = _failed_assumptions(config, facts, fact_weights, info, table)
    return not reasons, "; ".join(reasons)


def _failed_assumptions(config: Config, facts: np.ndarray | None, fact_weights: np.ndarray | None,
                        info: RunInfo | None, table: bool = True) -> list[str]:
    task, data = config.task, config.data
    S, R, D = _table_size(config)
    if facts is None or fact_weights is None:
        built = FactTask(task)
        facts = built.facts if facts is None else facts
        fact_weights = built.fact_weights if fact_weights is None else fact_weights
    facts = np.asarray(facts)
    fact_weights = np.asarray(fact_weights, dtype=np.float64)
    if facts.shape != (S, R) or fact_weights.shape != (S, R):
        raise ValueError(f"facts {facts.shape} and fact_weights {fact_weights.shape} must both be "
                         f"(task.subjects, task.relations) = {(S, R)}")
    reasons: list[str] = []
    train = info is not None and info.kind == "train"
    if train:
        # a discrete run's small-lr limit is its optimizer's flow (dynamics.optimizers); the linearised
        # rates of the gradient flow say nothing about the sign or the spectral flow (docs/geometry.md)
        optimizer = info.train.optimizer if info.train is not None else config.train.optimizer
        flow = OPTIMIZERS[optimizer].flow if optimizer in OPTIMIZERS else None
        if not _gradient_flow(flow):
            followers = [o for o in optimizers_for("train") if _gradient_flow(OPTIMIZERS[o].flow)]
            reasons.append(f"train.optimizer={optimizer!r}: the rates are those of the gradient flow, which "
                           f"only {' and '.join(followers)} follow as lr → 0 ({optimizer} follows "
                           f"{f'the {flow} flow' if flow else 'no registered flow'})")
    elif not get_geometry(config.flow.geometry).gradient_flow_theory:
        reasons.append(f"flow.geometry={config.flow.geometry!r}: the rates are those of the gradient flow "
                       "(euclidean), not of a steepest descent in another norm")
    fine_tune = bool(config.init.from_run) or (info is not None and info.old_subjects is not None)
    if fine_tune:
        where = (f"init.from_run={config.init.from_run!r}" if config.init.from_run else
                 f"a start from another run of {info.old_subjects} subjects (RunInfo.old_subjects)")
        reasons.append(f"{where}: the run starts from another run's final state, not from a small constant "
                       "initialisation")
    elif config.init.kind != "constant":
        reasons.append(f"init.kind={config.init.kind!r}: the theory needs the constant initialisation "
                       "(every parameter equal to init.scale)")
    elif config.init.scale > MAX_INIT_SCALE:
        reasons.append(f"init.scale={config.init.scale!r}: the linearisation needs a small initialisation "
                       f"(<= {MAX_INIT_SCALE}) so that log(1/α) dominates the escape time")
    kind = get_model_kind(config.model.kind)
    if kind.theory != REDUCED_THEORY:
        described = ", ".join(k.name for k in MODEL_KINDS.values() if k.theory == REDUCED_THEORY)
        reasons.append(f"model.kind={kind.name!r}: the rates are derived for the reduced linear-attention "
                       f"layer (model.kind {described})")
    elif config.model.attention != "linear":
        reasons.append(f"model.attention={config.model.attention!r}: the rates are derived for linear "
                       "attention")
    elif "model.embeddings" in kind.reads and config.model.embeddings not in ORTHONORMAL_EMBEDDINGS:
        reasons.append(f"model.embeddings={config.model.embeddings!r}: only orthonormal embeddings "
                       "reproduce the reduced flow")
    if config.loss.kind != "population":
        reasons.append(f"loss.kind={config.loss.kind!r}: the theory is for the population loss, not a "
                       "sampled one")
    if data.freeze != "none":
        reasons.append(f"data.freeze={data.freeze!r}: the escape is the joint growth of every (a, v) pair; "
                       "a frozen block changes it")
    reasons += _schedule_reasons(config, None if fine_tune else info)  # a fine-tune's schedule: said above
    if task.subject_zipf != 0 or task.relation_zipf != 0:
        reasons.append(f"task.subject_zipf={task.subject_zipf!r}, task.relation_zipf={task.relation_zipf!r}"
                       ": the rates assume uniform (zipf 0) subject and relation frequencies")
    elif data.holdout == 0 and not np.allclose(fact_weights, 1.0 / (S * R), rtol=1e-9, atol=0.0):
        reasons.append("fact_weights: the rates assume uniform fact frequencies 1/(S·R)")
    if not table:
        return reasons
    if D < 2:
        reasons.append(f"task.answers_per_relation={D}: with D = 1 the relation determines the answer "
                       "(no hallucination stage, σ_s = 0)")
    if R < 2:
        reasons.append(f"task.relations={R}: with R = 1 the relation carries no information (σ_r = 0)")
    unbalanced = _unbalanced_relations(facts, D)
    if unbalanced:
        shown = ", ".join(map(str, unbalanced[:8])) + (", ..." if len(unbalanced) > 8 else "")
        reasons.append(f"unbalanced fact table (task.facts={task.facts!r}): the answers of relation(s) "
                       f"{shown} are not used by equally many subjects; the rates assume a balanced table, "
                       "and the answer marginal then has a first-order signal of its own (marginal_signal) "
                       "and can be learned first")
    return reasons


def _schedule_reasons(config: Config, info: RunInfo | None) -> list[str]:
    """Why the frequencies trained are not the task's own uniform ones at every t (empty when they are)."""
    data = config.data
    reasons = []
    if data.holdout > 0:
        reasons.append(f"data.holdout={data.holdout}: held-out subjects are never trained; the rates assume "
                       "every subject trained")
    if data.warmup_time > 0 and data.warmup_subjects < 1:
        reasons.append(f"data.warmup_subjects={data.warmup_subjects!r} until data.warmup_time="
                       f"{data.warmup_time!r}: a warm-up trains a share of the subjects first; the rates "
                       "assume all of them from t = 0")
    start = config.task.subject_zipf if data.zipf is None else data.zipf
    end = start if data.zipf_end is None else data.zipf_end
    if data.zipf_end is not None and end != start:
        reasons.append(f"data.zipf_end={data.zipf_end!r}: the trained subject frequencies move with t; the "
                       "rates assume fixed uniform ones")
    elif data.zipf is not None and data.zipf != 0:
        reasons.append(f"data.zipf={data.zipf!r}: subjects are trained with Zipf frequencies; the rates "
                       "assume uniform ones")
    if not reasons and info is not None and not _plain_phases(info.phases, config.task.subjects):
        reasons.append("data schedule: the run's recorded phases train other frequencies than the task's "
                       "own; the rates assume those at every t")
    return reasons


def _plain_phases(phases: list[dict[str, Any]] | None, subjects: int) -> bool:
    """The recorded schedule (``RunInfo.phases``) is one constant phase on every subject without replay, or
    none was recorded."""
    if not phases:
        return True
    if len(phases) > 1:
        return False
    phase = phases[0]
    end = phase.get("zipf_end")
    return (not phase.get("replay") and list(phase.get("subjects", [0, subjects])) == [0, subjects]
            and (end is None or end == phase.get("zipf")))


def theory_for(config: Config, facts: np.ndarray, fact_weights: np.ndarray,
               info: RunInfo | None = None) -> dict[str, Any]:
    """The linearised predictions of docs/design.md §5.3 for a run, or the reasons they do not apply.

    Returns a plain (JSON-ready) dict:

    - ``applicable`` and ``reason``: :func:`theory_applies` (``config``, ``facts``, ``fact_weights``,
      ``info``, the run's record when there is one); ``reasons``: the same reasons one per item;
    - ``sigma_r``, ``sigma_s``: :func:`escape_rates` (S, R, D);
    - ``t_R`` = log(1/α)/σ_r, ``t_S`` = log(1/α)/σ_s with α = ``init.scale``;
    - ``relation_first``: :func:`relation_first` (σ_r > σ_s);
    - ``marginal_signal``: ‖u - q‖ (:func:`marginal_signal`), reported always: when the table is
      unbalanced it is non-zero and the answer marginal is learned before any subject or relation.

    Where the theory does not apply, ``sigma_r``, ``sigma_s``, ``t_R``, ``t_S`` and ``relation_first`` are
    None: a number from a theory whose assumptions fail is never printed.
    """
    S, R, D = _table_size(config)
    reasons = _failed_assumptions(config, facts, fact_weights, info)
    applicable = not reasons
    result: dict[str, Any] = {"applicable": applicable, "reason": "; ".join(reasons), "reasons": reasons,
                              "sigma_r": None, "sigma_s": None, "t_R": None, "t_S": None,
                              "relation_first": None,
                              "marginal_signal": marginal_signal(facts, fact_weights, D)}
    if applicable:
        sigma_r, sigma_s = escape_rates(S, R, D)
        log_inv_alpha = math.log(1.0 / config.init.scale)
        result.update(sigma_r=sigma_r, sigma_s=sigma_s, t_R=log_inv_alpha / sigma_r,
                      t_S=log_inv_alpha / sigma_s, relation_first=relation_first(S, R, D))
    return result


def midpoint_crossing(t: np.ndarray, values: np.ndarray) -> float:
    """The first time ``values`` crosses m = (v_0 + v_end)/2, the midpoint of its initial and final values.

    Between the grid points t_{k-1}, t_k that bracket the crossing the time is interpolated linearly in
    log t: log t* = log t_{k-1} + (m - v_{k-1})/(v_k - v_{k-1}) · (log t_k - log t_{k-1}). When t_{k-1} = 0
    (the crossing happens before the first positive time) t_k is returned. NaN when the curve never
    crosses, has no net change, or contains no finite value.
    """
    t = np.asarray(t, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values) & np.isfinite(t)
    t, values = t[keep], values[keep]
    if len(values) < 2:
        return float("nan")
    start, end = values[0], values[-1]
    change = end - start
    if abs(change) <= 1e-12 * max(1.0, abs(start)):
        return float("nan")
    return crossing_time(t, values, 0.5 * (start + end), start=1, downward=change < 0)


def measured_times(traj: Trajectory) -> dict[str, float]:
    """Measured escape times of a trajectory: ``t_relation`` and ``t_subject``.

    Each is the time the relation-only loss -log p(A_r) (resp. the subject-only loss) crosses the midpoint
    between its initial and final values (:func:`midpoint_crossing`, linear in log t); NaN if never.
    """
    return {"t_relation": midpoint_crossing(traj.t, traj.relation_loss),
            "t_subject": midpoint_crossing(traj.t, traj.subject_loss)}


def _ratio(measured: Any, predicted: Any) -> float | None:
    if predicted is None or measured is None:
        return None
    measured, predicted = float(measured), float(predicted)
    if not (math.isfinite(measured) and math.isfinite(predicted)) or predicted <= 0:
        return None
    return measured / predicted


def compare_times(theory: dict[str, Any], measured: dict[str, float]) -> dict[str, Any]:
    """Predicted and measured times side by side with their ratios measured/predicted.

    ``relation_ratio`` = t_relation / t_R and ``subject_ratio`` = t_subject / t_S; each is None when the
    theory does not apply or the measured time is NaN (so the dict stays valid JSON).
    """
    applicable = bool(theory.get("applicable"))
    t_R = theory.get("t_R") if applicable else None
    t_S = theory.get("t_S") if applicable else None
    t_relation, t_subject = measured.get("t_relation"), measured.get("t_subject")

    def finite(x: Any) -> float | None:
        return float(x) if x is not None and math.isfinite(float(x)) else None

    return {"applicable": applicable, "t_R": t_R, "t_relation": finite(t_relation),
            "relation_ratio": _ratio(t_relation, t_R), "t_S": t_S, "t_subject": finite(t_subject),
            "subject_ratio": _ratio(t_subject, t_S)}
