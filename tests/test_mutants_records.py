"""What a run says about itself: RunInfo read back from its dict as it was written (a flow's method split,
a discrete run's training, an older summary without a split, a loss saved as null), the library versions
recorded, and Cost's sums and dict. Written for the survivors of a mutation sample of dynamics/records.py
and dynamics/solvers/results.py (docs/testing.md)."""

from __future__ import annotations

import json
import math
import platform

import numpy as np
import torch

from dynamics.records import FlowInfo, RunInfo, TrainInfo, versions
from dynamics.solvers.results import Cost, FlowResult, Status, join


def flow_info() -> RunInfo:
    split = {"dopri5": Cost(function_evals=60, accepted_steps=9),
             "cvode": Cost(hvp_evals=4, rejected_steps=None)}
    return RunInfo("flow", Status.OK, None, "", 0.25, 40, Cost(function_evals=64, rejected_steps=None),
                   flow=FlowInfo("auto", "hvp", "dopri5, then cvode", split, 0.0, 1),
                   versions={"python": "3"}, phases=[{"start": 0.0, "end": None}], old_subjects=4)


def test_a_flow_record_reads_back_as_it_was_written_through_json():
    info = flow_info()
    assert RunInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_a_training_record_reads_back_as_it_was_written():
    info = RunInfo("train", Status.NONFINITE, 12.0, "loss nan", 1.5, 40, Cost(function_evals=12),
                   train=TrainInfo("gd", 0.5, status_step=12, first_loss_increase_step=3))
    assert json.loads(json.dumps(info.to_dict()))["status"] == "nonfinite"
    assert RunInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_an_older_flow_record_without_a_method_split_and_a_null_loss_reads_back():
    payload = flow_info().to_dict()
    del payload["flow"]["method_split"]
    payload["final_loss"] = None  # a non-finite loss is saved as null
    info = RunInfo.from_dict(payload)
    assert info.flow.method_split == {} and info.flow.method == "auto"
    assert math.isnan(info.final_loss)
    assert info.cost == Cost(function_evals=64, rejected_steps=None)


def test_the_versions_recorded_are_the_libraries_that_made_the_numbers():
    recorded = versions()
    assert set(recorded) == {"factrecall", "python", "torch", "torchdiffeq", "numpy"}
    assert recorded["python"] == platform.python_version()
    assert (recorded["torch"], recorded["numpy"]) == (torch.__version__, np.__version__)


def test_costs_add_field_by_field_and_an_unknown_count_stays_unknown():
    total = Cost(function_evals=3, rejected_steps=2, wall_seconds=1.0) + Cost(hvp_evals=5,
                                                                               rejected_steps=None)
    assert total == Cost(function_evals=3, hvp_evals=5, rejected_steps=None, wall_seconds=1.0)
    assert Cost(accepted_steps=2).to_dict()["accepted_steps"] == 2


def test_joined_pieces_are_one_flow_with_every_piece_cost_and_the_extra():
    first = FlowResult(np.array([0.0, 1.0]), torch.zeros(2, 3), Status.OK, None, "", Cost(function_evals=2))
    second = FlowResult(np.array([1.0, 2.0, 3.0]), torch.ones(3, 3), Status.OK, None, "",
                        Cost(function_evals=3))
    joined = join([first, second], Cost(hvp_evals=1))
    np.testing.assert_array_equal(joined.t, [0.0, 1.0, 2.0, 3.0])
    assert joined.states.shape == (4, 3)
    assert joined.cost == Cost(function_evals=5, hvp_evals=1)
