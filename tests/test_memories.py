"""Associative memories and the one-layer transformer against independent computations.

Gradients against central finite differences; the transformer's count representation against an explicit
per-position softmax over token sequences; the parameter count against the paper's formula; the early-
stopping trainer against a case with a known answer.
"""

from __future__ import annotations

import math

import pytest
import torch
from gradcheck import autograd_gradient, central_differences, relative_error

from dynamics.config import Config, ConfigError, TaskConfig, resolve_config
from dynamics.models import build_model
from dynamics.models.embeddings import unit_rows
from dynamics.models.memories import LinearMemory, MLPMemory, targets_of
from dynamics.models.transformer import TransformerModel, expected_counts
from dynamics.objective import make_objective
from dynamics.task import FactTask
from dynamics.training import fit


def random_theta(size: int, seed: int, scale: float = 0.5) -> torch.Tensor:
    return scale * torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SMALL = TaskConfig(subjects=3, relations=2, answers_per_relation=2, noise_tokens=3, seq_len=7,
                   facts="random", seed=1)


# --- associative memories -----------------------------------------------------------------------------
def test_targets_and_unit_embeddings():
    assert targets_of(6, 6).tolist() == list(range(6))
    assert targets_of(7, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]  # ⌊i·3/7⌋
    rows = unit_rows(5, 4, torch.Generator().manual_seed(0))
    assert torch.allclose(torch.linalg.norm(rows, dim=1), torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda: LinearMemory(7, 4, seed=2),
                                  lambda: LinearMemory(6, 3, num_classes=2, seed=3),
                                  lambda: MLPMemory(9, 3, width=4, num_classes=3, seed=4)])
def test_memory_gradients_match_finite_differences(make):
    mem = make()
    theta = random_theta(mem.num_params, 5)
    expected = central_differences(mem.loss, theta, h=1e-6)
    assert relative_error(autograd_gradient(mem.loss, theta), expected) < 1e-7


def test_memory_logits_against_explicit_loops():
    mem = MLPMemory(4, 3, width=2, num_classes=2, seed=1)
    theta = random_theta(mem.num_params, 2)
    w1, b1, w2 = mem.blocks(theta)
    for x in range(4):
        hidden = [max(0.0, float(sum(w1[j, k] * mem.E[x, k] for k in range(3)) + b1[j])) for j in range(2)]
        feature = [sum(float(w2[i, j]) * hidden[j] for j in range(2)) for i in range(3)]
        for y in range(2):
            expected = sum(float(mem.U[y, i]) * feature[i] for i in range(3))
            assert math.isclose(float(mem.logits(theta)[x, y]), expected, rel_tol=1e-12, abs_tol=1e-12)
    assert mem.num_params == 2 * 2 * 3 + 2


