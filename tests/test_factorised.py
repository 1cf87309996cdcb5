"""The factorised population loss (dynamics/models/factorised.py) against the blocked forms of ReducedModel,
autodiff of the direct loss, ``fact_metrics`` on the full logits, and a 450-digit reference.

Every check uses float64 on small tables; the blocked path and autodiff agree with the factorised path to
1e-12 relative. Per-fact losses are compared to ``fact_metrics`` up to the rounding of its logits, which
bounds its own absolute precision (a loss far below ε·|ℓ| comes out there as 0).
"""

from __future__ import annotations

import mpmath
import pytest
import torch

from dynamics.config import TaskConfig
from dynamics.models import ReducedModel, factorised
from dynamics.task import FactTask
from dynamics.trajectory import FactClass, fact_metrics

EPS = torch.finfo(torch.float64).eps
RANDOM = dict(subjects=6, relations=3, answers_per_relation=4, noise_tokens=5, seq_len=9, facts="random",
              seed=2)


def make_task(**changes) -> FactTask:
    return FactTask(TaskConfig(**{**RANDOM, **changes}))


def random_theta(model: ReducedModel, scale: float, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*batch, model.num_params, generator=gen, dtype=torch.float64)


@torch.no_grad()
def flagged_facts(model: ReducedModel, theta: torch.Tensor) -> torch.Tensor:
    """Boolean (S, R) mask of the facts whose shifted partition function Z = exp(lse − M) is below TINY at
    θ: those the factorised functions recompute from their own logits (their internal flag, read here)."""
    a, v = model.token_parameters(theta[None])
    x, y, c = factorised._tables(model, a, v)
    f = factorised._facts(a, v, x, y, c, model.population_targets(theta.device)[1])
    mask = torch.zeros_like(f.lse, dtype=torch.bool)
    mask[f.flagged] = True
    return mask[0]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-12) -> None:
    """‖actual − expected‖ ≤ rtol ‖expected‖ (exact equality where expected is 0)."""
    error = float(torch.linalg.norm(actual - expected))
    assert error <= rtol * float(torch.linalg.norm(expected)), (error, float(torch.linalg.norm(expected)))


def autodiff_gradient(model: ReducedModel, theta: torch.Tensor) -> torch.Tensor:
    return torch.func.grad(model.population_loss)(theta)


def autodiff_hvp(model: ReducedModel, theta: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return torch.func.jvp(torch.func.grad(model.population_loss), (theta,), (u,))[1]


def assert_record_matches(model: ReducedModel, record: dict[str, torch.Tensor], thetas: torch.Tensor,
                          rtol: float = 1e-12) -> None:
    """Each state's record against fact_metrics of its full logits: argmax classes equal, the rest within
    rtol plus the absolute rounding of those logits (the reference's own precision)."""
    for k, theta in enumerate(thetas):
        logits = model.population_logits(theta)
        reference = fact_metrics(model.task, logits)
        assert set(record) == set(reference)
        atol = 64 * EPS * max(1.0, float(logits.abs().max()))
        for name, expected in reference.items():
            actual = record[name][k]
            assert actual.shape == expected.shape == (model.task.S, model.task.R)
            if name == "argmax_class":
                assert torch.equal(actual, expected)
            else:
                torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=name)


CASES = [  # (task changes, tied)
    (dict(), True),
    (dict(facts="structured"), True),
    (dict(subject_zipf=1.2, relation_zipf=0.7), True),
    (dict(noise_tokens=0, seq_len=3), True),
    (dict(noise_tokens=0, seq_len=3, subject_zipf=0.5), True),
    (dict(subject_zipf=0.8), False),  # one parameter pair per noise token
    (dict(answers_per_relation=1), True),
    (dict(subjects=1), True),
    (dict(relations=1), True),
    (dict(subjects=1, relations=1, answers_per_relation=1, noise_tokens=0, seq_len=3), True),
]


