"""What a run says about itself: :class:`RunInfo`, saved as ``summary.json`` beside the trajectory.

One dataclass for every run of the engine (a flow, a discrete training): its status in the engine's one
vocabulary (:class:`~dynamics.solvers.results.Status`), when it stopped, what it cost, how it was integrated
or trained, and the library versions that produced it.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .solvers.results import Cost, Status


@dataclass
class FlowInfo:
    """How a flow was integrated: the method asked for, what a strategy chose and the cost of each of
    its parts, the Jacobian products, and (GD's modified flow) the learning rate η; ``batch_size`` > 1 when
    the flow was one member of a batch integrated together."""

    method: str
    jacobian: str = "difference"
    method_used: str = "set by flow.method"
    method_split: dict[str, Cost] = field(default_factory=dict)
    modified_lr: float = 0.0
    batch_size: int = 1


@dataclass
class TrainInfo:
    """How a discrete run was trained: optimizer, learning rate, the step at which it stopped (when it
    failed) and, for full-batch GD, the first step whose loss rose (where GD left the flow)."""

    optimizer: str
    lr: float
    status_step: int | None = None
    first_loss_increase_step: int | None = None


@dataclass
class RunInfo:
    """The record of one run (``summary.json``). ``kind`` is ``flow`` or ``train``; exactly the matching
    one of ``flow``/``train`` is set."""

    kind: str
    status: Status
    status_time: float | None
    message: str
    final_loss: float
    num_params: int
    cost: Cost
    flow: FlowInfo | None = None
    train: TrainInfo | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # The data schedule the run trained (dynamics.schedule): one dict per phase, start/end (None: the run's
    # end), the subjects trained and replayed, the Zipf exponents; and, for a run started from another run's
    # final state, how many subjects that run had (its subjects keep their indices).
    phases: list[dict[str, Any]] = field(default_factory=list)
    old_subjects: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the run reached its end."""
        return self.status == Status.OK

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``summary.json`` holds)."""
        payload = asdict(self)
        payload["status"] = self.status.value
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RunInfo:
        """Read back what :meth:`to_dict` wrote."""
        values = {f.name: payload[f.name] for f in fields(cls) if f.name in payload}
        values["status"] = Status(payload["status"])
        values["cost"] = Cost.from_dict(payload["cost"])
        if payload.get("flow") is not None:
            flow = dict(payload["flow"])
            flow["method_split"] = {k: Cost.from_dict(v) for k, v in flow.get("method_split", {}).items()}
            values["flow"] = FlowInfo(**flow)
        if payload.get("train") is not None:
            values["train"] = TrainInfo(**payload["train"])
        if values.get("final_loss") is None:
            values["final_loss"] = float("nan")
        return cls(**values)


def versions() -> dict[str, str]:
    """Library versions recorded with every result."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np
    import torch

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    # torchdiffeq's version from its metadata: importing it (and the scipy.integrate it imports) would cost a
    # run that never uses it, an implicit one, most of a second
    return {"factrecall": installed("factrecall"), "python": platform.python_version(),
            "torch": torch.__version__, "torchdiffeq": installed("torchdiffeq"), "numpy": np.__version__}
