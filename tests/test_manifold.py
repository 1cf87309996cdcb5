"""Li et al.'s setting inside the project: the ``li2026`` preset, the ``init.kind=manifold`` start, and the
four-scalar flow against the full reduced flow started on the manifold (dynamics/manifold.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynamics import resolve_config, run_flow
from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.manifold import manifold_coordinates, manifold_field, manifold_flow, margin_target, margins
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


def _full_and_four_scalar(S: int, R: int, geometry: str, eps: float, rtol: float = 1e-10):
    """The project's full reduced flow from the manifold start, recorded at 0, T_R, T_S of the four-scalar
    flow, and the four-scalar flow on the same grid."""
    four = manifold_flow(S, R, geometry, eps)
    times = np.unique([0.0, four.T_R, four.T_S])
    config = authors(S, R, **{"flow.geometry": geometry, "flow.geometry_eps": eps, "flow.rtol": rtol,
                              "flow.atol": 1e-14, "flow.method": "dopri5", "flow.t_max": float(times[-1])})
    full = run_flow(config, times=times, keep_states=True)
    assert full.info.status == "ok"
    return config, full, four, manifold_flow(S, R, geometry, eps, times=times)


def _time_error(S: int, R: int, field, state: np.ndarray, component: int, T: float) -> float:
    """|T_full − T| / T for the crossing of q_component = log 9 at T, from the full state at T: the margin's
    miss divided by its rate."""
    y, dy = state, field(T, state)
    rate = (dy[0] * y[1] + y[0] * dy[1]) / math.sqrt(R) if component == 0 else \
        (dy[2] * y[3] + y[2] * dy[3]) / math.sqrt(S)
    return abs(margins(y, S, R)[component] - margin_target(0.1)) / rate / T


@pytest.mark.parametrize("S, R, geometry, eps", [
    (4, 4, "euclidean", 0.0), (4, 4, "spectral", 1e-3), (8, 2, "sign", 1e-3),
    pytest.param(8, 2, "euclidean", 0.0, marks=pytest.mark.slow),
    pytest.param(8, 2, "spectral", 1e-2, marks=pytest.mark.slow),
    pytest.param(4, 4, "sign", 1e-2, marks=pytest.mark.slow)])
def test_four_scalar_flow_is_the_full_flow_on_the_manifold(S, R, geometry, eps):
    """The full reduced flow started on the manifold stays on it (1e-12) and equals the four-scalar flow to
    1e-8 (relative) in the loss, the four scalars and T_S, T_R (measured 1e-11 to 1.3e-9 at rtol 1e-10)."""
    config, full, four, on_grid = _full_and_four_scalar(S, R, geometry, eps)
    coords, distance = manifold_coordinates(FactTask(config.task), full.states)
    assert distance.max() < 1e-12
    np.testing.assert_allclose(full.loss, on_grid.loss, rtol=1e-8, atol=0)
    np.testing.assert_allclose(coords, on_grid.state, rtol=1e-8, atol=0)
    field = manifold_field(S, R, geometry, eps)
    for component, T in ((0, four.T_S), (1, four.T_R)):
        k = int(np.argmin(np.abs(full.t - T)))
        assert _time_error(S, R, field, coords[k], component, T) < 1e-8


def test_sign_flow_at_zero_eps_has_the_closed_form():
    """At ε = 0 the sign flow moves at the constant rates (2√R, 1, 2√S, 1): T solves the quadratic
    (α₀ + 2√R t)(β₀ + t) = √R (log 9 + log(S − 1))."""
    S, R, a0 = 64, 2, 0.01
    four = manifold_flow(S, R, "sign", 0.0)
    for T, rate, other, n in ((four.T_S, 2 * math.sqrt(R), R, S), (four.T_R, 2 * math.sqrt(S), S, R)):
        gap = math.sqrt(other) * (margin_target(0.1) + math.log(n - 1))
        linear = a0 + rate * a0
        exact = (-linear + math.sqrt(linear**2 - 4 * rate * (a0 * a0 - gap))) / (2 * rate)
        assert T == pytest.approx(exact, rel=1e-10)


# T_R, T_S (δ = 0.1) of the four-scalar flow at ε = 0 from α₀ = β₀ = 0.01 at the authors' points. Li et al.'s
# own ODE pipeline (docs/geometry.md, "The four-scalar flow") gives the same to 4e-7: its times are read by
# linear interpolation between saved samples.
AUTHORS_POINTS = {
    (4, 32): {"euclidean": (441.49196, 192.300604), "spectral": (8.65885915, 8.34813697),
              "sign": (1.67173092, 1.2782789)},
    (16, 8): {"euclidean": (247.656788, 328.270642), "spectral": (8.43866975, 8.5384128),
              "sign": (1.4336757, 1.56021137)},
    (64, 2): {"euclidean": (160.943212, 598.58408), "spectral": (8.18303419, 8.76957596),
              "sign": (1.04284506, 1.773735)},
    (128, 2): {"euclidean": (233.153282, 1184.58249), "spectral": (10.0490847, 10.9345451),
               "sign": (1.042937, 1.86958942)},
    (256, 4): {"euclidean": (582.326466, 3416.44262), "spectral": (15.3378613, 16.6297092),
               "sign": (1.27856564, 1.96079299)},
}


@pytest.mark.parametrize("S, R", list(AUTHORS_POINTS))
def test_learning_times_at_the_authors_points(S, R):
    for geometry, (t_r, t_s) in AUTHORS_POINTS[(S, R)].items():
        four = manifold_flow(S, R, geometry)
        assert (four.T_R, four.T_S) == pytest.approx((t_r, t_s), rel=1e-6, abs=0), geometry


def test_regularised_fields_tend_to_the_authors_rates():
    """ε → 0: the sign field tends to (2√R, 1, 2√S, 1), the spectral field's value rates to 1."""
    S, R = 16, 8
    y = np.array([0.3, 0.2, 0.5, 0.1])
    np.testing.assert_allclose(manifold_field(S, R, "sign", 1e-14)(0.0, y),
                               [2 * math.sqrt(R), 1, 2 * math.sqrt(S), 1], rtol=1e-9)
    spectral = manifold_field(S, R, "spectral", 1e-14)(0.0, y)
    np.testing.assert_allclose(spectral[[0, 2]], 1.0, rtol=1e-9)
    np.testing.assert_allclose(spectral, manifold_field(S, R, "spectral", 0.0)(0.0, y), rtol=1e-9)


