"""Figures of a comparison of the flow with discrete training, from the :class:`Comparison` that
:func:`analysis.compare.compare` returns.

- ``compare_loss.png``: the flow's loss (solid black) and the discrete runs' over log t, one column per
  optimizer, the flow's stages shaded; below, each run's |L_run − L_flow| on log axes;
- ``compare_order.png``: GD's largest loss deviation against lr (log–log) from the flow and from the
  modified flow, with the fitted lines and slopes, and the SGD/Adam group means for context;
- ``compare_stage_shift.png``: relative shift of every flow stage boundary against lr and against batch size;
- ``compare_sharpness.png``: λ_max along the flow and lr·λ_max for every lr, with the stability line at 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from dynamics.optimizers import OPTIMIZERS

from ..plotting import config_title, figure, save, shade_stages, time_window
from .compute import ComparedRun, Comparison

FIGURES = ("compare_loss.png", "compare_order.png", "compare_stage_shift.png", "compare_sharpness.png")
BOUNDARY_MARKERS = ("o", "s", "^", "D", "v", "P")
BATCH_STYLES = ("-", (0, (5, 2)), (0, (2, 1.5)), (0, (6, 2, 1, 2)), (0, (1, 1)))


def _label(optimizer: str) -> str:
    """How the figures name ``optimizer``: its registry entry's label (the name when it has none)."""
    entry = OPTIMIZERS.get(optimizer)
    return entry.label or optimizer if entry is not None else optimizer


def plot_comparison(result: Comparison, directory: Path) -> None:
    """Write the four figures of :data:`FIGURES` into ``directory``."""
    directory = Path(directory)
    plot_loss_curves(result, directory / "compare_loss.png")
    plot_order(result, directory / "compare_order.png")
    plot_stage_shift(result, directory / "compare_stage_shift.png")
    plot_sharpness(result, directory / "compare_sharpness.png")


# --- helpers ---------------------------------------------------------------------------------------


def _lr_colors(lrs: Iterable[float]) -> dict[float, Any]:
    """One colour per learning rate, largest lr darkest (viridis), the same in every figure."""
    ordered = sorted(set(lrs), reverse=True)
    cmap = colormaps["viridis"]
    if len(ordered) == 1:
        return {ordered[0]: cmap(0.35)}
    return {lr: cmap(0.05 + 0.8 * i / (len(ordered) - 1)) for i, lr in enumerate(ordered)}


def _flow_stages(result: Comparison, optimizer: str | None = None) -> list[Mapping[str, Any]]:
    """The stages of the flow ``optimizer`` is set against (default: the main flow) as the dicts
    :func:`analysis.plotting.shade_stages` draws."""
    stages = result.flow_stages if optimizer is None else result.flow_of(optimizer)[1]
    return [asdict(stage) for stage in stages.stages]


def _settings(runs: Sequence[ComparedRun], optimizer: str
              ) -> dict[tuple[float, int | None], list[ComparedRun]]:
    """The runs of one optimizer grouped by (lr, batch size), in the order they were planned."""
    groups: dict[tuple[float, int | None], list[ComparedRun]] = {}
    for run in runs:
        if run.optimizer == optimizer:
            groups.setdefault((float(run.lr), run.batch_size), []).append(run)
    return groups


