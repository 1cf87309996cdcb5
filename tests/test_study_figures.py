"""The studies' figures, drawn from stored results as the studies store them: the data-over-time
experiments and the geometry table read on their own (tests/figures.assert_readable), say what ran, and
keep SGD's markers beside the flow's rather than on them."""

from __future__ import annotations

import numpy as np
from figures import assert_readable, capture_figures, text_overlaps

import analysis.study.plots as plots
from analysis.stages import escape_rates
from analysis.study.geometry import ROWS, plot
from analysis.study.timeline import base_config


def _experiments() -> dict:
    """Results shaped as ``factrecall study timeline`` stores them, with SGD's times equal to the flow's
    (the case where one set of markers hid the other)."""
    t = np.geomspace(1e-2, 4e3, 40)
    learned = 1 / (1 + np.exp(-(np.log(t) - 5)))
    times = {"t_10": 1000.0, "t_50": 2000.0, "t_90": 4000.0}
    zipf = [{"alpha": a, "flow": {k: v * (1 + a) for k, v in times.items()},
             "sgd": {k: v * (1 + a) for k, v in times.items()}} for a in (0.0, 0.5, 1.0)]
    warm = [{"share": s, "budget_over_t50": m, "flow_recalled": min(1.0, s * m)} for s in (0.5, 1.0)
            for m in (0.8, 1.0)]
    curves = {f"replay {r:g}": (t, 1 - 0.1 * learned * (1 - r), learned) for r in (0.0, 0.3)}
    log_a, log_d, h = np.log(64.0), np.log(8.0), np.log(8.0) - 0.002  # log D and H(A|R) nearly equal
    unseen = (t, log_a + learned, log_a * (1 - learned), learned)
    return {"zipf": {"rows": zipf}, "warmup": {"rows": warm}, "finetune": {"curves": curves},
            "unseen": {"curves": unseen, "summary": {"log_answers": log_a, "log_D": log_d, "H(A|R)": h}}}


def test_data_over_time_figure_reads_on_its_own(tmp_path, monkeypatch):
    drawn = capture_figures(monkeypatch, plots)
    plots.plot_experiments(_experiments(), tmp_path / "data_over_time.png", base_config(True), 1.0)
    (fig,) = drawn
    assert_readable(fig)
    title = fig._suptitle.get_text()
    assert title.startswith("Data over time, gradient flow and SGD lr 1 batch 1024: S=16 R=4 D=8"), title
    zipf = fig.axes[0]
    flow = {x for line in zipf.lines if line.get_label().startswith("flow") for x in line.get_xdata()}
    sgd = {x for line in zipf.lines if line.get_label().startswith("SGD") for x in line.get_xdata()}
    assert flow and sgd and not flow & sgd  # equal times: SGD's markers beside the flow's, not on them
    hollow = [line.get_markerfacecolor() == "none" for line in zipf.lines
              if line.get_label().startswith("SGD")]
    assert hollow and all(hollow)


def test_geometry_table_figure_reads_on_its_own(tmp_path, monkeypatch):
    results = []
    for key in ("gf", "sign", "sgd"):
        for S, R in ((4, 32), (16, 8), (64, 2)):
            sigma_r, sigma_s = escape_rates(S, R, 4)
            results.append({"row": key, "S": S, "R": R, "S/R": S / R, "ratio": sigma_r / sigma_s * 1.1,
                            "theory_ratio": sigma_r / sigma_s})
    drawn = capture_figures(monkeypatch, plots)
    plot(results, tmp_path / "ratio.png")
    (fig,) = drawn
    assert_readable(fig)
    assert "random S×R tables (4×32, 16×8, 64×2), D=4 N=4 T=8" in fig._suptitle.get_text()
    assert "T_R, T_S: when the relation-only and the subject-only loss cross" in fig.axes[0].get_title()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith(ROWS["gf"].name + ": slope")


def test_scale_study_figure_reads_on_its_own(tmp_path, monkeypatch):
    """scale.png (from the shipped results): what ran in the title, and the plateau end (hollow) and the
    subject escape, which coincide, both visible."""
    import analysis.study.scale as scale

    drawn = capture_figures(monkeypatch, scale)
    scale.plot_study(scale.shipped_study(), tmp_path / "scale.png")
    (fig,) = drawn
    assert_readable(fig)
    assert "reduced model, linear attention" in fig._suptitle.get_text()
    (end,) = [line for line in fig.axes[0].lines if line.get_label() == "plateau end (detected)"]
    assert end.get_markerfacecolor() == "none"


def test_scale_figure_of_the_quick_study_has_no_overlapping_tick_labels(tmp_path, monkeypatch):
    """The quick study spans one to two decades of facts: matplotlib's default labels its minor ticks
    (3×10², 4×10²), which ran into each other."""
    import analysis.study.scale as scale

    series = {name: [list(size) for size in sizes] for name, sizes in scale.QUICK_SERIES.items()}
    sizes = {tuple(size) for sizes in series.values() for size in sizes}
    rows = [{"S": s, "R": r, "facts": s * r, "t_relation": 10 + s * r / 50, "t_subject": 20 + s * r / 10,
             "plateau_end": 20 + s * r / 10, "theory_t_R": 9 + s * r / 50, "theory_t_S": 19 + s * r / 10}
            for s, r in sorted(sizes)]
    result = {"series": series, "rows": rows,
              "fits": {name: {"plateau_end": {"exponent": 0.3}} for name in series}}
    drawn = capture_figures(monkeypatch, scale)
    scale.plot_study(result, tmp_path / "scale.png")
    (fig,) = drawn
    assert not text_overlaps(fig)
