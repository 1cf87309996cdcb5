"""Models, task and config against independent computations (docs/design.md §2–§4).

Every check compares the code with something computed here from the mathematics: central finite
differences, an exact enumeration of all token sequences, Monte-Carlo averages over sampled sequences,
entropies counted by hand, and the embedded/reduced equivalence of §3.2.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from gradcheck import autograd_gradient, central_differences, relative_error

from dynamics.config import Config, ConfigError, InitConfig, LossConfig, TaskConfig
from dynamics.fields import gradient_field
from dynamics.models import EmbeddedModel, ReducedModel, build_model, reduced
from dynamics.objective import make_objective
from dynamics.run import log_time_grid
from dynamics.solvers import integrate_flow
from dynamics.task import FactTask

SMALL = dict(subjects=3, relations=2, answers_per_relation=2, noise_tokens=2, seq_len=5, facts="random",
             seed=3)


def small_task(**changes) -> FactTask:
    return FactTask(TaskConfig(**{**SMALL, **changes}))


def random_theta(size: int, seed: int, scale: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(size, generator=gen, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------
# 1. Gradients against finite differences
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("tied", [True, False])
def test_reduced_population_gradients_match_finite_differences(attention, tied):
    task = small_task(subject_zipf=0.7, relation_zipf=0.3)
    model = ReducedModel(task, attention, tied=tied)
    theta = random_theta(model.num_params, seed=11)
    expected = central_differences(model.population_loss, theta)
    assert float(torch.linalg.norm(expected)) > 1e-2  # non-degenerate point

    loss, closed = model.population_loss_and_gradient(theta)
    assert relative_error(closed, expected) < 1e-6
    assert float(loss) == pytest.approx(float(model.population_loss(theta)), rel=1e-12)
    assert relative_error(autograd_gradient(model.population_loss, theta), expected) < 1e-6


@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("tied", [True, False])
def test_reduced_sequence_loss_gradient_matches_finite_differences(attention, tied):
    task = small_task(subject_zipf=0.7)
    model = ReducedModel(task, attention, tied=tied)
    counts, targets = task.sample(64, torch.Generator().manual_seed(5))
    theta = random_theta(model.num_params, seed=12)

    def loss(x):
        return model.sequence_loss(x, counts, targets)

    expected = central_differences(loss, theta)
    assert float(torch.linalg.norm(expected)) > 1e-2
    assert relative_error(autograd_gradient(loss, theta), expected) < 1e-6


@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("embeddings", ["orthonormal", "gaussian"])
def test_embedded_gradients_match_finite_differences(attention, embeddings):
    task = small_task()
    model = EmbeddedModel(task, attention, dim=8, embeddings=embeddings, seed=4)
    theta = random_theta(model.num_params, seed=13)
    counts, targets = task.sample(64, torch.Generator().manual_seed(6))

    def sequence(x):
        return model.sequence_loss(x, counts, targets)

    for loss in (model.population_loss, sequence):
        expected = central_differences(loss, theta)
        assert float(torch.linalg.norm(expected)) > 1e-3
        assert relative_error(autograd_gradient(loss, theta), expected) < 1e-6


# --------------------------------------------------------------------------------------------------
# 2. The reduced flow is the embedded flow with orthonormal embeddings
# --------------------------------------------------------------------------------------------------

def expand_tied(task: FactTask, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tied token parameters (S+R+2) -> one pair per vocabulary token (V), written out by hand."""
    S, R, N = task.S, task.R, task.N
    rows = list(range(S + R)) + [S + R] * N + [S + R + 1]
    return a[rows], v[rows]


