"""The timeline figure: each group of facts over log t, phase starts marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..plotting import TIME_LABEL, figure, log_time_axis, save, time_window
from .events import GroupCurves

GROUP_COLORS = {"trained": "C0", "old": "C0", "new": "C1", "unseen": "C3"}


def plot_timeline(curves: GroupCurves, phase_starts: Sequence[float], levels: dict[str, float],
                  path: str | Path, title: str = "") -> None:
    """Two panels against log t: mean p(a*) with the fraction recalled (dotted) per group, and mean loss
    per group with the reference ``levels`` (name -> nats) dashed; phase starts are vertical lines."""
    fig = figure(11.0, 4.0)
    left, right = fig.subplots(1, 2)
    lo, hi = time_window(curves.t)
    shown = curves.t > 0
    for group, color in ((g, GROUP_COLORS.get(g, "C7")) for g in curves.p_correct):
        left.plot(curves.t[shown], curves.p_correct[group][shown], color=color, label=f"{group}: mean p(a*)")
        left.plot(curves.t[shown], curves.recalled[group][shown], color=color, ls=":",
                  label=f"{group}: fraction recalled")
        right.plot(curves.t[shown], curves.loss[group][shown], color=color, label=group)
    for name, value in levels.items():
        right.axhline(value, color="0.5", ls="--", lw=0.8)
        right.text(lo, value, f" {name}", va="bottom", fontsize=8, color="0.3")
    for ax in (left, right):
        for start in phase_starts:
            if lo <= start <= hi:
                ax.axvline(start, color="k", lw=0.8, alpha=0.6)
        log_time_axis(ax)
        ax.set_xlim(lo, hi)
        ax.set_xlabel(TIME_LABEL)
    left.set_ylim(-0.02, 1.02)
    left.set_ylabel("p(a*) / fraction of facts")
    left.legend(fontsize=7, loc="best")
    right.set_ylabel("mean loss −log p(a*) (nats)")
    right.set_ylim(bottom=0)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    save(fig, path)


def phase_starts_of(phases: Sequence[dict]) -> list[float]:
    """Every phase start after t = 0."""
    return [float(p["start"]) for p in phases if float(p["start"]) > 0]

