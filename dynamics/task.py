"""The synthetic factual-recall task (docs/design.md §2): vocabulary, fact table, frequencies, sampler.

Vocabulary layout (size V = S + R + N + 1): subjects ``0..S-1``, relations ``S..S+R-1``, noise tokens
``S+R..S+R+N-1``, EOS ``V-1``. Answers: ``|A| = R·D`` classes; block ``A_r = {r·D, ..., r·D + D - 1}``.

Both linear and softmax attention read at EOS are blind to positions, so a sequence is fully described
by its token *counts*; the sampler returns counts (B, V) and targets (B,).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .config import TaskConfig



def vocab_size(config: TaskConfig) -> int:
    """The vocabulary size V = S + R + N + 1 (subjects, relations, noise tokens, EOS) of a task config."""
    return config.vocabulary


class FactClass(IntEnum):
    """What a fact's answer distribution shows, ordered by knowledge. For ``argmax_class``: the most likely
    answer is outside the relation's answers A_r (UNINFORMED), another answer of A_r (HALLUCINATING), or
    a* (RECALLED). Stage detection classifies each fact at each time with the same three words."""

    UNINFORMED = 0
    HALLUCINATING = 1
    RECALLED = 2


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Normalised frequencies ``w_i ∝ (i + 1)^(-exponent)``; exponent 0 gives the uniform distribution."""
    w = np.arange(1, n + 1, dtype=np.float64) ** (-exponent)
    return w / w.sum()


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True)
class ReferenceLevels:
    """Loss levels of the best prediction from partial information (nats), weighted by frequencies."""

    log_answers: float  # log |A|: uniform output
    answer_entropy: float  # H(A): the answer marginal known, nothing else
    given_relation: float  # H(A | R): relation known, subject not
    given_subject: float  # H(A | S): subject known, relation not

    def as_dict(self) -> dict[str, float]:
        """Named levels, including the final level 0 (every fact recalled)."""
        return {"log|A|": self.log_answers, "H(A)": self.answer_entropy, "H(A|R)": self.given_relation,
                "H(A|S)": self.given_subject, "0": 0.0}


def reference_levels(facts: np.ndarray, fact_weights: np.ndarray, answers_per_relation: int
                     ) -> ReferenceLevels:
    """Reference entropies of a fact table ``facts`` (S, R) under fact frequencies ``fact_weights`` (S, R).

    H(A) is the entropy of the answer marginal q(a) = Σ_{s,r: a*(s,r)=a} w_{sr}; H(A|R) = Σ_r w_r H(a* | r);
    H(A|S) = Σ_s w_s H(a* | s), each conditional taken under the fact frequencies.
    """
    S, R = facts.shape
    num_answers = R * answers_per_relation
    marginal = np.zeros(num_answers)
    np.add.at(marginal, facts, fact_weights)
    given_relation = 0.0
    for r in range(R):
        w_r = fact_weights[:, r].sum()
        if w_r == 0:  # a relation never trained has no conditional to average
            continue
        cond = np.zeros(num_answers)
        np.add.at(cond, facts[:, r], fact_weights[:, r] / w_r)
        given_relation += w_r * _entropy(cond)
    given_subject = 0.0
    for s in range(S):
        w_s = fact_weights[s].sum()
        if w_s == 0:  # a held-out subject
            continue
        cond = np.zeros(num_answers)
        np.add.at(cond, facts[s], fact_weights[s] / w_s)
        given_subject += w_s * _entropy(cond)
    return ReferenceLevels(math.log(num_answers), _entropy(marginal), float(given_relation),
                           float(given_subject))


class FactTask:
    """A seeded instance of the task: fact table ``facts[s, r] = a*(s, r)`` and fact frequencies."""

    def __init__(self, config: TaskConfig):
        self.config = config
        self.S, self.R, self.D = config.subjects, config.relations, config.answers_per_relation
        self.N, self.T = config.noise_tokens, config.seq_len
        self.vocab_size = vocab_size(config)
        self.num_answers = self.R * self.D
        self.eos = self.vocab_size - 1
        self.subject_weights = zipf_weights(self.S, config.subject_zipf)
        self.relation_weights = zipf_weights(self.R, config.relation_zipf)
        if config.facts == "structured":
            index = (np.arange(self.S) * self.D) // self.S
            table = np.arange(self.R)[None, :] * self.D + index[:, None]
        else:
            rng = np.random.default_rng(config.seed)
            table = np.arange(self.R)[None, :] * self.D + rng.integers(0, self.D, size=(self.S, self.R))
        self.facts = table.astype(np.int64)

    def with_subject_weights(self, subject_weights: np.ndarray) -> FactTask:
        """The same task (table, vocabulary) with other subject frequencies (S,): what a data schedule trains
        at one time. Subjects of weight 0 are never sampled and never part of the population loss."""
        other = copy.copy(self)
        other.__dict__.pop("fact_weights", None)
        other.__dict__.pop("levels", None)
        other.subject_weights = np.asarray(subject_weights, dtype=np.float64)
        return other

    @cached_property
    def fact_weights(self) -> np.ndarray:
        """(S, R) probability of each fact: product of subject and relation frequencies."""
        return np.outer(self.subject_weights, self.relation_weights)

    @cached_property
    def levels(self) -> ReferenceLevels:
        """Reference entropies of this table and these frequencies (docs/design.md §2)."""
        return reference_levels(self.facts, self.fact_weights, self.D)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch`` fresh sequences as token counts (B, V) float64 and targets (B,) int64.

        Subject and relation are drawn from their frequencies, the T-3 noise tokens i.i.d. uniformly.
        """
        s = torch.multinomial(torch.as_tensor(self.subject_weights), batch, replacement=True,
                              generator=generator)
        r = torch.multinomial(torch.as_tensor(self.relation_weights), batch, replacement=True,
                              generator=generator)
        counts = torch.zeros(batch, self.vocab_size, dtype=torch.float64)
        rows = torch.arange(batch)
        counts[rows, s] += 1
        counts[rows, self.S + r] += 1
        counts[:, self.eos] += 1
        if self.T > 3:
            noise = torch.randint(self.S + self.R, self.S + self.R + self.N, (batch, self.T - 3),
                                  generator=generator)
            counts.scatter_add_(1, noise, torch.ones(batch, self.T - 3, dtype=torch.float64))
        targets = torch.as_tensor(self.facts)[s, r]
        return counts, targets

    def sample_sequences(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Draw explicit token sequences (B, T): subject and relation at two distinct random positions
        among the first T-1, noise elsewhere, EOS last. Used to check the count representation."""
        s = torch.multinomial(torch.as_tensor(self.subject_weights), batch, replacement=True,
                              generator=generator)
        r = torch.multinomial(torch.as_tensor(self.relation_weights), batch, replacement=True,
                              generator=generator)
        seq = torch.randint(self.S + self.R, self.S + self.R + max(self.N, 1), (batch, self.T),
                            generator=generator)
        order = torch.argsort(torch.rand(batch, self.T - 1, generator=generator), dim=1)
        rows = torch.arange(batch)
        seq[rows, order[:, 0]] = s
        seq[rows, order[:, 1]] = self.S + r
        seq[:, -1] = self.eos
        return seq
