"""A run directory's timeline: ``timeline.json`` (per phase: its schedule and stages; per group: event
summaries; held-out subjects), ``timeline.npz`` (per-fact event times) and ``timeline.png``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.io import atomic_write_json
from dynamics.rundir import TIMELINE_SCHEMA, write_arrays
from dynamics.schedule import Phase
from dynamics.trajectory import Trajectory

from ..plotting import draw_or_skip
from ..stages import detect_stages
from .events import fact_events, group_curves, groups_of, phase_slices, unseen_summary
from .plots import phase_starts_of, plot_timeline

PER_TIME = ("loss", "relation_loss", "subject_loss", "fact_loss", "p_correct", "p_relation", "p_subject",
            "argmax_class", "attention")


def has_timeline(traj: Trajectory) -> bool:
    """Whether the run trained other data than the task it is measured on, at some time: more than one
    phase, a phase with replay, on a part of the subjects or with an annealed exponent (``zipf_end``), a
    phase whose subject frequencies are not the task's (a trained ``data.zipf`` other than
    ``task.subject_zipf``), a start from another run, or held-out subjects. Those runs get a timeline: when
    each group of facts is learned, forgotten and relearned, and the stages of each phase."""
    info = traj.info
    if info is None:
        return False
    S = traj.facts.shape[0]
    phases = info.phases or []
    moved = len(phases) > 1 or any(p["replay"] or p["subjects"] != [0, S] or p.get("zipf_end") is not None
                                   for p in phases)
    measured = traj.fact_weights.sum(1)  # the task's subject frequencies u_s (held-out ones at 0)
    other = any(not np.allclose(_trained_subject_weights(p, S), measured, rtol=1e-9, atol=1e-300)
                for p in phases)
    return moved or other or info.old_subjects is not None or bool((measured == 0).any())


def _trained_subject_weights(phase: dict[str, Any], subjects: int) -> np.ndarray:
    """The subject frequencies a recorded phase (``RunInfo.phases``) trains at its start."""
    return Phase(start=0.0, end=math.inf, subjects=tuple(phase["subjects"]), replay=phase.get("replay", 0.0),
                 replay_subjects=tuple(phase.get("replay_subjects", (0, 0))),
                 zipf=phase.get("zipf", 0.0)).subject_weights(subjects, 0.0)


def phase_trajectory(traj: Trajectory, window: slice, start: float) -> Trajectory:
    """The records of ``traj`` inside ``window``, with time counted from the phase ``start``."""
    per_time = {name: getattr(traj, name)[window] for name in PER_TIME}
    norms = {name: values[window] for name, values in traj.norms.items()}
    return dataclasses.replace(traj, t=traj.t[window] - start, norms=norms, states=None, **per_time)


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) else None


def _group_summary(events, index: np.ndarray) -> dict[str, Any]:
    learned, forgotten, relearned = (getattr(events, name)[index]
                                     for name in ("learned", "forgotten", "relearned"))
    count = learned.size
    return {"facts": int(count), "learned": int(np.isfinite(learned).sum()),
            "median_learned": _median(learned), "forgotten": int(np.isfinite(forgotten).sum()),
            "median_forgotten": _median(forgotten), "relearned": int(np.isfinite(relearned).sum()),
            "median_relearned": _median(relearned)}


def _phase_stages(traj: Trajectory) -> list[dict[str, Any]]:
    out = []
    for phase, window in phase_slices(traj):
        entry = {"phase": phase}
        piece = phase_trajectory(traj, window, float(phase["start"]))
        if len(piece.t) >= 3:  # the detector needs a few records; stage times are put back on the run's clock
            report = detect_stages(piece)
            entry["sequence"] = report.names
            entry["stages"] = [dict(dataclasses.asdict(s), t_start=s.t_start + phase["start"],
                                    t_end=None if s.t_end is None else s.t_end + phase["start"])
                               for s in report.stages]
        out.append(entry)
    return out


def analyse_timeline(traj: Trajectory, directory: Path, title: str = "") -> dict[str, Any]:
    """Write ``timeline.json``, ``timeline.npz`` and ``timeline.png`` for ``traj`` into ``directory`` and
    return what ``timeline.json`` holds."""
    groups = groups_of(traj)
    events = fact_events(traj)
    curves = group_curves(traj, groups)
    D = traj.answers_per_relation
    payload: dict[str, Any] = {
        "groups": {g: [int(index.min()), int(index.max()) + 1] for g, index in groups.items()},
        "events": {g: _group_summary(events, index) for g, index in groups.items()},
        "final_fraction_recalled": {g: float(c[-1]) for g, c in curves.recalled.items()},
        "unseen": unseen_summary(traj, curves),
        "phases": _phase_stages(traj),
    }
    atomic_write_json(directory / "timeline.json", payload)
    write_arrays(directory / "timeline.npz", {"t": traj.t, **events.arrays()}, TIMELINE_SCHEMA)
    levels = {"log|A|": math.log(traj.facts.shape[1] * D), "log D": math.log(D),
              "H(A|R)": traj.levels["H(A|R)"]}
    draw_or_skip(directory / "timeline.png", plot_timeline, curves,
                 phase_starts_of(traj.info.phases if traj.info else []), levels, directory / "timeline.png",
                 title=title)
    return payload


def format_timeline(label: str, payload: dict[str, Any]) -> str:
    """A few lines for the terminal: per group, facts learned / forgotten / relearned with median times;
    the held-out subjects' loss."""
    lines = [f"{label} timeline: {len(payload['phases'])} phase(s)"]
    for group, e in payload["events"].items():
        parts = [f"{e['facts']} facts", f"learned {e['learned']}" + _at(e["median_learned"])]
        if e["forgotten"]:
            parts += [f"forgotten {e['forgotten']}" + _at(e["median_forgotten"]),
                      f"relearned {e['relearned']}" + _at(e["median_relearned"])]
        parts.append(f"recalled at the end {payload['final_fraction_recalled'][group]:.0%}")
        lines.append(f"  {group:8s} " + ", ".join(parts))
    unseen = payload.get("unseen")
    if unseen:
        lines.append(f"  unseen loss {unseen['loss_start']:.3f} -> max {unseen['loss_max']:.3f} "
                     f"(t = {unseen['t_loss_max']:.4g}) -> {unseen['loss_end']:.3f}; log|A| = "
                     f"{unseen['log_answers']:.3f}, log D = {unseen['log_D']:.3f}, H(A|R) = "
                     f"{unseen['H(A|R)']:.3f}")
    return "\n".join(lines)


def _at(median: float | None) -> str:
    return "" if median is None else f" (median t = {median:.4g})"
