"""dynamics.task's sampled batches as token counts (each sequence: one subject, one relation, T − 3 noise
tokens from the noise range, EOS; the target its fact's answer) and the named reference levels. Written for
the survivors of a mutation sample of dynamics/task.py (docs/testing.md)."""

from __future__ import annotations

import math

import torch

from dynamics.config import TaskConfig
from dynamics.task import FactTask


def test_a_sampled_batch_counts_each_sequences_tokens_in_their_ranges():
    task = FactTask(TaskConfig(subjects=4, relations=2, answers_per_relation=2, noise_tokens=3, seq_len=7))
    S, R, N = 4, 2, 3
    counts, targets = task.sample(256, torch.Generator().manual_seed(0))
    assert counts.shape == (256, task.vocab_size) and counts.dtype == torch.float64
    assert (counts.sum(1) == 7).all()
    assert (counts[:, :S].sum(1) == 1).all() and (counts[:, S:S + R].sum(1) == 1).all()
    assert (counts[:, S + R:S + R + N].sum(1) == 7 - 3).all()  # noise from the noise range only
    assert (counts[:, task.eos] == 1).all()
    assert (counts[:, S + R:S + R + N].sum(0) > 0).all()  # every noise token is drawn
    s, r = counts[:, :S].argmax(1), counts[:, S:S + R].argmax(1)
    assert torch.equal(targets, torch.as_tensor(task.facts)[s, r])


def test_the_same_generator_seed_draws_the_same_batch():
    task = FactTask(TaskConfig(subjects=4, relations=2, answers_per_relation=2, noise_tokens=3, seq_len=7))
    first, again = (task.sample(64, torch.Generator().manual_seed(5)) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_the_reference_levels_are_named_as_the_plots_and_summaries_read_them():
    levels = FactTask(TaskConfig()).levels.as_dict()  # figure 5's table: log|A| = log 32, H(A|R) = log 8
    assert list(levels) == ["log|A|", "H(A)", "H(A|R)", "H(A|S)", "0"]
    assert math.isclose(levels["log|A|"], math.log(32), rel_tol=1e-12)
    assert math.isclose(levels["H(A|R)"], math.log(8), rel_tol=1e-12)
    assert levels["0"] == 0.0