@pytest.mark.parametrize("scale", [0.5, 5.0])
@pytest.mark.parametrize("changes,tied", CASES)
def test_loss_and_gradient_match_blocked_path_and_autodiff(changes, tied, scale):
    model = ReducedModel(make_task(**changes), tied=tied)
    theta = random_theta(model, scale, seed=7)
    loss, grad = factorised.loss_and_gradient(model, theta)
    blocked_loss, blocked_grad = model.blocked_loss_and_gradient(theta)
    assert loss.shape == () and grad.shape == theta.shape
    assert float(loss) == pytest.approx(float(blocked_loss), rel=1e-12, abs=1e-300)
    assert float(loss) == pytest.approx(float(model.population_loss(theta)), rel=1e-12, abs=1e-300)
    assert_close(grad, blocked_grad)
    assert_close(grad, autodiff_gradient(model, theta))


@pytest.mark.parametrize("scale", [0.5, 5.0])
@pytest.mark.parametrize("changes", [dict(), dict(subject_zipf=1.0, noise_tokens=0, seq_len=3)])
def test_batched_loss_and_gradient(changes, scale):
    model = ReducedModel(make_task(**changes))
    thetas = random_theta(model, scale, seed=8, batch=(3,))
    losses, grads = factorised.loss_and_gradient(model, thetas)
    blocked_losses, blocked_grads = model.blocked_loss_and_gradient(thetas)
    assert losses.shape == (3,) and grads.shape == thetas.shape
    assert_close(losses, blocked_losses)
    for theta, loss, grad, blocked in zip(thetas, losses, grads, blocked_grads, strict=True):
        single_loss, single_grad = factorised.loss_and_gradient(model, theta)
        assert float(loss) == pytest.approx(float(single_loss), rel=1e-13)
        assert_close(grad, single_grad, rtol=1e-13)
        assert_close(grad, blocked)
        assert_close(grad, autodiff_gradient(model, theta))


@pytest.mark.parametrize("scale", [0.5, 5.0])
@pytest.mark.parametrize("changes,tied", CASES)
def test_hessian_vector_product_matches_autodiff(changes, tied, scale):
    model = ReducedModel(make_task(**changes), tied=tied)
    theta = random_theta(model, scale, seed=9)
    u = random_theta(model, 1.0, seed=10)
    hv = factorised.hessian_vector_product(model, theta, u)
    assert hv.shape == theta.shape
    assert_close(hv, autodiff_hvp(model, theta, u))
    assert_close(hv, model.blocked_hessian_vector_product(theta, u))


def test_batched_hessian_vector_product():
    model = ReducedModel(make_task(subject_zipf=0.6))
    thetas = random_theta(model, 1.0, seed=11, batch=(3,))
    us = random_theta(model, 1.0, seed=12, batch=(3,))
    hvs = factorised.hessian_vector_product(model, thetas, us)
    for theta, u, hv in zip(thetas, us, hvs, strict=True):
        assert_close(hv, autodiff_hvp(model, theta, u))


# --------------------------------------------------------------------------------------------------
# The underflow fallback
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,tied", CASES)
def test_gradient_alone_is_the_gradient_of_loss_and_gradient(changes, tied):
    # the same code computing the same thing: bit for bit, one state, a batch, and a state with a flagged fact
    model = ReducedModel(make_task(**changes), tied=tied)
    thetas = torch.stack([random_theta(model, 0.5, seed=31), random_theta(model, 5.0, seed=32)])
    if model.task.S > 1 and model.task.R > 2 and model.task.D > 3:
        thetas = torch.cat([thetas, underflow_state(model)[0][None]])
        assert bool(flagged_facts(model, thetas[-1]).any())
    assert torch.equal(factorised.gradient(model, thetas), factorised.loss_and_gradient(model, thetas)[1])
    for theta in thetas:
        assert torch.equal(factorised.gradient(model, theta), factorised.loss_and_gradient(model, theta)[1])
        assert torch.equal(model.population_gradient(theta), model.population_loss_and_gradient(theta)[1])


def test_population_gradient_of_softmax_attention_is_the_blocked_one():
    model = ReducedModel(make_task(), attention="softmax")
    theta = random_theta(model, 0.5, seed=33)
    assert torch.equal(model.population_gradient(theta), model.blocked_loss_and_gradient(theta)[1])
    assert_close(model.population_gradient(theta), autodiff_gradient(model, theta))


