"""The bench's scale section on a small table: every method reaches the target accuracy against the tight
reference, the table and the figure are written; bad --sizes is a one-line error."""

from __future__ import annotations

import subprocess
import sys

from figures import assert_png, assert_readable, capture_figures

from analysis.bench import bench_scale, format_scale_table, format_table, plot_scale


def test_scale_section_on_a_small_table(tmp_path):
    rows = bench_scale(((6, 2),), methods=("dopri5", "cvode", "cvode+hvp", "auto"))
    (row,) = rows
    assert row["facts"] == 12 and row["reference"] == "dopri5 rtol 1e-10"
    for name, result in row["methods"].items():
        assert result["met_target"], (name, result)
        assert result["deviation"] <= 1e-4 and result["status"] == "ok"
        assert result["final_loss"] < 0.02  # both stages passed: t_max is 2.5 × the subject escape
    assert row["methods"]["cvode+hvp"]["hvp_evals"] > 0 and row["methods"]["cvode"]["hvp_evals"] == 0
    auto = row["methods"]["auto"]  # where auto spent its evaluations adds up to what it reports
    assert sum(part["function_evals"] for part in auto["method_split"].values()) == auto["function_evals"]
    assert "method_split" not in row["methods"]["dopri5"]
    assert row["best"] in ("cvode", "cvode+hvp", "auto") and row["time_ratio"] > 0
    table = format_scale_table(rows)
    assert table.count("| 12 | 6 × 2 |") == 4
    assert_png(plot_scale(rows, tmp_path / "scale.png"))


def _method(met: bool, evaluations: int, seconds: float) -> dict:
    return {"met_target": met, "evaluations": evaluations, "wall_seconds": seconds}


def test_the_scale_figure_shows_every_method_at_every_size(tmp_path, monkeypatch):
    """bench.png: equal costs stay visible (methods side by side), a method's marker in the legend (no
    line for a dot), a cross where a target was missed and named in the legend, and it reads on its own."""
    import analysis.bench.plots as plots

    rows = [{"facts": f, "S": f // 8, "R": 8, "reference": "dopri5 rtol 1e-10",
             "methods": {"dopri5": _method(True, 40 * f, 0.1 * f), "cvode": _method(True, 3 * f, 0.02 * f),
                         "cvode+hvp": _method(f < 500, 3 * f, 0.02 * f), "auto": _method(True, 5 * f, 0.03)}}
            for f in (96, 512)]
    drawn = capture_figures(monkeypatch, plots)
    plots.plot_scale(rows, tmp_path / "bench.png")
    (fig,) = drawn
    assert_readable(fig)
    assert "S×R tables (12×8, 64×8)" in fig._suptitle.get_text()
    left = fig.axes[0]
    at = {}  # (x, y) of every marker drawn
    for line in left.lines:
        if line.get_linestyle() == "None":
            at.setdefault((float(line.get_xdata()[0]), float(line.get_ydata()[0])), []).append(line)
    assert all(len(lines) == 1 for lines in at.values())  # cvode and cvode+hvp cost the same: side by side
    assert len(at) == 8
    legend = fig.axes[1].get_legend()
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == ["dopri5", "cvode", "cvode+hvp", "auto", "target missed at its finest tolerance"]
    assert all(handle.get_linestyle() == "None" for handle in legend.legend_handles)
    assert any(line.get_marker() == "x" for line in left.lines)


def test_quick_bench_does_not_judge_full_size_targets(monkeypatch, capsys):
    """--quick measures smaller workloads than the targets are set for: their rows say so (never "no"),
    while a section that runs its full workload at --quick is still checked; a bar counts the sections."""
    import analysis.bench.suite as suite

    end = {"case": "figure5", "cpu_median": 2.5, "wall_median": 2.6, "over_torch": 1.8}
    monkeypatch.setattr(suite, "bench_end_to_end", lambda repeats: {
        "rows": [end], "repeats": repeats, "target_cpu_seconds": 3.0, "met": True})
    monkeypatch.setattr(suite, "bench_batched_sweep", lambda points: {
        "points": points, "one_by_one_seconds": 2.0, "batched_seconds": 1.0, "ratio": 2.0, "met": False})
    results = suite.run_bench(quick=True, only=("end_to_end", "batched_sweep"))
    out, err = capsys.readouterr()
    assert "| 2.0× | ≥ 4× | not checked at --quick size |" in out and "| no |" not in out
    assert "| **2.50 s** (1.80× `import torch`) | ≤ 3 s | yes |" in out
    assert results["batched_sweep"]["met"] is None
    assert "bench: end_to_end ..." in err and "/2 [" in err  # the sections' bar: k/N [elapsed<left

def test_bad_sizes_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "analysis.cli", "bench", "--sizes", "64by8"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "factrecall: error: --sizes='64by8': must be a comma-separated list of SxR, e.g. 64x8"]


def test_only_help_names_every_section():
    from analysis.bench.suite import SECTIONS
    from analysis.cli import build_parser

    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    (only,) = [action for action in bench._actions if action.dest == "only"]
    assert f"({', '.join(SECTIONS)}; default: all)" in only.help


