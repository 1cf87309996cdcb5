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


def plot_heatmap(rows: list[dict[str, str]], x: str, y: str, value: str, path: Path) -> None:
    """Heatmap of ``value`` over the grid axes ``x`` and ``y`` (log colour scale when positive values
    span more than two decades), with the theory's relation-first / subject-first boundary
    S/R·sqrt((R−1)/(D−1)) = 1 outlined when the axes are task.subjects and task.relations."""
    import seaborn as sns

    for key in (x, y, value):
        if rows and key not in rows[0]:
            raise ConfigError(f"--value/--x/--y={key!r}: not a column of results.csv; allowed: "
                              + ", ".join(rows[0]))
    xs = sorted({r[x] for r in rows}, key=_number)
    ys = sorted({r[y] for r in rows}, key=_number)
    categorical = _categorical([r[value] for r in rows])
    labels = sorted({r[value] for r in rows}) if categorical else []
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        cell = labels.index(r[value]) if categorical else _number(r[value])
        grid[ys.index(r[y]), xs.index(r[x])] = cell
    fig = figure(1.2 + 0.75 * len(xs), 1.0 + 0.55 * len(ys))
    ax = fig.subplots()
    finite = grid[np.isfinite(grid)]
    norm = None
    if not categorical and len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        norm = LogNorm(finite.min(), finite.max())
    empty = not categorical and not len(finite)  # e.g. plateau_length where no point has a plateau
    sns.heatmap(grid, ax=ax, xticklabels=[_short(v) for v in xs], yticklabels=[_short(v) for v in ys],
                norm=norm, vmin=0.0 if empty else None, vmax=1.0 if empty else None,
                cmap="viridis" if not categorical else sns.color_palette("Set2", len(labels)),
                annot=len(xs) * len(ys) <= 64 and not categorical, fmt=".3g",
                cbar_kws={"label": value} if not categorical else {"ticks": range(len(labels))})
    if categorical:
        fig.axes[-1].set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if {x, y} == {"task.subjects", "task.relations"}:
        _theory_boundary(ax, rows, xs, ys, x, y)
    ax.set_title(value if not empty else f"{value}: no value at any grid point", fontsize=10)
    save(fig, path)


def _theory_boundary(ax, rows, xs, ys, x, y) -> None:
    """Outline the cells the first-order theory predicts relation-first: each row's own
    ``theory_relation_first`` (computed with the sweep's D), else relation_first(S, R, D) with D from the
    rows (8 when D is not a column) where the sweep has no such column; no cell whose row leaves it empty
    (the theory does not describe that run)."""
    predicted = {(r[x], r[y]): r["theory_relation_first"] == "True" for r in rows
                 if "theory_relation_first" in r}
    D = int(_number(rows[0].get("task.answers_per_relation", "8")) or 8) if rows else 8
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            S, R = (int(_number(xv)), int(_number(yv))) if x == "task.subjects" else (
                int(_number(yv)), int(_number(xv)))
            if predicted.get((xv, yv), relation_first(S, R, D)):
                ax.add_patch(_rect(j, i))
    ax.plot([], [], color="white", lw=2, label="theory: relation first")
    ax.legend(loc="upper left", fontsize=7, framealpha=0.6)


def _rect(j: int, i: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j, i), 1, 1, fill=False, edgecolor="white", lw=2)


def plot_lines(rows: list[dict[str, str]], x: str, values: list[str], path: Path) -> None:
    """One panel per column against the single grid axis ``x`` (log x when the values span decades)."""
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
    fig = figure(4.2 * max(len(columns), 1), 3.4)
    axes = fig.subplots(1, max(len(columns), 1), squeeze=False)[0]
    for ax, column in zip(axes, columns, strict=False):
        ys = np.array([_number(r[column]) for r in rows])
        ax.plot(xs[order], ys[order], "o-")
        theory = f"theory_{column}" if f"theory_{column}" in rows[0] else None
        predicted = np.array([_number(r[theory]) for r in rows]) if theory else np.array([])
        if np.isfinite(predicted).any():  # empty where the theory does not apply: no line, no legend
            ax.plot(xs[order], predicted[order], "k--", label="theory")
            ax.legend(fontsize=8)
        positive = xs[np.isfinite(xs)]
        if len(positive) and positive.min() > 0 and positive.max() / positive.min() > 100:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
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
    written = []
    if len(grid_keys) >= 2:
        x, y = grid_keys[0], grid_keys[1]
        for value in ("plateau_length", "t_first_transition", "learned_first", "intermediate"):
            path = directory / f"phase_{value}.png"
            if draw_or_skip(path, plot_heatmap, rows, x, y, value, path):
                written.append(path)
    elif grid_keys:
        path = directory / "sweep_lines.png"
        if draw_or_skip(path, plot_lines, rows, grid_keys[0], list(DEFAULT_COLUMNS), path):
            written.append(path)
    return written