def test_embedded_initialisation_is_the_untied_reduced_initialisation():
    task = small_task()
    for init in (InitConfig(kind="constant", scale=1e-2), InitConfig(kind="gaussian", scale=0.3, seed=2)):
        reduced = ReducedModel(task, "linear", tied=True)
        a_r, v_r = expand_tied(task, *reduced.token_parameters(reduced.initial_parameters(init)))
        if init.kind == "constant":
            assert torch.all(a_r == 1e-2) and torch.all(v_r == 1e-2)
        else:  # the tied pair is repeated on every noise token, the rest are independent draws
            noise = slice(task.S + task.R, task.S + task.R + task.N)
            assert torch.all(a_r[noise] == a_r[task.S + task.R])
            assert torch.unique(a_r).numel() == task.vocab_size - task.N + 1
        embedded = EmbeddedModel(task, "linear", dim=10, embeddings="orthonormal", seed=1)
        a_e, v_e = embedded.token_parameters(embedded.initial_parameters(init))
        assert a_e.shape == (task.vocab_size,) and v_e.shape == (task.vocab_size, task.num_answers)
        assert torch.allclose(a_e, a_r, rtol=0, atol=1e-13)
        assert torch.allclose(v_e, v_r, rtol=0, atol=1e-13)


@pytest.mark.parametrize("attention,init_kind", [("linear", "constant"), ("softmax", "gaussian")])
def test_reduced_flow_equals_embedded_orthonormal_flow(attention, init_kind):
    base = Config().override({
        "task.subjects": 3, "task.relations": 2, "task.answers_per_relation": 2, "task.noise_tokens": 2,
        "task.seq_len": 5, "task.facts": "random", "task.seed": 3, "model.attention": attention,
        "init.kind": init_kind, "init.scale": 1e-2 if init_kind == "constant" else 0.1,
    })
    task = FactTask(base.task)
    grid = log_time_grid(0.1, 120.0, 16)
    results, models = {}, {}
    flush = torch.set_flush_denormal(True)  # the embedded flow's off-span entries decay into denormals
    try:
        for kind in ("reduced", "embedded"):
            config = base.override({"model.kind": kind, **({"model.dim": 10} if kind == "embedded" else {})})
            model = build_model(config, task)
            field = gradient_field(make_objective(model, task, config.loss), model.preconditioner)
            result = integrate_flow(field, model.initial_parameters(config.init), grid, rtol=1e-10,
                                    atol=1e-12)
            assert result.status == "ok", result.message
            results[kind], models[kind] = result, model
    finally:
        if flush:
            torch.set_flush_denormal(False)
    reduced, embedded = models["reduced"], models["embedded"]
    assert isinstance(reduced, ReducedModel) and reduced.tied
    assert isinstance(embedded, EmbeddedModel)

    losses = {k: torch.stack([models[k].population_loss(x) for x in results[k].states]) for k in models}
    # The run must actually learn (otherwise equality would be trivial).
    assert float(losses["reduced"][0] - losses["reduced"][-1]) > 0.5
    assert torch.allclose(losses["reduced"], losses["embedded"], rtol=0, atol=1e-8)
    for x_red, x_emb in zip(results["reduced"].states, results["embedded"].states, strict=True):
        a_red, v_red = expand_tied(task, *reduced.token_parameters(x_red))
        a_emb, v_emb = embedded.token_parameters(x_emb)
        assert torch.allclose(a_emb, a_red, rtol=0, atol=1e-8)
        assert torch.allclose(v_emb, v_red, rtol=0, atol=1e-8)
        assert torch.allclose(embedded.population_logits(x_emb), reduced.population_logits(x_red), rtol=0,
                              atol=1e-8)


# --------------------------------------------------------------------------------------------------
# 3. The population loss is the expectation over sequences
# --------------------------------------------------------------------------------------------------

def sequence_logits(a: torch.Tensor, v: torch.Tensor, seqs: torch.Tensor, attention: str) -> torch.Tensor:
    """(B, |A|) logits of explicit token sequences (B, T), position by position (full vocabulary)."""
    a_t, v_t = a[seqs], v[seqs]  # (B, T), (B, T, |A|)
    weights = a_t if attention == "linear" else torch.softmax(a_t, dim=1)
    return (weights[..., None] * v_t).sum(1)


