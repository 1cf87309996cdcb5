"""Figures of the studies drawn from their stored results: the data-over-time experiments
(``data_over_time.png``) and the geometry table's T_S/T_R against S/R (``ratio.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..plotting import TIME_LABEL, figure, label_levels, log_time_axis, save, setting_line, task_line

SGD_SHIFT = 0.035  # SGD's markers this far right of the flow's α: equal times would hide one under the other


def plot_experiments(results: dict[str, Any], path: Path, config: Any = None, sgd_lr: float | None = None
                     ) -> None:
    """Four panels, each titled: the Zipf learning times (flow filled, SGD hollow beside it), the warm-up's
    facts known, old and new facts while fine-tuning, and the held-out subjects' loss with the reference
    levels named in the margin. ``config``: the experiments' base config, named in the suptitle with SGD's
    ``sgd_lr`` and batch size when SGD ran."""
    fig = figure(17.0, 5.2)
    zipf_ax, warm_ax, fine_ax, unseen_ax = fig.subplots(1, 4)
    rows = results["zipf"]["rows"]
    alphas = np.array([r["alpha"] for r in rows], dtype=float)
    has_sgd = bool(rows) and "sgd" in rows[0]
    for key, marker, color in (("t_10", "o", "C0"), ("t_50", "^", "C1"), ("t_90", "v", "C2")):
        zipf_ax.plot(alphas, [r["flow"][key] for r in rows], "-", marker=marker, color=color,
                     label=f"flow {key}")
        if has_sgd:
            zipf_ax.plot(alphas + SGD_SHIFT, [r["sgd"][key] for r in rows], "--", marker=marker, mfc="none",
                         color=color, label=f"SGD {key}")
    zipf_ax.set_yscale("log")
    zipf_ax.set_xlabel("training Zipf exponent α" + (" (SGD drawn just right of it)" if has_sgd else ""))
    zipf_ax.set_ylabel("flow time t")
    zipf_ax.set_title("Zipf-distributed subjects: when 10, 50, 90%\nof the facts are known", fontsize=9)
    zipf_ax.legend(fontsize=7.5, ncol=2 if has_sgd else 1, loc="upper left")
    warm = results["warmup"]["rows"]
    multiples = sorted({r["budget_over_t50"] for r in warm})
    shares = sorted({r["share"] for r in warm})
    width = 0.8 / max(len(shares), 1)
    for k, share in enumerate(shares):
        values = [next(r["flow_recalled"] for r in warm if r["share"] == share and r["budget_over_t50"] == m)
                  for m in multiples]
        label = "no warm-up" if share == 1 else f"warm-up on {share:g} of the subjects"
        warm_ax.bar(np.arange(len(multiples)) + (k - (len(shares) - 1) / 2) * width, values, width,
                    label=label)
    warm_ax.set_xticks(np.arange(len(multiples)), [f"{m:g}" for m in multiples])
    warm_ax.set_ylim(0, 1.25)  # room for the legend above the bars
    warm_ax.set_xlabel("total time / t_50 without warm-up")
    warm_ax.set_ylabel("share of the facts known at the end (flow)")
    warm_ax.set_title("A warm-up on a share of the subjects,\nthen all: facts known at equal time",
                      fontsize=9)
    warm_ax.legend(fontsize=7.5, loc="upper left")
    for index, (name, (t, old, new)) in enumerate(results["finetune"]["curves"].items()):
        shown = t > 0
        fine_ax.plot(t[shown], old[shown], color=f"C{index}", label=name)
        fine_ax.plot(t[shown], new[shown], color=f"C{index}", ls=":",
                     label="_unlabeled: dotted, the new facts of the solid line's run (title)")
    log_time_axis(fine_ax)
    fine_ax.set_ylim(-0.04, 1.04)
    fine_ax.set_xlabel("t since the new subjects came")
    fine_ax.set_ylabel("share of the facts known")
    fine_ax.set_title("Fine-tuning on new subjects: old facts kept\n(solid), new facts learned (dotted)",
                      fontsize=9)
    fine_ax.legend(fontsize=7.5, loc="center left", title="old subjects replayed", title_fontsize=7.5)
    t, unseen, trained, _ = results["unseen"]["curves"]
    shown = t > 0
    unseen_ax.plot(t[shown], unseen[shown], color="C3", label="held-out subjects")
    unseen_ax.plot(t[shown], trained[shown], color="C0", label="trained subjects")
    summary = results["unseen"]["summary"]
    top = max(float(np.nanmax(unseen[shown])), float(np.nanmax(trained[shown])), summary["log_answers"])
    unseen_ax.set_ylim(-0.04 * top, 1.08 * top)
    label_levels(unseen_ax, {"log|A|": summary["log_answers"], "log D": summary["log_D"],
                             "H(A|R)": summary["H(A|R)"]})
    log_time_axis(unseen_ax)
    unseen_ax.set_xlabel(TIME_LABEL.split(" (")[0])
    unseen_ax.set_ylabel("mean loss (nats)")
    unseen_ax.set_title("Subjects held out of training:\ntheir loss beside the trained ones'", fontsize=9)
    unseen_ax.legend(fontsize=7.5, loc="lower left")
    what = "Data over time, gradient flow" + (f" and SGD lr {sgd_lr:g}" if has_sgd and sgd_lr else "")
    if config is not None:
        batch = f" batch {config.train.batch_size}" if has_sgd else ""
        fig.suptitle(f"{what}{batch}: {task_line(config)}\n{setting_line(config)}", fontsize=10)
    else:
        fig.suptitle(what, fontsize=10)
    save(fig, path)


def plot_geometry_table(results: list[dict], path: Path, rows: dict[str, Any],
                        slopes: dict[str, float | None], title: str = "",
                        times: str = "T_R, T_S: when the relation-only and the subject-only loss cross "
                                     "halfway down") -> None:
    """T_S/T_R against S/R, log–log, one line per row of the table (``rows``: key -> its Row, whose
    ``name`` and ``optimizer`` say what ran; ``slopes``: key -> log–log slope), with the linearised GF
    theory σ_r/σ_s dotted and the line T_S = T_R. ``title``: the task the table ran on; ``times``: what
    T_R and T_S are."""
    fig = figure(7.6, 5.6)
    ax = fig.subplots()
    for key in dict.fromkeys(r["row"] for r in results):
        mine = [r for r in results if r["row"] == key and np.isfinite(r["ratio"])]
        k = slopes.get(key)
        flow = rows[key].optimizer is None
        if mine:
            ax.plot([r["S/R"] for r in mine], [r["ratio"] for r in mine], ls="-" if flow else "--",
                    marker="o" if flow else "s", mfc=None if flow else "none",
                    label=rows[key].name + (f": slope {k:.2f}" if k is not None else ""))
    theory = sorted({(r["S/R"], r["theory_ratio"]) for r in results})
    if theory:
        ax.plot(*zip(*theory, strict=True), color="0.4", ls=":", lw=2, label="σ_r/σ_s (linearised GF theory)")
    ax.axhline(1.0, color="0.7", lw=0.8, label="T_S = T_R: both learned at once")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.margins(y=0.08)
    ax.set_xlabel("S/R (subjects per relation)")
    ax.set_ylabel("T_S / T_R")
    ax.set_title(f"{times};\nabove 1 the relations are learned first (flows solid, optimizers dashed)",
                 fontsize=8.5)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3, which="both")
    fig.suptitle("Learning-time ratio by geometry and optimizer" + (f":\n{title}" if title else ""),
                 fontsize=9.5)
    save(fig, path)
