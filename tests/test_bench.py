"""The bench's scale section on a small table: every method reaches the target accuracy against the tight
reference, the table and the figure are written; bad --sizes is a one-line error."""

from __future__ import annotations

import subprocess
import sys

from analysis.bench import bench_scale, format_scale_table, plot_scale


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
    assert plot_scale(rows, tmp_path / "scale.png").stat().st_size > 10_000


def test_bad_sizes_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "analysis.cli", "bench", "--sizes", "64by8"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "factrecall: error: --sizes='64by8': must be a comma-separated list of SxR, e.g. 64x8"]
