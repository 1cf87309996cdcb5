"""Discrete training: on the flow's time axis (``discrete``) and to a target accuracy (``fit``), both through
the one optimizer path of :mod:`dynamics.optimizers` (torch's optimizers, one registry of names)."""

from ..optimizers import OPTIMIZERS, Stepper
from .discrete import TrainResult, record_steps, train
from .fit import FitResult, fit

__all__ = ["OPTIMIZERS", "FitResult", "Stepper", "TrainResult", "fit", "record_steps", "train"]
