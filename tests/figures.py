"""Checks of the figures the package writes: a PNG that decodes to a drawn image (not blank), and the
matplotlib Figure a plotting function saves, captured where it is saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_colours: int = 8, min_ink: float = 0.01) -> np.ndarray:
    """``path`` is a PNG that decodes to an image with at least ``min_colours`` distinct colours and at
    least ``min_ink`` of its pixels not white (a blank or single-colour figure fails); returns the pixels."""
    path = Path(path)
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    from matplotlib.image import imread

    pixels = imread(path)[..., :3]
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, (path, len(colours))
    ink = float((pixels < 0.98).any(-1).mean())
    assert ink >= min_ink, (path, ink)
    return pixels


def capture_figures(monkeypatch, module) -> list:
    """Record every Figure that ``module``'s ``save(fig, path)`` writes (the PNG is still written)."""
    figures = []
    real = module.save

    def recording(fig, path):
        figures.append(fig)
        real(fig, path)

    monkeypatch.setattr(module, "save", recording)
    return figures


def legend_labels(ax) -> list[str]:
    """The labels of an axes' legend (empty without one)."""
    legend = ax.get_legend()
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


def texts(ax) -> list[str]:
    """Every free text written on the axes."""
    return [text.get_text() for text in ax.texts]


# --- a figure read as a stranger reads it ----------------------------------------------------------

UNLABELED = ("_nolegend_", "_unlabeled")  # labels that say "no legend entry, by design"


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _is_colorbar(ax) -> bool:
    return ax.get_label() == "<colorbar>" or hasattr(ax, "_colorbar")


def _drawn_texts(fig, renderer) -> list:
    """Every visible, non-empty Text the figure draws: suptitle, figure texts, axes titles, axis labels,
    the tick labels in view, free texts and legend texts."""
    found = list(fig.texts)
    if getattr(fig, "_suptitle", None) is not None:
        found.append(fig._suptitle)
    for legend in fig.legends:
        found += list(legend.get_texts()) + [legend.get_title()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        found += list(ax.texts)
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis._update_ticks():
                found += [label for label, on in ((tick.label1, tick.label1.get_visible()),
                                                  (tick.label2, tick.label2.get_visible())) if on]
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            found += list(legend.get_texts()) + [legend.get_title()]
    unique = {id(t): t for t in found}  # the suptitle is also one of fig.texts
    return [t for t in unique.values() if t.get_visible() and t.get_text().strip()]


def text_overlaps(fig, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose window extents overlap by more than ``tolerance`` pixels both ways, and
    texts that leave the figure (each as (text, 'outside the figure'))."""
    renderer = _renderer(fig)
    drawn = _drawn_texts(fig, renderer)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in drawn]
    width, height = fig.bbox.width, fig.bbox.height
    bad = [(name, "outside the figure") for name, box in boxes
           if box.x0 < -tolerance or box.y0 < -tolerance or box.x1 > width + tolerance
           or box.y1 > height + tolerance]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            dx = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            dy = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if dx > tolerance and dy > tolerance:
                bad.append((a, b))
    return bad


def _legend_entries(fig) -> set:
    """The artists that have an entry in some legend of the figure (handles are matched by label)."""
    labels = set()
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is not None:
            labels |= {text.get_text() for text in legend.get_texts()}
    return labels


def unexplained_artists(fig) -> list[str]:
    """Lines and collections drawn with data that neither have an entry in a legend nor carry a label
    marking them unlabeled by design (:data:`UNLABELED`); artists of an errorbar count as its own, and a
    mesh or image with a colourbar is explained by it."""
    in_legend = _legend_entries(fig)
    missing = []
    for ax in fig.axes:
        if not ax.get_visible() or _is_colorbar(ax):
            continue
        owner = {}
        for container in ax.containers:
            for part in container.get_children():
                owner[id(part)] = container.get_label()
        for artist in [*ax.lines, *ax.collections]:
            if not artist.get_visible():
                continue
            if hasattr(artist, "get_xdata") and len(artist.get_xdata()) == 0:
                continue
            if getattr(artist, "colorbar", None) is not None:  # a colour scale explains it
                continue
            label = owner.get(id(artist), artist.get_label()) or ""
            if label.startswith(UNLABELED) or label in in_legend:
                continue
            missing.append(f"{ax.get_title() or '(untitled axes)'}: {type(artist).__name__} {label!r}")
    return missing


def tight_ylims(fig, margin: float = 0.01) -> list[str]:
    """Axes where the lowest or highest point of a line in view sits on the y limits (within ``margin`` of
    the axes height, in the axis' own scale), hidden under the frame. A line that goes beyond a limit is
    off scale by design."""
    bad = []
    for ax in fig.axes:
        if not ax.get_visible() or _is_colorbar(ax) or ax.get_yscale() not in ("linear", "log"):
            continue
        scale = (lambda v: np.log10(np.where(v > 0, v, np.nan))) if ax.get_yscale() == "log" else (
            lambda v: v)
        low, high = scale(np.array(ax.get_ylim(), dtype=float))
        x_low, x_high = sorted(ax.get_xlim())
        for line in ax.lines:
            transform = line.get_transform()
            if not line.get_visible() or (transform != ax.transData
                                          and transform != ax.get_yaxis_transform()):
                continue
            x = np.asarray(line.get_xdata(), dtype=float)
            y = scale(np.asarray(line.get_ydata(), dtype=float))
            if transform == ax.transData:
                y = y[(x >= x_low) & (x <= x_high)]
            y = y[np.isfinite(y)]
            if not len(y):
                continue
            position = (y - low) / (high - low)
            # the line's extremes inside the frame but on it; a line that goes beyond is off scale
            lowest, highest = float(position.min()), float(position.max())
            if -1e-9 <= lowest < margin or 1 - margin < highest <= 1 + 1e-9:
                bad.append(f"{ax.get_title() or '(untitled axes)'}: {line.get_label()!r} at the y limit")
    return bad


def assert_readable(fig, *, panel_titles: bool = True, margin: float = 0.01) -> None:
    """``fig`` reads on its own: a non-empty suptitle or title; with ``panel_titles``, every axes that
    draws data (not a colourbar) has its own title; every line and collection drawn is in a legend or
    explicitly unlabeled (:data:`UNLABELED`); no data on the y limits; no text overlaps another or leaves
    the figure (window extents from a real renderer)."""
    suptitle = getattr(fig, "_suptitle", None)
    axes = [ax for ax in fig.axes if ax.get_visible() and not _is_colorbar(ax)]
    assert (suptitle is not None and suptitle.get_text().strip()) or any(ax.get_title() for ax in axes), \
        "the figure has no title"
    if panel_titles:
        untitled = [i for i, ax in enumerate(axes) if not ax.get_title().strip()]
        assert not untitled, f"axes {untitled} have no title"
    assert not (missing := unexplained_artists(fig)), missing
    assert not (tight := tight_ylims(fig, margin)), tight
    assert not (overlaps := text_overlaps(fig)), overlaps