def enumerate_sequences(task: FactTask):
    """Every sequence with its probability and target: s, r at two distinct positions among the first
    T-1 (uniform over ordered pairs), i.i.d. uniform noise elsewhere, EOS last."""
    S, R, N, T = task.S, task.R, task.N, task.T
    seqs, probs, targets = [], [], []
    pairs = list(itertools.permutations(range(T - 1), 2))
    for s, r in itertools.product(range(S), range(R)):
        for ps, pr in pairs:
            for noise in itertools.product(range(N), repeat=T - 3):
                seq = [0] * T
                seq[ps], seq[pr], seq[-1] = s, S + r, task.vocab_size - 1
                free = [t for t in range(T - 1) if t not in (ps, pr)]
                for t, n in zip(free, noise, strict=True):
                    seq[t] = S + R + n
                seqs.append(seq)
                probs.append(task.subject_weights[s] * task.relation_weights[r] / len(pairs) / N ** (T - 3))
                targets.append(task.facts[s, r])
    return torch.tensor(seqs), torch.tensor(probs, dtype=torch.float64), torch.tensor(targets)


@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("noise,length,count", [(2, 5, 2 * 2 * 12 * 4), (0, 3, 2 * 2 * 2)])
def test_population_loss_equals_exact_enumeration(attention, noise, length, count):
    task = FactTask(TaskConfig(subjects=2, relations=2, answers_per_relation=2, noise_tokens=noise,
                               seq_len=length, facts="random", seed=1, subject_zipf=1.0, relation_zipf=0.5))
    seqs, probs, targets = enumerate_sequences(task)
    assert len(seqs) == count and float(probs.sum()) == pytest.approx(1.0, abs=1e-14)
    tied = ReducedModel(task, attention, tied=True)
    theta = random_theta(tied.num_params, seed=21, scale=0.8)  # noise-symmetric: one tied pair
    full, expand = tied.untied()
    a, v = full.token_parameters(expand(theta))
    assert a.shape == (task.vocab_size,)
    ce = torch.nn.functional.cross_entropy(sequence_logits(a, v, seqs, attention), targets, reduction="none")
    exact = float((probs * ce).sum())
    assert float(tied.population_loss(theta)) == pytest.approx(exact, rel=1e-12)
    assert float(tied.population_loss_and_gradient(theta)[0]) == pytest.approx(exact, rel=1e-12)
    assert float(full.population_loss(expand(theta))) == pytest.approx(exact, rel=1e-12)
    # The frequencies matter: the same sequences weighted uniformly give a different number.
    uniform = float(ce.mean())
    assert abs(uniform - exact) > 1e-3