def test_orthonormal_memory_stores_d_associations_and_rejects_more():
    mem = LinearMemory(8, 8, embeddings="orthonormal", seed=0)
    assert torch.allclose(mem.E @ mem.E.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    # W = Uᵀ E stores the identity map exactly: ℓ_x = U Uᵀ E e_x = e_x (one-hot).
    assert mem.accuracy((mem.U.T @ mem.E).reshape(-1)) == 1.0
    result = fit(lambda k: mem.loss, mem.accuracy, mem.initial_parameters(), lr=0.1, steps=200)
    assert result.stored
    with pytest.raises(ConfigError, match="n=9: orthonormal embeddings need n <= d=8"):
        LinearMemory(9, 8, embeddings="orthonormal")


def test_fit_statuses():
    mem = LinearMemory(4, 4, seed=0)
    ok = fit(lambda k: mem.loss, mem.accuracy, mem.initial_parameters(), lr=0.1, steps=500, check_every=10)
    assert ok.status == "ok" and ok.stored and ok.accuracy >= 0.99 and ok.steps < 500
    # d = 2 cannot separate 40 identity targets: runs the whole budget and reports not_stored.
    hard = LinearMemory(40, 2, seed=0)
    bad = fit(lambda k: hard.loss, hard.accuracy, hard.initial_parameters(), lr=0.1, steps=60)
    assert bad.status == "ok" and not bad.stored and bad.steps == 60 and bad.accuracy < 0.99
    nan = fit(lambda k: (lambda th: th.sum() * float("nan")), mem.accuracy, mem.initial_parameters(),
              steps=10, threshold=2.0)
    assert nan.status == "nonfinite" and not nan.stored
    with pytest.raises(ConfigError, match="optimizer='sgd'"):
        fit(lambda k: mem.loss, mem.accuracy, mem.initial_parameters(), optimizer="sgd")


# --- the transformer ----------------------------------------------------------------------------------
def explicit_logits(model: TransformerModel, theta: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """Per-position computation on token sequences (B, T), written from docs/design.md §3.3 without counts."""
    w = model.blocks(theta)
    X = model.E[seq]  # (B, T, d)
    out = []
    for b in range(seq.shape[0]):
        heads = []
        for h in range(model.heads):
            q = w["W_Q"][h] @ X[b, -1]
            k = X[b] @ w["W_K"][h].T  # (T, d_h)
            v = X[b] @ w["W_V"][h].T
            att = torch.softmax(k @ q / math.sqrt(model.head_dim), dim=0)
            heads.append(att @ v)
        x = w["W_O"] @ torch.cat(heads)
        y = x + w["W_2"] @ torch.relu(w["W_1"] @ x)
        out.append(model.U @ y)
    return torch.stack(out)


def test_transformer_count_form_equals_per_position_softmax():
    task = FactTask(SMALL)
    model = TransformerModel(task, dim=5, heads=2, head_dim=3, mlp_width=4, seed=0)
    theta = random_theta(model.num_params, 1, scale=0.8)
    seq = task.sample_sequences(16, torch.Generator().manual_seed(2))
    counts = torch.zeros(16, task.vocab_size, dtype=torch.float64)
    counts.scatter_add_(1, seq, torch.ones_like(seq, dtype=torch.float64))
    assert torch.allclose(model.sequence_logits(theta, counts), explicit_logits(model, theta, seq),
                          rtol=1e-10, atol=1e-12)


def test_transformer_population_logits_use_expected_counts():
    task = FactTask(SMALL)
    model = TransformerModel(task, dim=4, heads=2, head_dim=2, mlp_width=3, seed=0)
    theta = random_theta(model.num_params, 3)
    counts = expected_counts(task)
    assert torch.allclose(counts.sum(1), torch.full((task.S * task.R,), float(task.T), dtype=torch.float64))
    s, r = 2, 1
    row = counts[s * task.R + r]
    assert row[s] == 1 and row[task.S + r] == 1 and row[-1] == 1
    assert torch.allclose(model.population_logits(theta)[s, r], model.sequence_logits(theta, row[None])[0])
    att = model.attention_weights(theta)
    assert att.shape == (task.S, task.R, 4)
    assert torch.allclose(att.sum(-1), torch.ones(task.S, task.R, dtype=torch.float64))


@pytest.mark.parametrize("mlp_width", [0, 3])
def test_transformer_gradient_matches_finite_differences(mlp_width):
    task = FactTask(SMALL)
    model = TransformerModel(task, dim=4, heads=2, head_dim=2, mlp_width=mlp_width, seed=0)
    counts, targets = task.sample(12, torch.Generator().manual_seed(0))
    theta = random_theta(model.num_params, 4)

    def loss(th):
        return model.sequence_loss(th, counts, targets)

    assert relative_error(autograd_gradient(loss, theta), central_differences(loss, theta, h=1e-6)) < 1e-7


@pytest.mark.parametrize("H,dh,d,m", [(8, 2, 16, 16), (1, 8, 32, 0), (3, 5, 7, 11)])
def test_transformer_parameter_count(H, dh, d, m):
    model = TransformerModel(FactTask(SMALL), dim=d, heads=H, head_dim=dh, mlp_width=m)
    assert model.num_params == 4 * H * dh * d + 2 * m * d
    assert model.standard_parameters(torch.Generator().manual_seed(0)).numel() == model.num_params
    assert sum(b.numel() for b in model.blocks(torch.zeros(model.num_params)).values()) == model.num_params


def test_transformer_config_and_build():
    config = resolve_config("tiny", overrides={"model.kind": "transformer", "model.attention": "softmax",
                                               "loss.kind": "sampled", "model.dim": 6, "model.heads": 2,
                                               "model.head_dim": 2, "model.mlp_width": 5})
    task = FactTask(config.task)
    model = build_model(config, task)
    assert isinstance(model, TransformerModel) and model.num_params == 4 * 2 * 2 * 6 + 2 * 5 * 6
    objective = make_objective(model, task, config.loss)
    assert math.isfinite(float(objective(model.initial_parameters(config.init))))
    with pytest.raises(ConfigError, match="loss.kind='population': model.kind='transformer' has no exact"):
        Config().override({"model.kind": "transformer", "model.attention": "softmax"})
    with pytest.raises(ConfigError, match="model.attention='linear'"):
        Config().override({"model.kind": "transformer", "loss.kind": "sampled"})
    with pytest.raises(ConfigError, match="model.heads=0"):
        Config().override({"model.heads": 0})
    with pytest.raises(ConfigError, match="loss.kind='population': not exact"):
        make_objective(model, task, Config().loss)
