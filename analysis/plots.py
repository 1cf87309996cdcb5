"""Figures of trajectories. Reads ``Trajectory`` records only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend, faster import
from matplotlib.ticker import FuncFormatter, NullFormatter

from dynamics.trajectory import Trajectory

CURVES = (("loss", "loss", "C0"), ("relation_loss", "relation-only loss", "C1"),
          ("subject_loss", "subject-only loss", "C2"))


def run_figure(width: float, height: float, left: float = 0.7, bottom: float = 0.5) -> Figure:
    """A one-axes figure of a run directory with fixed margins (``left``, ``bottom``: inches).

    Constrained layout measured 0.2 s per figure, a sixth of ``factrecall simulate``'s 5 s budget over the
    three figures of a run; the run figures' labels fit fixed margins.
    """
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, bottom=bottom / height, right=0.98, top=1 - 0.35 / height)
    return fig


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade_label(x: float, _position: Any = None) -> str:
    """'0.01' … '1000' for decades 10^-2 … 10^3, else '10' with a Unicode superscript exponent."""
    if x <= 0:
        return ""
    exponent = round(math.log10(x))
    if abs(math.log10(x) - exponent) > 1e-9:
        return ""
    return f"{10.0 ** exponent:g}" if -2 <= exponent <= 3 else "10" + str(exponent).translate(_SUPERSCRIPT)


def log_time_axis(ax: Axes) -> None:
    """A log x axis labelled at decades in plain text. Matplotlib's default labels are mathtext, whose
    first use costs about 0.5 s of a cold ``factrecall simulate``."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_decade_label))
    ax.xaxis.set_minor_formatter(NullFormatter())


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
    fig = run_figure(7.5, 4.2)
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
            ax.axvline(info.status_time, color="red", lw=1, ls=":")
            ax.text(info.status_time, ax.get_ylim()[1], f" {label}: {status}", color="red",
                    va="top", fontsize=8)
    for name in ("log|A|", "H(A|R)", "0"):
        ax.axhline(levels[name], color="0.5", ls=(0, (4, 3)), lw=0.9)
        ax.text(0.995, levels[name], f"{name} = {levels[name]:.3f}", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=8, color="0.35")
    log_time_axis(ax)
    # Plateaus live on log t; decades far below the first escape carry no information.
    t_end = max(float(traj.t[-1]) for _, traj in runs)
    t_first = min(float(traj.t[traj.t > 0][0]) for _, traj in runs if (traj.t > 0).any())
    left, right = max(t_first, t_end * 1e-3), t_end * 1.05
    marks = {k: float(v) for k, v in (predicted or {}).items() if v is not None and np.isfinite(v) and v > 0}
    if marks:
        left, right = min(left, min(marks.values()) / 1.2), max(right, max(marks.values()) * 1.2)
    ax.set_xlim(left, right)
    if stages:
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.08 * (high - low))  # headroom for the stage names above the curves
        _shade_stages(ax, stages, left, right)
    for index, (label, time) in enumerate(marks.items()):
        ax.axvline(time, color="0.15", ls=(0, (1, 1 + index)), lw=1.3, label=f"{label} = {time:.3g}")
    ax.set_xlabel("flow time t (= step × lr for discrete runs)")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, ncol=2 if len(runs) > 1 else 1, loc="lower left")
    ax.grid(alpha=0.25, which="both")
    fig.savefig(path, dpi=120)


STAGE_COLORS = {"init": "0.6", "marginal": "C4", "hallucination": "C3", "subject_first": "C2",
                "recall": "C0"}


def _shade_stages(ax: Any, stages: Sequence[Mapping[str, Any]], left: float, right: float) -> None:
    """Shade each stage between t_start and t_end (clamped to [left, right]) and write its name in it."""
    for index, stage in enumerate(stages):
        start = float(stage.get("t_start") or 0.0)
        end = right if stage.get("t_end") is None else float(stage["t_end"])
        start, end = max(start, left), min(end, right)
        if not end > start:
            continue
        name = str(stage.get("name", "?"))
        ax.axvspan(start, end, color=STAGE_COLORS.get(name, f"C{index % 10}"), alpha=0.12, lw=0)
        ax.text(float(np.sqrt(start * end)), 0.985, name, transform=ax.get_xaxis_transform(), ha="center",
                va="top", fontsize=8, color="0.2")


def first_time_below(traj: Trajectory, field: str, level: float) -> float:
    """The first recorded time where ``field`` drops below ``level`` (NaN if never)."""
    values = getattr(traj, field)
    hits = np.nonzero(values < level)[0]
    return float(traj.t[hits[0]]) if len(hits) else float("nan")
