"""Tests written for the mutants of ``dynamics/models/`` that the model tests let survive (docs/testing.md,
"Mutation testing"): each checks a documented property against a computation written here — a softmax
over the expected counts, the Sylvester recursion as a Kronecker power, the embeddings' promised laws —
never against the code's own output.
"""

from __future__ import annotations

import math

import pytest
import torch

from dynamics.config import TaskConfig
from dynamics.geometry import ParameterBlock
from dynamics.models import EmbeddedModel, ReducedModel, argmax, factorised
from dynamics.models.base import Model
from dynamics.models.embeddings import hadamard_rows, sylvester_hadamard
from dynamics.models.memories import LinearMemory, MLPMemory
from dynamics.models.transformer import TransformerModel
from dynamics.task import FactTask

SMALL = dict(subjects=3, relations=2, answers_per_relation=2, noise_tokens=2, seq_len=6, facts="random",
             seed=3)


def small_task(**changes) -> FactTask:
    return FactTask(TaskConfig(**{**SMALL, **changes}))


def random_theta(size: int, seed: int, scale: float = 0.7) -> torch.Tensor:
    return scale * torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_softmax_attention_is_each_facts_softmax_over_its_expected_counts():
    # ω_z(s, r) = c_z exp(a_z) / Σ_y c_y exp(a_y), c: 1 for s, r and EOS, (T − 3)/N per noise token
    task = small_task()
    model = ReducedModel(task, "softmax", tied=False)
    theta = random_theta(model.num_params, seed=5)
    a = theta[:model.num_tokens]
    S, R, N, T = task.S, task.R, task.N, task.T
    weights = model.attention_weights(theta)
    for s in range(S):
        for r in range(R):
            counts = torch.zeros(model.num_tokens, dtype=torch.float64)
            counts[s] = counts[S + r] = counts[-1] = 1.0
            counts[S + R:S + R + N] = (T - 3) / N
            omega = counts * torch.exp(a) / (counts * torch.exp(a)).sum()
            expected = torch.stack([omega[s], omega[S + r], omega[S + R:S + R + N].sum(), omega[-1]])
            assert torch.allclose(weights[s, r], expected, rtol=1e-12, atol=0.0)


def test_linear_population_gradient_without_autodiff_never_forms_the_table(monkeypatch):
    # linear attention outside autodiff takes the factorised path (no S×R×|A| table), with the same result
    task = small_task()
    model = ReducedModel(task, "linear")
    theta = random_theta(model.num_params, seed=2)
    loss, grad = model.blocked_loss_and_gradient(theta)

    def refuse(self, theta):
        raise AssertionError("the linear population gradient formed the table of logits")

    monkeypatch.setattr(ReducedModel, "blocked_loss_and_gradient", refuse)
    with torch.no_grad():
        fast_loss, fast_grad = model.population_loss_and_gradient(theta)
    assert float(fast_loss) == pytest.approx(float(loss), rel=1e-12)
    assert torch.allclose(fast_grad, grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("embeddings", ["gaussian", "orthonormal"])
def test_random_embeddings_are_seeded_with_rows_of_unit_mean_square_norm(embeddings):
    # N(0, I/d) rows: E‖e‖² = 1 (orthonormal rows: exactly 1); the same seed gives the same tables
    task = small_task(noise_tokens=40)
    first, again = (EmbeddedModel(task, dim=64, embeddings=embeddings, seed=7) for _ in range(2))
    assert torch.equal(first.E, again.E) and torch.equal(first.U, again.U)
    for table in (first.E, first.U):
        assert 0.7 < float((table**2).sum(1).mean()) < 1.3


def test_onehot_and_hadamard_embeddings_are_the_promised_bases():
    task = small_task()
    V, A, d = task.vocab_size, task.num_answers, 16
    onehot = EmbeddedModel(task, dim=d, embeddings="onehot")
    eye = torch.eye(d, dtype=torch.float64)
    assert torch.equal(onehot.E, eye[:V]) and torch.equal(onehot.U, eye[:A])
    hadamard = EmbeddedModel(task, dim=d, embeddings="hadamard")
    for table, rows in ((hadamard.E, V), (hadamard.U, A)):
        assert table.shape == (rows, d)
        assert torch.allclose(table.abs(), torch.full_like(table, d**-0.5), rtol=1e-15, atol=0.0)
        assert torch.allclose(table @ table.T, torch.eye(rows, dtype=torch.float64), atol=1e-14)


def test_embedded_parameter_blocks_are_its_two_matrices():
    model = EmbeddedModel(small_task(), dim=8)
    theta = random_theta(model.num_params, seed=1)
    blocks = model.parameter_blocks()
    assert [(b.name, b.start, b.shape) for b in blocks] == [("W_KQ", 0, (8, 8)), ("W_OV", 64, (8, 8))]
    for block, matrix in zip(blocks, model.matrices(theta), strict=True):
        assert torch.equal(theta[block.start:block.start + block.size].reshape(block.shape), matrix)


def test_a_model_without_its_own_blocks_has_one_block_theta():
    # the name ``data.freeze`` refers to for a model that does not split θ
    class Plain(Model):
        num_params = 5

    assert Plain().parameter_blocks() == [ParameterBlock("theta", 0, (5,))]


@pytest.mark.parametrize("dim", [1, 2, 4, 8])
def test_sylvester_hadamard_is_the_kronecker_power(dim):
    # H_d = H_2 ⊗ … ⊗ H_2 (log2 d factors), H_2 = [[1, 1], [1, −1]]
    expected = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(int(math.log2(dim))):
        expected = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64), expected)
    assert torch.equal(sylvester_hadamard(dim), expected)
    rows = hadamard_rows(min(3, dim), dim)
    assert torch.allclose(rows, expected[:min(3, dim)] / math.sqrt(dim), rtol=1e-15, atol=0.0)


