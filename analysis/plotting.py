"""What every figure shares: the figure and its resolution, the log-t axis with its plot window, and the
stages shaded on it. matplotlib's object API only (no pyplot state, no GUI backend, a faster import)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from dynamics.io import atomic_write

DPI = 120
TIME_LABEL = "flow time t (= step × lr for discrete runs)"
STAGE_COLORS = {"init": "0.6", "marginal": "C4", "hallucination": "C3", "subject_first": "C2",
                "recall": "C0"}


def task_line(config: Any) -> str:
    """The task of ``config`` in one short line: 'S=16 R=4 D=8 N=20 T=32 (structured)'."""
    t = config.task
    return (f"S={t.subjects} R={t.relations} D={t.answers_per_relation} N={t.noise_tokens} T={t.seq_len} "
            f"({t.facts})")


def setting_line(config: Any) -> str:
    """The model (kind, attention, embeddings and d), the start and the data regime of ``config`` in one
    line: what a figure's title needs besides the task and what was run on it."""
    from dynamics.models.registry import MODEL_KINDS  # the keys the kind reads are the ones worth showing

    t, m, d = config.task, config.model, config.data
    reads = MODEL_KINDS[m.kind].reads if m.kind in MODEL_KINDS else ()
    shown = [f"{m.attention} attention" if "model.attention" in reads else "",
             " ".join(([f"{m.embeddings} embeddings"] if "model.embeddings" in reads else [])
                      + ([f"d={m.dim}"] if "model.dim" in reads else [])),
             f"{m.heads} heads of {m.head_dim}" if "model.heads" in reads else "",
             f"MLP width {m.mlp_width}" if "model.mlp_width" in reads else ""]
    model = ", ".join([f"{m.kind} model", *filter(None, shown)])
    start = (f"fine-tuned from {Path(config.init.from_run).name}" if config.init.from_run
             else f"manifold start α₀={config.init.alpha:g} β₀={config.init.beta:g}"
             if config.init.kind == "manifold" else f"{config.init.kind} init of scale {config.init.scale:g}")
    alpha = t.subject_zipf if d.zipf is None else d.zipf
    zipf = f"Zipf {alpha:g}" + ("" if d.zipf_end is None else f"→{d.zipf_end:g}")
    sampled = getattr(config, "loss", None)
    regime = [f"loss on {sampled.samples} sampled sequences" if sampled and sampled.kind == "sampled" else "",
              zipf if d.zipf is not None or d.zipf_end is not None else "",
              f"{d.holdout} held out" if d.holdout else "",
              f"replay {d.replay:g}" if d.replay else "",
              f"warm-up to t={d.warmup_time:g}" if d.warmup_time else "",
              f"{d.freeze} frozen" if d.freeze != "none" else ""]
    return ", ".join([model, start, *filter(None, regime)])


TITLE_WIDTH = 105  # characters of a title line: what a run figure's width holds at the titles' font size


def wrap_title(text: str, width: int = TITLE_WIDTH) -> str:
    """``text`` with each line longer than ``width`` broken after a comma (a long setting line would run
    out of the figure)."""
    lines = []
    for line in text.split("\n"):
        while len(line) > width and ", " in line[:width]:
            cut = line.rindex(", ", 0, width) + 1
            lines.append(line[:cut])
            line = line[cut + 1:]
        lines.append(line)
    return "\n".join(lines)


def config_title(what: str, config: Any) -> str:
    """A figure title of two lines or more: ``what`` was run on the task of ``config``, then the model,
    start and data regime (:func:`task_line`, :func:`setting_line`), wrapped at :data:`TITLE_WIDTH`."""
    return wrap_title(f"{what}: {task_line(config)}\n{setting_line(config)}")


def set_run_title(ax: Axes, title: str, fontsize: float = 9) -> None:
    """Title a run figure (:func:`run_figure`), lines wrapped to its width, and make its top margin as tall
    as the title's lines."""
    title = wrap_title(title, round(TITLE_WIDTH * ax.get_figure().get_figwidth() / 8.3))
    ax.set_title(title, fontsize=fontsize)
    fig = ax.get_figure()
    height = fig.get_figheight()
    lines = title.count("\n") + 1 if title else 0
    fig.subplots_adjust(top=1 - (0.2 + 0.15 * lines) / height)


def trained_what(config: Any) -> str:
    """The discrete run of ``config`` in words: 'sgd lr=0.1 batch 1024' (the batch only where the optimizer
    reads one)."""
    from dynamics.optimizers import OPTIMIZERS

    train = config.train
    batches = train.optimizer in OPTIMIZERS and "train.batch_size" in OPTIMIZERS[train.optimizer].reads
    return f"{train.optimizer} lr={train.lr:g}" + (f" batch {train.batch_size}" if batches else "")


def run_title(config: Any, name: str, traj: Any) -> str:
    """The title of run ``name`` ('flow', 'train', or any words) of ``config`` whose record is ``traj``:
    the flow's geometry (or the optimizer and lr), the task, the model, the start and the data regime; the
    run's status only where it did not end ok."""
    return config_title(_run_what(config, name, traj), config)


def run_titles(config: Any, runs: Mapping[str, Any]) -> dict[str, str]:
    """:func:`run_title` of each run of ``config`` (``runs``: name → record), the lines of the config's
    task and setting made once for all of them."""
    lines = f"{task_line(config)}\n{setting_line(config)}"
    return {name: wrap_title(f"{_run_what(config, name, traj)}: {lines}") for name, traj in runs.items()}


