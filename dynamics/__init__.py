"""factrecall's engine: task, models, losses, gradient flow, discrete training, trajectories, configs.

Typical use::

    from dynamics import resolve_config, run_flow
    traj = run_flow(resolve_config("figure5"))
"""

from .config import PRESETS, Config, ConfigError, resolve_config
from .flow import (
    FlowResult,
    gradient_field,
    gradient_field_jacobian,
    gradient_field_jacobian_vector,
    integrate_flow,
    log_time_grid,
)
from .models import EmbeddedModel, Model, ReducedModel, build_model
from .objective import make_objective
from .run import run_flow, run_flow_batch, run_training
from .task import FactTask
from .train import TrainResult, train
from .trajectory import Trajectory

__all__ = ["PRESETS", "Config", "ConfigError", "EmbeddedModel", "FactTask", "FlowResult", "Model",
           "ReducedModel", "TrainResult", "Trajectory", "build_model", "gradient_field",
           "gradient_field_jacobian", "gradient_field_jacobian_vector", "integrate_flow", "log_time_grid",
           "make_objective", "resolve_config", "run_flow", "run_flow_batch", "run_training", "train"]
