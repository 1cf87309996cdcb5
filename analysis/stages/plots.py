"""The figures of a run directory (docs/design.md §5). Reads ``Trajectory`` records and plain dicts and
arrays only, never model internals.

- :func:`plot_losses`: loss, relation-only and subject-only loss of one or more runs over log t, with the
  reference levels, stages shaded and predicted times marked (``loss.png``);
- :func:`plot_stage_losses`: ``loss.png`` of one run with its detected stages and the theory's t_R, t_S;
- :func:`plot_fact_heatmap`: p(a*) of every fact over log t, facts ordered by learning time (``facts.png``);
- :func:`plot_fact_fractions`: fractions of uninformed, hallucinating and recalled facts over log t
  (``fractions.png``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import Normalize

from dynamics.io import release
from dynamics.trajectory import Trajectory

from ..plotting import (
    TIME_LABEL,
    first_escape,
    label_levels,
    log_time_axis,
    run_figure,
    save,
    set_run_title,
    shade_stages,
    time_window,
)

CURVES = (("loss", "loss", "C0"), ("relation_loss", "relation-only loss", "C1"),
          ("subject_loss", "subject-only loss", "C2"))
MARK_COLORS = {"t_R": "C1", "t_S": "C2"}  # t_R predicts the relation-only loss's fall, t_S the subject-only's


def plot_losses(runs: Sequence[tuple[str, Trajectory]], levels: dict[str, float], path: Path,
                title: str = "", *, stages: Sequence[Mapping[str, Any]] | None = None,
                predicted: Mapping[str, float] | None = None) -> None:
    """Loss, relation-only and subject-only loss against log t for one or more runs, with the
    reference levels log |A|, H(A|R) and 0 dashed. The first run is drawn solid, the others dashed.

    ``stages`` (optional): dicts with ``name``, ``t_start`` and ``t_end`` (None: still running at the end),
    each shaded as a band on the time axis and named in it; a ``t_start`` of 0 starts at the left edge.
    ``predicted`` (optional): label -> time, each marked by a dotted vertical line (e.g. the theory's
    ``t_R``, ``t_S``); the x range is widened to show them.
    """
    fig = run_figure(9.0, 4.2, right=1.65)  # the right margin holds the reference levels' names
    ax = fig.subplots()
    for index, (label, traj) in enumerate(runs):
        positive = traj.t > 0
        style = "-" if index == 0 else (0, (3, 2))
        for field, name, color in CURVES:
            ax.plot(traj.t[positive], getattr(traj, field)[positive], ls=style, color=color,
                    lw=2.6 if index == 0 else 1.3, alpha=0.55 if index == 0 and len(runs) > 1 else 1.0,
                    label=f"{name} ({label})" if len(runs) > 1 else name)
        info = traj.info
        status = "ok" if info is None else info.status.value
        if status != "ok" and info.status_time is not None:
            ax.axvline(info.status_time, color="red", lw=1, ls=":", label="_unlabeled: named beside it")
            ax.text(info.status_time, ax.get_ylim()[1], f" {label}: {status}", color="red",
                    va="top", fontsize=8)
    shown = {name: levels[name] for name in ("log|A|", "H(A|R)", "0")}
    # log D beside H(A|R): one label 'H(A|R) = log D' where the answers of a relation are uniform
    shown["log D"] = math.log(runs[0][1].answers_per_relation)
    label_levels(ax, shown)
    log_time_axis(ax)
    left, right = time_window(np.concatenate([traj.t for _, traj in runs]), keep=first_escape(stages))
    marks = {k: float(v) for k, v in (predicted or {}).items() if v is not None and np.isfinite(v) and v > 0}
    if marks:
        left, right = min(left, min(marks.values()) / 1.2), max(right, max(marks.values()) * 1.2)
    ax.set_xlim(left, right)
    if stages:
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.08 * (high - low))  # headroom for the stage names above the curves
        shade_stages(ax, stages, left, right)
    for label, time in marks.items():  # each prediction in the colour of the curve it predicts
        color = MARK_COLORS.get(label.split()[0], "0.15")
        ax.axvline(time, color=color, ls=(0, (1, 1.5)), lw=1.6, label=f"{label} = {time:.3g}")
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("loss (nats)")
    set_run_title(ax, title)
    ax.legend(fontsize=8, ncol=2 if len(runs) > 1 else 1, loc="lower left")
    ax.grid(alpha=0.25, which="both")
    save(fig, path)


def predicted_times(theory: Mapping[str, Any] | None) -> dict[str, float]:
    """The predicted times to mark, {"t_R (theory)": t_R, "t_S (theory)": t_S}; empty when ``theory`` is
    None or not applicable (a theory whose assumptions fail has no number to show)."""
    if not theory or not theory.get("applicable"):
        return {}
    marks = {"t_R (theory)": theory.get("t_R"), "t_S (theory)": theory.get("t_S")}
    return {label: float(time) for label, time in marks.items() if time is not None}


def plot_stage_losses(traj: Trajectory, stages: Sequence[Mapping[str, Any]], theory: Mapping[str, Any] | None,
                      path: str | Path, title: str = "") -> None:
    """Loss, relation-only and subject-only loss against log t (as :func:`plot_losses`) with the reference
    levels log |A|, H(A|R), 0 dashed, every stage shaded between ``t_start`` and ``t_end`` (None: to the
    end) and named, and, when ``theory`` applies, t_R = log(1/α)/σ_r and t_S = log(1/α)/σ_s as dotted
    vertical lines.

    ``stages``: dicts {"name", "t_start", "t_end", "level", "expected_level"} (only the first three are
    drawn). ``theory``: a dict from :func:`analysis.stages.theory_for`, or None.
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