def _seed_band(members: Sequence[ComparedRun], field: str = "loss"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, mean, min, max) over the seeds of one setting, on their common time grid.

    Seeds share their record steps; a seed that diverged stops early, so the band covers the prefix every
    seed reached, and the seeds still running carry it on alone afterwards (never averaging in a gap).
    """
    trajs = [m.trajectory for m in members]
    longest = max(trajs, key=lambda tr: len(tr.t))
    t = np.asarray(longest.t, dtype=np.float64)
    stacked = np.full((len(trajs), len(t)), np.nan)
    for i, tr in enumerate(trajs):
        n = min(len(tr.t), len(t))
        if not np.allclose(tr.t[:n], t[:n], rtol=1e-12, atol=0):
            raise ValueError("the seeds of one setting do not share their time grid")
        stacked[i, :n] = getattr(tr, field)[:n]
    with np.errstate(all="ignore"):
        mean = np.nanmean(stacked, axis=0)
        low = np.nanmin(stacked, axis=0)
        high = np.nanmax(stacked, axis=0)
    return t, mean, low, high


def _setting_deviation(members: Sequence[ComparedRun]) -> tuple[np.ndarray, np.ndarray]:
    """(t, mean over seeds of |L_run − L_flow|) on the common grid."""
    trajs = [m.trajectory for m in members]
    t = np.asarray(max(trajs, key=lambda tr: len(tr.t)).t, dtype=np.float64)
    stacked = np.full((len(members), len(t)), np.nan)
    for i, m in enumerate(members):
        dev = np.asarray(m.loss_deviation, dtype=np.float64)
        stacked[i, :len(dev)] = dev[:len(t)]
    with np.errstate(all="ignore"):
        return t, np.nanmean(stacked, axis=0)


def _ceiling(result: Comparison) -> float:
    """Largest loss deviation drawn to scale: 10× the flow's largest loss. A run that blew up (finite but
    astronomically large, or cut short as non-finite) is drawn at this ceiling, never squashing the rest."""
    loss = np.asarray(result.flow.loss, dtype=np.float64)
    loss = loss[np.isfinite(loss)]
    return 10.0 * max(float(loss.max()) if len(loss) else 1.0, 0.1)


def _no_data(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.3",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _readable_log_ticks(ax: Any) -> None:
    """Log y ticks at 1, 2, 5 × 10^k written as plain numbers (0.05, not 5×10^-2)."""
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


DODGE = 1.06  # sideways step of a series drawn beside its lr on a log axis


def _dodged(lrs: Sequence[float], step: int) -> np.ndarray:
    """``lrs`` moved ``step`` dodge steps sideways on a log axis: series at the same lr and similar values
    drawn beside each other instead of on top of each other."""
    return np.asarray(lrs, dtype=np.float64) * DODGE ** step


def _percent(value: float, _position: Any = None) -> str:
    return f"{100 * value:.3g}%"


# --- compare_loss.png ------------------------------------------------------------------------------


def plot_loss_curves(result: Comparison, path: Path) -> None:
    """Loss of the flow (solid black) and the discrete runs against log t, one column per optimizer present.

    GD: one curve per lr. SGD and Adam: per (lr, batch size) the mean over seeds with a min–max band
    (colour: lr; line style: batch size). The flow's stages are shaded and named. Bottom row: the mean
    |L_run − L_flow| of each curve on log axes, where deviations of a few 1e-2 become visible. A run that
    ended early (non-finite) is marked with a red cross where its record stops.
    """
    flow = result.flow
    optimizers = [o for o in OPTIMIZERS if any(r.optimizer == o for r in result.runs)]
    columns = max(1, len(optimizers))
    fig = figure(6.6 * columns + 0.4, 6.8)
    axes = fig.subplots(2, columns, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    top = max(float(np.nanmax(flow.loss)) if len(flow.loss) else 1.0, 0.1)
    frame = _LossFrame(time_window(flow.t), _lr_colors(float(r.lr) for r in result.runs),
                       (-0.04 * top, 1.12 * top),  # a run that blows up leaves the frame, never squashing it
                       _ceiling(result))
    if not optimizers:
        _no_data(axes[0, 0], "no discrete runs")
    for column, optimizer in enumerate(optimizers or ["flow"]):
        _loss_column(axes[0, column], axes[1, column], result, optimizer, frame)
    fig.suptitle(config_title("Loss of the flow and of discrete training from the same θ(0)", result.config),
                 fontsize=10)
    save(fig, path)


@dataclass(frozen=True)
class _LossFrame:
    """What every column of ``compare_loss.png`` shares: the time window, one colour per lr, the loss axis'
    range and the ceiling of the deviations drawn to scale (:func:`_ceiling`)."""

    window: tuple[float, float]
    colors: dict[float, Any]
    y_range: tuple[float, float]
    ceiling: float


def _own_flow_name(geometry: str) -> str:
    return "flow" if geometry == "euclidean" else f"{geometry} flow"


def _loss_column(ax: Any, dev_ax: Any, result: Comparison, optimizer: str, frame: _LossFrame) -> None:
    """One optimizer's column: its flow and runs above (:func:`_draw_setting` per lr and batch size), their
    distance to that flow below."""
    own = result.flow_of(optimizer)[0] if optimizer != "flow" else result.flow
    geometry = result.geometries.get(optimizer, "euclidean")
    keep_own = own.t > 0
    ax.plot(own.t[keep_own], own.loss[keep_own], color="black", lw=2.2, zorder=5,
            label=_own_flow_name(geometry))
    deviations: list[float] = []
    clipped = False
    batches = sorted({r.batch_size for r in result.runs if r.optimizer == optimizer},
                     key=lambda b: -1 if b is None else b, reverse=True)
    for (lr, batch), members in _settings(result.runs, optimizer).items():
        style = BATCH_STYLES[batches.index(batch) % len(BATCH_STYLES)] if batch is not None else "-"
        label = f"lr {lr:g}" + ("" if batch is None or optimizer == "adam" and len(batches) == 1
                                else f", batch {batch}")
        shown, off_scale = _draw_setting(ax, dev_ax, members, frame, frame.colors[lr], style, label)
        deviations += shown
        clipped = clipped or off_scale
    _dress_loss_axes(ax, result, optimizer, geometry, frame)
    _dress_deviation_axes(dev_ax, optimizer, geometry, deviations, frame.ceiling if clipped else None)


def _draw_setting(ax: Any, dev_ax: Any, members: Sequence[ComparedRun], frame: _LossFrame, color: Any,
                  style: Any, label: str) -> tuple[list[float], bool]:
    """One (lr, batch size): the mean loss over its seeds with their min–max band and a red cross where a
    failed seed stopped (above), its mean distance to the flow (below). Returns the distances drawn and
    whether any was above the ceiling."""
    t, mean, low, high = _seed_band(members)
    keep = t > 0
    if len(members) > 1:
        ax.fill_between(t[keep], low[keep], high[keep], color=color, alpha=0.22, lw=0,
                        label="_unlabeled: the min–max band of its line's seeds")
        label += f" ({len(members)} seeds)"
    failed = [m for m in members if m.status != "ok"]
    if failed:
        label += ", " + "; ".join(f"{m.status.value}@{m.status_step}" for m in failed)
    ax.plot(t[keep], mean[keep], color=color, ls=style, lw=1.4, label=label)
    for m in failed:
        tr = m.trajectory
        if len(tr.t) and tr.t[-1] > 0:
            y = float(np.clip(tr.loss[-1], *frame.y_range))
            ax.plot([tr.t[-1]], [y], marker="x", color="red", ms=8, mew=2, zorder=6,
                    label="_unlabeled: named in its line's legend entry")
    dt, dev = _setting_deviation(members)
    clipped = bool(np.any(dev > frame.ceiling))
    dev = np.minimum(dev, frame.ceiling)
    keep = (dt > 0) & np.isfinite(dev) & (dev > 0)
    dev_ax.plot(dt[keep], dev[keep], color=color, ls=style, lw=1.3,
                label="_unlabeled: the legend above names it")
    return list(dev[keep]), clipped


def _dress_loss_axes(ax: Any, result: Comparison, optimizer: str, geometry: str, frame: _LossFrame) -> None:
    """Scales, the flow's stages, title, label, legend and grid of a column's loss axes."""
    left, right = frame.window
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_ylim(*frame.y_range)
    shade_stages(ax, _flow_stages(result, optimizer if optimizer != "flow" else None), left, right)
    ax.set_title(f"{_label(optimizer)} against the {_own_flow_name(geometry)}", fontsize=10)
    ax.set_ylabel("loss (nats)")
    # beside the axes: inside, a legend of many runs covers the curves where they fall
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.25, which="both")


def _dress_deviation_axes(dev_ax: Any, optimizer: str, geometry: str, deviations: Sequence[float],
                          ceiling: float | None) -> None:
    """Scales, title and labels of a column's distance axes; ``ceiling``: where deviations were cut off
    (None: none was)."""
    dev_ax.set_xscale("log")
    if deviations:
        dev_ax.set_yscale("log")
        high = max(deviations)
        dev_ax.set_ylim(max(min(deviations) / 2, high * 1e-5), high * 2)
    else:
        dev_ax.text(0.5, 0.5, "no deviation from the flow to show", transform=dev_ax.transAxes,
                    ha="center", va="center", fontsize=9, color="0.3")
    if ceiling is not None:
        dev_ax.axhline(ceiling, color="red", ls=":", lw=1, label="_unlabeled: named beside it")
        dev_ax.text(0.01, ceiling, f"off scale above {ceiling:.3g} (blew up)", color="red", fontsize=7,
                    va="top", transform=dev_ax.get_yaxis_transform())
    dev_ax.set_xlabel("flow time t (= step × lr)")
    dev_ax.set_title(f"{_label(optimizer)}: distance to the {_own_flow_name(geometry)}"
                     + (" (mean over seeds)" if optimizer not in ("gd", "flow") else ""), fontsize=9)
    dev_ax.set_ylabel("|L_run − L_flow|" if geometry == "euclidean" else f"|L_run − L_{geometry} flow|")
    dev_ax.grid(alpha=0.25, which="both")


# --- compare_order.png -----------------------------------------------------------------------------


def _fitted_line(lrs: Sequence[float], deviations: Sequence[float], slope: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The line of the given slope through the points (least squares in log–log for the intercept)."""
    x, y = np.log(np.asarray(lrs, dtype=np.float64)), np.log(np.asarray(deviations, dtype=np.float64))
    intercept = float(np.mean(y - slope * x))
    span = np.geomspace(min(lrs) / 1.25, max(lrs) * 1.25, 20)
    return span, np.exp(intercept + slope * np.log(span))