def underflow_state(model: ReducedModel) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A random state in which subject 0's values peak far above everything on an answer of block 0 and
    relation 2's on an answer of block 2: for the fact (0, 2) the two maxima sit on different answers, so
    its best logit lies ~900 below m_x + m_y + m_c and the shifted Z = X·(Y⊙C)ᵀ underflows to 0."""
    task = model.task
    theta = random_theta(model, 0.5, seed=21)
    a, v = model.token_parameters(theta)  # views into theta
    D = task.D
    a[0], a[task.S + 2] = 1.0, 1.0
    v[0, 1] += 900.0  # subject 0, answer 1 (block 0)
    v[task.S + 2, 2 * D + 3] += 900.0  # relation 2, answer 3 of block 2
    return theta, [(0, 2)]


def test_detector_flags_underflowing_facts_and_naive_factorisation_fails():
    model = ReducedModel(make_task(subject_zipf=0.9))
    theta, bad = underflow_state(model)
    flagged = flagged_facts(model, theta)
    assert sorted(map(tuple, flagged.nonzero().tolist())) == bad
    # the naive shifted product: Z underflows to exactly 0 and the log-partition becomes -inf
    a, v = model.token_parameters(theta[None])
    x, y, c = factorised._tables(model, a, v)
    Z = (torch.exp(x - x.amax(-1, keepdim=True)) @ (torch.exp(y - y.amax(-1, keepdim=True))
                                                    * torch.exp(c - c.amax(-1, keepdim=True))[:, None]).mT)[0]
    assert float(Z[0, 2]) == 0.0 and torch.isinf(torch.log(Z[0, 2]))
    assert float(Z[~flagged].min()) > factorised.TINY
    # ... while the exact loss of that fact is finite and large
    fact_loss = -torch.log_softmax(model.population_logits(theta), -1)[0, 2, model.task.facts[0, 2]]
    assert 100.0 < float(fact_loss) < 2000.0


@pytest.mark.parametrize("chunk", [None, 1])
def test_underflow_fallback_matches_blocked_path_and_autodiff(monkeypatch, chunk):
    if chunk is not None:  # one flagged fact per chunk of the exact recomputation
        monkeypatch.setattr(factorised, "FALLBACK_ELEMENTS", chunk)
    model = ReducedModel(make_task(subject_zipf=0.9))
    theta, _ = underflow_state(model)
    loss, grad = factorised.loss_and_gradient(model, theta)
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())
    assert float(loss) == pytest.approx(float(model.population_loss(theta)), rel=1e-12)
    assert_close(grad, autodiff_gradient(model, theta))
    assert_close(grad, model.blocked_loss_and_gradient(theta)[1])
    u = random_theta(model, 1.0, seed=22)
    assert_close(factorised.hessian_vector_product(model, theta, u), autodiff_hvp(model, theta, u))
    # batched, with the underflowing state in the middle of ordinary ones
    thetas = torch.stack([random_theta(model, 0.5, seed=23), theta, random_theta(model, 5.0, seed=24)])
    losses, grads = factorised.loss_and_gradient(model, thetas)
    for state, value, gradient in zip(thetas, losses, grads, strict=True):
        assert float(value) == pytest.approx(float(model.population_loss(state)), rel=1e-12)
        assert_close(gradient, autodiff_gradient(model, state))
    assert_record_matches(model, factorised.fact_record(model, thetas), thetas)


def table_state(model: ReducedModel, x: list[list[float]], y: list[list[float]]) -> torch.Tensor:
    """The state whose additive tables are x (S, |A|), y (R, |A|) and c = 0: every score 1, the values of
    subject and relation tokens those rows, every other value 0 (logits ℓ(s, r, a) = x_s[a] + y_r[a])."""
    task = model.task
    theta = torch.zeros(model.num_params, dtype=torch.float64)
    a, v = model.token_parameters(theta)  # views into theta
    a[:] = 1.0
    v[:task.S] = torch.tensor(x, dtype=torch.float64)
    v[task.S:task.S + task.R] = torch.tensor(y, dtype=torch.float64)
    return theta


def exact_record(model: ReducedModel, theta: torch.Tensor) -> dict[str, list[list[mpmath.mpf]]]:
    """fact_loss, relation_loss and subject_loss of every fact at 450 digits, from the model's logits."""
    task = model.task
    logits = model.population_logits(theta).tolist()
    out = {name: [[None] * task.R for _ in range(task.S)] for name in ("fact_loss", "relation_loss",
                                                                       "subject_loss")}
    with mpmath.workdps(450):
        for s in range(task.S):
            for r in range(task.R):
                ell = [mpmath.mpf(value) for value in logits[s][r]]
                total = lse(ell, range(task.num_answers))
                out["fact_loss"][s][r] = total - ell[task.facts[s, r]]
                out["relation_loss"][s][r] = total - lse(ell, range(r * task.D, (r + 1) * task.D))
                out["subject_loss"][s][r] = total - lse(ell, task.facts[s])
    return out


