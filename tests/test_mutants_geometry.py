"""The steepest-descent maps (``dynamics/geometry/maps.py``) and their registry on small hand-made gradients,
each against the module docstring's formula computed independently with NumPy (the spectral map through
the eigendecomposition of G̃ᵀG̃, not an SVD; the sign map's derivative against central differences).
Written for the survivors of ``python tests/mutation.py dynamics/geometry/maps.py --head --
tests/test_geometry.py tests/test_geometry_registry.py tests/test_spectral_nonfinite.py
tests/test_mutants_geometry.py -k "not equivariant"`` (docs/testing.md).

Equivalent mutants left in ``maps.py`` (no input tells them apart):

* ``SpectralDescent.direction``'s vector branch: ``norm >= 0`` for ``norm > 0`` in the outer ``where``
  (where the norm √(Σ p g² + ε²) is 0, every p g is 0 too: 0/1 = 0 either way), and the inner
  ``where(norm >= 0, …)`` or ``where(…, norm, 2.0)`` (the inner value at norm = 0 is thrown away).
* ``_matrix``: ``isfinite(G).all(+1)`` or ``.all(-2)`` before ``.all(-1)`` (G is (rows, cols) or (B, rows,
  cols): every order of the two reductions is "all entries"); ``where(finite, root * G, 1.0)`` (a
  non-finite matrix's SVD is replaced by NaN whatever it was); ``s.numel() or True`` (a matrix block has
  rows, cols ≥ 2, so s is never empty); ``where(keep, denominator, 2.0)`` (thrown away where not kept).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.errors import ConfigError
from dynamics.geometry import (
    DiagonalMetric,
    ParameterBlock,
    SignDescent,
    SpectralDescent,
    entry_of,
    geometry_keys,
    get_geometry,
    make_geometry,
)

RNG = np.random.default_rng(7)


def _tensor(values) -> torch.Tensor:
    return torch.tensor(np.asarray(values, dtype=np.float64))


def _inverse_root(matrix: np.ndarray) -> np.ndarray:
    """M^(−1/2) of a symmetric positive definite M, by its eigendecomposition."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors / np.sqrt(values)) @ vectors.T


def _spectral_block(G: np.ndarray, rows: np.ndarray, eps: float) -> np.ndarray:
    """P_r G (G̃ᵀG̃ + ε² I)^(−1/2), G̃ = P_r^(1/2) G, P_r = diag(rows)."""
    tilde = np.sqrt(rows)[:, None] * G
    return rows[:, None] * G @ _inverse_root(tilde.T @ tilde + eps**2 * np.eye(G.shape[1]))


@pytest.mark.parametrize("shape, size, matrix", [((3, 4), 12, True), ((5,), 5, False), ((1, 4), 4, False),
                                                 ((4, 1), 4, False), ((2, 2), 4, True)])
def test_a_block_knows_its_size_and_whether_it_is_a_matrix(shape, size, matrix):
    block = ParameterBlock("w", 3, shape)
    assert block.size == size and block.is_matrix is matrix


