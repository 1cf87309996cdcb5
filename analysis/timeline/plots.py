"""The timeline figure: each group of facts over log t, phase starts marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plotting import TIME_LABEL, figure, label_levels, log_time_axis, save, time_window
from .events import GroupCurves

GROUP_COLORS = {"trained": "C0", "old": "C0", "new": "C1", "unseen": "C3"}


def plot_timeline(curves: GroupCurves, phase_starts: Sequence[float], levels: dict[str, float],
                  path: str | Path, title: str = "") -> None:
    """Two panels against log t: mean p(a*) with the fraction recalled (dotted) per group, and mean loss
    per group with the reference ``levels`` (name -> nats) dashed and named in the right margin; phase
    starts are vertical lines, in the legend."""
    fig = figure(12.0, 4.6)
    left, right = fig.subplots(1, 2)
    lo, hi = time_window(curves.t)
    shown = curves.t > 0
    for group, color in ((g, GROUP_COLORS.get(g, "C7")) for g in curves.p_correct):
        left.plot(curves.t[shown], curves.p_correct[group][shown], color=color, label=f"{group}: mean p(a*)")
        left.plot(curves.t[shown], curves.recalled[group][shown], color=color, ls=":",
                  label=f"{group}: fraction recalled")
        right.plot(curves.t[shown], curves.loss[group][shown], color=color, label=group)
    peaks = [float(np.nanmax(v[shown])) for v in curves.loss.values() if shown.any()]
    top = max(peaks + list(levels.values()) + [1e-3])
    right.set_ylim(-0.04 * top, 1.06 * top)  # a loss at 0 or at its top stays off the frame
    label_levels(right, levels)
    for ax in (left, right):
        starts = [start for start in phase_starts if lo <= start <= hi]
        for index, start in enumerate(starts):
            ax.axvline(start, color="k", lw=0.8, alpha=0.6, ls="-.",
                       label="phase start" if index == 0 else "_unlabeled: the first is in the legend")
        log_time_axis(ax)
        ax.set_xlim(lo, hi)
        ax.set_xlabel(TIME_LABEL)
        ax.grid(alpha=0.25, which="both")
    left.set_ylim(-0.04, 1.04)
    left.set_ylabel("p(a*) / fraction of facts")
    left.set_title("what each group knows: mean p(a*) (solid), fraction recalled (dotted)", fontsize=9)
    left.legend(fontsize=8, loc="upper left")
    right.set_ylabel("mean loss −log p(a*) (nats)")
    right.set_title("mean loss per group, reference levels named on the right", fontsize=9)
    right.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    save(fig, path)


def phase_starts_of(phases: Sequence[dict]) -> list[float]:
    """Every phase start after t = 0."""
    return [float(p["start"]) for p in phases if float(p["start"]) > 0]