def test_transformer_embeddings_are_seeded_with_rows_of_unit_mean_square_norm_and_its_start_has_its_dtype():
    # e_z, u_y ~ N(0, I/d): E‖e‖² = 1
    task = small_task(noise_tokens=40)
    first, again = (TransformerModel(task, dim=64, heads=2, head_dim=2, mlp_width=4, seed=3)
                    for _ in range(2))
    assert torch.equal(first.E, again.E) and torch.equal(first.U, again.U)
    for table in (first.E, first.U):
        assert 0.7 < float((table**2).sum(1).mean()) < 1.3
    single = TransformerModel(task, dim=8, heads=2, head_dim=2, mlp_width=4, dtype=torch.float32)
    theta = single.standard_parameters(torch.Generator().manual_seed(0))
    assert theta.dtype == torch.float32 and theta.shape == (single.num_params,)


def test_linear_memory_starts_at_zero_on_its_device():
    memory = LinearMemory(n=3, dim=4, device="meta")
    theta = memory.initial_parameters()
    assert theta.device == torch.device("meta") and theta.shape == (16,)
    assert not LinearMemory(n=3, dim=4).initial_parameters().any()


def test_models_and_starts_live_on_the_device_asked_for():
    # the meta device stands for any device but the CPU: nothing is computed, only placed
    meta = torch.device("meta")
    model = EmbeddedModel(small_task(), dim=8, device="meta")
    assert model.E.device == meta and model.U.device == meta
    memory = LinearMemory(n=3, dim=4, device="meta")
    assert memory.E.device == meta and memory.U.device == meta
    reduced = ReducedModel(small_task(), "softmax", device="meta")
    theta = torch.zeros(reduced.num_params, dtype=torch.float64, device="meta")
    assert reduced.population_loss(theta).device == meta
    loss, grad = reduced.population_loss_and_gradient(theta)
    assert loss.device == meta and grad.device == meta
    x, y, c = (torch.zeros(shape, dtype=torch.float64, device="meta") for shape in ((3, 4), (2, 4), (4,)))
    assert argmax._dense(x, y, c, chunk_elements=8).device == meta


def test_the_dense_argmax_gives_int64_indices_of_the_whole_table():
    # equal logits everywhere: no bound settles a fact, the whole table is formed; ties go to index 0
    S, R, D = 3, 2, 2
    x, y, c = (torch.zeros(shape, dtype=torch.float64) for shape in ((S, R * D), (R, R * D), (R * D,)))
    top = argmax.argmax_answers(x, y, c, chunk_elements=R * D)
    assert top.dtype == torch.int64 and torch.equal(top, torch.zeros(S, R, dtype=torch.int64))
    # answers 1 and 3 above the others by 1e-12, below float32's resolution at 1: still unsettled, still
    # told apart as the whole float64 table tells them
    c = torch.tensor([1.0, 1.0 + 1e-12, 1.0, 1.0 + 1e-12], dtype=torch.float64)
    expected = ((x[:, None, :] + y[None, :, :]) + c).argmax(-1)
    assert torch.equal(argmax.argmax_answers(x, y, c, chunk_elements=R * D), expected)
    assert torch.equal(expected, torch.ones(S, R, dtype=torch.int64))


def test_models_without_curvature_blocks_name_themselves():
    with pytest.raises(NotImplementedError, match="^EmbeddedModel has no closed-form curvature blocks"):
        EmbeddedModel(small_task(), dim=8).curvature_blocks(torch.zeros(128, dtype=torch.float64))


def test_a_grown_state_keeps_every_old_token_and_takes_the_new_subjects_from_the_start():
    old_task, task = small_task(subjects=2), small_task(subjects=4)
    model, old = ReducedModel(task), ReducedModel(old_task)
    theta_old = torch.arange(old.num_params, dtype=torch.float64) + 1.0
    theta_init = -torch.arange(model.num_params, dtype=torch.float64) - 1.0
    a, v = model.token_parameters(model.grown_state(theta_old, old_task, theta_init))
    a_old, v_old = old.token_parameters(theta_old)
    a_init, v_init = model.token_parameters(theta_init)
    # tokens: subjects 0, 1 kept; subjects 2, 3 new; relations, the tied noise token and EOS shift by 2
    for new, source, k in [(0, "old", 0), (1, "old", 1), (2, "init", 2), (3, "init", 3),
                           (4, "old", 2), (5, "old", 3), (6, "old", 4), (7, "old", 5)]:
        a_ref, v_ref = (a_old[k], v_old[k]) if source == "old" else (a_init[k], v_init[k])
        assert a[new] == a_ref and torch.equal(v[new], v_ref)