def plot_order(result: Comparison, path: Path) -> None:
    """GD's largest loss deviation against lr on log–log axes, from the flow (order ≈ 1) and from GD's
    modified flow (order ≈ 2), each with its fitted line and slope (``result.orders``); the GD runs left
    out of the fit (outside the stability margin, or diverged) as hollow markers; SGD (one series per batch
    size) and Adam group means with their min–max over seeds, for context; the bound 2/λ_max dotted.
    """
    fig = figure(7.2, 5.6)
    ax = fig.subplots()
    ceiling = _ceiling(result)
    plotted, off_scale = _plot_gd_orders(ax, result, ceiling)
    plotted += _plot_full_batch_orders(ax, result)
    group_means, group_off_scale = _plot_group_means(ax, result, ceiling)
    plotted += group_means
    off_scale += group_off_scale
    _mark_off_scale(ax, off_scale, ceiling)
    _mark_stability_bound(ax, result)
    _dress_order_axes(ax, result, plotted, dodged=bool(group_means))
    fig.suptitle(config_title("Discrete training against the flow", result.config), fontsize=10)
    save(fig, path)


def _plot_gd_orders(ax: Any, result: Comparison, ceiling: float
                    ) -> tuple[list[float], list[tuple[float, float]]]:
    """GD's deviation from the flow and from its modified flow against lr, the fitted runs filled with their
    line, the others hollow. Returns the deviations drawn and the (lr, deviation) above ``ceiling``."""
    gd = [r for r in result.runs if r.optimizer == "gd"]
    fitted = {float(lr) for lr in result.orders.gd_lrs}
    plotted: list[float] = []
    off_scale: list[tuple[float, float]] = []
    series = (("max_loss_deviation", "gd_vs_flow", "GD vs flow", "C0", "o"),
              ("max_loss_deviation_modified", "gd_vs_modified_flow", "GD vs modified flow", "C3", "s"))
    for key, order_key, name, color, marker in series:
        points = [(float(r.lr), getattr(r, key)) for r in gd]
        points = [(lr, float(d)) for lr, d in points if d is not None and math.isfinite(d) and d > 0]
        off_scale += [(lr, d) for lr, d in points if d > ceiling]
        points = [(lr, min(d, ceiling)) for lr, d in points]
        inside = [(lr, d) for lr, d in points if lr in fitted]
        outside = [(lr, d) for lr, d in points if lr not in fitted]
        slope = getattr(result.orders, order_key)
        label = name + (f": fitted order {slope:.2f}" if slope is not None else ": no fit (< 2 lrs)")
        if inside:
            _plot_fitted_points(ax, inside, slope, marker, color, label)
        elif points:
            ax.plot([], [], ls="none", marker=marker, color=color, label=label)
        if outside:
            ax.plot(*zip(*outside, strict=True), ls="none", marker=marker, ms=7, mfc="none", color=color,
                    label=f"{name}, not fitted (lr·λ_max ≥ 2 or diverged)", zorder=5)
        plotted += [d for _, d in points]
    return plotted, off_scale


