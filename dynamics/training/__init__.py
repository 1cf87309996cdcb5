"""Discrete training: on the flow's time axis (``discrete``) and to a target accuracy (``fit``), both through
the one optimizer path of :mod:`dynamics.optimizers` (torch's optimizers)."""

from ..optimizers import OPTIMIZERS, TRAIN_OPTIMIZERS, Stepper
from .discrete import TrainResult, record_steps, train
from .fit import FitResult, fit

__all__ = ["OPTIMIZERS", "TRAIN_OPTIMIZERS", "FitResult", "Stepper", "TrainResult", "fit", "record_steps",
           "train"]
