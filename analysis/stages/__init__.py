"""Stages of a run (docs/design.md §5): detection of the aggregate plateaus and of every fact's state
(``detect``), the linearised theory's predicted escape times beside the measured ones (``theory``), the
analysis of a run directory into ``stages.json``, ``stages.npz`` and its figures (``report``), the figures
themselves (``plots``) and the ``factrecall stages`` command (``command``). Everything reads
``Trajectory`` records only."""

from .detect import (
    INTERMEDIATE,
    STAGE_LEVELS,
    DetectorSettings,
    FactStages,
    Stage,
    StageReport,
    crossing_time,
    crossing_times,
    detect_fact_stages,
    detect_stages,
    fact_states,
    relation_threshold,
    running_median,
    subject_blocks,
)
from .plots import (
    fact_order,
    plot_fact_fractions,
    plot_fact_heatmap,
    plot_losses,
    plot_stage_losses,
    predicted_times,
)
from .report import analyse_run_directory, analyse_trajectory, format_stage_table, load_run, run_directories
from .theory import (
    MAX_INIT_SCALE,
    compare_times,
    escape_rates,
    marginal_signal,
    measured_times,
    midpoint_crossing,
    relation_first,
    theory_applies,
    theory_for,
)

__all__ = ["INTERMEDIATE", "MAX_INIT_SCALE", "STAGE_LEVELS", "DetectorSettings", "FactStages", "Stage",
           "StageReport", "analyse_run_directory", "analyse_trajectory", "compare_times", "crossing_time",
           "crossing_times",
           "detect_fact_stages", "detect_stages", "escape_rates", "fact_order", "fact_states",
           "format_stage_table", "load_run", "marginal_signal", "measured_times", "midpoint_crossing",
           "plot_fact_fractions", "plot_fact_heatmap", "plot_losses", "plot_stage_losses", "predicted_times",
           "relation_first", "relation_threshold", "run_directories", "running_median", "subject_blocks",
           "theory_applies", "theory_for"]
