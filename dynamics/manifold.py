"""Li et al.'s positive manifold of the reduced model and its four-scalar flow (docs/geometry.md, "The
four-scalar flow").

In the authors' setting (one answer per fact: D = S on the structured table, so a*(s, r) = r·S + s and
|A| = S·R; T = 3, no noise; uniform frequencies) the reduced model started with every score equal to β and
every subject value v_s = α/√R · Σ_r e_{a*(s,r)}, relation value v_r = α/√S · Σ_s e_{a*(s,r)} (EOS: value 0)
stays, under the gradient, sign and spectral flows, on the set where

    a_s = β_S, v_s = u_S Σ_r e_{a*(s,r)} + w_S Σ_{r, s'≠s} e_{a*(s',r)}   (every subject s)

and the same for relations with (β_R, u_R, w_R). The loss sees only α_S = √R (u_S − w_S) and β_S (and the
relation pair): the subject part of the answer distribution is a softmax over S subjects with margin
q_S = α_S β_S/√R − log(S − 1), the relation part one over R relations with q_R = α_R β_R/√S − log(R − 1), and
L = log(1 + e^{−q_S}) + log(1 + e^{−q_R}). :func:`manifold_field` is the flow of (α_S, β_S, α_R, β_R) for
each geometry; :func:`manifold_flow` integrates it; :func:`manifold_start` is the start θ(0) of
``init.kind=manifold`` on any task; :func:`manifold_coordinates` reads the four scalars off a reduced state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .geometry import GEOMETRIES
from .task import FactTask

MANIFOLD_GEOMETRIES = GEOMETRIES.builtin  # manifold_field derives the flow of each built-in geometry


def manifold_start(model, init) -> torch.Tensor:
    """θ(0) of ``init.kind=manifold`` for a reduced model (scores a, then values v row by row): every score
    ``init.beta``; a subject's or relation's value ``init.alpha`` times the unit vector on the answers of its
    facts (Σ_f e_{a*(f)} over the facts f it is in, normalised); the tokens in every fact (noise, EOS)
    value 0. On the authors' task this is their start α₀ = init.alpha, β₀ = init.beta."""
    task = model.task
    n, answers = model.num_tokens, task.num_answers
    values = np.zeros((n, answers))
    for s in range(task.S):
        np.add.at(values[s], task.facts[s], 1.0)
    for r in range(task.R):
        np.add.at(values[task.S + r], task.facts[:, r], 1.0)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    values = init.alpha * np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    scores = np.full(n, init.beta)
    theta = np.concatenate([scores, values.reshape(-1)])
    return torch.as_tensor(theta, dtype=torch.float64, device=model.device)


def check_authors_task(task: FactTask) -> None:
    """Refuse (ConfigError) a task that is not the authors' setting, where the four-scalar flow is exact."""
    config = task.config
    why = None
    if config.answers_per_relation != config.subjects or config.facts != "structured":
        why = ("one answer per fact: task.answers_per_relation = task.subjects on task.facts=structured "
               f"(here {config.answers_per_relation} and {config.facts!r})")
    elif config.seq_len != 3:
        why = f"no noise: task.seq_len=3 (here {config.seq_len})"
    elif config.subject_zipf or config.relation_zipf:
        why = "uniform frequencies: task.subject_zipf = task.relation_zipf = 0"
    elif config.subjects < 2 or config.relations < 2:
        why = f"at least 2 subjects and 2 relations (here {config.subjects} and {config.relations})"
    if why:
        raise ConfigError(f"task: the four-scalar manifold needs the authors' setting ({why}); allowed: "
                          "preset li2026 with task.subjects, task.relations")