def _plot_fitted_points(ax: Any, points: Sequence[tuple[float, float]], slope: float | None, marker: str,
                        color: Any, label: str, zorder: float | None = 5) -> None:
    """(lr, deviation) markers and, with a slope and two points or more, the line of that slope through
    them (:func:`_fitted_line`)."""
    ax.plot(*zip(*points, strict=True), ls="none", marker=marker, ms=7, color=color, label=label,
            zorder=zorder)
    if slope is not None and len(points) >= 2:
        ax.plot(*_fitted_line(*zip(*points, strict=True), slope), color=color, lw=1.2, alpha=0.8,
                label="_unlabeled: the fit of its markers, slope in their entry")


def _plot_full_batch_orders(ax: Any, result: Comparison) -> list[float]:
    """Every batched optimizer's full-batch runs against its own flow, with their fitted order. Returns the
    deviations drawn."""
    plotted: list[float] = []
    for optimizer in (name for name, entry in OPTIMIZERS.items() if entry.batches):  # gd: above
        full = sorted((r for r in result.runs if r.optimizer == optimizer and r.spec.full_batch
                       and r.status == "ok"), key=lambda r: r.lr)
        points = [(float(r.lr), float(r.max_loss_deviation)) for r in full if r.max_loss_deviation > 0]
        if not points:
            continue
        slope = result.orders.by_optimizer.get(optimizer, {}).get("order_loss")
        geometry = result.geometries.get(optimizer, "")
        label = (f"{_label(optimizer)} (full batch) vs {geometry} flow"
                 + (f": fitted order {slope:.2f}" if slope is not None else ""))
        entry = OPTIMIZERS[optimizer]
        _plot_fitted_points(ax, points, slope, entry.marker, entry.color, label, zorder=None)
        plotted += [d for _, d in points]
    return plotted


