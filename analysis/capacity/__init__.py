"""Capacity experiments (the paper's Figures 1 and 4): how many associations or facts a model of a given
size stores at accuracy ≥ 0.99. The search by bisection and the power-law fit (``search``), one training
trial per model (``trials``), the grids of each KIND (``grids``), the ``factrecall capacity`` command that
runs a grid into ``trials.csv``, ``summary.json`` and the figures (``command``), and the figures
(``plots``)."""

from .command import COLUMNS, run_capacity, summarise
from .grids import KINDS, Experiment, Point, build_experiment
from .plots import plot_capacity, plot_tradeoff, reference_curve
from .search import (
    Bisection,
    TrialRecord,
    bisect_largest,
    guarded,
    min_sufficient_attention,
)
from .trials import TrialSettings, fact_task, linear_trial, mlp_trial, transformer_trial

__all__ = ["COLUMNS", "KINDS", "Bisection", "Experiment", "Point", "TrialRecord", "TrialSettings",
           "bisect_largest", "build_experiment", "fact_task", "guarded", "linear_trial",
           "min_sufficient_attention", "mlp_trial", "plot_capacity", "plot_tradeoff",
           "reference_curve", "run_capacity", "summarise", "transformer_trial"]
