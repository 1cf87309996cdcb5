"""Li et al.'s setting inside the project: the ``li2026`` preset, the ``init.kind=manifold`` start, and the
four-scalar flow against the full reduced flow started on the manifold (dynamics/manifold.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics import resolve_config
from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.manifold import manifold_coordinates
from dynamics.models import build_model
from dynamics.task import FactTask


def authors(S: int, R: int, **overrides) -> Config:
    """The li2026 preset at S × R (D = S)."""
    return resolve_config("li2026", overrides={"task.subjects": S, "task.relations": R,
                                               "task.answers_per_relation": S, **overrides})


def test_preset_is_one_answer_per_fact_without_noise():
    config = resolve_config("li2026")
    task = FactTask(config.task)
    assert (task.N, task.T) == (0, 3)
    assert task.num_answers == task.S * task.R
    assert len(np.unique(task.facts)) == task.S * task.R  # every fact its own answer


@pytest.mark.parametrize("alpha, beta", [(0.01, 0.01), (0.3, 0.02)])
def test_manifold_start_is_the_authors_start(alpha, beta):
    config = authors(8, 2, **{"init.alpha": alpha, "init.beta": beta})
    task = FactTask(config.task)
    theta = build_model(config, task).initial_parameters(config.init).numpy()
    coords, distance = manifold_coordinates(task, theta[None])
    np.testing.assert_allclose(coords[0], [alpha, beta, alpha, beta], rtol=1e-14)
    assert distance[0] < 1e-15
    n = task.S + task.R + 1
    values = theta[n:].reshape(n, -1)
    np.testing.assert_allclose(np.linalg.norm(values[:-1], axis=1), alpha, rtol=1e-14)  # ‖v_z‖ = α₀
    assert np.all(values >= 0) and not values[-1].any()  # the positive manifold; EOS carries no answer


def test_manifold_start_through_the_embedded_model():
    """One-hot embeddings: the embedded model's start is the reduced one in matrix form."""
    config = authors(4, 2, **{"model.kind": "embedded", "model.embeddings": "onehot", "model.dim": 8})
    task = FactTask(config.task)
    model = build_model(config, task)
    a, v = model.token_parameters(model.initial_parameters(config.init))
    reduced = build_model(authors(4, 2), task)
    a_r, v_r = reduced.token_parameters(reduced.initial_parameters(config.init))
    np.testing.assert_allclose(a.numpy(), a_r.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(v.numpy(), v_r.numpy(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("overrides, key", [
    ({"init.kind": "manifold", "init.scale": 1e-3}, "init.scale"),
    ({"init.kind": "manifold", "init.seed": 3}, "init.seed"),
    ({"init.alpha": 0.5}, "init.alpha"),
    ({"init.kind": "gaussian", "init.beta": 0.5}, "init.beta"),
    ({"init.kind": "manifold", "init.alpha": 0.0}, "init.alpha"),
])
def test_init_keys_the_kind_does_not_read_are_refused(overrides, key):
    with pytest.raises(ConfigError) as error:
        resolve_config("figure5", overrides=overrides)
    message = str(error.value)
    assert message.startswith(key + "=") and "\n" not in message


def test_manifold_start_is_refused_for_the_transformer():
    with pytest.raises(ConfigError, match=r"^init.kind='manifold': .*allowed: constant, gaussian"):
        resolve_config("figure5_transformer", overrides={"init.kind": "manifold", "init.scale": 1e-5})


def test_coordinates_refuse_a_task_off_the_authors_setting():
    with pytest.raises(ConfigError, match="one answer per fact"):
        manifold_coordinates(FactTask(resolve_config("tiny").task), np.zeros((1, 10)))