def _plot_group_means(ax: Any, result: Comparison, ceiling: float
                      ) -> tuple[list[float], list[tuple[float, float]]]:
    """SGD's and Adam's means over seeds per batch size with their min–max, drawn beside GD's lr. Returns
    the means drawn and the (lr, mean) above ``ceiling``."""
    plotted: list[float] = []
    off_scale: list[tuple[float, float]] = []
    for optimizer, marker, side in (("sgd", "v", 1), ("adam", "^", -1)):
        groups = [g for g in result.groups if g.optimizer == optimizer
                  and g.mean_max_loss_deviation is not None and g.min_max_loss_deviation > 0]
        batches = sorted({g.batch_size for g in groups})
        for index, batch in enumerate(batches):
            members = sorted((g for g in groups if g.batch_size == batch), key=lambda g: g.lr)
            lrs = np.array([g.lr for g in members])
            raw = np.array([g.mean_max_loss_deviation for g in members])
            off_scale += [(lr, d) for lr, d in zip(lrs, raw, strict=True) if d > ceiling]
            mean = np.minimum(raw, ceiling)
            low = mean - np.minimum([g.min_max_loss_deviation for g in members], ceiling)
            high = np.minimum([g.max_max_loss_deviation for g in members], ceiling) - mean
            shade = colormaps["Greens" if optimizer == "sgd" else "Purples"](0.45 + 0.5 * index
                                                                              / max(1, len(batches) - 1))
            # beside GD's markers at the same lr, never over them
            ax.errorbar(_dodged(lrs, side * (index + 1)), mean, yerr=[low, high], color=shade, marker=marker,
                        ms=6, lw=0.9, ls=":",
                        capsize=3, label=f"{_label(optimizer)} batch {batch} (mean over seeds)")
            plotted += list(mean)
    return plotted, off_scale