@pytest.mark.parametrize("attention", ["linear", "softmax"])
def test_sequence_logits_match_position_by_position_computation(attention):
    """The count representation of ``sequence_logits`` against logits written from explicit sequences:
    per token for the reduced models, from the matrices of docs/design.md §3.2 for the embedded ones."""
    task = small_task(seq_len=7)
    seqs = task.sample_sequences(50, torch.Generator().manual_seed(3))
    counts = torch.nn.functional.one_hot(seqs, task.vocab_size).sum(1).to(torch.float64)
    tied = ReducedModel(task, attention, tied=True)
    theta = random_theta(tied.num_params, seed=31, scale=0.7)
    full, expand = tied.untied()
    expected = sequence_logits(*full.token_parameters(expand(theta)), seqs, attention)
    assert torch.allclose(tied.sequence_logits(theta, counts), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(full.sequence_logits(expand(theta), counts), expected, rtol=1e-12, atol=1e-12)
    untied = ReducedModel(task, attention, tied=False)
    theta = random_theta(untied.num_params, seed=32, scale=0.7)
    expected = sequence_logits(*untied.token_parameters(theta), seqs, attention)
    assert torch.allclose(untied.sequence_logits(theta, counts), expected, rtol=1e-12, atol=1e-12)
    for embeddings in ("orthonormal", "gaussian"):
        model = EmbeddedModel(task, attention, dim=9, embeddings=embeddings, seed=2)
        theta = random_theta(model.num_params, seed=33, scale=0.7)
        w_kq, w_ov = theta[:81].reshape(9, 9), theta[81:].reshape(9, 9)
        x = model.E[seqs]  # (B, T, d)
        scores = torch.einsum("i,ij,btj->bt", model.E[-1], w_kq, x)  # x_T^T W_KQ x_t
        weights = scores if attention == "linear" else torch.softmax(scores, dim=1)
        expected = (weights[..., None] * x).sum(1) @ w_ov.T @ model.U.T  # U W_OV Σ_t w_t x_t
        assert torch.allclose(model.sequence_logits(theta, counts), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attention", ["linear", "softmax"])
def test_population_loss_matches_monte_carlo_with_zipf_frequencies(attention):
    config = TaskConfig(subjects=4, relations=3, answers_per_relation=3, noise_tokens=3, seq_len=7,
                        facts="random", seed=2, subject_zipf=1.0, relation_zipf=1.0)
    task = FactTask(config)
    tied = ReducedModel(task, attention, tied=True)
    theta = random_theta(tied.num_params, seed=22, scale=0.5)
    a_tied, v_tied = tied.token_parameters(theta)  # views into theta
    # Subject 0 and relation 0 (the most frequent) largely known: the frequencies change the loss.
    a_tied[0] = a_tied[task.S] = 1.5
    v_tied[0, task.facts[0]] += 4.0
    v_tied[task.S, :task.D] += 3.0
    full, expand = tied.untied()
    a, v = full.token_parameters(expand(theta))

    seqs = task.sample_sequences(40_000, torch.Generator().manual_seed(1))
    S, R = task.S, task.R
    assert torch.all(seqs[:, -1] == task.eos)
    assert torch.all(((seqs[:, :-1] < S).sum(1) == 1) & (((seqs >= S) & (seqs < S + R)).sum(1) == 1))
    s = torch.where(seqs < S, seqs, S).min(1).values
    r = torch.where((seqs >= S) & (seqs < S + R), seqs - S, R).min(1).values
    targets = torch.as_tensor(task.facts)[s, r]
    ce = torch.nn.functional.cross_entropy(sequence_logits(a, v, seqs, attention), targets, reduction="none")
    mean, stderr = float(ce.mean()), float(ce.std() / math.sqrt(len(ce)))
    population = float(tied.population_loss(theta))
    assert abs(mean - population) < 4 * stderr
    # The check is sensitive to both frequencies: uniform subjects or uniform relations give a loss far
    # outside the band.
    for change in ({"subject_zipf": 0.0}, {"relation_zipf": 0.0}):
        uniform = ReducedModel(FactTask(dataclasses.replace(config, **change)), attention)
        assert abs(float(uniform.population_loss(theta)) - population) > 10 * stderr


# --------------------------------------------------------------------------------------------------
# 4. Task sampler and reference levels
# --------------------------------------------------------------------------------------------------

def test_sample_counts_follow_the_distribution():
    task = FactTask(TaskConfig(subjects=4, relations=3, answers_per_relation=2, noise_tokens=3, seq_len=8,
                               facts="random", seed=5, subject_zipf=1.0, relation_zipf=0.5))
    B = 40_000
    counts, targets = task.sample(B, torch.Generator().manual_seed(8))
    S, R, N, T = task.S, task.R, task.N, task.T
    assert counts.shape == (B, task.vocab_size) and counts.dtype == torch.float64
    assert torch.all(counts.sum(1) == T)
    assert torch.all(counts[:, :S].sum(1) == 1) and torch.all(counts[:, S:S + R].sum(1) == 1)
    assert torch.all(counts[:, -1] == 1) and torch.all(counts[:, S + R:S + R + N].sum(1) == T - 3)
    assert torch.all((counts[:, :S] == 0) | (counts[:, :S] == 1))
    s, r = counts[:, :S].argmax(1), counts[:, S:S + R].argmax(1)
    assert torch.equal(targets, torch.as_tensor(task.facts)[s, r])

    def within(freq: np.ndarray, p: np.ndarray, n: int) -> bool:
        return bool(np.all(np.abs(freq - p) < 4.5 * np.sqrt(p * (1 - p) / n)))

    p_s = np.arange(1, S + 1) ** -1.0
    p_r = np.arange(1, R + 1) ** -0.5
    assert within(np.bincount(s.numpy(), minlength=S) / B, p_s / p_s.sum(), B)
    assert within(np.bincount(r.numpy(), minlength=R) / B, p_r / p_r.sum(), B)
    # Each noise token: Binomial(T-3, 1/N) per sequence.
    noise = counts[:, S + R:S + R + N].numpy()
    sd = math.sqrt((T - 3) * (1 / N) * (1 - 1 / N) / B)
    assert np.all(np.abs(noise.mean(0) - (T - 3) / N) < 4.5 * sd)


def test_structured_figure5_levels():
    levels = FactTask(TaskConfig()).levels  # S=16, R=4, D=8, structured
    assert levels.log_answers == pytest.approx(math.log(32), abs=1e-12)
    assert levels.given_relation == pytest.approx(math.log(8), abs=1e-12)
    assert levels.answer_entropy == pytest.approx(math.log(32), abs=1e-12)
    assert levels.given_subject == pytest.approx(math.log(4), abs=1e-12)


def entropy_of(counter: dict, total: float) -> float:
    return -sum(c / total * math.log(c / total) for c in counter.values() if c > 0)


@pytest.mark.parametrize("zipf", [0.0, 1.0])
def test_random_table_levels_by_counting(zipf):
    task = FactTask(TaskConfig(subjects=5, relations=3, answers_per_relation=4, facts="random", seed=9,
                               subject_zipf=zipf, relation_zipf=zipf / 2))
    S, R, D = 5, 3, 4
    ws = np.arange(1, S + 1) ** -zipf
    wr = np.arange(1, R + 1) ** -(zipf / 2)
    ws, wr = ws / ws.sum(), wr / wr.sum()
    table = task.facts
    assert np.all(table // D == np.arange(R)[None, :])  # a*(s, r) ∈ A_r
    h_given_r = sum(wr[r] * entropy_of(_weighted(Counter(), ((table[s, r], ws[s]) for s in range(S))), 1.0)
                    for r in range(R))
    h_given_s = sum(ws[s] * entropy_of(_weighted(Counter(), ((table[s, r], wr[r]) for r in range(R))), 1.0)
                    for s in range(S))
    marginal = _weighted(Counter(), ((table[s, r], ws[s] * wr[r]) for s in range(S) for r in range(R)))
    levels = task.levels
    assert levels.given_relation == pytest.approx(h_given_r, abs=1e-12)
    assert levels.given_subject == pytest.approx(h_given_s, abs=1e-12)
    assert levels.answer_entropy == pytest.approx(entropy_of(marginal, 1.0), abs=1e-12)
    assert levels.log_answers == pytest.approx(math.log(R * D), abs=1e-12)
    assert levels.given_relation < math.log(D)  # a random table of 5 subjects is not balanced


def _weighted(counter: Counter, items) -> Counter:
    for key, weight in items:
        counter[int(key)] += weight
    return counter


# --------------------------------------------------------------------------------------------------
# 5. Config validation
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,key,shown", [
    ({"task.subjects": 0}, "task.subjects", "0"),
    ({"task.subjects": "0"}, "task.subjects", "0"),
    ({"flow.rtol": -1}, "flow.rtol", "-1"),
    ({"model.kind": "foo"}, "model.kind", "foo"),
    ({"task.foo": 3}, "task.foo", "3"),
    ({"task.seq_len": 2}, "task.seq_len", "2"),
    ({"task.noise_tokens": 0, "task.seq_len": 32}, "task.noise_tokens", "0"),
    ({"model.kind": "embedded", "model.embeddings": "gaussian", "loss.kind": "population"},
     "loss.kind", "population"),
])
def test_config_override_rejects_bad_values(overrides, key, shown):
    with pytest.raises(ConfigError) as info:
        Config().override(overrides)
    message = str(info.value)
    assert key in message and shown in message, message
    assert "\n" not in message


def test_config_accepts_the_corrected_values():
    config = Config().override({"task.subjects": "3", "flow.rtol": 1e-8, "task.seq_len": 3,
                                "task.noise_tokens": 0})
    assert config.task.subjects == 3 and config.flow.rtol == 1e-8
    embedded = Config().override({"model.kind": "embedded", "model.embeddings": "gaussian",
                                  "loss.kind": "sampled"})
    assert embedded.model.embeddings == "gaussian"


def test_population_objective_refuses_inexact_models():
    task = small_task()
    with pytest.raises(ConfigError, match="loss.kind"):
        make_objective(EmbeddedModel(task, dim=8, embeddings="gaussian"), task, LossConfig())


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("zipf", [0.0, 0.7])
def test_reduced_hessian_vector_product_closed_form(tied, zipf):
    """Linear attention: the closed-form H·u against double reverse-mode autodiff and against central
    differences of the closed-form gradient; softmax has none (None, autodiff is used)."""
    task = small_task(subject_zipf=zipf)
    model = ReducedModel(task, attention="linear", tied=tied)
    theta, u = random_theta(model.num_params, 11), random_theta(model.num_params, 12, scale=1.0)
    closed = model.population_hessian_vector_product(theta, u)
    with torch.enable_grad():
        x = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.population_loss(x), x, create_graph=True)
        (autodiff,) = torch.autograd.grad(g, x, grad_outputs=u)
    assert relative_error(closed, autodiff) < 1e-12
    h = 1e-6
    grad_at = lambda y: model.population_loss_and_gradient(y)[1]  # noqa: E731
    differences = (grad_at(theta + h * u) - grad_at(theta - h * u)) / (2 * h)
    assert relative_error(closed, differences) < 1e-7
    assert ReducedModel(task, attention="softmax").population_hessian_vector_product(theta, u) is None


