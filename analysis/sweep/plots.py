"""Phase-diagram figures from a sweep's ``results.csv`` (seaborn heatmaps, line plots)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from dynamics.errors import ConfigError

from ..plotting import draw_or_skip, figure, save
from ..stages import relation_first


def read_results(path: Path) -> list[dict[str, str]]:
    """Rows of a ``results.csv`` as dicts of strings, checked: UTF-8 text (a byte-order mark is allowed), a
    header, at least one row, every row as long as the header. Anything else is one ConfigError line."""
    if not path.is_file():
        raise ConfigError(f"DIR={str(path.parent)!r}: has no results.csv; allowed: a sweep directory")

    def damaged(what: str) -> ConfigError:
        return ConfigError(f"{str(path)!r}: {what}; allowed: a results.csv written by factrecall sweep")

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise damaged(f"not UTF-8 text (byte {err.start})") from None
    except csv.Error as err:
        raise damaged(f"not CSV ({err})") from None
    if not header or not any(name.strip() for name in header):
        raise damaged("empty (no header)")
    rows = [row for row in rows if row]  # a blank line is no row
    if not rows:
        raise damaged("a header but no rows")
    for number, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise damaged(f"line {number} has {len(row)} fields, the header {len(header)}")
    return [dict(zip(header, row, strict=True)) for row in rows]


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _categorical(values: list[str]) -> bool:
    return any(math.isnan(_number(v)) for v in values if v != "")


# what each column means on a figure, and what an empty cell of it means
COLUMN_NAMES = {
    "plateau_length": ("length of the intermediate plateau (flow time)", "no plateau"),
    "t_first_transition": ("flow time of the first stage transition", "no transition"),
    "t_second_transition": ("flow time of the second stage transition", "no second transition"),
    "plateau_level": ("loss on the intermediate plateau (nats)", "no plateau"),
    "learned_first": ("learned first: the partial loss (relation-only or subject-only) that falls first",
                      "neither fell"),
    "intermediate": ("intermediate plateaus the loss stops on", "none"),
}
EMPTY_COLOUR = "0.88"
THEORY_LABEL = "theory predicts relation first (S·√(R−1) > R·√(D−1))"


def column_name(column: str) -> tuple[str, str]:
    """(what ``column`` of results.csv is, in words; what an empty cell of it means)."""
    return COLUMN_NAMES.get(column, (column, "no value"))


def sweep_title(directory: Path) -> str:
    """The line that says what a sweep ran (task with the grid's ranges, model, start, data regime), from
    its ``sweep.json``; '' when that cannot be read (a figure then says only what it shows)."""
    import json

    from dynamics.config import Config

    from ..plotting import setting_line, task_line

    try:
        manifest = json.loads((Path(directory) / "sweep.json").read_text())
        config = Config.from_dict(manifest["base"])
        grids = manifest.get("grids") or []
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return ""
    symbols = {"task.subjects": "S", "task.relations": "R", "task.answers_per_relation": "D",
               "task.noise_tokens": "N", "task.seq_len": "T"}
    line = task_line(config)
    others = []
    for key in sorted({k for grid in grids for k in grid}):
        values = sorted({v for grid in grids for v in grid.get(key, [])}, key=_number_of)
        span = f"{values[0]}…{values[-1]}" if len(values) > 1 else f"{values[0]}"
        if key in symbols:
            line = " ".join(f"{symbols[key]}={span}" if part.startswith(symbols[key] + "=") else part
                            for part in line.split(" "))
        else:
            others.append(f"{key}={span}")
    return f"{line}{'; ' + ', '.join(others) if others else ''}\n{setting_line(config)}"


def _number_of(value) -> float:
    return _number(str(value))


def _cell_text(value: float) -> str:
    """A number short enough for its cell: at most 4 significant digits and no exponent below 10^5."""
    if not math.isfinite(value):
        return ""
    if abs(value) >= 1e5 or 0 < abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def plot_heatmap(rows: list[dict[str, str]], x: str, y: str, value: str, path: Path, title: str = "") -> None:
    """Heatmap of ``value`` over the grid axes ``x`` and ``y`` (log colour scale when positive values
    span more than two decades), every cell written in it; a cell with no value (e.g. no plateau) grey
    and named in the legend; with axes task.subjects and task.relations, the cells where the first-order
    theory predicts relation first marked (S·√(R−1) > R·√(D−1)). ``title``: what the sweep ran
    (:func:`sweep_title`), above what the figure shows."""
    import seaborn as sns
    from matplotlib.patches import Patch

    for key in (x, y, value):
        if rows and key not in rows[0]:
            raise ConfigError(f"--value/--x/--y={key!r}: not a column of results.csv; allowed: "
                              + ", ".join(rows[0]))
    xs = sorted({r[x] for r in rows}, key=_number)
    ys = sorted({r[y] for r in rows}, key=_number)
    categorical = _categorical([r[value] for r in rows])
    labels = sorted({r[value] for r in rows if r[value] != ""}) if categorical else []
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        if r[value] != "":
            cell = labels.index(r[value]) if categorical else _number(r[value])
            grid[ys.index(r[y]), xs.index(r[x])] = cell
    meaning, empty_meaning = column_name(value)
    fig = figure(3.2 + 0.95 * len(xs), 2.6 + 0.72 * len(ys))
    ax = fig.subplots()
    ax.set_facecolor(EMPTY_COLOUR)  # a cell without a value shows the background, named in the legend
    finite = grid[np.isfinite(grid)]
    norm = None
    if not categorical and len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        norm = LogNorm(finite.min(), finite.max())
    empty = not len(finite)  # e.g. plateau_length where no point has a plateau
    band = {"vmin": -0.5, "vmax": len(labels) - 0.5} if categorical else {}  # ticks at the bands' middles
    sns.heatmap(grid, ax=ax, xticklabels=[_short(v) for v in xs], yticklabels=[_short(v) for v in ys],
                norm=norm, vmin=band.get("vmin", 0.0 if empty else None),
                vmax=band.get("vmax", 1.0 if empty else None), linewidths=1, linecolor="white",
                cmap="viridis" if not categorical else sns.color_palette("Set2", max(len(labels), 1)),
                annot=False, cbar=not empty,
                cbar_kws={"label": value} if not categorical else {"ticks": range(len(labels))})
    if categorical and labels:
        fig.axes[-1].set_yticklabels(labels)
    if not categorical and len(xs) * len(ys) <= 64:
        cmap = ax.collections[0].cmap
        scaled = ax.collections[0].norm
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(grid[i, j]):
                    red, green, blue, _ = cmap(scaled(grid[i, j]))
                    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                    ax.text(j + 0.5, i + 0.5, _cell_text(grid[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
    ax.invert_yaxis()
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    handles = []
    if np.isnan(grid).any():
        handles.append(Patch(facecolor=EMPTY_COLOUR, edgecolor="0.6", label=f"grey: {empty_meaning}"))
    if {x, y} == {"task.subjects", "task.relations"}:
        handles += _theory_marks(ax, rows, xs, ys, x, y)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=8, frameon=False)
    ax.set_title(meaning if not empty else f"{meaning}: no value at any grid point", fontsize=9)
    fig.suptitle(f"Sweep of {x} × {y}" + (f": {title}" if title else ""), fontsize=9)
    save(fig, path)


def _theory_marks(ax, rows, xs, ys, x, y) -> list:
    """Mark the cells the first-order theory predicts relation-first: each row's own
    ``theory_relation_first`` (computed with the sweep's D), else relation_first(S, R, D) with D from the
    rows (8 when D is not a column) where the sweep has no such column. Returns the legend handle."""
    predicted = {(r[x], r[y]): r["theory_relation_first"] == "True" for r in rows
                 if "theory_relation_first" in r}
    D = int(_number(rows[0].get("task.answers_per_relation", "8")) or 8) if rows else 8
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            S, R = (int(_number(xv)), int(_number(yv))) if x == "task.subjects" else (
                int(_number(yv)), int(_number(xv)))
            if predicted.get((xv, yv), relation_first(S, R, D)):
                ax.add_artist(_rect(j, i))
    return [_mark_handle()]


MARK = {"marker": (3, 0, 180), "markersize": 9, "color": "black", "markeredgecolor": "white",
        "markeredgewidth": 1.0}  # a downward corner triangle, black edged white: seen on any cell colour


def _mark_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="none", label=THEORY_LABEL, **MARK)


def _rect(j: int, i: int):
    """The theory's mark in the top-left corner of cell (column j, row i)."""
    from matplotlib.lines import Line2D

    return Line2D([j + 0.16], [i + 0.78], ls="none", label="_unlabeled: the legend names the mark", **MARK)


def plot_lines(rows: list[dict[str, str]], x: str, values: list[str], path: Path, title: str = "") -> None:
    """One panel per column against the single grid axis ``x`` (log x when the values span decades), the
    theory's value dashed where it applies; a grid value without a value of the column is marked at the
    panel's foot. ``title``: what the sweep ran (:func:`sweep_title`)."""
    for flag, key in [("--x", x)] + [("--value", v) for v in values]:
        if rows and key not in rows[0]:
            raise ConfigError(f"{flag}={key!r}: not a column of results.csv; allowed: " + ", ".join(rows[0]))
    xs = np.array([_number(r[x]) for r in rows])
    if rows and not np.isfinite(xs).any():
        raise ConfigError(f"--x={x!r}: no numeric value in that column (e.g. {rows[0][x]!r}), so no line "
                          "plot; allowed: a numeric grid key, or give --y for a heatmap")
    order = np.argsort(xs)
    columns = [v for v in values if rows and v in rows[0] and not _categorical([r[v] for r in rows])]
    if rows and not columns:
        raise ConfigError(f"--value={values[0]!r}: not a numeric column, so it has no line plot; allowed: "
                          "a numeric column, or give --y for a heatmap")
    fig = figure(4.4 * max(len(columns), 1), 3.9)
    axes = fig.subplots(1, max(len(columns), 1), squeeze=False)[0]
    for ax, column in zip(axes, columns, strict=False):
        ys = np.array([_number(r[column]) for r in rows])
        meaning, empty_meaning = column_name(column)
        theory = f"theory_{column}" if f"theory_{column}" in rows[0] else None
        predicted = np.array([_number(r[theory]) for r in rows]) if theory else np.array([])
        has_theory = bool(np.isfinite(predicted).any())  # empty where the theory does not apply: no line
        missing = np.isfinite(xs) & ~np.isfinite(ys)
        alone = not has_theory and not missing.any()  # one line, named by its y label: no legend
        ax.plot(xs[order], ys[order], "o-", label="_unlabeled: the y label names it" if alone else "measured")
        if has_theory:
            ax.plot(xs[order], predicted[order], "k--", label="theory")
        if missing.any():
            ax.plot(xs[missing], np.zeros(missing.sum()), ls="none", marker="x", color="0.4",
                    transform=ax.get_xaxis_transform(), clip_on=False, label=f"{empty_meaning} (at the foot)")
        if not alone:
            ax.legend(fontsize=8)
        ax.set_title(meaning if np.isfinite(ys).any() else f"{meaning}: {empty_meaning} anywhere",
                     fontsize=9, wrap=True)
        positive = xs[np.isfinite(xs)]
        if len(positive) and positive.min() > 0 and positive.max() / positive.min() > 100:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Sweep of {x}" + (f": {title}" if title else ""), fontsize=9)
    save(fig, path)


def _short(value: str) -> str:
    number = _number(value)
    return value if math.isnan(number) else f"{number:.3g}"


DEFAULT_COLUMNS = ("plateau_length", "t_first_transition", "t_second_transition", "plateau_level")


def plot_sweep(directory: Path, grid_keys: list[str]) -> list[Path]:
    """The default figures of a sweep: heatmaps over the first two grid axes, or line plots for one.
    A figure that cannot be drawn (every point failed, so a column is missing) is skipped with a one-line
    note; the sweep's results are kept either way."""
    rows = read_results(directory / "results.csv")
    title = sweep_title(directory)
    written = []
    if len(grid_keys) >= 2:
        x, y = grid_keys[0], grid_keys[1]
        for value in ("plateau_length", "t_first_transition", "learned_first", "intermediate"):
            path = directory / f"phase_{value}.png"
            if draw_or_skip(path, plot_heatmap, rows, x, y, value, path, title):
                written.append(path)
    elif grid_keys:
        path = directory / "sweep_lines.png"
        if draw_or_skip(path, plot_lines, rows, grid_keys[0], list(DEFAULT_COLUMNS), path, title):
            written.append(path)
    return written
