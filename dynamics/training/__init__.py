"""Discrete training: on the flow's time axis (``discrete``), to a target accuracy (``fit``), both through
torch's optimizers (``optimizers``)."""

from .discrete import TrainResult, record_steps, train
from .fit import FitResult, fit
from .optimizers import OPTIMIZERS, make_optimizer

__all__ = ["OPTIMIZERS", "FitResult", "TrainResult", "fit", "make_optimizer", "record_steps", "train"]