# One subject, R = 2 relations of D = 4 answers: a*(0, 0) = 3 (block 0 = answers 0..3), a*(0, 1) = 5
# (block 1 = answers 4..7). Each state puts one of the record's masses below TINY = 1e-200 while Z, and the
# other masses, stay above it (so that only that mass's own check sends the fact to the exact recomputation):
PARTIAL_UNDERFLOW = {
    # fact (0, 0): the own block at e^-345 ≈ 1e-150, the other block's e^-806 underflows to 0: Z_off = 0
    # (R = 2: the check is needed from two relations on); the relation loss is e^-461 ≈ 5e-201, not 0
    "Z_off": ([[0.0] * 4 + [-806.0] * 4], [[-345.0] * 4 + [0.0] * 4, [0.0] * 8]),
    # fact (0, 0): the own block at e^-740, a subnormal with ~3 digits: Z_in < TINY, the relation loss
    # log(Z_off / Z_in) ≈ 740 must not carry its rounding
    "Z_in": ([[-740.0] * 4 + [0.0] * 4], [[0.0] * 8, [0.0] * 8]),
    # the subject's own answers at e^-740 (subnormal), every other at 0: S_in < TINY, the subject loss
    # log(S_out / S_in) ≈ 741 must not carry S_in's rounding
    "S_in": ([[0.0, 0.0, 0.0, -740.0, 0.0, -740.0, 0.0, 0.0]], [[0.0] * 8, [0.0] * 8]),
    # the subject's own answers at e^-437 ≈ 1e-190, the others at e^-740 (subnormal): S_out < TINY, the
    # subject loss ≈ S_out / S_in ≈ 1e-132 must not carry S_out's rounding
    "S_out": ([[-740.0, -740.0, -740.0, 0.0, -740.0, 0.0, -740.0, -740.0]],
              [[0.0, 0.0, 0.0, -437.0, 0.0, -437.0, 0.0, 0.0]] * 2),
}


@pytest.mark.parametrize("mass", list(PARTIAL_UNDERFLOW))
def test_fact_record_recomputes_a_fact_whose_partial_mass_underflows(mass):
    """Z stays above TINY (the fact is not flagged by the loss) but one mass of the record does not: the
    record recomputes that fact from its logits, to 1e-12 relative against 450 digits (below 1e-300 a
    double has no relative precision left: there, 1e-300 absolute)."""
    model = ReducedModel(make_task(subjects=1, relations=2))
    assert model.task.facts.tolist() == [[3, 5]]
    theta = table_state(model, *PARTIAL_UNDERFLOW[mass])
    assert not flagged_facts(model, theta).any()
    record = factorised.fact_record(model, theta[None])
    for name, rows in exact_record(model, theta).items():
        for r, value in enumerate(rows[0]):
            assert float(record[name][0, 0, r]) == pytest.approx(float(value), rel=1e-12, abs=1e-300), \
                (mass, name, r, float(value))
    loss, grad = factorised.loss_and_gradient(model, theta)
    assert float(loss) == pytest.approx(float(model.population_loss(theta)), rel=1e-12)
    assert_close(grad, autodiff_gradient(model, theta))


def test_a_fact_with_a_small_nonzero_partition_function_is_flagged():
    """0 < Z < 1e-200 (here Z ≈ e^-575 ≈ 1e-250, a normal number) is flagged as Z = 0 is (the documented
    threshold), and the loss, gradient and record stay exact."""
    model = ReducedModel(make_task(subject_zipf=0.9))
    theta, bad = underflow_state(model)
    a, v = model.token_parameters(theta)
    D = model.task.D
    v[0, 1] -= 900.0 - 575.0
    v[model.task.S + 2, 2 * D + 3] -= 900.0 - 575.0
    x, y, c = factorised._tables(model, *model.token_parameters(theta[None]))
    Z = (torch.exp(x - x.amax(-1, keepdim=True)) @ (torch.exp(y - y.amax(-1, keepdim=True))
                                                    * torch.exp(c - c.amax(-1, keepdim=True))[:, None]).mT)[0]
    assert 1e-300 < float(Z[0, 2]) < 1e-200
    assert sorted(map(tuple, flagged_facts(model, theta).nonzero().tolist())) == bad
    loss, grad = factorised.loss_and_gradient(model, theta)
    assert float(loss) == pytest.approx(float(model.population_loss(theta)), rel=1e-12)
    assert_close(grad, autodiff_gradient(model, theta))
    assert_record_matches(model, factorised.fact_record(model, theta[None]), theta[None])


