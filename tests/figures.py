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
