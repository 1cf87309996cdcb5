"""A discrete run's record (RunInfo) from dynamics.run: what trained, at which rate, and how many parameters
(GD steps the flow's tied model, the others the untied one with a parameter set per token). Written for the
survivors of a mutation sample of dynamics/run.py (docs/testing.md)."""

from __future__ import annotations

import pytest

from dynamics import resolve_config
from dynamics.records import versions
from dynamics.run import run_training, setup


@pytest.mark.parametrize(("optimizer", "extra", "untied"), [("gd", {}, False),
                                                             ("sgd", {"train.batch_size": 8}, True)])
def test_a_discrete_runs_record_says_what_trained_and_its_parameter_count(optimizer, extra, untied):
    config = resolve_config("tiny", overrides={"train.optimizer": optimizer, "train.steps": 5, **extra})
    info = run_training(config).info
    _, model, _ = setup(config)
    trained = model.untied()[0] if untied else model
    assert (info.kind, info.status, info.train.optimizer, info.train.lr) == ("train", "ok", optimizer, 0.1)
    assert info.num_params == trained.num_params
    assert info.versions == versions()
