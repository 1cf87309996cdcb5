"""cvode's preconditioner works on CVODE's own vectors (dynamics.solvers.preconditioner): the blocks' solve
and product write into a given output, and the psolve / jtimes callbacks hand them CVODE's input and
output arrays themselves — no copy of a state-sized vector per call — with the same numbers as before."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from dynamics.config import resolve_config
from dynamics.problem import newton_blocks
from dynamics.run import setup
from dynamics.solvers.options import NewtonBlocks
from dynamics.solvers.preconditioner import CvodePreconditioner


@pytest.fixture(scope="module")
def system():
    config = resolve_config("tiny", overrides={"task.subjects": 5, "task.relations": 3,
                                               "task.answers_per_relation": 4, "task.noise_tokens": 5,
                                               "flow.method": "cvode", "flow.newton_preconditioner": "blocks",
                                               "flow.jacobian": "blocks"})
    _, model, _ = setup(config)
    theta = 0.5 * torch.randn(model.num_params, generator=torch.Generator().manual_seed(3),
                              dtype=torch.float64)
    return newton_blocks(config, model), theta


def _vector(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("which", ["factor", "product"])
def test_solve_and_product_write_into_out(system, which):
    blocks, theta = system
    scaled = blocks.at(0.0, theta)
    function = scaled.factor(2.5) if which == "factor" else scaled.product()
    r = _vector(theta.numel(), 4)
    out = torch.full_like(r, torch.nan)
    result = function(r, out=out)
    assert result is out
    assert torch.equal(out, function(r))


def _readonly(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values.flags.writeable = False  # as scikit-sundae hands CVODE's input vectors
    return values


def test_callbacks_read_and_write_cvodes_vectors_in_place(system, monkeypatch):
    blocks, theta = system
    preconditioner = CvodePreconditioner(blocks, theta)
    y = _readonly(theta.numpy())
    jnew = [0]
    preconditioner.setup(0.0, y, y, False, jnew, 2.5)
    assert jnew == [1]
    seen = []
    solve = preconditioner._solve

    def watched(r, out=None):
        seen.append((r, out))
        return solve(r, out=out)
    monkeypatch.setattr(preconditioner, "_solve", watched)
    rvec, zvec = _readonly(_vector(theta.numel(), 5).numpy()), np.full(theta.numel(), np.nan)
    preconditioner.solve(0.0, y, y, rvec, zvec, 2.5, 0.0, 1)
    (r, out), = seen
    assert np.shares_memory(r.numpy(), rvec) and np.shares_memory(out.numpy(), zvec)
    scaled = blocks.at(0.0, theta)
    np.testing.assert_array_equal(zvec, scaled.factor(2.5)(torch.as_tensor(rvec.copy())).numpy())
    jv = np.full(theta.numel(), np.nan)
    preconditioner.jacobian_vector(0.0, y, y, rvec, jv)
    np.testing.assert_array_equal(jv, -scaled.product()(torch.as_tensor(rvec.copy())).numpy())


def test_a_solve_in_place_of_its_input_is_still_right(system):
    """Where CVODE passes one vector as both r and z, the solve works on a copy of r."""
    blocks, theta = system
    preconditioner = CvodePreconditioner(blocks, theta)
    y = _readonly(theta.numpy())
    preconditioner.setup(0.0, y, y, False, [0], 2.5)
    vector = _vector(theta.numel(), 6).numpy()
    expected = blocks.at(0.0, theta).factor(2.5)(torch.as_tensor(vector.copy())).numpy()
    preconditioner.solve(0.0, y, y, vector, vector, 2.5, 0.0, 1)
    np.testing.assert_array_equal(vector, expected)


def test_old_blocks_and_factors_go_before_new_ones_are_built():
    """A new setup lets the last blocks (and their factors and product) go before it builds new ones, and a
    new γ the last factors before it factorises again: at 10^6 facts the blocks and factors hold about
    0.7 GB, which would otherwise be held twice while the new ones are made."""
    built, last = [], {}

    def alive(name: str) -> bool:
        return name in last and last[name]() is not None

    class System:  # a NewtonSystem that notes, as each new factor is made, whether the last one lives
        def factor(self, gamma):
            built.append(("factor", alive("solve")))

            def solve(r, out=None):
                return r
            last["solve"] = weakref.ref(solve)
            return solve

        def product(self):
            return lambda v, out=None: v

    def at(t, theta):
        built.append(("blocks", alive("system")))
        system = System()
        last["system"] = weakref.ref(system)
        return system

    preconditioner = CvodePreconditioner(NewtonBlocks(at, jacobian=True), torch.zeros(3, dtype=torch.float64))
    y = np.zeros(3)
    preconditioner.setup(0.0, y, y, False, [0], 1.0)
    preconditioner.jacobian_vector(0.0, y, y, y, np.zeros(3))  # the product made and kept, too
    preconditioner.setup(0.0, y, y, True, [0], 2.0)  # the same blocks, a new γ
    preconditioner.setup(0.0, y, y, False, [0], 2.0)  # new blocks
    assert built == [("blocks", False), ("factor", False), ("factor", False), ("blocks", False),
                     ("factor", False)]


def test_a_factor_that_failed_is_made_again():
    """A factorisation that raised leaves no factor behind that a later solve could take for its γ: the
    next solve, at the γ before, factorises again."""
    made = []

    class System:
        def factor(self, gamma):
            made.append(gamma)
            if made == [1.0, 2.0]:
                raise FloatingPointError("singular")
            return lambda r, out: out.copy_(gamma * r)

        def product(self):
            return lambda v, out: out.copy_(v)

    blocks = NewtonBlocks(lambda t, theta: System())
    preconditioner = CvodePreconditioner(blocks, torch.zeros(3, dtype=torch.float64))
    y = np.zeros(3)
    preconditioner.setup(0.0, y, y, False, [0], 1.0)
    with pytest.raises(FloatingPointError):
        preconditioner.setup(0.0, y, y, True, [0], 2.0)
    z = np.full(3, np.nan)
    preconditioner.solve(0.0, y, y, np.array([1.0, 2.0, 3.0]), z, 1.0, 0.0, 1)
    assert made == [1.0, 2.0, 1.0]
    np.testing.assert_array_equal(z, [1.0, 2.0, 3.0])