def _log_edges(t: np.ndarray) -> np.ndarray:
    """Cell edges around positive, increasing times: geometric midpoints, extended half a step each end."""
    if len(t) == 1:
        return np.array([t[0] / 1.5, t[0] * 1.5])
    mids = np.sqrt(t[1:] * t[:-1])
    return np.concatenate([[t[0] ** 2 / mids[0]], mids, [t[-1] ** 2 / mids[-1]]])


# A heatmap row per fact up to this many facts; beyond, rows are the means of consecutive facts in the
# learning-time order (a figure is a few hundred pixels tall: 10^5 rows would cost gigabytes to draw).
HEATMAP_ROWS = 1000
HEATMAP_CHUNK = 16  # recorded times binned at once: the ordered copy stays a few chunks of facts in size


def _binned_rows(p: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, times) values and the rows' edges in fact-index units: p (times, facts) in the fact ``order``,
    one row per fact, or per bin of consecutive facts (their mean) when there are more than HEATMAP_ROWS."""
    facts = len(order)
    starts = np.arange(facts) if facts <= HEATMAP_ROWS else \
        np.linspace(0, facts, HEATMAP_ROWS, endpoint=False).astype(np.int64)
    sizes = np.diff(np.append(starts, facts))
    values = np.empty((len(starts), len(p)))
    for k in range(0, len(p), HEATMAP_CHUNK):
        block = p[k:k + HEATMAP_CHUNK][:, order]
        values[:, k:k + HEATMAP_CHUNK] = (np.add.reduceat(block, starts, axis=1) / sizes).T
        release(p)  # a record held on disk: its read blocks leave memory
    return values, np.append(starts, facts) - 0.5


def plot_fact_heatmap(traj: Trajectory, learning_time: np.ndarray, path: str | Path, title: str = "") -> None:
    """p(a*) of every fact (rows, ordered by :func:`fact_order` of ``learning_time`` (S, R), never-learned
    facts at the bottom, below a red dashed line; beyond HEATMAP_ROWS facts a row is the mean of consecutive
    facts) against log t (columns at the recorded t > 0, the x range that of ``loss.png`` up to the last
    time), colour in [0, 1], with the learning times drawn over it as a white line."""
    learning_time = np.asarray(learning_time, dtype=np.float64)
    S, R = traj.p_correct.shape[1:]
    if learning_time.shape != (S, R):
        raise ValueError(f"learning_time has shape {learning_time.shape}; expected (S, R) = {(S, R)}")
    positive = traj.t > 0
    if not positive.any():
        raise ValueError("the trajectory has no recorded time t > 0 to draw on a log axis")
    t = traj.t[positive]
    order = fact_order(learning_time)
    first = int(np.argmax(positive))  # recorded times never decrease: those t > 0 are the last ones, a view
    p = traj.p_correct[first:] if positive[first:].all() else traj.p_correct[positive]
    values, rows = _binned_rows(p.reshape(len(t), S * R), order)
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
        ax.axhline(learned.sum() - 0.5, color="red", lw=0.8, ls="--", label="below: never learned")
        ax.legend(fontsize=8, loc="lower left")
    log_time_axis(ax)
    ax.set_xlim(*time_window(t, margin=1.0))
    ax.set_ylim(S * R - 0.5, -0.5)  # earliest-learned fact at the top
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(f"fact (s, r), ordered by learning time ({S * R} facts)")
    if S * R <= 32:
        ax.set_yticks(np.arange(S * R), [f"({i // R}, {i % R})" for i in order], fontsize=7)
    set_run_title(ax, title)
    fig.colorbar(mesh, ax=ax, label="p(a*)")
    save(fig, path)


def plot_fact_fractions(t: np.ndarray, uninformed: np.ndarray, hallucinating: np.ndarray,
                        recalled: np.ndarray, path: str | Path, title: str = "", *,
                        stages: Sequence[Mapping[str, Any]] | None = None) -> None:
    """The fractions of facts uninformed, hallucinating and recalled (each (K,), in [0, 1]) against log t
    (t > 0, the x range that of ``loss.png`` up to the last time); y axis [0, 1] with a margin.
    ``stages`` (optional): the run's detected stages (dicts as stages.json holds them), shaded and named
    with the table's boundaries, as on ``loss.png``."""
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
    log_time_axis(ax)
    left, right = time_window(t, margin=1.0, keep=first_escape(stages))
    ax.set_xlim(left, right)
    # a margin: a fraction at exactly 0 or 1 is not hidden under the frame; headroom for the stage names
    ax.set_ylim(-0.03, 1.12 if stages else 1.03)
    if stages:  # the detected stages, not areas under the curves: the boundaries of the stage table
        shade_stages(ax, stages, left, right)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("fraction of facts")
    set_run_title(ax, title)
    ax.legend(fontsize=8, loc="center left")
    ax.grid(alpha=0.25, which="both")
    save(fig, path)
