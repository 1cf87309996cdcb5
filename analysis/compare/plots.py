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
from dataclasses import asdict
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
    runs = result.runs
    optimizers = [o for o in OPTIMIZERS if any(r.optimizer == o for r in runs)]
    columns = max(1, len(optimizers))
    fig = figure(6.6 * columns + 0.4, 6.8)
    axes = fig.subplots(2, columns, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    left, right = time_window(flow.t)
    colors = _lr_colors(float(r.lr) for r in runs)
    top = max(float(np.nanmax(flow.loss)) if len(flow.loss) else 1.0, 0.1)
    y_range = (-0.04 * top, 1.12 * top)  # a run that blows up leaves the frame rather than squashing it
    ceiling = _ceiling(result)
    if not optimizers:
        _no_data(axes[0, 0], "no discrete runs")
    for column, optimizer in enumerate(optimizers or ["flow"]):
        ax, dev_ax = axes[0, column], axes[1, column]
        own = result.flow_of(optimizer)[0] if optimizer != "flow" else flow
        geometry = result.geometries.get(optimizer, "euclidean")
        keep_own = own.t > 0
        ax.plot(own.t[keep_own], own.loss[keep_own], color="black", lw=2.2, zorder=5,
                label="flow" if geometry == "euclidean" else f"{geometry} flow")
        deviation_floor = []
        clipped = False
        batches = sorted({r.batch_size for r in runs if r.optimizer == optimizer},
                         key=lambda b: -1 if b is None else b, reverse=True)
        for (lr, batch), members in _settings(runs, optimizer).items():
            color = colors[lr]
            style = BATCH_STYLES[batches.index(batch) % len(BATCH_STYLES)] if batch is not None else "-"
            label = f"lr {lr:g}" + ("" if batch is None or optimizer == "adam" and len(batches) == 1
                                    else f", batch {batch}")
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
                    y = float(np.clip(tr.loss[-1], *y_range))
                    ax.plot([tr.t[-1]], [y], marker="x", color="red", ms=8, mew=2, zorder=6,
                            label="_unlabeled: named in its line's legend entry")
            dt, dev = _setting_deviation(members)
            clipped = clipped or bool(np.any(dev > ceiling))
            dev = np.minimum(dev, ceiling)
            keep = (dt > 0) & np.isfinite(dev) & (dev > 0)
            dev_ax.plot(dt[keep], dev[keep], color=color, ls=style, lw=1.3,
                        label="_unlabeled: the legend above names it")
            deviation_floor += list(dev[keep])
        ax.set_xscale("log")
        ax.set_xlim(left, right)
        ax.set_ylim(*y_range)
        shade_stages(ax, _flow_stages(result, optimizer if optimizer != "flow" else None), left, right)
        own_flow = "flow" if geometry == "euclidean" else f"{geometry} flow"
        ax.set_title(f"{_label(optimizer)} against the {own_flow}", fontsize=10)
        ax.set_ylabel("loss (nats)")
        # beside the axes: inside, a legend of many runs covers the curves where they fall
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.25, which="both")
        dev_ax.set_xscale("log")
        if deviation_floor:
            dev_ax.set_yscale("log")
            high = max(deviation_floor)
            dev_ax.set_ylim(max(min(deviation_floor) / 2, high * 1e-5), high * 2)
        else:
            dev_ax.text(0.5, 0.5, "no deviation from the flow to show", transform=dev_ax.transAxes,
                        ha="center", va="center", fontsize=9, color="0.3")
        if clipped:
            dev_ax.axhline(ceiling, color="red", ls=":", lw=1, label="_unlabeled: named beside it")
            dev_ax.text(0.01, ceiling, f"off scale above {ceiling:.3g} (blew up)", color="red", fontsize=7,
                        va="top", transform=dev_ax.get_yaxis_transform())
        dev_ax.set_xlabel("flow time t (= step × lr)")
        dev_ax.set_title(f"{_label(optimizer)}: distance to the {own_flow}"
                         + (" (mean over seeds)" if optimizer not in ("gd", "flow") else ""), fontsize=9)
        dev_ax.set_ylabel("|L_run − L_flow|" if geometry == "euclidean" else f"|L_run − L_{geometry} flow|")
        dev_ax.grid(alpha=0.25, which="both")
    fig.suptitle(config_title("Loss of the flow and of discrete training from the same θ(0)", result.config),
                 fontsize=10)
    save(fig, path)


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
    runs = result.runs
    orders = result.orders
    fitted = {float(lr) for lr in orders.gd_lrs}
    fig = figure(7.2, 5.6)
    ax = fig.subplots()
    gd = [r for r in runs if r.optimizer == "gd"]
    plotted: list[float] = []
    ceiling = _ceiling(result)
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
        slope = getattr(orders, order_key)
        label = name + (f": fitted order {slope:.2f}" if slope is not None else ": no fit (< 2 lrs)")
        if inside:
            ax.plot(*zip(*inside, strict=True), ls="none", marker=marker, ms=7, color=color, label=label,
                    zorder=5)
            if slope is not None and len(inside) >= 2:
                ax.plot(*_fitted_line(*zip(*inside, strict=True), slope), color=color, lw=1.2, alpha=0.8,
                        label="_unlabeled: the fit of its markers, slope in their entry")
        elif points:
            ax.plot([], [], ls="none", marker=marker, color=color, label=label)
        if outside:
            ax.plot(*zip(*outside, strict=True), ls="none", marker=marker, ms=7, mfc="none", color=color,
                    label=f"{name}, not fitted (lr·λ_max ≥ 2 or diverged)", zorder=5)
        plotted += [d for _, d in points]
    for optimizer in (name for name, entry in OPTIMIZERS.items() if entry.batches):  # gd: above
        marker, color = OPTIMIZERS[optimizer].marker, OPTIMIZERS[optimizer].color
        full = sorted((r for r in runs if r.optimizer == optimizer and r.spec.full_batch
                       and r.status == "ok"), key=lambda r: r.lr)
        points = [(float(r.lr), float(r.max_loss_deviation)) for r in full if r.max_loss_deviation > 0]
        if not points:
            continue
        slope = result.orders.by_optimizer.get(optimizer, {}).get("order_loss")
        geometry = result.geometries.get(optimizer, "")
        ax.plot(*zip(*points, strict=True), ls="none", marker=marker, ms=7, color=color,
                label=f"{_label(optimizer)} (full batch) vs {geometry} flow"
                + (f": fitted order {slope:.2f}" if slope is not None else ""))
        if slope is not None and len(points) >= 2:
            ax.plot(*_fitted_line(*zip(*points, strict=True), slope), color=color, lw=1.2, alpha=0.8,
                    label="_unlabeled: the fit of its markers, slope in their entry")
        plotted += [d for _, d in points]
    dodged = False
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
            dodged = True  # beside GD's markers at the same lr, never over them
            ax.errorbar(_dodged(lrs, side * (index + 1)), mean, yerr=[low, high], color=shade, marker=marker,
                        ms=6, lw=0.9, ls=":",
                        capsize=3, label=f"{_label(optimizer)} batch {batch} (mean over seeds)")
            plotted += list(mean)
    if off_scale:
        ax.plot([lr for lr, _ in off_scale], [ceiling] * len(off_scale), ls="none", marker="^", ms=11,
                mfc="none", mec="red", mew=1.5,
                label=f"off scale: deviation up to {max(d for _, d in off_scale):.2g} (blew up)")
    bound = result.stable_lr_bound
    all_lrs = [float(r.lr) for r in runs]
    if bound is not None and all_lrs and min(all_lrs) / 2 <= bound <= max(all_lrs) * 2:
        ax.axvline(bound, color="0.3", ls=":", lw=1.2, label=f"2/λ_max = {bound:.3g} (stability bound)")
    if not plotted:
        _no_data(ax, "no finite deviation to plot")
    else:
        ax.set_xscale("log")
        ax.set_yscale("log")
        lrs = sorted(set(all_lrs))
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        ax.set_xticks([], minor=True)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.25, which="both")
    ax.set_xlabel("learning rate lr" + (" (SGD and Adam drawn beside their lr)" if dodged else ""))
    ax.set_ylabel("largest loss deviation  max_t |L_run(t) − L_flow(t)|")
    ax.set_title("Order of convergence in lr: GD → flow at first order, → modified flow at second\n"
                 "(each run against its own flow: the legend names it)", fontsize=9)
    fig.suptitle(config_title("Discrete training against the flow", result.config), fontsize=10)
    save(fig, path)


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
    runs = result.runs
    transitions = result.flow_stages.transitions
    boundaries = [f"{tr['from']}->{tr['to']}" for tr in transitions]
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
    markers = {b: BOUNDARY_MARKERS[i % len(BOUNDARY_MARKERS)] for i, b in enumerate(boundaries)}
    names = {b: b.replace("->", " → ") for b in boundaries}
    shown: list[float] = []
    sides = {"gd": 0, "sgd": 1, "adam": -1}  # beside each other at one lr: GD's and SGD's shifts often agree
    for optimizer in sides:
        settings = _settings(runs, optimizer)
        if not settings:
            continue
        batch = max((b for _, b in settings), key=lambda b: -1 if b is None else b)
        label = _label(optimizer) + ("" if batch is None else f", batch {batch}")
        found = False
        for boundary in boundaries:
            rows = []
            missing = 0
            for (lr, b), members in sorted(settings.items()):
                if b != batch:
                    continue
                stats = _shift_stats(members, boundary)
                if stats is None:
                    missing += 1
                else:
                    rows.append((lr, *stats))
            if not rows:
                continue
            lrs, mean, low, high = (np.array(c) for c in zip(*rows, strict=True))
            hollow = {"mfc": "none", "ms": 10, "mew": 1.6} if optimizer == "gd" else {"ms": 6}
            by_lr.errorbar(_dodged(lrs, sides[optimizer]), mean, yerr=[mean - low, high - mean],
                           color=OPTIMIZERS[optimizer].color,
                           marker=markers[boundary], lw=1.2, capsize=3, **hollow,
                           ls="-" if boundary == boundaries[0] else (0, (4, 2)),
                           label=f"{label}: {names[boundary]}"
                           + (f" (not found at {missing} lr)" if missing else ""))
            shown += list(mean) + list(low) + list(high)
            found = True
        if not found:
            by_lr.plot([], [], ls="none", marker="x", color=OPTIMIZERS[optimizer].color,
                       label=f"{label}: no flow boundary reproduced")
    if shown:
        _log_shift_axis(by_lr, sorted({float(r.lr) for r in runs}), 10, shown)
    else:
        _no_data(by_lr, "no run reproduced a stage boundary of the flow")
    by_lr.set_xlabel("learning rate lr (SGD right of it, Adam left)")
    by_lr.set_ylabel("boundary shift (t_run − t_flow) / t_flow")

    sgd = _settings(runs, "sgd")
    batches = sorted({b for _, b in sgd})
    colors = _lr_colors(lr for lr, _ in sgd)
    shown = []
    for lr in sorted({lr for lr, _ in sgd}, reverse=True):
        for boundary in boundaries:
            rows = [(b, *stats) for b in batches
                    if (stats := _shift_stats(sgd.get((lr, b), []), boundary)) is not None]
            if not rows:
                continue
            bs, mean, low, high = (np.array(c) for c in zip(*rows, strict=True))
            by_batch.errorbar(bs, mean, yerr=[mean - low, high - mean], color=colors[lr],
                              marker=markers[boundary], ms=6, lw=1.2, capsize=3,
                              ls="-" if boundary == boundaries[0] else (0, (4, 2)),
                              label=f"lr {lr:g}: {names[boundary]}")
            shown += list(mean) + list(low) + list(high)
    if shown:
        _log_shift_axis(by_batch, batches, 2, shown)
    else:
        _no_data(by_batch, "no SGD run to compare across batch sizes")
    by_batch.set_xlabel("SGD batch size")
    by_batch.set_ylabel("boundary shift (t_run − t_flow) / t_flow")
    save(fig, path)


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