def _mark_off_scale(ax: Any, off_scale: Sequence[tuple[float, float]], ceiling: float) -> None:
    """Red hollow triangles at the ceiling where a deviation was above it."""
    if off_scale:
        ax.plot([lr for lr, _ in off_scale], [ceiling] * len(off_scale), ls="none", marker="^", ms=11,
                mfc="none", mec="red", mew=1.5,
                label=f"off scale: deviation up to {max(d for _, d in off_scale):.2g} (blew up)")


def _mark_stability_bound(ax: Any, result: Comparison) -> None:
    """The dotted line at 2/λ_max where it falls within a factor 2 of the lrs."""
    bound = result.stable_lr_bound
    lrs = [float(r.lr) for r in result.runs]
    if bound is not None and lrs and min(lrs) / 2 <= bound <= max(lrs) * 2:
        ax.axvline(bound, color="0.3", ls=":", lw=1.2, label=f"2/λ_max = {bound:.3g} (stability bound)")


def _dress_order_axes(ax: Any, result: Comparison, plotted: Sequence[float], dodged: bool) -> None:
    """Log–log scales with a tick at every lr, legend, labels and title; a note where nothing was drawn."""
    if not plotted:
        _no_data(ax, "no finite deviation to plot")
    else:
        ax.set_xscale("log")
        ax.set_yscale("log")
        lrs = sorted({float(r.lr) for r in result.runs})
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        ax.set_xticks([], minor=True)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.25, which="both")
    ax.set_xlabel("learning rate lr" + (" (SGD and Adam drawn beside their lr)" if dodged else ""))
    ax.set_ylabel("largest loss deviation  max_t |L_run(t) − L_flow(t)|")
    ax.set_title("Order of convergence in lr: GD → flow at first order, → modified flow at second\n"
                 "(each run against its own flow: the legend names it)", fontsize=9)


# --- compare_stage_shift.png -----------------------------------------------------------------------


def _shift_stats(members: Sequence[ComparedRun], boundary: str) -> tuple[float, float, float] | None:
    """(mean, min, max) of one boundary's relative shift over the seeds that found it; None if none did."""
    values = [m.stage_shift.get(boundary) for m in members if m.status == "ok"]
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return float(np.mean(values)), float(np.min(values)), float(np.max(values))


def _shift_axis(ax: Any, values: Sequence[float]) -> None:
    """y in percent. Shifts span decades with lr: log y (ticks at 1, 2, 5) when they are all positive, the
    usual case (discrete runs lag the flow); symmetric-log y with the zero line when their signs differ."""
    finite = [v for v in values if math.isfinite(v)]
    magnitudes = [abs(v) for v in finite if v != 0]
    if finite and all(v > 0 for v in finite):
        ax.set_yscale("log")
        if max(finite) / min(finite) < 20:  # less than about a decade: widen so that ticks fall inside
            middle = math.sqrt(max(finite) * min(finite))
            ax.set_ylim(min(min(finite), middle / 4.5) / 1.3, max(max(finite), middle * 4.5) * 1.3)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        floor = 10 ** math.floor(math.log10(min(magnitudes))) if magnitudes else 1e-3
        ax.set_yscale("symlog", linthresh=floor, linscale=0.6)
        ax.axhline(0.0, color="0.3", lw=0.8)
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax.grid(alpha=0.25, which="major")


def plot_stage_shift(result: Comparison, path: Path) -> None:
    """Relative shift (t_run − t_flow)/t_flow of every stage boundary of the flow.

    Left: against lr, per optimizer (GD; SGD at its largest batch size; Adam), mean over seeds with min–max
    error bars. Right: SGD against batch size, one line per lr. Colour: optimizer (left) or lr (right);
    marker: the boundary. A boundary a run did not reproduce is left out (and counted in the legend).
    """
    boundaries = [f"{tr['from']}->{tr['to']}" for tr in result.flow_stages.transitions]
    fig = figure(11.5, 5.0)
    fig.suptitle(config_title("Where discrete training puts the flow's stage boundaries", result.config),
                 fontsize=10)
    by_lr, by_batch = fig.subplots(1, 2)
    by_lr.set_title("Stage-boundary shift against lr", fontsize=10)
    by_batch.set_title("SGD: stage-boundary shift against batch size (mean over seeds)", fontsize=10)
    if not boundaries:
        for ax in (by_lr, by_batch):
            _no_data(ax, "the flow has no stage boundary to shift\n"
                         f"(stages: {result.flow_stages.summary()})")
        save(fig, path)
        return
    _plot_shift_by_lr(by_lr, result.runs, boundaries)
    _plot_shift_by_batch(by_batch, result.runs, boundaries)
    save(fig, path)


