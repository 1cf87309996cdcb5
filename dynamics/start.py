"""Where a run starts: the initialisation of ``init.*``, or the final state of another run (fine-tuning).

A run started from ``init.from_run = DIR`` takes the final state of DIR's flow. Its task may add subjects
after DIR's (new facts): DIR's tokens keep their parameters, the new subjects' tokens are initialised as
``init.*`` says, and everything else of the task and the model must be DIR's, so that every old fact means
what it meant (docs/design.md §7.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .errors import ConfigError
from .models import Model
from .rundir import RECORD_FILE, RUN_HINT, flow_record_dir, read_config, read_record
from .rundir import one_line as _one_line  # noqa: F401  (the start's refusals are the owner's lines)
from .task import FactTask

STATE_KEY = "final_state"


@dataclass
class Start:
    """θ(0) of a run, and the number of subjects of the run it was taken from (None: a fresh start)."""

    theta0: torch.Tensor
    old_subjects: int | None = None


def starting_state(config: Config, model: Model) -> Start:
    """θ(0) for ``config`` on ``model``: ``model.initial_parameters(config.init)``, or, with
    ``init.from_run``, that run's final flow state carried over to this task (:meth:`Model.grown_state`).
    The run is read and checked first: a damaged ``trajectory.npz``, a final state that is not a vector
    of finite floats, or a ``config.json`` that is not the one the run was made with is a one-line
    :class:`ConfigError`."""
    if not config.init.from_run:
        return Start(model.initial_parameters(config.init))
    directory = flow_record_dir(config.init.from_run)
    old, tree = read_config(directory, f"init.from_run={str(directory)!r}")
    source = _source_run(directory, old, tree)
    return continued_start(config, model, old, source, str(directory))


def continued_start(config: Config, model: Model, old: Config, state: np.ndarray, source: str = "the old run"
                    ) -> Start:
    """The start of ``config`` from ``state``, the final state of a run of config ``old`` (on ``model``, the
    model of ``config``): old tokens keep their parameters, subjects added take ``init.*``'s. Refuses a
    task or model that is not the old one with subjects added."""
    _check_compatible(config, old)
    if config.task.subjects == old.task.subjects:  # no new token: init.* initialises nothing
        for key in ("kind", "scale", "seed", "alpha", "beta"):
            if getattr(config.init, key) != getattr(old.init, key):
                raise ConfigError(f"init.{key}={getattr(config.init, key)!r}: has no effect: a run started "
                                  f"from init.from_run initialises only the subjects it adds, and "
                                  f"task.subjects={config.task.subjects} adds none; allowed: the old run's "
                                  f"init.{key}={getattr(old.init, key)!r}, or more task.subjects")
    old_task = FactTask(old.task)
    if not np.array_equal(model.task.facts[:old_task.S], old_task.facts):
        raise ConfigError(f"init.from_run={source!r}: the old subjects' facts differ in this task "
                          f"(task.facts={config.task.facts!r}); allowed: task.facts=random, whose table "
                          "keeps the old subjects' rows when subjects are added")
    theta0 = model.initial_parameters(config.init)
    theta = model.grown_state(torch.as_tensor(state, device=theta0.device), old_task, theta0)
    return Start(theta, old_task.S)


def source_config(config: Config) -> Config | None:
    """The config of the run ``init.from_run`` names, or None for a fresh start or a source that cannot be
    read (:func:`starting_state` then says why)."""
    if not config.init.from_run:
        return None
    try:
        return read_config(flow_record_dir(config.init.from_run))[0]
    except ConfigError:
        return None


def _source_run(directory: Path, old: Config, tree: dict[str, Any]) -> np.ndarray:
    """The final state of the run in ``directory``, after the owner of the run directory has checked its
    ``trajectory.npz`` against ``old`` (read from ``tree``): a vector of finite floats."""
    where = f"init.from_run={str(directory)!r}"
    arrays = read_record(directory, old, tree, keys=(STATE_KEY,), where=where)
    if STATE_KEY not in arrays:
        raise ConfigError(f"{where}: its {RECORD_FILE} holds no final state (written before runs kept it, or "
                          "by a discrete run); rerun it")
    state = arrays[STATE_KEY]
    if state.ndim != 1 or state.dtype.kind != "f" or not np.isfinite(state).all():
        raise ConfigError(f"{where}: its final state is not a vector of finite floats (dtype {state.dtype}, "
                          f"shape {state.shape}); {RUN_HINT}")
    return state


def _check_compatible(config: Config, old: Config) -> None:
    """Everything but the number of subjects (and the task's seed-free settings) must be the old run's."""
    new_task, old_task = config.task, old.task
    for key in ("relations", "answers_per_relation", "noise_tokens", "seq_len", "facts", "seed"):
        if getattr(new_task, key) != getattr(old_task, key):
            raise ConfigError(f"task.{key}={getattr(new_task, key)!r}: a run started from init.from_run "
                              f"keeps the old run's task.{key}={getattr(old_task, key)!r}")
    if new_task.subjects < old_task.subjects:
        raise ConfigError(f"task.subjects={new_task.subjects}: must be >= the old run's "
                          f"{old_task.subjects} (subjects can be added, not removed)")
    for key in ("kind", "attention", "dim", "embeddings", "seed"):
        if getattr(config.model, key) != getattr(old.model, key):
            raise ConfigError(f"model.{key}={getattr(config.model, key)!r}: a run started from "
                              f"init.from_run keeps the old run's model.{key}={getattr(old.model, key)!r}")
