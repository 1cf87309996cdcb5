"""dynamics.budget through its public functions: the sizes it prints, the wording and advice of its flow
refusals, the probe's estimate of a sign flow and check_config's discrete-run check. Written for the
survivors of a mutation run of dynamics/budget.py (docs/testing.md)."""

from __future__ import annotations

import pytest

from dynamics import resolve_config
from dynamics.budget import check_config, check_flow_steps, check_geometry_eps, flow_steps, format_bytes
from dynamics.errors import ConfigError


@pytest.mark.parametrize(("n", "shown"), [
    (0, "0 bytes"), (5, "5 bytes"), (1023, "1023 bytes"), (1024, "1.0 kB"), (1536, "1.5 kB"),
    (2**20, "1.0 MB"), (5 * 2**40, "5.0 TB"), (2**60, "1.0 EB"), (2**70 - 2**60, "1023.0 EB"),
    (2**70, "10^21 bytes"), (2**100, "10^30 bytes"), (10**40, "10^40 bytes")])
def test_format_bytes(n, shown):
    assert format_bytes(n) == shown


def sign(**sets):
    return resolve_config("tiny", overrides={"flow.geometry": "sign", **sets})


def test_the_refusal_of_eps_zero_says_where_the_field_is_discontinuous():
    with pytest.raises(ConfigError) as symmetric:
        check_geometry_eps(sign(**{"flow.geometry_eps": 0.0, "init.kind": "constant"}))
    assert str(symmetric.value).startswith(
        "flow.geometry_eps=0.0: the sign field is discontinuous at ε = 0 and chatters at the symmetric "
        "start (init.kind='constant'), where every gradient entry is 0; allowed: flow.geometry_eps=0.0001 "
        "or larger")
    with pytest.raises(ConfigError) as random:
        check_geometry_eps(sign(**{"flow.geometry_eps": 0.0, "init.kind": "gaussian"}))
    assert "chatters where gradient entries (singular values) cross 0 on the way; allowed: " in str(
        random.value)


def test_a_refused_sign_flow_is_advised_a_hundred_times_its_eps(monkeypatch):
    monkeypatch.setenv("FACTRECALL_STEP_LIMIT", "2")  # every flow's estimate is above 2 steps
    with pytest.raises(ConfigError) as refused:
        check_flow_steps(sign(**{"flow.geometry_eps": 1e-3, "flow.method": "auto"}))
    message = str(refused.value)
    assert message.startswith("flow.geometry_eps=0.001: about ")
    assert ("above the limit of 2 (from flow.max_steps=200000); allowed: flow.geometry_eps=0.1 or larger"
            in message)


def test_a_probe_that_finishes_is_the_flows_own_count():
    config = sign(**{"flow.geometry_eps": 1e-4, "flow.method": "auto", "flow.t_max": 50.0})
    estimate = flow_steps(config)
    assert estimate.radius is None and estimate.span == 50.0 and estimate.reached == 50.0
    assert 0 < estimate.probe_steps < 64 and estimate.steps == float(estimate.probe_steps)


def test_a_probe_cut_at_its_steps_extrapolates_to_t_max():
    config = sign(**{"flow.geometry_eps": 1e-6, "flow.method": "cvode"})
    estimate = flow_steps(config)
    assert estimate.probe_steps == 64 and 0 < estimate.reached < config.flow.t_max
    assert estimate.span == config.flow.t_max
    assert estimate.steps == pytest.approx(64 * config.flow.t_max / estimate.reached, rel=1e-12)


def test_check_config_checks_the_discrete_run_with_train_only(monkeypatch):
    monkeypatch.setenv("FACTRECALL_STEP_LIMIT", "100000")
    config = resolve_config("tiny", overrides={"train.steps": 10**6})
    with pytest.raises(ConfigError) as refused:
        check_config(config, train=True)
    assert str(refused.value) == ("train.steps=1000000: needs 1e+06 steps, above the limit of 1e+05 steps "
                                  "(FACTRECALL_STEP_LIMIT sets another)")
    check_config(config)  # the flow alone: its train.steps are not its steps


@pytest.mark.parametrize(("seq_len", "noise"), [(7, 4), (32, 29)])
def test_a_sampled_evaluation_holds_two_numbers_per_noise_position(seq_len, noise):
    """B sampled sequences of task.seq_len T hold T − 3 noise positions each (subject, relation and answer
    are the other three): an index and a one per draw, 8 bytes each."""
    from dynamics.budget import _evaluation

    config = resolve_config("tiny", overrides={"task.seq_len": seq_len})
    part = [p for p in _evaluation(config, 10, "batch") if "noise positions" in p.what][0]
    assert part.bytes == 2 * 10 * noise * 8
    assert part.what == f"batch × noise positions (task.seq_len - 3) = 10 × {noise} draws"