@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("rows", [1, 2])
def test_blocked_population_terms_equal_one_block(monkeypatch, attention, rows):
    """Large tables are processed in blocks of subject rows (cache-sized): the loss, gradient and H·u
    summed block by block equal the one-block computation, for single and batched θ, including a last
    block shorter than the others (3 subjects in blocks of 2)."""
    task = small_task(subject_zipf=0.7)
    model = ReducedModel(task, attention)
    thetas = torch.stack([random_theta(model.num_params, seed) for seed in (21, 22)])
    u = random_theta(model.num_params, 23, scale=1.0)
    whole_loss, whole_grad = model.blocked_loss_and_gradient(thetas)
    whole_hv = model.blocked_hessian_vector_product(thetas[0], u)
    per_subject = task.R * task.num_answers
    monkeypatch.setattr(reduced, "BLOCK_ELEMENTS", rows * per_subject * len(thetas))
    assert len(model._subject_blocks(thetas)) == -(-task.S // rows) > 1
    loss, grad = model.blocked_loss_and_gradient(thetas)
    assert relative_error(loss, whole_loss) < 1e-13 and relative_error(grad, whole_grad) < 1e-13
    monkeypatch.setattr(reduced, "BLOCK_ELEMENTS", rows * per_subject)
    assert len(model._subject_blocks(thetas[0])) > 1
    if attention == "linear":
        assert relative_error(model.blocked_hessian_vector_product(thetas[0], u), whole_hv) < 1e-13
