"""The ``Trajectory`` record: the one object that crosses from ``dynamics`` to ``analysis``
(docs/design.md §6).

A trajectory holds, at every recorded time, the aggregate losses and the per-fact record of
docs/design.md §4: ``fact_loss = -log p(a*)``, ``p_correct = p(a*)``, ``p_relation = p(A_r)``,
``p_subject`` (mass on the subject's answers {a*(s, r') : r'}), and ``argmax_class`` (a :class:`FactClass`
of the most likely answer), with the run's :class:`~dynamics.records.RunInfo`. It is saved as
``trajectory.npz`` (arrays only, loaded without pickle) and ``summary.json`` (and ``config.json``), whose
layout, writing and checks are :mod:`dynamics.rundir`'s. A per-fact array larger than
:data:`~dynamics.rundir.SPOOL_BYTES` is held on disk, memory-mapped read-only (:class:`Recorder` writes it
there as the flow goes; :meth:`Trajectory.load` streams it out of ``trajectory.npz``), so that a record's
memory does not grow with its points.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .models import Model
from .numerics import compute_settings
from .records import RunInfo
from .rundir import (  # noqa: F401  (SAVE_ALLOWED: the refusal's tail, read here by its tests)
    ATTENTION_PARTS,
    DIGEST_KEY,
    SAVE_ALLOWED,
    SUMMARY_FILE,
    Spool,
    check_record_config,
    check_save_target,
    config_tree,
    config_tree_digest,
    read_config,
    read_record,
    read_summary,
    record_writer,
    spooled,
)
from .task import FactClass, FactTask, reference_levels


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
    final_state: np.ndarray | None = None  # (P,) a flow's θ at its last recorded time (a later run's start)

    ARRAYS = ("t", "loss", "relation_loss", "subject_loss", "fact_loss", "p_correct", "p_relation",
              "p_subject", "argmax_class", "facts", "fact_weights")

    config_digest: str | None = None  # sha256 of the config.json saved with it (config_tree_digest)

    def save(self, directory: str | os.PathLike[str], config: Config | None = None,
             table: np.ndarray | None = None, tree: Mapping[str, Any] | None = None) -> None:
        """Write ``trajectory.npz`` and ``summary.json`` (and, with ``config``, ``config.json``: a complete
        run directory that ``factrecall stages`` reads) into ``directory``, each file atomically
        (:func:`~dynamics.rundir.write_record`).

        ``directory`` must be new, empty, or hold only what an earlier save wrote there (these three
        files), which this save replaces as a whole: a directory holding anything else (an analysis of
        another trajectory, a user's files), or a ``config.json`` when no ``config`` is given, is refused
        with a one-line :class:`ConfigError`, so that no run directory ends with parts of two runs. With
        ``config``, the trajectory must be a run of it (:meth:`check_config`). What the caller has made
        already is not made again: ``table``, the facts table of ``config``'s task (``BuiltRun.task.facts``);
        ``tree``, ``config``'s JSON tree (:func:`~dynamics.rundir.config_tree`)."""
        self.saving(directory, config, table, tree)()

    def saving(self, directory: str | os.PathLike[str], config: Config | None = None,
               table: np.ndarray | None = None, tree: Mapping[str, Any] | None = None
               ) -> Callable[[], None]:
        """:meth:`save` in two parts: every check (and ``config_digest``) now, the writing in the function
        returned, which the caller may run beside other work that writes other files into ``directory``
        (``factrecall simulate`` runs it beside the stage analysis)."""
        directory = Path(directory)
        check_save_target(directory, config is not None)
        if config is None:
            tree = None
        else:
            tree = config_tree(config) if tree is None else tree
            self.check_config(config, source=f"Trajectory.save: {str(directory)!r}", table=table)
            self.config_digest = config_tree_digest(tree)
        summary = None if self.info is None else self.info.to_dict()
        return record_writer(directory, self.arrays(), summary, tree)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``trajectory.npz`` holds (:data:`~dynamics.rundir.TRAJECTORY_SCHEMA`)."""
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        arrays["answers_per_relation"] = np.asarray(self.answers_per_relation)
        for i, part in enumerate(ATTENTION_PARTS):
            arrays[f"attention_{part}"] = self.attention[:, i]
        for name, values in self.norms.items():
            arrays[f"norm_{name}"] = values
        for name in ("states", "final_state"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        if self.config_digest is not None:
            arrays[DIGEST_KEY] = np.asarray(self.config_digest)
        return arrays

    @classmethod
    def load(cls, directory: str | os.PathLike[str], config: Config | None = None,
             tree: Mapping[str, Any] | None = None, where: str | None = None) -> Trajectory:
        """Read a trajectory saved by :meth:`save` (no pickle is ever loaded), every array checked first
        (:func:`~dynamics.rundir.read_record`; with ``config``, against the config, and ``tree``, the
        parsed ``config.json``, against the digest saved with the record); ``info`` is None when it was
        saved without one (no ``summary.json``). A damaged file is a one-line :class:`ConfigError`. A
        per-fact array larger than :data:`~dynamics.rundir.SPOOL_BYTES` is read back block by block into a
        temporary file and memory-mapped, read-only."""
        directory = Path(directory)
        arrays = read_record(directory, config, tree, where=where)
        info = read_summary(directory, where) if (directory / SUMMARY_FILE).exists() else None
        attention = np.stack([arrays.pop(f"attention_{p}") for p in ATTENTION_PARTS], axis=1)
        norms = {k[len("norm_"):]: arrays.pop(k) for k in list(arrays) if k.startswith("norm_")}
        digest = str(arrays[DIGEST_KEY]) if DIGEST_KEY in arrays else None
        return cls(**{name: arrays[name] for name in cls.ARRAYS}, attention=attention, norms=norms,
                   answers_per_relation=int(arrays["answers_per_relation"]), info=info,
                   states=arrays.get("states"), final_state=arrays.get("final_state"), config_digest=digest)

    def check_config(self, config: Config, tree: Mapping[str, Any] | None = None, source: str = "the run",
                     table: np.ndarray | None = None) -> None:
        """Refuse (one-line :class:`ConfigError`) a ``config`` this trajectory is not a run of: see
        :func:`check_record_config`. ``tree``: the parsed ``config.json`` it was read from, if any;
        ``table``: the facts table of ``config``'s task, if already built."""
        check_record_config(config, self.facts, self.answers_per_relation, self.config_digest, tree, source,
                            table)

    @property
    def levels(self) -> dict[str, float]:
        """Reference levels (log|A|, H(A), H(A|R), H(A|S), 0) of this run's own table and frequencies."""
        return reference_levels(self.facts, self.fact_weights, self.answers_per_relation).as_dict()

    @property
    def final_loss(self) -> float:
        """Loss at the last recorded time."""
        return float(self.loss[-1])


def load_run(directory: str | os.PathLike[str]) -> tuple[Config, Trajectory]:
    """The config and trajectory of one run directory, every file checked first: ``config.json`` (UTF-8
    JSON of a valid config), ``summary.json`` (a JSON object the run record reads), ``trajectory.npz``
    (:func:`~dynamics.rundir.read_record`: every array's shape against the others and the config's
    table). Anything damaged is one ConfigError naming the directory, the file and what is wrong."""
    directory = Path(directory)
    config, tree = read_config(directory)
    read_summary(directory)
    return config, Trajectory.load(directory, config, tree)


# The record evaluates about this many logits at once (states × S × R × |A|): the per-fact metrics hold a
# few copies, so memory stays bounded however large the table.
RECORD_ELEMENTS = 2**22


def record_chunk(model: Model, task: FactTask) -> int:
    """How many states the record evaluates together: as many as keep RECORD_ELEMENTS logits (the
    factorised record holds about 4 numbers per fact instead of |A|)."""
    per_state = task.S * task.R * (4 if model.has_fact_record else task.num_answers)
    return max(1, RECORD_ELEMENTS // per_state)


class Recorder:
    """The per-fact record filled state by state as a flow reaches its grid points, so that the states are
    never all held: ``add(k, θ)`` for k = 0, 1, … in order (a solver's observer), then
    :meth:`trajectory`. States are evaluated ``chunk`` at a time (copied into one (chunk, P) buffer) and
    their record written into arrays preallocated for ``points`` states; the chunks are those of
    :func:`record` over the same states, so the two give the same numbers bit for bit. ``add`` is meant
    to run under the integration's :func:`~dynamics.numerics.compute_settings` (a solver's observer does;
    :func:`record` sets them itself); the last chunk is evaluated under the same settings.

    A per-fact array larger than :data:`~dynamics.rundir.SPOOL_BYTES` (``spool``: True or False to choose)
    is written chunk by chunk to disk as the flow goes (:class:`~dynamics.rundir.Spool`) and given back
    memory-mapped, read-only: the record's memory does not grow with its points; saving it
    (:meth:`Trajectory.save`) streams it into ``trajectory.npz``. The numbers are the same either way.

    ``seconds`` is the time spent recording."""

    def __init__(self, model: Model, task: FactTask, points: int, chunk: int | None = None,
                 spool: bool | None = None):
        self.model, self.task, self.points, self.spool = model, task, points, spool
        self.chunk = record_chunk(model, task) if chunk is None else chunk
        self.count = 0
        self.seconds = 0.0
        self._buffer: torch.Tensor | None = None
        self._held = 0  # states in the buffer, not yet recorded
        self._arrays: dict[str, np.ndarray] = {}  # filled chunk by chunk: the record is never held twice
        self._weights = torch.as_tensor(task.fact_weights)
        self._attention_of = torch.func.vmap(model.attention_weights)
        self._norms_of = torch.func.vmap(model.parameter_norms)
        self._logits_of = torch.func.vmap(model.population_logits)

    def add(self, k: int, theta: torch.Tensor) -> None:
        """The state θ at grid point ``k`` (the next one: k = number of states added so far)."""
        if k != self.count or k >= self.points:
            raise ValueError(f"Recorder.add: state {k} given, expected {self.count} (of {self.points})")
        start = time.perf_counter()
        if self._buffer is None:
            self._buffer = torch.empty((self.chunk, *theta.shape), dtype=theta.dtype, device=theta.device)
            self._weights = self._weights.to(theta.device)
        self._buffer[self._held] = theta
        self._held += 1
        self.count += 1
        if self._held == self.chunk:
            self._flush()
        self.seconds += time.perf_counter() - start

    def _flush(self) -> None:
        if not self._held:
            return
        block = self._buffer[:self._held]
        model, task, weights = self.model, self.task, self._weights
        with torch.no_grad():
            metrics = model.fact_record(block) if model.has_fact_record else fact_metrics(task,
                                                                                          self._logits_of(block))
            metrics["loss"] = (weights * metrics["fact_loss"]).sum((-2, -1))
            for name in ("relation_loss", "subject_loss"):
                metrics[name] = (weights * metrics[name]).sum((-2, -1))
            metrics["attention"] = (weights[..., None] * self._attention_of(block)).sum((-3, -2))
            metrics.update({f"norm:{k}": v for k, v in self._norms_of(block).items()})
        done = self.count - self._held
        for name, value in metrics.items():
            value = value.cpu().numpy()
            if name not in self._arrays:
                dtype = np.int8 if name == "argmax_class" else value.dtype
                shape = (self.points, *value.shape[1:])
                on_disk = self.spool if self.spool is not None else spooled(shape, dtype)
                self._arrays[name] = (Spool(shape, dtype, behind=True) if on_disk and value.ndim == 3
                                      else np.empty(shape, dtype=dtype))
            if isinstance(self._arrays[name], Spool):
                self._arrays[name].write(done, value)
            else:
                self._arrays[name][done:done + len(value)] = value
        self._held = 0

    def trajectory(self, times: np.ndarray, info: RunInfo | None = None) -> Trajectory:
        """The record of the states added, at ``times`` (one per state). ``info``, when given, is attached
        with its ``final_loss`` set to the record's last loss."""
        if len(times) != self.count or self.count == 0:
            raise ValueError(f"Recorder.trajectory: {len(times)} times for {self.count} recorded states")
        start = time.perf_counter()
        if self._held:
            with compute_settings(self._buffer[0]):
                self._flush()
        self._buffer = None
        arrays = {name: values.array(self.count) if isinstance(values, Spool) else values[:self.count]
                  for name, values in self._arrays.items()}
        self._arrays = {}
        norms = {name[len("norm:"):]: arrays.pop(name) for name in list(arrays) if name.startswith("norm:")}
        task = self.task
        trajectory = Trajectory(t=np.asarray(times, dtype=np.float64), facts=task.facts.copy(),
                                fact_weights=task.fact_weights.copy(), answers_per_relation=task.D,
                                norms=norms, **arrays)
        if info is not None:
            trajectory.info = dataclasses.replace(info, final_loss=trajectory.final_loss)
        self.seconds += time.perf_counter() - start
        return trajectory


def record(model: Model, task: FactTask, times: np.ndarray, states: torch.Tensor,
           info: RunInfo | None = None, chunk: int | None = None, spool: bool | None = None) -> Trajectory:
    """Evaluate the per-fact record of ``model`` at every state (states (K, P) at ``times``), ``chunk``
    states at a time (default :func:`record_chunk`). A model with ``has_fact_record`` (the factorised
    linear-attention reduced model: no S×R×|A| table) gives the per-fact arrays through its
    ``fact_record``; otherwise they come from the logits. ``info``, when given, is attached with its
    ``final_loss`` set to the record's last loss. The same as feeding the states one by one to a
    :class:`Recorder` (which is what this does; ``spool`` as there)."""
    recorder = Recorder(model, task, len(states), chunk, spool)
    with compute_settings(states[0]):  # the settings a solver's observer runs under
        for k, theta in enumerate(states):
            recorder.add(k, theta)
    return recorder.trajectory(times, info)