def _boundary_markers(boundaries: Sequence[str]) -> dict[str, str]:
    """One marker per boundary, in the order of :data:`BOUNDARY_MARKERS`."""
    return {b: BOUNDARY_MARKERS[i % len(BOUNDARY_MARKERS)] for i, b in enumerate(boundaries)}


def _boundary_style(boundaries: Sequence[str], boundary: str) -> Any:
    """Solid for the first boundary, dashed for the later ones."""
    return "-" if boundary == boundaries[0] else (0, (4, 2))


def _boundary_name(boundary: str) -> str:
    return boundary.replace("->", " → ")


def _shift_rows(settings: Mapping[tuple[float, int | None], Sequence[ComparedRun]], batch: int | None,
                boundary: str) -> tuple[list[tuple[float, float, float, float]], int]:
    """(lr, mean, min, max) of one boundary's shift at every lr of ``batch``, and how many lrs did not
    reproduce it."""
    rows, missing = [], 0
    for (lr, b), members in sorted(settings.items()):
        if b != batch:
            continue
        stats = _shift_stats(members, boundary)
        if stats is None:
            missing += 1
        else:
            rows.append((lr, *stats))
    return rows, missing


def _plot_shift_by_lr(ax: Any, runs: Sequence[ComparedRun], boundaries: Sequence[str]) -> None:
    """Every boundary's shift against lr, per optimizer (GD hollow; SGD at its largest batch), beside each
    other at one lr: GD's and SGD's shifts often agree."""
    shown: list[float] = []
    markers = _boundary_markers(boundaries)
    sides = {"gd": 0, "sgd": 1, "adam": -1}
    for optimizer in sides:
        settings = _settings(runs, optimizer)
        if not settings:
            continue
        batch = max((b for _, b in settings), key=lambda b: -1 if b is None else b)
        label = _label(optimizer) + ("" if batch is None else f", batch {batch}")
        found = False
        for boundary in boundaries:
            rows, missing = _shift_rows(settings, batch, boundary)
            if not rows:
                continue
            lrs, mean, low, high = (np.array(c) for c in zip(*rows, strict=True))
            hollow = {"mfc": "none", "ms": 10, "mew": 1.6} if optimizer == "gd" else {"ms": 6}
            ax.errorbar(_dodged(lrs, sides[optimizer]), mean, yerr=[mean - low, high - mean],
                        color=OPTIMIZERS[optimizer].color,
                        marker=markers[boundary], lw=1.2, capsize=3, **hollow,
                        ls=_boundary_style(boundaries, boundary),
                        label=f"{label}: {_boundary_name(boundary)}"
                        + (f" (not found at {missing} lr)" if missing else ""))
            shown += list(mean) + list(low) + list(high)
            found = True
        if not found:
            ax.plot([], [], ls="none", marker="x", color=OPTIMIZERS[optimizer].color,
                    label=f"{label}: no flow boundary reproduced")
    if shown:
        _log_shift_axis(ax, sorted({float(r.lr) for r in runs}), 10, shown)
    else:
        _no_data(ax, "no run reproduced a stage boundary of the flow")
    ax.set_xlabel("learning rate lr (SGD right of it, Adam left)")
    ax.set_ylabel("boundary shift (t_run − t_flow) / t_flow")