def test_transformer_parameter_blocks_are_its_matrices_in_order():
    # W_Q, W_K, W_V (H·d_h × d, heads stacked), W_O (d × H·d_h), W_1 (m × d), W_2 (d × m), back to back
    d, H, h, m = 6, 2, 3, 4
    model = TransformerModel(small_task(), dim=d, heads=H, head_dim=h, mlp_width=m)
    shapes = [("W_Q", (H * h, d)), ("W_K", (H * h, d)), ("W_V", (H * h, d)), ("W_O", (d, H * h)),
              ("W_1", (m, d)), ("W_2", (d, m))]
    starts = [0]
    for _, (rows, cols) in shapes:
        starts.append(starts[-1] + rows * cols)
    assert starts[-1] == model.num_params
    blocks = model.parameter_blocks()
    expected = [(name, start, shape) for (name, shape), start in zip(shapes, starts[:-1], strict=True)]
    assert [(b.name, b.start, b.shape) for b in blocks] == expected
    theta = random_theta(model.num_params, seed=4)
    named = model.blocks(theta)
    for block in blocks:
        piece = theta[block.start:block.start + block.size].reshape(block.shape)
        assert torch.equal(piece, named[block.name].reshape(block.shape))


def test_gaussian_memories_are_seeded_and_store_the_classes_asked_for():
    first, again = (LinearMemory(n=6, dim=3, num_classes=3, embeddings="gaussian", seed=2) for _ in range(2))
    assert torch.equal(first.E, again.E) and torch.equal(first.U, again.U)
    assert first.U.shape == (3, 3) and first.targets.tolist() == [0, 0, 1, 1, 2, 2]  # ⌊i·3/6⌋
    assert first.logits(first.initial_parameters()).shape == (6, 3)


def test_mlp_memory_start_follows_its_documented_law():
    # W_1 ~ N(0, 1/d), b_1 = 0, W_2 ~ N(0, 1/m), seeded; one hidden unit is allowed
    d, m = 32, 64
    theta = MLPMemory(n=4, dim=d, width=m, seed=1).initial_parameters()
    assert torch.equal(theta, MLPMemory(n=4, dim=d, width=m, seed=1).initial_parameters())
    assert theta.shape == (2 * m * d + m,)
    w1, b1, w2 = theta[:m * d], theta[m * d:m * d + m], theta[m * d + m:]
    assert not b1.any()
    assert float(w1.var()) == pytest.approx(1 / d, rel=0.15)
    assert float(w2.var()) == pytest.approx(1 / m, rel=0.15)
    assert MLPMemory(n=2, dim=4, width=1).num_params == 2 * 4 + 1


def test_embedded_parameter_norms_are_the_frobenius_norms_of_its_matrices():
    d = 4
    model = EmbeddedModel(small_task(), dim=d)
    theta = random_theta(model.num_params, seed=8)
    norms = model.parameter_norms(theta)
    assert set(norms) == {"W_KQ", "W_OV"}
    assert float(norms["W_KQ"]) == pytest.approx(math.sqrt(float((theta[:d * d]**2).sum())), rel=1e-14)
    assert float(norms["W_OV"]) == pytest.approx(math.sqrt(float((theta[d * d:]**2).sum())), rel=1e-14)


def test_linear_hessian_vector_product_under_autodiff_matches_differences_of_the_gradient():
    # H u ≈ (∇L(θ + h u) − ∇L(θ − h u)) / 2h, with θ tracked by autograd (the blocked closed form)
    model = ReducedModel(small_task(), "linear")
    theta = random_theta(model.num_params, seed=6)
    u = random_theta(model.num_params, seed=7)
    h = 1e-5
    with torch.no_grad():
        expected = (model.population_loss_and_gradient(theta + h * u)[1]
                    - model.population_loss_and_gradient(theta - h * u)[1]) / (2 * h)
    hv = model.population_hessian_vector_product(theta.clone().requires_grad_(True), u)
    assert torch.allclose(hv, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_population_loss_on_cuda_is_the_cpu_one():
    # the targets of the loss follow the logits onto the device (on the CPU any device is the CPU)
    model = ReducedModel(small_task(), "softmax")
    on_cuda = ReducedModel(small_task(), "softmax", device="cuda")
    theta = random_theta(model.num_params, seed=9)
    expected = float(model.population_loss(theta))
    assert float(on_cuda.population_loss(theta.cuda())) == pytest.approx(expected, rel=1e-12)


def test_the_factorised_loss_refuses_a_state_of_the_wrong_shape_and_names_it():
    model = ReducedModel(small_task(), "linear")
    theta = random_theta(model.num_params, seed=1)[None, None]
    shape = rf"\(1, 1, {model.num_params}\)"
    with pytest.raises(ValueError, match=rf"^θ must have shape \(P,\) or \(B, P\), got {shape}$"):
        factorised.loss_and_gradient(model, theta)