# --------------------------------------------------------------------------------------------------
# The per-fact record
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,tied", CASES)
def test_fact_record_matches_fact_metrics(changes, tied):
    model = ReducedModel(make_task(**changes), tied=tied)
    thetas = torch.cat([random_theta(model, 0.5, seed=31, batch=(2,)),
                        random_theta(model, 5.0, seed=32, batch=(2,))])
    record = factorised.fact_record(model, thetas)
    assert_record_matches(model, record, thetas)
    assert record["argmax_class"].dtype == torch.int64


def test_fact_record_in_small_chunks(monkeypatch):
    """One state per block, one subject per argmax chunk, one fact per exact recomputation."""
    model = ReducedModel(make_task(relation_zipf=0.5))
    thetas = random_theta(model, 3.0, seed=33, batch=(3,))
    whole = factorised.fact_record(model, thetas)
    for name, value in (("RECORD_ELEMENTS", 1), ("ARGMAX_ELEMENTS", 1), ("FALLBACK_ELEMENTS", 1)):
        monkeypatch.setattr(factorised, name, value)
    chunked = factorised.fact_record(model, thetas)
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=0, atol=0)


def test_fact_record_in_pieces_of_subjects(monkeypatch):
    """The subjects a piece at a time (pieces of 2, then of 4 and an uneven 2), one state flagged by a fact
    of subject 4 (a later piece: its rows are the piece's own): the record of the whole table to rounding
    (smaller matrix products: 1e-14 relative), the same argmax, and no piece above its bound."""
    model = ReducedModel(make_task(subject_zipf=0.9))
    task = model.task
    theta = random_theta(model, 0.5, seed=21)
    a, v = model.token_parameters(theta)  # views into theta, as in underflow_state but for subject 4
    a[4], a[task.S + 2] = 1.0, 1.0
    v[4, 1] += 900.0
    v[task.S + 2, 2 * task.D + 3] += 900.0
    assert flagged_facts(model, theta)[4, 2]
    thetas = torch.stack([random_theta(model, 0.5, seed=23), theta, random_theta(model, 5.0, seed=24)])
    whole = factorised.fact_record(model, thetas)
    pieces = []
    record_subjects = factorised._record_subjects

    def counted(model, a_s, *rest):
        pieces.append(a_s.shape[1])
        return record_subjects(model, a_s, *rest)
    monkeypatch.setattr(factorised, "_record_subjects", counted)
    width = len(thetas) * (task.num_answers + task.R)  # table entries per subject of the 3 states
    for rows, expected in ((2, [2, 2, 2]), (4, [4, 2])):
        pieces.clear()
        monkeypatch.setattr(factorised, "RECORD_PIECE_ELEMENTS", rows * width)
        record = factorised.fact_record(model, thetas)
        assert pieces == expected
        assert torch.equal(record["argmax_class"], whole["argmax_class"])
        for name in whole:
            assert_close(record[name].double(), whole[name].double(), rtol=1e-14)
        assert_record_matches(model, record, thetas)


def test_fact_record_at_symmetric_initial_state():
    """Figure 5 at the constant initial state: every logit of a fact ties, so the argmax is the first
    index, and the record must reproduce fact_metrics' tie breaking exactly."""
    model = ReducedModel(FactTask(TaskConfig()))
    thetas = torch.full((1, model.num_params), 1e-5, dtype=torch.float64)
    record = factorised.fact_record(model, thetas)
    assert_record_matches(model, record, thetas)
    logits = model.population_logits(thetas[0])
    assert bool((logits == logits[..., :1]).all())  # exact ties
    assert set(record["argmax_class"].unique().tolist()) == set(FactClass)  # all three classes occur