def _plot_shift_by_batch(ax: Any, runs: Sequence[ComparedRun], boundaries: Sequence[str]) -> None:
    """SGD's shift of every boundary against batch size, one line per lr and boundary."""
    sgd = _settings(runs, "sgd")
    batches = sorted({b for _, b in sgd})
    colors = _lr_colors(lr for lr, _ in sgd)
    markers = _boundary_markers(boundaries)
    shown: list[float] = []
    for lr in sorted({lr for lr, _ in sgd}, reverse=True):
        for boundary in boundaries:
            rows = [(b, *stats) for b in batches
                    if (stats := _shift_stats(sgd.get((lr, b), []), boundary)) is not None]
            if not rows:
                continue
            bs, mean, low, high = (np.array(c) for c in zip(*rows, strict=True))
            ax.errorbar(bs, mean, yerr=[mean - low, high - mean], color=colors[lr],
                        marker=markers[boundary], ms=6, lw=1.2, capsize=3,
                        ls=_boundary_style(boundaries, boundary),
                        label=f"lr {lr:g}: {_boundary_name(boundary)}")
            shown += list(mean) + list(low) + list(high)
    if shown:
        _log_shift_axis(ax, batches, 2, shown)
    else:
        _no_data(ax, "no SGD run to compare across batch sizes")
    ax.set_xlabel("SGD batch size")
    ax.set_ylabel("boundary shift (t_run − t_flow) / t_flow")


def _log_shift_axis(ax, ticks: list[float], base: int, shown: list[float]) -> None:
    """A log x axis labelled at exactly ``ticks``, the shift y axis, and the legend."""
    ax.set_xscale("log", base=base)
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.set_xticks([], minor=True)
    _shift_axis(ax, shown)
    ax.legend(fontsize=7, loc="best")


# --- compare_sharpness.png -------------------------------------------------------------------------


def plot_sharpness(result: Comparison, path: Path) -> None:
    """Top: the sharpness λ_max(P H) along the flow against log t, stages shaded. Bottom: lr·λ_max for
    every lr of the comparison, with the stability line lr·λ_max = 2 (GD leaves the flow above it)."""
    t = np.asarray(result.sharpness_t, dtype=np.float64)
    lam = np.asarray(result.sharpness, dtype=np.float64)
    keep = (t > 0) & np.isfinite(lam)
    fig = figure(7.5, 6.4)
    fig.suptitle(config_title("Sharpness along the flow", result.config), fontsize=10)
    top, bottom = fig.subplots(2, 1, sharex=True)
    left, right = time_window(result.flow.t)
    if not keep.any():
        _no_data(top, "no sharpness estimate along the flow")
        save(fig, path)
        return
    t, lam = t[keep], lam[keep]
    positive = bool((lam > 0).all())
    top.plot(t, lam, color="black", marker=".", ms=4, lw=1.6, label="_unlabeled: the y label names it")
    top.set_xscale("log")
    if positive and lam.max() / lam.min() > 10:
        top.set_yscale("log")
        _readable_log_ticks(top)
    top.set_xlim(left, right)
    shade_stages(top, _flow_stages(result), left, right)
    top.set_ylabel("sharpness λ_max(P H)")
    bound = result.stable_lr_bound
    top.set_title(f"Sharpness along the flow (max {result.max_sharpness:.4g}; GD stable for lr < "
                  + ("n/a" if bound is None else f"{bound:.3g}") + ")", fontsize=10)
    top.grid(alpha=0.25, which="both")
    lrs = sorted({float(r.lr) for r in result.runs} or set(result.spec.lrs), reverse=True)
    colors = _lr_colors(lrs)
    values: list[float] = []
    for lr in lrs:
        bottom.plot(t, lr * lam, color=colors[lr], lw=1.6, label=f"lr {lr:g}")
        values += list(lr * lam)
    bottom.axhline(2.0, color="red", ls=(0, (4, 2)), lw=1.3, label="stability limit lr·λ_max = 2")
    values.append(2.0)
    if positive:
        bottom.set_yscale("log")
        low = min(v for v in values if v > 0)
        bottom.set_ylim(low / 1.6, max(values) * 1.6)
        _readable_log_ticks(bottom)
    bottom.set_xscale("log")
    bottom.set_xlim(left, right)
    bottom.set_xlabel("flow time t")
    bottom.set_ylabel("lr · λ_max")
    bottom.set_title("lr · λ_max for each lr: GD leaves the flow above 2", fontsize=9)
    bottom.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    bottom.grid(alpha=0.25, which="both")
    save(fig, path)
