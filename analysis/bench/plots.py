"""The figure of ``factrecall bench``'s scale section (``bench.png`` beside the JSON): each flow method's
cost to the same accuracy against the number of facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.lines import Line2D

from ..plotting import figure, plain_log_ticks, save

# one colour and marker per method, in every figure; a method missing here gets the next free colour
METHOD_STYLES = {"dopri5": ("C0", "o"), "cvode": ("C1", "s"), "cvode+hvp": ("C2", "D"), "auto": ("C3", "^")}
DODGE = 1.1  # methods at one size drawn side by side: equal costs would hide one marker under another


def plot_scale(rows: list[dict[str, Any]], path: Path, target: float = 1e-4) -> Path:
    """Log–log, one panel each: evaluations (gradient + Hv products) and wall seconds to a largest loss
    deviation of ``target`` against S·R, one colour and marker per method (each drawn slightly beside the
    size it ran at, so that equal costs stay visible), filled where the method met the target, a cross
    where its finest tolerance still missed it; a line joins a method's sizes when there are several."""
    fig = figure(11, 4.8)
    left, right = fig.subplots(1, 2)
    methods = sorted({name for row in rows for name in row["methods"]},
                     key=lambda n: (list(METHOD_STYLES).index(n) if n in METHOD_STYLES else 99, n))
    missed = False
    for index, name in enumerate(methods):
        color, marker = METHOD_STYLES.get(name, (f"C{4 + index % 6}", "v"))
        shift = DODGE ** (index - (len(methods) - 1) / 2)
        points = [(row["facts"] * shift, row["methods"][name]) for row in rows if name in row["methods"]]
        for ax, key in ((left, "evaluations"), (right, "wall_seconds")):
            xs, ys = [x for x, _ in points], [m[key] for _, m in points]
            if len(points) > 1:
                ax.plot(xs, ys, "-", color=color, lw=1.2, label="_unlabeled: joins its markers")
            for x, m in points:
                missed = missed or not m["met_target"]
                ax.plot([x], [m[key]], ls="none", color=color, ms=8 if m["met_target"] else 10,
                        marker=marker if m["met_target"] else "x", mew=2,
                        label="_unlabeled: the legend names the method")
    handles = [Line2D([], [], ls="none", marker=METHOD_STYLES.get(n, ("", "v"))[1],
                      color=METHOD_STYLES.get(n, (f"C{4 + i % 6}", ""))[0], ms=8, label=n)
               for i, n in enumerate(methods)]
    if missed:
        handles.append(Line2D([], [], ls="none", marker="x", color="0.3", ms=9, mew=2,
                              label="target missed at its finest tolerance"))
    for ax, label, what in ((left, "gradient evals + Hv products", "evaluations"),
                            (right, "wall seconds", "wall time")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.margins(y=0.15)
        facts = sorted({row["facts"] for row in rows})
        if facts:  # ticks at the sizes that ran, half a decade of room around them
            ax.set_xlim(facts[0] / 3, facts[-1] * 3)
            ax.set_xticks(facts, [f"{f:,}" for f in facts])
            ax.set_xticks([], minor=True)
        ax.set_xlabel("facts S·R" + (" (methods side by side)" if len(methods) > 1 else ""))
        ax.set_ylabel(label)
        ax.set_title(f"{what} to a largest loss deviation ≤ {target:g}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    right.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    sizes = ", ".join(f"{row['S']}×{row['R']}" for row in rows)
    fig.suptitle("Flow methods' cost to the same accuracy as the table grows: random S×R tables "
                 f"({sizes}), D=8, N=S+R,\nreduced model, linear attention, constant init of scale 1e-5, "
                 f"to 2.5 t_S; reference: {', '.join(sorted({str(row.get('reference')) for row in rows}))}",
                 fontsize=9)
    save(fig, path)
    return path
