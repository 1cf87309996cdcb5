"""The figures' titles say what ran: the geometry or optimizer, the model, the start and the data regime,
and the run's status only where it did not end ok (simulate's _title)."""

from __future__ import annotations

import pytest

from analysis.simulate import _title
from dynamics.config import resolve_config
from dynamics.records import RunInfo


def _info(status: str = "ok", at: float | None = None) -> RunInfo:
    return RunInfo(kind="flow", status=status, status_time=at, message="", final_loss=0.1, num_params=10,
                   cost=None)


class _Traj:
    def __init__(self, info: RunInfo):
        self.info = info


@pytest.mark.parametrize("overrides,name,words", [
    ({}, "flow", ["gradient flow: S=16 R=4 D=8", "reduced model, linear attention", "constant init α=1e-05"]),
    ({"flow.geometry": "sign", "flow.geometry_eps": 1e-4}, "flow", ["sign flow ε=0.0001:"]),
    ({"flow.modified_lr": 0.1}, "flow", ["gradient flow (GD's modified flow, lr=0.1)"]),
    ({"train.optimizer": "sgd", "train.lr": 0.2}, "train", ["sgd lr=0.2:"]),
    ({"model.kind": "embedded", "model.dim": 64}, "flow", ["embedded model", "orthonormal embeddings d=64"]),
    ({"data.zipf": 0.5, "data.zipf_end": 1.0}, "flow", ["Zipf 0.5→1"]),
    ({"data.holdout": 2}, "flow", ["2 held out"]),
])
def test_the_title_says_what_ran(overrides, name, words):
    title = _title(resolve_config("figure5", overrides=overrides), name, _Traj(_info()))
    for word in words:
        assert word in title, (word, title)
    assert "[ok]" not in title


def test_the_title_gives_a_status_that_is_not_ok_with_its_time():
    title = _title(resolve_config("figure5"), "flow", _Traj(_info("nonfinite", 12.5)))
    assert title.startswith("gradient flow [nonfinite at t=12.5]: ")