@pytest.mark.parametrize("text", ["abc", "0", "2KiBB", "0.5"])
def test_a_size_that_is_not_one_is_refused_in_one_whole_line(text):
    from dynamics.budget import parse_size

    with pytest.raises(ConfigError) as err:
        parse_size("--max-memory", text)  # "0.5" without the available memory: no size either
    assert str(err.value) == (f"--max-memory={text!r}: must be a size of at least one byte: bytes (1000000), "
                              "with a unit K, M, G or T (512M, 8GiB, 1.5TB) or a fraction of the available "
                              "memory (0.5)")


@pytest.mark.parametrize(("embeddings", "square"), [("orthonormal", True), ("hadamard", True),
                                                    ("gaussian", False)])
def test_orthonormal_and_hadamard_embeddings_add_their_orthogonalisation(embeddings, square):
    """The tables (vocabulary + answers) × d, twice, and 6 d² more for an orthogonalisation (orthonormal and
    Hadamard rows), 8 bytes each."""
    from dynamics.budget import _embeddings
    from dynamics.task import vocab_size

    config = resolve_config("tiny", overrides={"model.kind": "embedded", "model.dim": 16,
                                               "model.embeddings": embeddings, "loss.kind": "sampled"})
    rows = vocab_size(config.task) + config.task.relations * config.task.answers_per_relation
    (part,) = _embeddings(config)
    assert part.bytes == (2 * rows * 16 + (6 * 16 * 16 if square else 0)) * 8
    assert part.what == (f"embeddings (vocabulary + answers) × model.dim = {rows} × 16"
                         + (" and model.dim² orthogonalisations" if square else ""))


def test_the_memory_limit_is_the_available_then_the_physical_memory(monkeypatch):
    import os

    from dynamics import budget

    monkeypatch.delenv("FACTRECALL_MEMORY_LIMIT", raising=False)
    fields = dict(line.split(":") for line in open("/proc/meminfo").read().splitlines())
    assert budget._meminfo("MemTotal") == int(fields["MemTotal"].split()[0]) * 1024
    assert budget._meminfo("Nothing") is None
    monkeypatch.setattr(budget, "_meminfo", lambda field: None)
    assert budget.memory_limit() == (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                                     "the physical memory")

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert budget.memory_limit() == (None, "unknown")


def test_the_record_evaluation_is_its_metrics_and_its_largest_block():
    """metrics: RECORD_METRICS × states × S R; the block: the factorised engine's tables, states × ((S + R)
    |A| + S R), or the logits, states × S R |A| (at most RECORD_ELEMENTS); RECORD_BLOCK_COPIES of it."""
    from dynamics import budget

    reduced = resolve_config("tiny")  # the factorised record
    embedded = resolve_config("tiny", overrides={"model.kind": "embedded", "model.dim": 16})
    for config, factorised in ((reduced, True), (embedded, False)):
        t = config.task
        S, R, A = t.subjects, t.relations, t.relations * t.answers_per_relation
        block = 3 * ((S + R) * A + S * R) if factorised else 3 * S * R * A
        part = budget._record_evaluation(config, 3)
        assert part.bytes == int((budget.RECORD_METRICS * 3 * S * R + budget.RECORD_BLOCK_COPIES * block) * 8)
        what = ("(subjects + relations) × answers tables of 3 states" if factorised
                else "logits of 3 states × facts × answers")
        assert part.what == f"record evaluation: metrics of 3 states × {S * R} facts and the {what}"


def test_an_implicit_flow_holds_its_dense_jacobian():
    from dynamics import budget

    config = resolve_config("tiny", overrides={"flow.method": "bdf"})
    params = budget._parameters(config, False)
    parts = [p for p in budget._run(config, "flow") if p.what.startswith("dense Jacobian")]
    assert [(p.what, p.bytes) for p in parts] == [(f"dense Jacobian parameters² = {params}²",
                                                   2 * params * params * 8)]
    assert not [p for p in budget._run(resolve_config("tiny"), "flow") if p.what.startswith("dense Jacobian")]


def test_a_transformers_attention_table_per_fact():
    """Per fact: each head's weights over the vocabulary and its head_dim values, and the vocabulary's
    logits: S R (heads (V + head_dim) + V) floats."""
    from dynamics import budget
    from dynamics.task import vocab_size

    config = resolve_config("tiny", overrides={"model.kind": "transformer", "model.attention": "softmax",
                                               "loss.kind": "sampled"})
    t, m = config.task, config.model
    V = vocab_size(t)
    (part,) = [p for p in budget._population(config) if p.what.startswith("attention table")]
    assert part.bytes == t.subjects * t.relations * (m.heads * (V + m.head_dim) + V) * 8