def _run_what(config: Any, name: str, traj: Any) -> str:
    """What run ``name`` of ``config`` ran, and its status where it did not end ok (:func:`run_title`)."""
    from dynamics.geometry import get_geometry

    f = config.flow
    geometry = get_geometry(f.geometry)
    flow = "gradient flow" if geometry.linear else f"{f.geometry} flow" + (
        f" ε={f.geometry_eps:g}" if "flow.geometry_eps" in geometry.keys else "")
    what = {"flow": flow, "train": trained_what(config)}.get(name, name)
    if name == "flow" and f.modified_lr > 0:
        what += f" (GD's modified flow, lr={f.modified_lr:g})"
    status = "" if traj.info.ok else f" [{traj.info.status} at t={traj.info.status_time:.4g}]"
    return what + status


def figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches laid out by matplotlib's constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


def run_figure(width: float, height: float, left: float = 0.7, bottom: float = 0.5, right: float = 0.15
               ) -> Figure:
    """A one-axes figure of a run directory with fixed margins (``left``, ``bottom``, ``right``: inches).

    Fixed margins instead of constrained layout, whose cost per figure is a noticeable part of
    ``factrecall simulate``'s time budget (docs/performance.md); the run figures' labels fit them.
    """
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, bottom=bottom / height, right=1 - right / width,
                        top=1 - 0.5 / height)  # room for a two-line title
    return fig


def save(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` as a PNG at the package's one resolution, atomically (a temporary file beside ``path``
    renamed into place: a failed draw leaves no half-written figure, and a symlink at ``path`` is replaced,
    never written through)."""
    atomic_write(Path(path), lambda handle: fig.savefig(handle, dpi=DPI, format="png"))


def draw_or_skip(path: str | Path, plot: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Call ``plot(*args, **kwargs)`` to draw the figure at ``path``; a figure that cannot be drawn (e.g. a
    run that failed at its first point has nothing to show on a log-t axis) is skipped with a one-line note
    on stderr, and a stale figure at ``path`` is removed, rather than aborting the run. Returns whether it
    was drawn."""
    try:
        plot(*args, **kwargs)
        return True
    except Exception as err:  # a figure is a view of the saved record: it never costs the record itself
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"factrecall: note: skipped {Path(path).name} ({reason})", file=sys.stderr)
        Path(path).unlink(missing_ok=True)
        return False


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


def plain_log_ticks(axis: Any) -> None:
    """Major ticks of a log ``axis`` (``ax.xaxis`` or ``ax.yaxis``) at 1, 2, 5 × 10^k written as plain
    numbers (0.05, 2000), minor ticks unlabelled: matplotlib's default labels every minor tick of a range
    under a decade in mathtext, a clutter of overlapping labels."""
    from matplotlib.ticker import LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def label_levels(ax: Axes, levels: Mapping[str, float], gap: float = 0.055, fontsize: float = 8) -> None:
    """Draw each reference level of ``levels`` (name -> y) as a dashed line and write its name and value in
    the right margin, outside the axes, where no curve, stage name or time mark crosses it. Levels at the
    same value share one label ('log D = H(A|R) = 0.693'); labels closer than ``gap`` (a fraction of the
    axes height at the limits of the moment) are spread apart so that none overlaps another."""
    merged: dict[float, list[str]] = {}
    for name, value in levels.items():
        key = next((v for v in merged if abs(v - value) <= 1e-9 * max(1.0, abs(value))), float(value))
        merged.setdefault(key, []).append(name)
    for value in merged:
        ax.axhline(value, color="0.5", ls=(0, (4, 3)), lw=0.9, label="_unlabeled: named in the margin")
    low, high = ax.get_ylim()
    step = gap * (high - low)
    placed: list[tuple[float, str]] = []
    for value in sorted(merged):
        y = value if not placed or value - placed[-1][0] >= step else placed[-1][0] + step
        placed.append((y, f"{' = '.join(merged[value])} = {value:.3f}"))
    for y, text in placed:
        ax.text(1.008, y, text, transform=ax.get_yaxis_transform(), ha="left", va="center",
                fontsize=fontsize, color="0.35", clip_on=False)


def time_window(t: np.ndarray, margin: float = 1.05, keep: float | None = None) -> tuple[float, float]:
    """The x range of a log-t panel of the times ``t``: from the first positive time, but at most three
    decades below the last (plateaus live on log t; decades far below the first escape carry no
    information) — yet always a decade below ``keep`` (the first escape, which a plateau longer than three
    decades would push out) — to ``margin`` × the last time. (1e-2, 1) when no time is positive."""
    t = np.asarray(t, dtype=np.float64)
    positive = t[t > 0]
    if not len(positive):
        return 1e-2, 1.0
    first, last = float(positive.min()), float(positive.max())
    left = last * 1e-3 if keep is None or not keep > 0 else min(last * 1e-3, keep / 10)
    return max(first, left), last * margin


def first_escape(stages: Sequence[Mapping[str, Any]] | None) -> float | None:
    """The end of the first detected stage (dicts as ``stages.json`` holds them), None without one."""
    ends = [float(s["t_end"]) for s in stages or () if s.get("t_end") is not None]
    return ends[0] if ends else None


def shade_stages(ax: Axes, stages: Sequence[Mapping[str, Any]], left: float, right: float) -> None:
    """Shade each stage between ``t_start`` and ``t_end`` (None: to the right edge; both clamped to
    [left, right]) and write its ``name`` in it. ``stages``: dicts as ``stages.json`` holds them."""
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
