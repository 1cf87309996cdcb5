"""``factrecall bench``: the simulator's performance targets measured side by side in one process — the
suite of sections against their targets (``suite``), the scale section (each flow method's cost to the
same accuracy as the fact table grows, ``scale``), and the command (``command``)."""

from .plots import plot_scale
from .scale import (
    DEFAULT_SIZES,
    HUGE_SIZES,
    LARGE_SIZES,
    VARIANTS,
    bench_large,
    bench_scale,
    cost_to_accuracy,
    format_large_rows,
    format_scale_table,
    reference_flow,
    scale_config,
)
from .suite import (
    bench_batched_sweep,
    bench_end_to_end,
    bench_gd_evals,
    bench_long_horizon,
    bench_sgd_vs_flow,
    format_table,
    max_deviation_from_flow,
    run_bench,
)

__all__ = ["DEFAULT_SIZES", "HUGE_SIZES", "LARGE_SIZES", "VARIANTS", "bench_batched_sweep",
           "bench_end_to_end", "bench_gd_evals", "bench_large", "bench_long_horizon", "bench_scale",
           "bench_sgd_vs_flow", "cost_to_accuracy", "format_large_rows", "format_scale_table",
           "format_table", "max_deviation_from_flow", "plot_scale", "reference_flow", "run_bench",
           "scale_config"]
