"""Figures of capacity summaries (what ``summary.json`` holds): capacity against parameters on log–log axes
with the fitted power law and the paper's trend; the attention/MLP trade-off heatmap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..plotting import figure, plain_log_ticks, save


def reference_curve(kind: str, params: np.ndarray, anchor: tuple[float, float] | None) -> np.ndarray:
    """The paper's trend at ``params``: linear memory N log N = κ·P, MLP N = κ·P (κ through ``anchor``,
    the geometric-mean data point), transformer facts = 0.15·P (the paper's absolute reference line)."""
    params = np.asarray(params, dtype=float)
    if kind == "transformer":
        return 0.15 * params
    if anchor is None:
        return np.full_like(params, np.nan)
    p0, n0 = anchor
    if kind == "linear":
        from scipy.optimize import brentq  # here, not at import: SciPy costs every capacity command ~1 s

        kappa = n0 * math.log(n0) / p0
        return np.array([brentq(lambda n, p=p: n * math.log(n) - kappa * p, 1.0 + 1e-9, 1e12)
                         for p in params])
    return n0 / p0 * params


def plot_capacity(summary: dict[str, Any], path: Path) -> list[Path]:
    """Facts stored against parameters (every seed, log–log), the fitted line with its exponent and CI,
    and the reference trend."""
    fig = figure(6.4, 4.8)
    ax = fig.subplots()
    ok = [r for r in summary["results"] if r["status"] == "ok"]
    other = [r for r in summary["results"] if r["status"] != "ok" and r["facts"] is not None]
    if ok:
        ax.scatter([r["params"] for r in ok], [r["facts"] for r in ok], color="C0", s=22, label="capacity")
    if other:
        ax.scatter([r["params"] for r in other], [r["facts"] for r in other], marker="^", color="C3", s=22,
                   label="search hit the range's upper end")
    fit = summary.get("fit", {})
    if ok and math.isfinite(fit.get("exponent", math.nan)):
        xs = np.geomspace(min(r["params"] for r in ok), max(r["params"] for r in ok), 50)
        ax.plot(xs, np.exp(fit["intercept"]) * xs ** fit["exponent"], color="C0",
                label=f"fit: exponent {fit['exponent']:.2f} [{fit['ci_low']:.2f}, {fit['ci_high']:.2f}]")
        anchor = (float(np.exp(np.log(xs).mean())), float(np.exp(fit["intercept"] + fit["exponent"]
                                                                  * np.log(xs).mean())))
        ax.plot(xs, reference_curve(summary["kind"], xs, anchor), color="0.3", ls="--",
                label=f"paper: {summary['reference_trend']}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel(summary["x_label"])
    ax.set_ylabel("facts stored at ≥ 99% accuracy" if summary["kind"] == "transformer"
                  else "associations stored (N)")
    ax.set_title(_title(summary, "Facts stored against parameters"), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save(fig, path)
    return [path]


def _title(summary: dict[str, Any], what: str) -> str:
    """What ran: the model, the grid (quick or full, points, seeds) and the training, then ``what``."""
    grid = "quick" if summary["quick"] else "full"
    points = f"{summary['points']} sizes × " if summary.get("points") else ""
    settings = summary.get("settings") or {}
    training = (f"; {settings['optimizer']} lr {'/'.join(f'{lr:g}' for lr in settings['lrs'])}, "
                f"{settings['steps']} steps, stored at accuracy ≥ {settings['threshold']:g}"
                if {"optimizer", "lrs", "steps", "threshold"} <= set(settings) else "")
    lines = [what, summary.get("model", summary["kind"]),
             f"{grid} grid, {points}{summary['seeds']} seed(s){training}"]
    return "\n".join(lines)


def plot_tradeoff(summary: dict[str, Any], path: Path) -> list[Path]:
    """Accuracy over attention parameters (rows) × MLP parameters (columns), cells annotated, with the
    minimum sufficient attention size marked."""
    info = summary["tradeoff"]
    grid = np.asarray(info["accuracy"], dtype=float)
    fig = figure(7.2, 5.0)
    ax = fig.subplots()
    image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, label="accuracy")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if grid[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(info["mlp_params"])), [str(v) for v in info["mlp_params"]])
    ax.set_yticks(range(len(info["attention_params"])), [str(v) for v in info["attention_params"]])
    ax.set_xlabel("MLP parameters 2·m·d")
    ax.set_ylabel("attention parameters 4·H·d_h·d")
    if info.get("min_attention_params") is not None:
        row = info["attention_params"].index(info["min_attention_params"])
        ax.axhline(row - 0.5, color="red", lw=1.5, label="minimum sufficient attention (rows above)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)
    least = info.get("min_attention_params")
    ax.set_title(_title(summary, f"Accuracy over attention × MLP size: minimum attention {least} parameters"),
                 fontsize=9)
    save(fig, path)
    return [path]
