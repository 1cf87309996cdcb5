"""The ``Trajectory`` record: the one object that crosses from ``dynamics`` to ``analysis``
(docs/design.md §6).

A trajectory holds, at every recorded time, the aggregate losses and the per-fact record of
docs/design.md §4: ``fact_loss = -log p(a*)``, ``p_correct = p(a*)``, ``p_relation = p(A_r)``,
``p_subject`` (mass on the subject's answers {a*(s, r') : r'}), and ``argmax_class`` (a :class:`FactClass`
of the most likely answer), with the run's :class:`~dynamics.records.RunInfo`. It is saved as
``trajectory.npz`` (arrays only, loaded without pickle) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write, atomic_write_json
from .models import Model
from .numerics import compute_settings
from .records import RunInfo
from .task import FactClass, FactTask, reference_levels

ATTENTION_PARTS = ("subject", "relation", "noise", "eos")


def fact_metrics(task: FactTask, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-fact record from logits (..., S, R, |A|) (see module docstring); every array is (..., S, R)."""
    logp = torch.log_softmax(logits, dim=-1)
    facts = torch.as_tensor(task.facts, device=logits.device)
    S, R, D = task.S, task.R, task.D
    lead = logits.shape[:-3]
    log_correct = logp.gather(-1, facts.expand(*lead, S, R)[..., None])[..., 0]
    own = torch.arange(R, device=logits.device)
    by_block = logp.reshape(*lead, S, R, R, D)  # [..., s, r, block r', within-block]
    log_relation = torch.logsumexp(by_block[..., own, own, :], dim=-1)
    subject_answers = facts[:, None, :].expand(*lead, S, R, R)  # a*(s, r') for every r'
    log_subject = torch.logsumexp(logp.gather(-1, subject_answers), dim=-1)
    top = logits.argmax(-1)
    in_block = (top // D) == own
    argmax_class = torch.where(top == facts, FactClass.RECALLED,
                               torch.where(in_block, FactClass.HALLUCINATING, FactClass.UNINFORMED))
    return {"fact_loss": -log_correct, "p_correct": log_correct.exp(), "p_relation": log_relation.exp(),
            "p_subject": log_subject.exp(), "relation_loss": -log_relation, "subject_loss": -log_subject,
            "argmax_class": argmax_class}


@dataclass
class Trajectory:
    """Recorded times ``t`` (K,), aggregate curves (K,), per-fact arrays (K, S, R) and the run's record."""

    t: np.ndarray
    loss: np.ndarray
    relation_loss: np.ndarray
    subject_loss: np.ndarray
    fact_loss: np.ndarray
    p_correct: np.ndarray
    p_relation: np.ndarray
    p_subject: np.ndarray
    argmax_class: np.ndarray
    facts: np.ndarray
    fact_weights: np.ndarray
    answers_per_relation: int
    attention: np.ndarray  # (K, 4): subject, relation, noise block, EOS (frequency-weighted over facts)
    norms: dict[str, np.ndarray]  # name -> (K,)
    info: RunInfo | None = None  # what the run says about itself (summary.json); None for bare records
    states: np.ndarray | None = None  # (K, P) parameters, one set per token; kept only when asked

    ARRAYS = ("t", "loss", "relation_loss", "subject_loss", "fact_loss", "p_correct", "p_relation",
              "p_subject", "argmax_class", "facts", "fact_weights")

    def save(self, directory: str | Path) -> None:
        """Write ``trajectory.npz`` and ``summary.json`` into ``directory`` atomically (temp + rename)."""
        directory = Path(directory)
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        arrays["answers_per_relation"] = np.asarray(self.answers_per_relation)
        for i, part in enumerate(ATTENTION_PARTS):
            arrays[f"attention_{part}"] = self.attention[:, i]
        for name, values in self.norms.items():
            arrays[f"norm_{name}"] = values
        if self.states is not None:
            arrays["states"] = self.states
        atomic_write(directory / "trajectory.npz", lambda f: np.savez_compressed(f, **arrays))
        if self.info is not None:
            atomic_write_json(directory / "summary.json", self.info.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> Trajectory:
        """Read a trajectory saved by :meth:`save` (no pickle is ever loaded)."""
        directory = Path(directory)
        with np.load(directory / "trajectory.npz", allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        info = RunInfo.from_dict(json.loads((directory / "summary.json").read_text()))
        attention = np.stack([arrays.pop(f"attention_{p}") for p in ATTENTION_PARTS], axis=1)
        norms = {k[len("norm_"):]: arrays.pop(k) for k in list(arrays) if k.startswith("norm_")}
        return cls(**{name: arrays[name] for name in cls.ARRAYS}, attention=attention, norms=norms,
                   answers_per_relation=int(arrays["answers_per_relation"]), info=info,
                   states=arrays.get("states"))

    @property
    def levels(self) -> dict[str, float]:
        """Reference levels (log|A|, H(A), H(A|R), H(A|S), 0) of this run's own table and frequencies."""
        return reference_levels(self.facts, self.fact_weights, self.answers_per_relation).as_dict()

    @property
    def final_loss(self) -> float:
        """Loss at the last recorded time."""
        return float(self.loss[-1])


# record() evaluates about this many logits at once (states × S × R × |A|): the per-fact metrics hold a few
# copies, so memory stays bounded however large the table.
RECORD_ELEMENTS = 2**22


def record(model: Model, task: FactTask, times: np.ndarray, states: torch.Tensor,
           info: RunInfo | None = None, chunk: int | None = None) -> Trajectory:
    """Evaluate the per-fact record of ``model`` at every state (states (K, P) at ``times``), ``chunk``
    states at a time (default: as many as keep RECORD_ELEMENTS logits). A model with ``has_fact_record``
    (the factorised linear-attention reduced model: no S×R×|A| table) gives the per-fact arrays through its
    ``fact_record``; otherwise they come from the logits. ``info``, when given, is attached with its
    ``final_loss`` set to the record's last loss."""
    factorised = model.has_fact_record
    if chunk is None:
        per_state = task.S * task.R * (4 if factorised else task.num_answers)
        chunk = max(1, RECORD_ELEMENTS // per_state)
    weights = torch.as_tensor(task.fact_weights, device=states.device)
    logits_of = torch.func.vmap(model.population_logits)
    attention_of = torch.func.vmap(model.attention_weights)
    norms_of = torch.func.vmap(model.parameter_norms)
    arrays: dict[str, np.ndarray] = {}  # filled chunk by chunk: the record is never held twice
    done = 0
    with torch.no_grad(), compute_settings(states[0]):
        for block in torch.split(states, chunk):
            metrics = model.fact_record(block) if factorised else fact_metrics(task, logits_of(block))
            metrics["loss"] = (weights * metrics["fact_loss"]).sum((-2, -1))
            for name in ("relation_loss", "subject_loss"):
                metrics[name] = (weights * metrics[name]).sum((-2, -1))
            metrics["attention"] = (weights[..., None] * attention_of(block)).sum((-3, -2))
            metrics.update({f"norm:{k}": v for k, v in norms_of(block).items()})
            for name, value in metrics.items():
                value = value.cpu().numpy()
                if name not in arrays:
                    dtype = np.int8 if name == "argmax_class" else value.dtype
                    arrays[name] = np.empty((len(states), *value.shape[1:]), dtype=dtype)
                arrays[name][done:done + len(value)] = value
            done += len(block)
    norms = {name[len("norm:"):]: arrays.pop(name) for name in list(arrays) if name.startswith("norm:")}
    trajectory = Trajectory(t=np.asarray(times, dtype=np.float64), facts=task.facts.copy(),
                            fact_weights=task.fact_weights.copy(), answers_per_relation=task.D, norms=norms,
                            **arrays)
    if info is not None:
        trajectory.info = dataclasses.replace(info, final_loss=trajectory.final_loss)
    return trajectory
