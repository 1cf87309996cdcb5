"""cvode's Newton preconditioner (flow.newton_preconditioner=blocks, dynamics.solvers.preconditioner).

* The blocks' solve inverts exactly the block-diagonal part of I + γPH it stands for: with one relation the
  approximation drops nothing inside a block, so M⁻¹(M x) = x against the dense Hessian.
* Past figure5's plateau GMRES needs fewer iterations for a Newton system with the blocks than without.
* A preconditioned cvode flow equals the unpreconditioned one to the solver's tolerance, with fewer Newton
  iterations (field evaluations) and setups when CVODE asks (slow).
* Where it cannot act, the key is refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from dynamics.config import ConfigError, resolve_config
from dynamics.models import factorised
from dynamics.run import run_flow, setup


def _dense_hessian(model, theta):
    n = theta.numel()
    eye = torch.eye(n, dtype=torch.float64)
    H = factorised.hessian_vector_product(model, theta.expand(n, n).contiguous(), eye)
    return 0.5 * (H + H.T)


def _one_relation_blocks():
    """A random state of a one-relation task, its model, and the mask of the blocks on the dense Hessian:
    each subject's score and values; the relation's, noise's and EOS's values together; the other scores
    alone (with one relation the blocks drop nothing inside a block)."""
    config = resolve_config("tiny", overrides={"task.subjects": 3, "task.relations": 1,
                                               "task.answers_per_relation": 4, "task.noise_tokens": 5})
    _, model, _ = setup(config)
    theta = 0.5 * torch.randn(model.num_params, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64)
    n, A, S = model.num_tokens, model.task.num_answers, model.task.S
    owner = torch.full((model.num_params,), -1)
    owner[:S] = torch.arange(S)
    for z in range(n):
        owner[n + z * A:n + (z + 1) * A] = z if z < S else S
    keep = (owner[:, None] == owner[None, :]) & (owner[:, None] >= 0)
    return model, theta, keep


def test_blocks_invert_their_part_of_the_newton_matrix_exactly():
    model, theta, keep = _one_relation_blocks()
    H = _dense_hessian(model, theta)
    gamma, P = 7.0, model.preconditioner
    M = torch.eye(model.num_params, dtype=torch.float64) + gamma * P[:, None] * torch.where(keep, H, 0.0)
    solve = model.curvature_blocks(theta).factor(gamma, P)
    x = torch.randn(model.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(solve(M @ x), x, rtol=1e-9, atol=1e-9)


def _gmres_iterations(M, b, preconditioner=None):
    count = [0]
    sla.gmres(M, b, M=preconditioner, rtol=1e-8, atol=0.0, restart=200, maxiter=1,
              callback=lambda _: count.__setitem__(0, count[0] + 1), callback_type="pr_norm")
    return count[0]


def test_gmres_needs_fewer_iterations_after_the_plateau():
    config = resolve_config("figure5", overrides={"flow.t_max": 600.0, "flow.points": 4})
    _, model, _ = setup(config)
    theta = torch.as_tensor(run_flow(config).final_state)  # relations known, subjects being learned
    blocks = model.curvature_blocks(theta)
    P, size = model.preconditioner, model.num_params
    b = np.random.default_rng(0).standard_normal(size)
    counts = []
    for gamma in (200.0, 1000.0):  # cvode's γ = h·β at the steps it takes there (ρ ≈ 1)
        def newton(v, gamma=gamma):
            u = torch.as_tensor(v)
            return (u + gamma * P * factorised.hessian_vector_product(model, theta, u)).numpy()

        solve = blocks.factor(gamma, P)
        M = sla.LinearOperator((size, size), matvec=newton, dtype=np.float64)
        inverse = sla.LinearOperator((size, size), dtype=np.float64,
                                     matvec=lambda r, solve=solve: solve(torch.as_tensor(r)).numpy())
        counts.append((_gmres_iterations(M, b), _gmres_iterations(M, b, inverse)))
    # measured: (14, 10) and (22, 16)
    assert all(preconditioned < plain for plain, preconditioned in counts), counts
    assert sum(p for _, p in counts) <= 0.8 * sum(plain for plain, _ in counts), counts


@pytest.mark.slow
def test_preconditioned_flow_equals_the_plain_one_with_fewer_newton_iterations():
    base = resolve_config("tiny", overrides={"flow.method": "cvode", "flow.jacobian": "hvp",
                                             "flow.rtol": 1e-8, "flow.atol": 1e-14})
    plain = run_flow(base)
    blocks = run_flow(base.override({"flow.newton_preconditioner": "blocks"}))
    assert plain.info.ok and blocks.info.ok
    assert np.max(np.abs(plain.loss - blocks.loss)) < 1e-6
    assert plain.info.cost.preconditioner_setups == 0 < blocks.info.cost.preconditioner_setups
    assert blocks.info.cost.function_evals < 0.9 * plain.info.cost.function_evals


@pytest.mark.parametrize("overrides,why", [
    ({"flow.method": "dopri5"}, "only cvode's GMRES"),
    ({"flow.method": "bdf"}, "only cvode's GMRES"),
    ({"flow.modified_lr": 0.1}, "approximate J = −PH"),
    ({"flow.geometry": "sign", "flow.geometry_eps": 1e-2}, "approximate J = −PH"),
])
def test_refused_where_it_has_no_effect(overrides, why):
    with pytest.raises(ConfigError, match=rf"^flow.newton_preconditioner='blocks'.*{why}.*allowed: none"):
        resolve_config("tiny", overrides={"flow.method": "cvode", "flow.newton_preconditioner": "blocks",
                                          **overrides})


@pytest.mark.parametrize("overrides,why", [
    ({"model.attention": "softmax"}, "linear attention"),
    ({"loss.kind": "sampled", "loss.samples": 32}, "population loss"),
])
def test_refused_for_models_without_the_blocks(overrides, why):
    config = resolve_config("tiny", overrides={"flow.method": "cvode", "flow.newton_preconditioner": "blocks",
                                               "flow.t_max": 1.0, "flow.points": 3, **overrides})
    with pytest.raises(ConfigError, match=rf"^flow.newton_preconditioner='blocks'.*{why}.*allowed: none$"):
        run_flow(config)


# flow.jacobian=blocks: cvode's J·v from the same blocks (a modified Newton iteration)

def test_block_product_is_the_block_part_of_P_H():
    """With one relation the blocks drop nothing inside a block: P H̃ x equals P times the masked dense
    Hessian (by autograd, independent of the closed form) applied to x."""
    model, theta, keep = _one_relation_blocks()
    P = model.preconditioner
    x = torch.randn(model.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = P * (torch.where(keep, _dense_hessian(model, theta), 0.0) @ x)
    torch.testing.assert_close(model.curvature_blocks(theta).product(P)(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.1, 3.0])
def test_block_factor_inverts_the_block_newton_matrix(gamma):
    """Across relations (R = 3): the preconditioner is the exact inverse of I + γ P H̃ for the product's H̃
    wherever it keeps a subject's score coupled (its Schur complement above the floor; here everywhere)."""
    config = resolve_config("tiny", overrides={"task.subjects": 5, "task.relations": 3,
                                               "task.answers_per_relation": 4, "task.noise_tokens": 5})
    _, model, _ = setup(config)
    theta = 0.5 * torch.randn(model.num_params, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
    blocks, P = model.curvature_blocks(theta), model.preconditioner
    x = torch.randn(model.num_params, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    back = blocks.factor(gamma, P)(x + gamma * blocks.product(P)(x))
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-12)


def test_block_jacobian_flow_equals_the_plain_one_with_no_gradient_in_its_products():
    """cvode with J·v from the blocks reaches the plain flow to its tolerance; its products cost no
    gradient (block_products), and it takes fewer gradients in all than with difference products."""
    base = resolve_config("tiny", overrides={"flow.method": "cvode", "flow.rtol": 1e-8, "flow.atol": 1e-14,
                                             "flow.t_max": 200.0, "flow.points": 24})
    plain = run_flow(base)
    blocks = run_flow(base.override({"flow.newton_preconditioner": "blocks", "flow.jacobian": "blocks"}))
    assert plain.info.ok and blocks.info.ok
    assert np.max(np.abs(plain.loss - blocks.loss)) < 1e-6
    cost = blocks.info.cost
    assert cost.block_products > 0 and cost.hvp_evals == 0 and plain.info.cost.block_products == 0
    assert cost.function_evals + cost.preconditioner_setups < plain.info.cost.function_evals


def test_block_jacobian_without_the_preconditioner_is_refused_and_the_advice_works():
    overrides = {"flow.method": "cvode", "flow.jacobian": "blocks"}
    with pytest.raises(ConfigError, match=r"^flow.jacobian='blocks'.*flow.newton_preconditioner=blocks.*"
                                          r"allowed: difference, hvp$"):
        resolve_config("tiny", overrides=overrides)
    resolve_config("tiny", overrides={**overrides, "flow.newton_preconditioner": "blocks"})


def test_preconditioned_gmres_keeps_few_krylov_vectors_and_loses_nothing(monkeypatch):
    """With the blocks as preconditioner GMRES converges in one to three iterations, so cvode allocates 5
    Krylov vectors (each a state), not 20; with the blocks as its Jacobian too, in one, so 2: the same
    steps, evaluations and loss as with 20."""
    import sksundae.cvode

    from dynamics.solvers import implicit

    made = []
    real = sksundae.cvode.CVODE

    def spy(*args, **kwargs):
        made.append(kwargs["krylov_dim"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sksundae.cvode, "CVODE", spy)
    config = resolve_config("tiny", overrides={"flow.method": "cvode", "flow.rtol": 1e-8, "flow.atol": 1e-14,
                                               "flow.t_max": 200.0, "flow.points": 24,
                                               "flow.newton_preconditioner": "blocks"})
    exact = config.override({"flow.jacobian": "blocks"})
    few = [run_flow(config), run_flow(exact)]
    monkeypatch.setattr(implicit, "PRECONDITIONED_KRYLOV_DIM", 20)
    monkeypatch.setattr(implicit, "EXACT_KRYLOV_DIM", 20)
    many = [run_flow(config), run_flow(exact)]
    run_flow(config.override({"flow.newton_preconditioner": "none"}))
    assert made == [5, 2, 20, 20, implicit.KRYLOV_DIM] and implicit.KRYLOV_DIM == 20
    for small, large in zip(few, many, strict=True):
        assert small.info.ok and large.info.ok
        assert small.info.cost.function_evals == large.info.cost.function_evals
        assert small.info.cost.block_products == large.info.cost.block_products
        assert small.info.cost.accepted_steps == large.info.cost.accepted_steps
        np.testing.assert_allclose(small.loss, large.loss, rtol=1e-9, atol=0)