def manifold_coordinates(task: FactTask, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(α_S, β_S, α_R, β_R) of reduced states ``thetas`` (K, P) (tokens untied, N = 0) on the authors' task,
    and each state's distance from the manifold: the largest deviation of a score from its block's mean or
    of a value entry from its row's two-level pattern, relative to the largest parameter."""
    check_authors_task(task)
    S, R = task.S, task.R
    thetas = np.atleast_2d(np.asarray(thetas, dtype=np.float64))
    n = S + R + 1
    a = thetas[:, :n]
    v = thetas[:, n:].reshape(len(thetas), n, R, S)  # answer r·S + s: (relation r, subject s)
    own_s = np.eye(S, dtype=bool)[:, None, :].repeat(R, 1)  # subject s's own answers (s, ·, s)
    own_r = np.eye(R, dtype=bool)[:, :, None].repeat(S, 2)  # relation r's own answers (r, r, ·)
    v_s, v_r = v[:, :S], v[:, S:S + R]
    u_s, w_s = v_s[:, own_s].mean(-1), v_s[:, ~own_s].mean(-1)
    u_r, w_r = v_r[:, own_r].mean(-1), v_r[:, ~own_r].mean(-1)
    coords = np.stack([math.sqrt(R) * (u_s - w_s), a[:, :S].mean(-1),
                       math.sqrt(S) * (u_r - w_r), a[:, S:S + R].mean(-1)], axis=-1)
    pattern_s = np.where(own_s, u_s[:, None, None, None], w_s[:, None, None, None])
    pattern_r = np.where(own_r, u_r[:, None, None, None], w_r[:, None, None, None])
    deviation = np.max(np.abs(np.concatenate([
        (a[:, :S] - coords[:, 1:2]), (a[:, S:S + R] - coords[:, 3:4]),
        (v_s - pattern_s).reshape(len(thetas), -1), (v_r - pattern_r).reshape(len(thetas), -1),
        v[:, -1].reshape(len(thetas), -1)], axis=1)), axis=1)
    return coords, deviation / np.max(np.abs(thetas), axis=1)


def margins(state: np.ndarray, subjects: int, relations: int) -> tuple[np.ndarray, np.ndarray]:
    """(q_S, q_R) of states (..., 4): q_S = α_S β_S/√R − log(S − 1), q_R = α_R β_R/√S − log(R − 1)."""
    state = np.asarray(state, dtype=np.float64)
    return (state[..., 0] * state[..., 1] / math.sqrt(relations) - math.log(subjects - 1),
            state[..., 2] * state[..., 3] / math.sqrt(subjects) - math.log(relations - 1))


def manifold_loss(state: np.ndarray, subjects: int, relations: int) -> np.ndarray:
    """L = log(1 + e^{−q_S}) + log(1 + e^{−q_R}): the reduced model's population loss on the manifold."""
    q_s, q_r = margins(state, subjects, relations)
    return np.logaddexp(0.0, -q_s) + np.logaddexp(0.0, -q_r)


def _regularised(x: float, eps: float) -> float:
    """x/√(x² + ε²): the geometry's map of one gradient entry or singular value (the sign of x at ε = 0)."""
    if eps == 0:
        return float(np.sign(x))
    return x / math.sqrt(x * x + eps * eps)


def manifold_field(subjects: int, relations: int, geometry: str = "euclidean", eps: float = 0.0):
    """f(t, y) for y = (α_S, β_S, α_R, β_R): the reduced model's flow in ``geometry`` (ε as
    :mod:`dynamics.geometry` uses it) restricted to the manifold. With e_S = σ(−q_S), e_R = σ(−q_R) and
    φ(x) = x/√(x² + ε²):

    euclidean: α_S' = β_S e_S / ((S−1)√R),            β_S' = α_S e_S / (S√R);
    sign:      α_S' = √R [φ(β_S e_S/(S R)) + φ(β_S e_S/(S(S−1)R))],   β_S' = φ(α_S e_S/(S√R));
    spectral:  α_S' = φ(√R c_S), c_S = β_S e_S/((S−1)R),  β_S' = g_S / √(S g_S² + R g_R² + ε²),
               g_S = α_S e_S/(S√R);
    and the relation pair with S and R exchanged. At ε = 0 sign gives (2√R, 1, 2√S, 1) and spectral
    α' = 1, as in Li et al. (docs/geometry.md derives each line)."""
    if geometry not in MANIFOLD_GEOMETRIES:
        raise ValueError(f"geometry={geometry!r}: allowed " + ", ".join(MANIFOLD_GEOMETRIES))
    S, R = subjects, relations
    rs, rr = math.sqrt(S), math.sqrt(R)
    log_s, log_r = math.log(S - 1), math.log(R - 1)
    phi = _regularised
    from scipy.special import expit  # scipy loads on first use: a run seldom needs the reduced flow

    def field(t: float, y: np.ndarray) -> np.ndarray:
        a_s, b_s, a_r, b_r = y
        e_s, e_r = expit(log_s - a_s * b_s / rr), expit(log_r - a_r * b_r / rs)
        if geometry == "euclidean":
            return np.array([b_s * e_s / ((S - 1) * rr), a_s * e_s / (S * rr),
                             b_r * e_r / ((R - 1) * rs), a_r * e_r / (R * rs)])
        g_s, g_r = a_s * e_s / (S * rr), a_r * e_r / (R * rs)  # each score's gradient entry, negated
        if geometry == "sign":
            return np.array([rr * (phi(b_s * e_s / (S * R), eps) + phi(b_s * e_s / (S * (S - 1) * R), eps)),
                             phi(g_s, eps),
                             rs * (phi(b_r * e_r / (R * S), eps) + phi(b_r * e_r / (R * (R - 1) * S), eps)),
                             phi(g_r, eps)])
        c_s, c_r = b_s * e_s / ((S - 1) * R), b_r * e_r / ((R - 1) * S)  # value rows: −c (e_z − mean) ⊗ 1
        norm = math.sqrt(S * g_s * g_s + R * g_r * g_r + eps * eps)
        return np.array([phi(rr * c_s, eps), g_s / norm, phi(rs * c_r, eps), g_r / norm])

    return field


@dataclass
class ManifoldFlow:
    """A four-scalar flow: states (α_S, β_S, α_R, β_R) on the grid ``t``, the loss there, and the learning
    times T_S, T_R: the first times p_S = σ(q_S), p_R = σ(q_R) reach 1 − δ (NaN if not by the end)."""

    t: np.ndarray
    state: np.ndarray
    loss: np.ndarray
    T_S: float
    T_R: float
    subjects: int
    relations: int
    geometry: str
    eps: float
    delta: float
    status: str

    @property
    def ratio(self) -> float:
        """T_S / T_R."""
        return self.T_S / self.T_R


def margin_target(delta: float) -> float:
    """The margin q at which σ(q) = 1 − δ: log((1 − δ)/δ)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta!r}: must be in (0, 1)")
    return math.log1p(-delta) - math.log(delta)


def manifold_flow(subjects: int, relations: int, geometry: str = "euclidean", eps: float = 0.0,
                  alpha: float = 0.01, beta: float = 0.01, times: np.ndarray | None = None,
                  delta: float = 0.1, t_max: float = 1e12, rtol: float = 1e-12, atol: float = 1e-14
                  ) -> ManifoldFlow:
    """Integrate the four-scalar flow of :func:`manifold_field` from (α, β, α, β) (scipy's DOP853 at
    ``rtol``, ``atol``; the crossings of q = log((1−δ)/δ) located as events). With ``times`` (increasing,
    from 0) the states are recorded there and the flow ends at ``times[-1]``; without, it ends when both
    components reach 1 − δ (or at ``t_max``) and is recorded at the solver's steps and the two crossings.
    Costs nothing at any S, R (S = R = 10⁶ included)."""
    S, R = subjects, relations
    if min(S, R) < 2:
        raise ValueError(f"subjects={S}, relations={R}: the manifold needs at least 2 of each")
    target = margin_target(delta)
    field = manifold_field(S, R, geometry, eps)

    def crossing(i):
        def event(t, y):
            return margins(y, S, R)[i] - target
        event.direction = 1
        return event

    def both(t, y):
        return min(margins(y, S, R)) - target
    both.terminal = times is None
    both.direction = 1
    end = float(times[-1]) if times is not None else t_max
    y0 = np.array([alpha, beta, alpha, beta], dtype=np.float64)
    from scipy.integrate import solve_ivp  # scipy loads on first use

    result = solve_ivp(field, (0.0, end), y0, method="DOP853", rtol=rtol, atol=atol, dense_output=True,
                       events=[crossing(0), crossing(1), both])
    if not result.success:
        raise RuntimeError(f"the four-scalar flow failed: {result.message}")
    q0 = margins(y0, S, R)
    hits = [0.0 if q0[i] >= target else float(result.t_events[i][0]) if len(result.t_events[i]) else math.nan
            for i in (0, 1)]
    if times is None:
        grid = np.unique(np.concatenate([result.t, [h for h in hits if np.isfinite(h)]]))
    else:
        grid = np.asarray(times, dtype=np.float64)
    state = result.sol(grid).T
    status = "reached" if all(np.isfinite(hits)) else "t_max"
    return ManifoldFlow(grid, state, manifold_loss(state, S, R), hits[0], hits[1], S, R, geometry, eps, delta,
                        status)