def test_fact_record_argmax_follows_the_rounding_of_the_model_logits():
    """Two answers whose logits tie in exact arithmetic but not after rounding: (0.1 + 0.2) + 0.3 exceeds
    0.6 by one ulp, so the model's logits put the argmax on answer 1 (0.1 + (0.2 + 0.3) would tie and pick
    answer 0). The record must sum in the model's order."""
    model = ReducedModel(make_task(subjects=1, relations=1, answers_per_relation=2, noise_tokens=0, seq_len=3,
                                   facts="structured"))
    theta = torch.zeros(model.num_params, dtype=torch.float64)
    a, v = model.token_parameters(theta)
    a[:] = 1.0
    v[:] = torch.tensor([[0.6, 0.1], [0.0, 0.2], [0.0, 0.3]], dtype=torch.float64)  # subject, relation, EOS
    assert int(model.population_logits(theta).argmax()) == 1
    record = factorised.fact_record(model, theta[None])
    assert int(record["argmax_class"][0, 0, 0]) == FactClass.HALLUCINATING  # a* = 0
    assert_record_matches(model, record, theta[None])


def lse(logits: list, answers) -> mpmath.mpf:
    """log Σ_{a ∈ answers} exp logits[a] at the working precision of mpmath."""
    return mpmath.log(mpmath.fsum(mpmath.exp(logits[i]) for i in answers))


def test_fact_record_keeps_relative_precision_of_small_losses():
    """Against a 450-digit evaluation of the same logits: the factorised record is accurate to ~1e-13
    relative also for losses far below ε (where the log-softmax of fact_metrics returns 0)."""
    model = ReducedModel(make_task(subjects=3, relations=2, answers_per_relation=3))
    theta = random_theta(model, 5.0, seed=41)
    record = factorised.fact_record(model, theta[None])
    logits = model.population_logits(theta).tolist()
    task = model.task
    tiny = 0
    with mpmath.workdps(450):
        for s in range(task.S):
            for r in range(task.R):
                ell = [mpmath.mpf(value) for value in logits[s][r]]
                total = lse(ell, range(task.num_answers))
                exact = {"fact_loss": total - ell[task.facts[s, r]],
                         "relation_loss": total - lse(ell, range(r * task.D, (r + 1) * task.D)),
                         "subject_loss": total - lse(ell, task.facts[s])}
                for name, value in exact.items():
                    tiny += value < 1e-20
                    assert float(record[name][0, s, r]) == pytest.approx(float(value), rel=1e-12, abs=0)
    assert tiny > 0  # the state does exercise losses below ε


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    task = make_task(subjects=40, relations=5, noise_tokens=45, subject_zipf=0.7)
    cpu, gpu = ReducedModel(task), ReducedModel(task, device="cuda")
    thetas = random_theta(cpu, 2.0, seed=51, batch=(3,))
    underflow, _ = underflow_state(cpu)
    thetas[1] = underflow
    u = random_theta(cpu, 1.0, seed=52)
    on_gpu = thetas.cuda()
    loss, grad = factorised.loss_and_gradient(gpu, on_gpu)
    expected_loss, expected_grad = factorised.loss_and_gradient(cpu, thetas)
    assert loss.device.type == grad.device.type == "cuda"
    assert_close(loss.cpu(), expected_loss)
    assert_close(grad.cpu(), expected_grad)
    assert_close(factorised.hessian_vector_product(gpu, on_gpu[1], u.cuda()).cpu(),
                 factorised.hessian_vector_product(cpu, thetas[1], u))
    record, expected = factorised.fact_record(gpu, on_gpu), factorised.fact_record(cpu, thetas)
    for name, value in expected.items():
        torch.testing.assert_close(record[name].cpu(), value, rtol=1e-12, atol=1e-13)


def test_rejects_what_it_does_not_cover():
    task = make_task()
    theta = random_theta(ReducedModel(task), 0.5, seed=61)
    with pytest.raises(ValueError, match="linear attention"):
        factorised.loss_and_gradient(ReducedModel(task, "softmax"), theta)
    with pytest.raises(ValueError, match="float64"):
        factorised.loss_and_gradient(ReducedModel(task), theta.float())
    with pytest.raises(ValueError, match="shape"):
        factorised.hessian_vector_product(ReducedModel(task), theta, theta[:-1])
