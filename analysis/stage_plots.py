"""Figures of learning stages (DESIGN §5, issue 3 item 5). Reads ``Trajectory`` records and plain
dicts and arrays only, never model internals; matplotlib's object API (no pyplot state).

- :func:`plot_stage_losses`: the loss curves of ``loss.png`` with detected stages shaded and named and
  the theory's predicted escape times t_R, t_S marked;
- :func:`plot_fact_heatmap`: p(a*) of every fact over log t, facts ordered by learning time;
- :func:`plot_fact_fractions`: fractions of uninformed, hallucinating and recalled facts over log t.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import Normalize

from dynamics.trajectory import Trajectory

from .plots import log_time_axis, plot_losses, run_figure


def predicted_times(theory: Mapping[str, Any] | None) -> dict[str, float]:
    """The predicted times to mark, {"t_R (theory)": t_R, "t_S (theory)": t_S}; empty when ``theory`` is
    None or not applicable (a theory whose assumptions fail has no number to show)."""
    if not theory or not theory.get("applicable"):
        return {}
    marks = {"t_R (theory)": theory.get("t_R"), "t_S (theory)": theory.get("t_S")}
    return {label: float(time) for label, time in marks.items() if time is not None}


def plot_stage_losses(traj: Trajectory, stages: Sequence[Mapping[str, Any]], theory: Mapping[str, Any] | None,
                      path: str | Path, title: str = "") -> None:
    """Loss, relation-only and subject-only loss against log t (as :func:`analysis.plots.plot_losses`)
    with the reference levels log |A|, H(A|R), 0 dashed, every stage shaded between ``t_start`` and
    ``t_end`` (None: to the end) and named, and, when ``theory`` applies, t_R = log(1/α)/σ_r and
    t_S = log(1/α)/σ_s as dotted vertical lines.

    ``stages``: dicts {"name", "t_start", "t_end", "level", "expected_level"} (only the first three are
    drawn). ``theory``: a dict from :func:`analysis.theory.theory_for`, or None.
    """
    label = "run" if traj.info is None else traj.info.kind
    plot_losses([(label, traj)], traj.levels, Path(path), title=title, stages=list(stages),
                predicted=predicted_times(theory))


def fact_order(learning_time: np.ndarray) -> np.ndarray:
    """Flat indices s·R + r of the facts sorted by learning time, earliest first, NaN (never learned) last.

    The sort is stable: facts with equal times (and the NaN ones) keep their (s, r) order.
    """
    times = np.asarray(learning_time, dtype=np.float64).ravel()
    finite = np.isfinite(times)
    keys = np.where(finite, times, 0.0)
    return np.lexsort((keys, ~finite)).astype(np.int64)


def _log_xlim(t: np.ndarray) -> tuple[float, float]:
    """The x range of :func:`analysis.plots.plot_losses`: at most three decades below the last time."""
    return max(float(t[0]), float(t[-1]) * 1e-3), float(t[-1])


def _log_edges(t: np.ndarray) -> np.ndarray:
    """Cell edges around positive, increasing times: geometric midpoints, extended half a step each end."""
    if len(t) == 1:
        return np.array([t[0] / 1.5, t[0] * 1.5])
    mids = np.sqrt(t[1:] * t[:-1])
    return np.concatenate([[t[0] ** 2 / mids[0]], mids, [t[-1] ** 2 / mids[-1]]])


def plot_fact_heatmap(traj: Trajectory, learning_time: np.ndarray, path: str | Path, title: str = "") -> None:
    """p(a*) of every fact (rows, ordered by :func:`fact_order` of ``learning_time`` (S, R), never-learned
    facts at the bottom, below a red dashed line) against log t (columns at the recorded t > 0, the x range
    that of ``loss.png``), colour in [0, 1], with the learning times drawn over it as a white line."""
    learning_time = np.asarray(learning_time, dtype=np.float64)
    S, R = traj.p_correct.shape[1:]
    if learning_time.shape != (S, R):
        raise ValueError(f"learning_time has shape {learning_time.shape}; expected (S, R) = {(S, R)}")
    positive = traj.t > 0
    if not positive.any():
        raise ValueError("the trajectory has no recorded time t > 0 to draw on a log axis")
    t = traj.t[positive]
    order = fact_order(learning_time)
    values = traj.p_correct[positive].reshape(len(t), S * R)[:, order].T  # (facts, times)
    rows = np.arange(S * R + 1) - 0.5
    fig = run_figure(7.5, 4.8, left=0.95 if S * R <= 32 else 0.7)
    ax = fig.subplots()
    mesh = ax.pcolormesh(_log_edges(t), rows, values, shading="flat", cmap="viridis",
                         norm=Normalize(0.0, 1.0), rasterized=True)
    ordered = learning_time.ravel()[order]
    learned = np.isfinite(ordered)
    if learned.any():
        ax.plot(ordered[learned], np.arange(S * R)[learned], color="white", lw=1.2, label="learning time")
        ax.legend(fontsize=8, loc="lower left")
    if (~learned).any() and learned.any():
        ax.axhline(learned.sum() - 0.5, color="red", lw=0.8, ls="--")
    log_time_axis(ax)
    ax.set_xlim(*_log_xlim(t))
    ax.set_ylim(S * R - 0.5, -0.5)  # earliest-learned fact at the top
    ax.set_xlabel("flow time t (= step × lr for discrete runs)")
    ax.set_ylabel(f"fact (s, r), ordered by learning time ({S * R} facts)")
    if S * R <= 32:
        ax.set_yticks(np.arange(S * R), [f"({i // R}, {i % R})" for i in order], fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(mesh, ax=ax, label="p(a*)")
    fig.savefig(path, dpi=120)


def plot_fact_fractions(t: np.ndarray, uninformed: np.ndarray, hallucinating: np.ndarray,
                        recalled: np.ndarray, path: str | Path, title: str = "") -> None:
    """The fractions of facts uninformed, hallucinating and recalled (each (K,), in [0, 1]) against log t
    (t > 0, the x range that of ``loss.png``); y axis [0, 1]."""
    t = np.asarray(t, dtype=np.float64)
    curves = {"uninformed": uninformed, "hallucinating": hallucinating, "recalled": recalled}
    curves = {name: np.asarray(values, dtype=np.float64) for name, values in curves.items()}
    for name, values in curves.items():
        if values.shape != t.shape:
            raise ValueError(f"{name} has shape {values.shape}; expected the shape of t {t.shape}")
    positive = t > 0
    if not positive.any():
        raise ValueError("no time t > 0 to draw on a log axis")
    fig = run_figure(7.5, 3.6)
    ax = fig.subplots()
    for (name, values), color in zip(curves.items(), ("0.5", "C3", "C0"), strict=True):
        ax.plot(t[positive], values[positive], color=color, lw=2, label=name)
        ax.fill_between(t[positive], values[positive], color=color, alpha=0.12, lw=0)
    log_time_axis(ax)
    ax.set_xlim(*_log_xlim(t[positive]))
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("flow time t (= step × lr for discrete runs)")
    ax.set_ylabel("fraction of facts")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="center left")
    ax.grid(alpha=0.25, which="both")
    fig.savefig(path, dpi=120)