def test_the_euclidean_map_is_the_metric_times_the_gradient():
    g, change, p = _tensor([1.0, -2.0, 3.0]), _tensor([0.5, 0.25, -1.0]), _tensor([1.0, 0.5, 0.0])
    plain, metric = DiagonalMetric(), DiagonalMetric(p)
    assert plain.name == "euclidean" and plain.smooth is True
    np.testing.assert_array_equal(plain.direction(g).numpy(), [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(plain.negative_direction(g).numpy(), [-1.0, 2.0, -3.0])
    np.testing.assert_array_equal(metric.direction(g).numpy(), [1.0, -1.0, 0.0])
    np.testing.assert_array_equal(metric.negative_direction(g).numpy(), [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(metric.derivative(g, change).numpy(), [0.5, 0.125, 0.0])
    np.testing.assert_array_equal(plain.derivative(g, change).numpy(), [0.5, 0.25, -1.0])
    assert plain.row_scale() == 1.0 and metric.row_scale() is p


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_the_sign_map_is_the_regularised_sign_of_the_metric_gradient(eps):
    g, p = _tensor([2.0, -0.5, 0.0, 0.1]), _tensor([1.0, 0.25, 1.0, 4.0])
    x = np.array([2.0, -0.125, 0.0, 0.4])
    expected = np.sign(x) if eps == 0 else x / np.sqrt(x * x + eps * eps)
    sign = SignDescent(p, eps)
    assert sign.name == "sign" and sign.smooth is (eps > 0)
    np.testing.assert_allclose(sign.direction(g).numpy(), expected, rtol=1e-15)
    np.testing.assert_allclose(sign.negative_direction(g).numpy(), -expected, rtol=1e-15)
    if eps == 0:  # ε = 0 is the default: the plain sign
        np.testing.assert_array_equal(SignDescent(p).direction(g).numpy(), np.sign(x))
    plain = g.numpy()
    np.testing.assert_allclose(SignDescent(None, eps).direction(g).numpy(),
                               np.sign(plain) if eps == 0 else plain / np.sqrt(plain**2 + eps**2), rtol=1e-15)


@pytest.mark.parametrize("scale", [None, [1.0, 0.25, 2.0]])
def test_the_sign_maps_derivative_is_its_directional_derivative(scale):
    eps, h = 0.5, 1e-6
    sign = SignDescent(None if scale is None else _tensor(scale), eps)
    g, change = _tensor([0.3, -0.7, 1.1]), _tensor([1.0, -2.0, 0.5])
    difference = (sign.direction(g + h * change) - sign.direction(g - h * change)) / (2 * h)
    np.testing.assert_allclose(sign.derivative(g, change).numpy(), difference.numpy(), rtol=1e-8)


def _blocks():
    # a 3 × 2 matrix, a vector, a 1 × 3 row (a vector too): 13 parameters
    return [ParameterBlock("m", 0, (3, 2)), ParameterBlock("v", 6, (4,)), ParameterBlock("r", 10, (1, 3))]


def _expected(g: np.ndarray, p: np.ndarray, eps: float) -> np.ndarray:
    out = np.zeros(13)
    out[0:6] = _spectral_block(g[0:6].reshape(3, 2), p[0:6:2], eps).ravel()
    for part in (slice(6, 10), slice(10, 13)):
        out[part] = p[part] * g[part] / np.sqrt((p[part] * g[part] ** 2).sum() + eps**2)
    return out


@pytest.mark.parametrize("eps", [0.0, 0.4])
@pytest.mark.parametrize("metric", [False, True])
def test_the_spectral_map_is_the_formula_of_each_block(eps, metric):
    # a row metric: one value per matrix row (0.5, 2, 1), and any value on the vectors
    p = (np.array([0.5, 0.5, 2.0, 2.0, 1.0, 1.0, 0.25, 1.0, 3.0, 1.0, 0.5, 2.0, 1.0]) if metric
         else np.ones(13))
    g = RNG.standard_normal(13)
    spectral = SpectralDescent(_blocks(), _tensor(p) if metric else None, eps)
    assert spectral.name == "spectral" and spectral.smooth is False
    direction = spectral.direction(_tensor(g)).numpy()
    np.testing.assert_allclose(direction, _expected(g, p, eps), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(spectral.negative_direction(_tensor(g)).numpy(), -direction, rtol=1e-15)


def test_the_spectral_map_takes_a_batch_row_by_row():
    g = RNG.standard_normal((3, 13))
    p = np.array([0.5, 0.5, 2.0, 2.0, 1.0, 1.0, 0.25, 1.0, 3.0, 1.0, 0.5, 2.0, 1.0])
    spectral = SpectralDescent(_blocks(), _tensor(p), 0.2)
    batch = spectral.direction(_tensor(g)).numpy()
    for row in range(3):
        np.testing.assert_allclose(batch[row, :13], _expected(g[row], p, 0.2), rtol=1e-10, atol=1e-14)


def test_the_spectral_map_of_a_rank_one_matrix_is_its_polar_factor_on_the_range():
    u, v = np.array([1.0, 2.0, 2.0]) / 3, np.array([3.0, 4.0]) / 5
    g = np.zeros(13)
    g[0:6] = (7.0 * np.outer(u, v)).ravel()
    direction = SpectralDescent(_blocks()).direction(_tensor(g)).numpy()
    np.testing.assert_allclose(direction[0:6], np.outer(u, v).ravel(), atol=1e-14)
    np.testing.assert_array_equal(direction[6:13], np.zeros(7))  # zero vectors map to zero at ε = 0


def test_a_small_vector_is_normalised_and_a_zero_gradient_maps_to_zero():
    g = np.zeros(13)
    g[6:10] = [3e-3, 0.0, -4e-3, 0.0]  # norm 5e-3
    direction = SpectralDescent(_blocks()).direction(_tensor(g)).numpy()
    np.testing.assert_allclose(direction[6:10], [0.6, 0.0, -0.8, 0.0], rtol=1e-14)
    np.testing.assert_array_equal(direction[0:6], np.zeros(6))  # a zero matrix, at ε = 0 too
    np.testing.assert_array_equal(direction[10:13], np.zeros(3))


@pytest.mark.parametrize("size", [1e6, 1.0, 1e-6])
def test_a_rank_one_matrix_of_any_size_maps_to_its_polar_factor(size):
    """The singular values below ε_mach · max(rows, cols) · s_max are rounding of exact zeros: dropped."""
    u, v = np.array([0.48, 0.6, 0.64]), np.array([0.28, 0.96])
    g = np.zeros(13)
    g[0:6] = (size * np.outer(u, v)).ravel()
    direction = SpectralDescent(_blocks()).direction(_tensor(g)).numpy()
    np.testing.assert_allclose(direction[0:6], np.outer(u, v).ravel(), atol=1e-12)


def test_the_rounding_cut_does_not_depend_on_the_batch_size():
    """diag(1, 1.3e-15) (exact singular values): 1.3e-15 is above the cut ε_mach · 3 · 1 = 6.7e-16, so it is
    kept and the map is diag(1, 1), in any batch."""
    g = np.zeros(13)
    g[0], g[3] = 1.0, 1.3e-15
    expected = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    spectral = SpectralDescent(_blocks())
    np.testing.assert_allclose(spectral.direction(_tensor(g)).numpy()[0:6], expected, atol=1e-15)
    batch = spectral.direction(_tensor(np.tile(g, (10, 1)))).numpy()
    np.testing.assert_allclose(batch[:, 0:6], np.tile(expected, (10, 1)), atol=1e-15)


def test_a_matrix_with_a_non_finite_entry_maps_to_nan_and_the_others_are_kept():
    g = RNG.standard_normal((2, 13))
    g[1, 3] = np.inf
    direction = SpectralDescent(_blocks(), None, 0.1).direction(_tensor(g)).numpy()
    assert np.isnan(direction[1, 0:6]).all()
    np.testing.assert_allclose(direction[0, :13], _expected(g[0], np.ones(13), 0.1), rtol=1e-10, atol=1e-14)
    finite = g[1].copy()
    finite[3] = 0.0  # the vectors' expected values, without NumPy's warnings about the infinite matrix
    np.testing.assert_allclose(direction[1, 6:13], _expected(finite, np.ones(13), 0.1)[6:13], rtol=1e-10)


# --- the registry's built-in entries ----------------------------------------------------------------------

def test_each_builtin_entry_builds_its_map_from_the_metric_the_blocks_and_eps():
    p, blocks = _tensor([1.0, 0.5]), [ParameterBlock("v", 0, (2,))]
    euclidean = make_geometry("euclidean", p, blocks, 0.3)
    assert isinstance(euclidean, DiagonalMetric) and euclidean.scale is p
    sign = make_geometry("sign", p, blocks, 0.3)
    assert isinstance(sign, SignDescent) and sign.scale is p and sign.eps == 0.3
    spectral = make_geometry("spectral", p, blocks, 0.3)
    assert isinstance(spectral, SpectralDescent) and spectral.scale is p and spectral.eps == 0.3
    assert spectral.blocks is blocks
    for built in (euclidean, sign, spectral):
        assert entry_of(built) is get_geometry(built.name)


def test_the_builtin_entries_say_what_the_documentation_says():
    """docs/geometry.md: ε = 0 is refused with 1e-4 advised for sign and 1e-3 for spectral; compare's flows
    take ε = 1e-8 (sign) and 1e-7 (spectral); only the sign and spectral maps read flow.geometry_eps."""
    euclidean, sign, spectral = (get_geometry(n) for n in ("euclidean", "sign", "spectral"))
    assert (sign.suggested_eps, spectral.suggested_eps) == (1e-4, 1e-3)
    assert (sign.reference_eps, spectral.reference_eps) == (1e-8, 1e-7)
    assert (euclidean.needs_eps, euclidean.suggested_eps, euclidean.reference_eps) == (False, 0.0, 0.0)
    assert all(entry.batched for entry in (euclidean, sign, spectral))
    assert all(entry.summary for entry in (euclidean, sign, spectral))
    assert geometry_keys() == {"flow.geometry_eps"}


def test_a_key_of_another_geometry_is_refused_only_when_set_away_from_its_default():
    euclidean, defaults = get_geometry("euclidean"), {"flow.geometry_eps": 0.0}
    euclidean.check_keys({}, defaults)
    euclidean.check_keys({"flow.geometry_eps": 0.0}, defaults)
    get_geometry("sign").check_keys({"flow.geometry_eps": 1e-3}, defaults)
    with pytest.raises(ConfigError) as err:
        euclidean.check_keys({"flow.geometry_eps": 1e-3}, defaults)
    assert str(err.value) == ("flow.geometry_eps=0.001: has no effect on flow.geometry='euclidean' (read by "
                              "flow.geometry=sign or spectral); allowed: 0.0 (the default), or "
                              "flow.geometry=sign or spectral")


def test_a_map_of_no_registered_geometry_is_refused_with_the_registered_names():
    class Unnamed:
        pass

    with pytest.raises(ValueError) as err:
        entry_of(Unnamed())
    assert str(err.value) == ("a geometry map named None is not registered (registered: euclidean, sign, "
                              "spectral); register_geometry(...) it first")


def test_the_builtin_list_as_built():
    """``_builtin()`` is called once, when the registry is made (at import): called again here, so that
    what it builds is checked as it is, not only as the registry kept it. ``summary`` is read by nothing."""
    from dynamics.geometry.registry import _builtin

    expected = {  # name: (map, linear, gradient_flow_theory, keys, needs_eps, suggested, reference, batched)
        "euclidean": (DiagonalMetric, True, True, (), False, 0.0, 0.0, True),
        "sign": (SignDescent, False, False, ("flow.geometry_eps",), True, 1e-4, 1e-8, True),
        "spectral": (SpectralDescent, False, False, ("flow.geometry_eps",), True, 1e-3, 1e-7, True)}
    entries = _builtin()
    assert [entry.name for entry in entries] == list(expected)
    p, blocks = _tensor([1.0, 0.5]), [ParameterBlock("v", 0, (2,))]
    for entry in entries:
        kind, *flags = expected[entry.name]
        assert [entry.linear, entry.gradient_flow_theory, entry.keys, entry.needs_eps, entry.suggested_eps,
                entry.reference_eps, entry.batched] == flags, entry.name
        built = entry.build(p, blocks, 0.25)
        assert type(built) is kind and built.name == entry.name and built.scale is p
        assert getattr(built, "eps", 0.25) == 0.25 and getattr(built, "blocks", blocks) is blocks