def test_four_scalar_flow_runs_far_beyond_the_full_model():
    four = manifold_flow(10**6, 10**6, "euclidean")
    assert four.status == "reached" and four.T_S == pytest.approx(four.T_R, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("geometry, eps", [("euclidean", 0.0), ("spectral", 1e-8), ("sign", 1e-8)])
def test_full_flow_at_an_authors_point(geometry, eps):
    """The project's full reduced flow (li2026, manifold start) at 16 × 8 gives the authors' T_R, T_S to 1e-6
    (sign and spectral at ε = 1e-8, which moves them by less than that here: the full flow's gradient
    entries on the manifold never cross zero)."""
    S, R = 16, 8
    config, full, four, _ = _full_and_four_scalar(S, R, geometry, eps, rtol=1e-9)
    coords, _ = manifold_coordinates(FactTask(config.task), full.states)
    field = manifold_field(S, R, geometry, eps)
    t_r, t_s = AUTHORS_POINTS[(S, R)][geometry]
    for component, T, pinned in ((0, four.T_S, t_s), (1, four.T_R, t_r)):
        k = int(np.argmin(np.abs(full.t - T)))
        assert _time_error(S, R, field, coords[k], component, T) < 1e-8
        assert T == pytest.approx(pinned, rel=1e-6)


def test_manifold_keys_on_a_fine_tune_without_new_subjects_are_refused(tmp_path):
    """init.alpha / init.beta initialise nothing on a run started from another with no subject added."""
    from dynamics.run import setup
    from dynamics.start import starting_state
    old = authors(4, 2, **{"flow.t_max": 1.0, "flow.points": 4})
    run_flow(old).save(tmp_path / "old", old)
    for key in ("alpha", "beta"):
        same = old.override({"init.from_run": str(tmp_path / "old"), f"init.{key}": 0.5})
        with pytest.raises(ConfigError, match=rf"^init\.{key}=0.5: has no effect: .*adds none"):
            starting_state(same, setup(same)[1])