def test_bad_only_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "analysis.cli", "bench", "--only", "large,speed"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "factrecall: error: --only='large,speed': unknown section speed; allowed: end_to_end, sgd_vs_flow, "
        "gd_evals, long_horizon, batched_sweep, record, gradient, large, scale, newton"]


def test_record_section_compares_the_record_in_memory_and_on_disk(monkeypatch):
    """The record section runs one flow per way in a fresh process each, the record in memory (SPOOL_BYTES
    beyond any record) and on disk (0 at --quick), and checks the two save the same arrays."""
    from analysis.bench import record

    monkeypatch.setattr(record, "QUICK", {**record.QUICK, "task.subjects": 4, "task.relations": 3,
                                          "task.noise_tokens": 4, "flow.t_max": 2.0})
    result = record.bench_record(quick=True)
    assert result["same_arrays"] and result["facts"] == 12
    assert {"peak_above_imports", "seconds"} <= set(result["in_memory"]) == set(result["on_disk"])
    row = format_table({"record": result}).splitlines()[-1]
    assert row.startswith("| per-fact record at 12 facts × 256 points, peak above imports in memory ")


def test_large_section_runs_simulate_end_to_end_in_a_fresh_process(monkeypatch):
    """The large section's row comes from a real `factrecall simulate` (summary.json, stages.json) and the
    child's own peak memory; --huge adds 10^6 facts to it."""
    from analysis.bench import HUGE_SIZES, LARGE_SIZES, format_large_rows, suite
    from analysis.bench import bench_large as large
    from analysis.bench.suite import format_table
    from analysis.cli import build_parser

    (row,) = large(((12, 4),))
    assert row["facts"] == 48 and row["status"] == "ok" and row["final_loss"] < 0.02
    assert "> hallucination > recall" in row["stages"], row["stages"]
    assert row["function_evals"] > 100 and 0 < row["flow_seconds"] < row["seconds"]
    assert 0.1 < row["peak_gb"] < 2.0  # the child's own peak (torch alone is ~0.3 GB), not this process's
    assert row["overrides"]["flow.method"] == "cvode" and row["met"] is None
    assert "| 48 facts (12 × 4," in format_large_rows([row])[0]

    assert build_parser().parse_args(["bench", "--huge"]).huge
    asked = []
    monkeypatch.setattr(suite, "bench_large", lambda sizes, log: asked.append(sizes) or [])
    # every other section stubbed, whatever sections the suite grows (a real one here ran for minutes)
    others = [name for name in dir(suite) if name.startswith("bench_") and name != "bench_large"]
    assert {"bench_end_to_end", "bench_scale", "bench_newton", "bench_record"} <= set(others)
    for name in others:
        monkeypatch.setattr(suite, name, lambda *a, **k: {})
    monkeypatch.setattr(suite, "format_table", lambda results: "")
    suite.run_bench(huge=True)
    suite.run_bench()
    assert asked == [LARGE_SIZES + HUGE_SIZES, LARGE_SIZES]
    assert [s * r for s, r in LARGE_SIZES + HUGE_SIZES] == [10**4, 10**5, 10**6]
    # --only runs the named sections alone, and the table shows what ran
    ran = []
    monkeypatch.setattr(suite, "bench_gradient", lambda *a, **k: ran.append("gradient") or [])
    monkeypatch.setattr(suite, "format_table", format_table)
    results = suite.run_bench(huge=True, only=("large", "gradient"))
    assert ran == ["gradient"] and asked[-1] == LARGE_SIZES + HUGE_SIZES
    assert set(results) == {"quick", "cpu_count", "large", "gradient"}
    assert format_table(results).splitlines() == ["| measure | value | target | met |", "|---|---|---|---|"]


def test_large_runs_are_the_targets_command():
    """Every large row records the default 256 points (the record is on disk, not in memory) with the
    curvature blocks as cvode's Newton preconditioner (J·v by differences), against the 10^5 and 10^6
    targets."""
    from analysis.bench.scale import LARGE_TARGETS, large_overrides

    for size in ((2000, 50), (10_000, 100)):
        overrides = large_overrides(*size)
        assert overrides["flow.points"] == 256
        blocks = (overrides["flow.newton_preconditioner"], overrides["flow.jacobian"])
        assert blocks == ("blocks", "difference")
    assert LARGE_TARGETS == {10**5: (60.0, 2.0), 10**6: (900.0, 4.0)}


def test_bench_evaluation_counts_are_the_documented_ones():
    """The deterministic counts of docs/performance.md's bench table: the figure5 flow takes 596
    evaluations to t = 819.2, 596 to t = 10^3 and 716 to t = 10^6 (dopri5 at rtol 1e-6)."""
    from analysis.bench.suite import bench_long_horizon
    from dynamics import resolve_config, run_flow

    assert run_flow(resolve_config("figure5")).info.cost.function_evals == 596
    horizon = bench_long_horizon()
    assert (horizon["evals_1e3"], horizon["evals_1e6"]) == (596, 716)
    assert horizon["ratio"] == 716 / 596 and horizon["met"] and horizon["status_1e6"] == "ok"
