"""Frozen, validated configuration dataclasses with dotted overrides (``Config.override``) and value coercion.

A configuration is a tree of small frozen dataclasses (``task``, ``model``, ``init``, ``loss``, ``flow``,
``train``). Every value is checked when the dataclass is built; a bad value raises :class:`ConfigError`
whose message names the dotted key, the value and what is allowed, e.g.
``task.subjects=0: must be an integer >= 1``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..geometry import GEOMETRIES, get_geometry
from ..models.registry import MODEL_KINDS, get_model_kind
from ..optimizers import optimizers_for
from ..solvers.options import SolverOptions
from ..solvers.registry import METHODS

MAX_SHOWN = 240  # characters of an offending value shown in a message (its start and its end)
MAX_SEED = 2**63 - 1  # torch's generators take seeds below 2^64; one rule for every seed
# The cross-entropy's gradient entries are O(1) at most (a probability difference times O(1) parameters), so
# ε beyond 1 regularises every entry (the sign or spectral flow is gone); 1e300 would overflow ε² as well.
MAX_GEOMETRY_EPS = 1.0


def fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    """Raise the one-line ConfigError ``key=value: allowed`` (a long value cut in the middle to MAX_SHOWN
    characters, so that a long path keeps its file name)."""
    shown = repr(value)
    if len(shown) > MAX_SHOWN:
        shown = f"{shown[:MAX_SHOWN * 2 // 3]}...{shown[-MAX_SHOWN // 3:]} ({len(shown)} characters)"
    raise ConfigError(f"{key}={shown}: {allowed}")


def _seed(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        fail(key, value, "must be an integer in [0, 2^63 - 1]")


def _int_at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail(key, value, f"must be an integer >= {low}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(key: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        fail(key, value, "must be a finite number > 0")


def _non_negative(key: str, value: Any) -> None:
    if not _is_number(value) or value < 0:
        fail(key, value, "must be a finite number >= 0")


def check_device(value: Any, key: str = "device") -> None:
    """A device name the engine accepts: ``cpu`` or ``cuda[:N]`` (a ConfigError naming ``key`` otherwise)."""
    if not (isinstance(value, str) and re.fullmatch(r"cpu|cuda(:\d+)?", value)):
        fail(key, value, "must be cpu or cuda[:N]")


def _choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(key, value, "must be one of " + ", ".join(choices))


@dataclass(frozen=True)
class TaskConfig:
    """The synthetic factual-recall task (docs/design.md §2). Defaults are the paper's Figure 5."""

    subjects: int = 16
    relations: int = 4
    answers_per_relation: int = 8
    noise_tokens: int = 20
    seq_len: int = 32
    facts: str = "structured"
    subject_zipf: float = 0.0
    relation_zipf: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _int_at_least("task.subjects", self.subjects, 1)
        _int_at_least("task.relations", self.relations, 1)
        _int_at_least("task.answers_per_relation", self.answers_per_relation, 1)
        _int_at_least("task.noise_tokens", self.noise_tokens, 0)
        _int_at_least("task.seq_len", self.seq_len, 3)
        _choice("task.facts", self.facts, ("random", "structured"))
        _non_negative("task.subject_zipf", self.subject_zipf)
        _non_negative("task.relation_zipf", self.relation_zipf)
        _seed("task.seed", self.seed)
        if self.seq_len > 3 and self.noise_tokens == 0:
            fail("task.noise_tokens", self.noise_tokens,
                  f"must be >= 1 when task.seq_len={self.seq_len} > 3 leaves positions for noise")
        if self.seq_len == 3 and self.noise_tokens > 0:
            fail("task.noise_tokens", self.noise_tokens, "has no effect: task.seq_len=3 leaves no position "
                 "for noise (subject, relation, EOS); allowed: 0, or task.seq_len > 3")
        if self.subjects == 1 and self.subject_zipf != 0:
            fail("task.subject_zipf", self.subject_zipf, "has no effect with task.subjects=1; allowed: 0")
        if self.relations == 1 and self.relation_zipf != 0:
            fail("task.relation_zipf", self.relation_zipf, "has no effect with task.relations=1; allowed: 0")

    @property
    def vocabulary(self) -> int:
        """The vocabulary size V = S + R + N + 1 (subjects, relations, noise tokens, EOS)."""
        return self.subjects + self.relations + self.noise_tokens + 1


@dataclass(frozen=True)
class ModelConfig:
    """Which model (docs/design.md §3): a kind of :mod:`dynamics.models.registry` (``reduced`` scalar-score
    model, ``embedded`` explicit-matrix layer, the paper's one-layer ``transformer`` (§3.3: ``heads`` softmax
    heads of size ``head_dim``, a ReLU MLP of width ``mlp_width`` (0: none), frozen Gaussian embeddings of
    dimension ``dim``), or one registered by the user). Each kind reads some of these keys; the others
    must stay at their defaults (:meth:`Config._check_unused`)."""

    kind: str = "reduced"
    attention: str = "linear"
    dim: int = 64
    embeddings: str = "orthonormal"
    seed: int = 0
    heads: int = 8
    head_dim: int = 8
    mlp_width: int = 64

    def __post_init__(self) -> None:
        _choice("model.kind", self.kind, MODEL_KINDS)
        _int_at_least("model.heads", self.heads, 1)
        _int_at_least("model.head_dim", self.head_dim, 1)
        _int_at_least("model.mlp_width", self.mlp_width, 0)
        _choice("model.attention", self.attention, ("linear", "softmax"))
        _int_at_least("model.dim", self.dim, 1)
        _choice("model.embeddings", self.embeddings, ("orthonormal", "onehot", "hadamard", "gaussian"))
        _seed("model.seed", self.seed)


@dataclass(frozen=True)
class InitConfig:
    """Initial parameters: every entry equal to ``scale`` (constant) or drawn N(0, scale²) (gaussian); on
    Li et al.'s positive manifold (manifold: every score ``beta``, every token's value ``alpha`` times the
    unit vector on the answers of its facts, dynamics.manifold); or the final state of the run in
    ``from_run``."""

    kind: str = "constant"
    scale: float = 1e-5
    seed: int = 0
    # A run directory to start from (fine-tuning): its flow's final state, tokens added since initialised
    # as above. Empty: start from the initialisation.
    from_run: str = ""
    alpha: float = 0.01  # manifold: the norm of each value vector (Li et al.'s α₀)
    beta: float = 0.01  # manifold: every attention score (Li et al.'s β₀)

    def __post_init__(self) -> None:
        _choice("init.kind", self.kind, ("constant", "gaussian", "manifold"))
        if not isinstance(self.from_run, str):
            fail("init.from_run", self.from_run, "must be a path to a run directory (or empty)")
        _positive("init.scale", self.scale)
        _seed("init.seed", self.seed)
        _positive("init.alpha", self.alpha)
        _positive("init.beta", self.beta)


@dataclass(frozen=True)
class LossConfig:
    """Training objective: exact ``population`` loss, or the loss on a fixed seeded ``sampled`` set."""

    kind: str = "population"
    samples: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("loss.kind", self.kind, ("population", "sampled"))
        _int_at_least("loss.samples", self.samples, 1)
        _seed("loss.seed", self.seed)


@dataclass(frozen=True)
class FlowConfig:
    """Gradient-flow integration: log-spaced record grid on [t_min, t_max] plus t = 0, solver options."""

    t_max: float = 819.2
    t_min: float = 0.01
    points: int = 256
    method: str = "dopri5"
    rtol: float = SolverOptions.rtol  # the solver's own defaults, written once there
    atol: float = SolverOptions.atol
    first_step: float = SolverOptions.first_step
    max_steps: int = SolverOptions.max_steps
    modified_lr: float = 0.0  # > 0: integrate GD's modified flow −P∇L − (η/2) P H P ∇L for this η
    # Implicit methods' Jacobian products J·v = −P H v: ``difference`` (f(θ + εv) − f(θ))/ε, one gradient
    # each, ``hvp``, an exact Hessian-vector product, or ``blocks``, −P H̃ v from the curvature blocks of
    # ``newton_preconditioner=blocks`` (an approximate Jacobian: a modified Newton iteration).
    jacobian: str = "difference"
    # The steepest-descent geometry (dynamics.geometry): ``euclidean`` (gradient flow), ``sign`` (ℓ∞: the
    # flow of signSGD / Adam), ``spectral`` (the spectral norm per matrix block: the flow of Muon);
    # ``geometry_eps`` regularises sign and spectral where a gradient entry or a singular value vanishes
    # (smaller: more faithful, stiffer); 0 is refused for them before a run, as the field chatters
    # (dynamics.budget.check_geometry_eps; the euclidean flow keeps the default 0).
    geometry: str = "euclidean"
    geometry_eps: float = 0.0
    # cvode's Newton systems (I − γJ) δ = r: GMRES unpreconditioned (``none``) or with the model's curvature
    # blocks (``blocks``: dynamics.solvers.preconditioner; the reduced model with linear attention).
    newton_preconditioner: str = "none"

    def __post_init__(self) -> None:
        _positive("flow.t_max", self.t_max)
        _positive("flow.t_min", self.t_min)
        if self.t_min >= self.t_max:
            fail("flow.t_min", self.t_min, f"must be < flow.t_max={self.t_max}")
        _int_at_least("flow.points", self.points, 2)
        _choice("flow.method", self.method, METHODS)
        _positive("flow.rtol", self.rtol)
        _positive("flow.atol", self.atol)
        _positive("flow.first_step", self.first_step)
        _int_at_least("flow.max_steps", self.max_steps, 1)
        _non_negative("flow.modified_lr", self.modified_lr)
        _choice("flow.jacobian", self.jacobian, ("difference", "hvp", "blocks"))
        _choice("flow.geometry", self.geometry, GEOMETRIES)  # the registry, as it is now
        _non_negative("flow.geometry_eps", self.geometry_eps)
        if self.geometry_eps > MAX_GEOMETRY_EPS:
            fail("flow.geometry_eps", self.geometry_eps,
                 f"must be in [0, {MAX_GEOMETRY_EPS:g}]: ε only regularises where |P g| (a gradient entry "
                 "or a singular value) is below it; a larger ε turns the flow into the gradient flow slowed "
                 "by 1/ε")
        if self.jacobian == "hvp" and METHODS[self.method].uses is None:
            fail("flow.jacobian", self.jacobian, f"only implicit methods use Jacobian products; flow.method="
                 f"{self.method!r} is explicit; allowed: difference (the default), or an implicit method")
        if self.jacobian == "hvp" and self.modified_lr > 0:
            fail("flow.jacobian", self.jacobian, "GD's modified field (flow.modified_lr > 0) has no "
                 "Hessian-vector product here (its Jacobian is not −PH); allowed: difference")
        _choice("flow.newton_preconditioner", self.newton_preconditioner, ("none", "blocks"))
        if self.jacobian == "blocks" and self.newton_preconditioner != "blocks":
            fail("flow.jacobian", self.jacobian, "J·v from the curvature blocks approximates the Newton "
                 "matrix that their preconditioner inverts: set flow.newton_preconditioner=blocks too; "
                 "allowed: difference, hvp")
        if self.newton_preconditioner != "none":
            if METHODS[self.method].uses != "jacobian_vector":
                fail("flow.newton_preconditioner", self.newton_preconditioner, "only cvode's GMRES "
                     f"(flow.method=cvode or auto) is preconditioned, not flow.method={self.method!r}; "
                     "allowed: none")
            if self.modified_lr > 0 or not get_geometry(self.geometry).linear:
                fail("flow.newton_preconditioner", self.newton_preconditioner, "the blocks approximate "
                     "J = −PH: the gradient flow in a geometry with D(g) = P g and flow.modified_lr=0 only; "
                     "allowed: none")
        if (exact := getattr(METHODS[self.method], "exact_geometry", None)) is not None and (
                self.geometry != exact or self.geometry_eps != 0 or self.modified_lr > 0):
            fail("flow.method", self.method, f"integrates the ε = 0 {exact} flow only (not flow.geometry="
                 f"{self.geometry!r}, flow.geometry_eps={self.geometry_eps!r}, flow.modified_lr="
                 f"{self.modified_lr!r}); allowed: flow.geometry={exact} with flow.geometry_eps=0, or "
                 "another method")
        geometry = get_geometry(self.geometry)
        defaults = {f"flow.{f.name}": f.default for f in dataclasses.fields(self)}
        geometry.check_keys(_flow_values(self), defaults)
        if not geometry.linear and self.modified_lr > 0:
            fail("flow.modified_lr", self.modified_lr, "GD's modified flow needs a geometry with D(g) = P g: "
                 "flow.geometry=" + " or ".join(g.name for g in GEOMETRIES.values() if g.linear))


def _flow_values(flow: FlowConfig) -> dict[str, Any]:
    """The values of a flow config by dotted key (``flow.geometry_eps`` → ...)."""
    return {f"flow.{f.name}": getattr(flow, f.name) for f in dataclasses.fields(flow)}


@dataclass(frozen=True)
class TrainConfig:
    """Discrete training from the flow's initialisation; step k sits at flow time t = k·lr."""

    optimizer: str = "sgd"
    lr: float = 0.1
    batch_size: int = 1024
    steps: int = 8192
    seed: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.95  # muon's momentum μ (Nesterov)

    def __post_init__(self) -> None:
        _choice("train.optimizer", self.optimizer, optimizers_for("train"))
        _positive("train.lr", self.lr)
        _int_at_least("train.batch_size", self.batch_size, 1)
        _int_at_least("train.steps", self.steps, 1)
        _seed("train.seed", self.seed)
        for key, value in (("train.beta1", self.beta1), ("train.beta2", self.beta2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                fail(key, value, "must be a number in [0, 1)")
        _positive("train.eps", self.eps)
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) \
                or not 0 <= self.momentum < 1:
            fail("train.momentum", self.momentum, "must be a number in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    """What is trained when (docs/design.md §7): held-out subjects, a warm-up on a subset of subjects, the
    subject Zipf exponent trained (fixed or annealed), the replay share of a fine-tuning run, frozen
    parameter blocks. The task's own frequencies stay what the run is measured on."""

    holdout: int = 0  # the last k subjects are never trained (unseen subjects); their facts are recorded
    warmup_subjects: float = 1.0  # share of the trained subjects seen during the warm-up (1: no warm-up)
    warmup_time: float = 0.0  # the warm-up lasts [0, warmup_time)
    # The subject Zipf exponent trained (None: task.subject_zipf, which is what the run is measured on),
    # annealed linearly from zipf (t = 0) to zipf_end (t = flow.t_max) when zipf_end is set.
    zipf: float | None = None
    zipf_end: float | None = None
    replay: float = 0.0  # a run started from another (init.from_run): the old subjects' share of the data
    freeze: str = "none"  # parameter blocks held fixed: none, or block names joined by '+' (reduced: a, v)

    def __post_init__(self) -> None:
        _int_at_least("data.holdout", self.holdout, 0)
        if not _is_number(self.warmup_subjects) or not 0 < self.warmup_subjects <= 1:
            fail("data.warmup_subjects", self.warmup_subjects, "must be a number in (0, 1]")
        _non_negative("data.warmup_time", self.warmup_time)
        for key, value in (("data.zipf", self.zipf), ("data.zipf_end", self.zipf_end)):
            if value is not None:
                _non_negative(key, value)
        if not _is_number(self.replay) or not 0 <= self.replay < 1:
            fail("data.replay", self.replay, "must be a number in [0, 1)")
        if self.warmup_subjects < 1 and self.warmup_time == 0:
            fail("data.warmup_subjects", self.warmup_subjects,
                 "a warm-up share needs data.warmup_time > 0 (how long the warm-up lasts); allowed: 1")
        if self.warmup_time > 0 and self.warmup_subjects == 1:
            fail("data.warmup_time", self.warmup_time,
                 "a warm-up needs data.warmup_subjects < 1 (the share of subjects it trains); allowed: 0")
        if not (isinstance(self.freeze, str) and re.fullmatch(r"none|\w+(\+\w+)*", self.freeze)):
            fail("data.freeze", self.freeze,
                 "must be none or parameter block names joined by '+', e.g. a or a+v")

    @property
    def frozen(self) -> tuple[str, ...]:
        """The names of the frozen parameter blocks."""
        return () if self.freeze == "none" else tuple(self.freeze.split("+"))


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of one simulation."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.data.holdout >= self.task.subjects:
            fail("data.holdout", self.data.holdout,
                 f"must leave at least one trained subject (< task.subjects={self.task.subjects})")
        if self.data.warmup_time > 0 and self.init.from_run:
            fail("data.warmup_time", self.data.warmup_time,
                 "a warm-up cannot be combined with init.from_run (a fine-tuning run); allowed: 0")
        self._check_data()
        self._check_unused()
        self._check_model()

    def _check_data(self) -> None:
        """The data schedule's keys must change what is trained."""
        data, trained = self.data, self.task.subjects - self.data.holdout
        if data.warmup_time >= self.flow.t_max:
            fail("data.warmup_time", data.warmup_time, f"must be < flow.t_max={self.flow.t_max:g} (the "
                 "warm-up would fill the run and its subjects never be joined by the others)")
        if data.warmup_time > 0 and math.ceil(data.warmup_subjects * trained) >= trained:
            fail("data.warmup_subjects", data.warmup_subjects,
                 f"⌈f·{trained}⌉ = {trained}: the warm-up would train every one of the {trained} trained "
                 f"subjects; allowed: f <= {(trained - 1) / trained:.6g}")

    def _check_model(self) -> None:
        """The model kind's own refusals (:mod:`dynamics.models.registry`): a population loss it does not
        have, a start it does not implement, then its entry's checks of the values of the keys it reads."""
        kind = get_model_kind(self.model.kind)
        if self.loss.kind == "population" and not kind.population:
            fail("loss.kind", self.loss.kind, f"model.kind={kind.name!r} has no exact population loss; "
                 "allowed: loss.kind=sampled")
        if self.init.kind not in kind.inits:
            fail("init.kind", self.init.kind, f"model.kind={kind.name!r} does not start from it; allowed: "
                 + ", ".join(kind.inits))
        if kind.check is not None:
            kind.check(self)

    def _check_unused(self) -> None:
        """Refuse a key set away from its default where this kind of run does not read it (it would be
        recorded as if it mattered, and two runs differing in it would be the same run): the ``model.*``
        keys the model kind's entry does not read, and the seeds of what is not drawn."""
        model, kind = self.model, get_model_kind(self.model.kind)
        for key in (f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.name != "kind"):
            if key not in kind.reads:
                readers = [f"model.kind={k.name}" for k in MODEL_KINDS.values() if key in k.reads]
                by = (" or ".join(readers) or "no model kind") + (" reads" if len(readers) == 1 else " read")
                _unused(key, getattr(model, key[6:]), ModelConfig,
                        f"model.kind={kind.name!r} does not read it ({by} it)")
        if self.task.facts == "structured":
            _unused("task.seed", self.task.seed, TaskConfig,
                    "task.facts='structured' is not drawn (task.facts=random is, with task.seed)")
        if self.init.kind == "constant":
            _unused("init.seed", self.init.seed, InitConfig,
                    "init.kind='constant' is not drawn (init.kind=gaussian is, with init.seed)")
        if self.init.kind == "manifold":
            for key, why in (("scale", "reads init.alpha and init.beta"), ("seed", "is not drawn")):
                _unused(f"init.{key}", getattr(self.init, key), InitConfig, f"init.kind='manifold' {why} "
                        "(init.kind=constant or gaussian read init.scale; gaussian draws with init.seed)")
        else:
            for key in ("alpha", "beta"):
                _unused(f"init.{key}", getattr(self.init, key), InitConfig,
                        f"init.kind={self.init.kind!r} reads init.scale (init.kind=manifold reads "
                        f"init.{key})")
        if self.loss.kind == "population":
            for key in ("samples", "seed"):
                _unused(f"loss.{key}", getattr(self.loss, key), LossConfig,
                        "loss.kind='population' is exact, no sample is drawn (loss.kind=sampled draws one)")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a nested plain dict (what ``config.json`` holds)."""
        return dataclasses.asdict(self)

    def override(self, overrides: Mapping[str, Any]) -> Config:
        """A new config with dotted keys replaced, e.g. ``{"task.subjects": 8}``; values are validated."""
        tree = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            node_type = _section_type(section, key, value)
            if node_type is None:
                if name:
                    fail(key, value, f"unknown key; '{section}' has no sub-keys")
                tree[section] = _coerce(key, value, _field_types(Config)[section])
                continue
            fields = _field_types(node_type)
            if name not in fields:
                fail(key, value, f"unknown key; {section} has: " + ", ".join(fields))
            tree[section][name] = _coerce(key, value, fields[name])
        return Config.from_dict(tree)

    @staticmethod
    def from_dict(tree: Mapping[str, Any], prefix: str = "") -> Config:
        """Build a config from a nested dict; unknown keys and wrong types raise :class:`ConfigError`."""
        if not isinstance(tree, Mapping):
            fail(prefix or "config", tree, "must be a mapping of sections")
        top = _field_types(Config)
        kwargs: dict[str, Any] = {}
        for section, content in tree.items():
            if section not in top:
                fail(section, content, "unknown key; allowed: " + ", ".join(top))
            node_type = _section_type(section, section)
            if node_type is None:
                kwargs[section] = _coerce(section, content, top[section])
                continue
            if not isinstance(content, Mapping):
                fail(section, content, "must be a mapping of keys")
            fields = _field_types(node_type)
            values = {}
            for name, value in content.items():
                key = f"{section}.{name}"
                if name not in fields:
                    fail(key, value, f"unknown key; {section} has: " + ", ".join(fields))
                values[name] = _coerce(key, value, fields[name])
            kwargs[section] = node_type(**values)
        return Config(**kwargs)


def _unused(key: str, value: Any, section: type, why: str) -> None:
    """Refuse ``value`` for ``key`` unless it is the section's default: the run does not read the key."""
    default = {f.name: f.default for f in dataclasses.fields(section)}[key.split(".", 1)[1]]
    if value != default:
        fail(key, value, f"has no effect here: {why}; allowed: {default!r} (the default)")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _section_type(section: str, key: str, value: Any = None) -> type | None:
    top = _field_types(Config)
    if section not in top:
        fail(key, value, "unknown key; allowed sections: " + ", ".join(top))
    kind = top[section]
    return kind if dataclasses.is_dataclass(kind) else None


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Convert ``value`` (possibly a string from ``--set``, a numpy scalar, or a path for a string key) to the
    declared type of ``key``."""
    if isinstance(value, np.generic):  # np.int64(8), np.float32(0.5), np.bool_(True): their Python value
        value = value.item()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = options[0]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        fail(key, value, "must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                fail(key, value, "must be an integer")
            if parsed.is_integer():
                return int(parsed)
        fail(key, value, "must be an integer")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        fail(key, value, "must be a number")
    if kind is str:
        if isinstance(value, str):
            return value
        fail(key, value, "must be a string")
    return value


# Every key's allowed values and what it does, in one line each: docs/configuration.md is generated from this
# table (python -m analysis.docgen), and a test keeps it in step with the dataclasses above. An empty
# "allowed" is filled from the key's own check (the names of its registry, e.g. flow.method's).
KEY_DOCS: dict[str, tuple[str, str]] = {
    "task.subjects": ("integer ≥ 1", "S, the number of subjects"),
    "task.relations": ("integer ≥ 1", "R, the number of relations"),
    "task.answers_per_relation": ("integer ≥ 1", "D, the answers of each relation (the answer set A_r)"),
    "task.noise_tokens": ("integer ≥ 0; ≥ 1 when seq_len > 3, 0 when seq_len = 3",
                          "N, the noise tokens that fill the positions other than subject, relation and EOS"),
    "task.seq_len": ("integer ≥ 3", "T, the sequence length (subject, relation, EOS and T − 3 noise tokens)"),
    "task.facts": ("", "the fact table: structured a* = r·D + ⌊s·D/S⌋, or random (drawn with task.seed)"),
    "task.subject_zipf": ("number ≥ 0; 0 with one subject", "Zipf exponent of the subjects' frequencies "
                          "(0: uniform); what a run is measured on"),
    "task.relation_zipf": ("number ≥ 0; 0 with one relation", "Zipf exponent of the relations' frequencies "
                           "(0: uniform)"),
    "task.seed": ("integer in [0, 2^63 − 1]", "seed of a random fact table (task.facts=random only)"),
    "model.kind": ("", "reduced (scalar scores), embedded (explicit W_KQ, W_OV) or the one-layer "
                   "transformer"),
    "model.attention": ("", "linear or softmax attention (the transformer's heads are softmax)"),
    "model.dim": ("integer ≥ 1", "embedding dimension d (embedded and transformer)"),
    "model.embeddings": ("", "embedded model's rows: orthonormal (random), onehot, hadamard (Sylvester "
                         "rows / √d, d a power of 2), gaussian N(0, 1/d) (needs loss.kind=sampled)"),
    "model.seed": ("integer in [0, 2^63 − 1]", "seed of drawn embeddings (orthonormal, gaussian, "
                   "transformer)"),
    "model.heads": ("integer ≥ 1", "transformer only: softmax heads"),
    "model.head_dim": ("integer ≥ 1", "transformer only: dimension of each head"),
    "model.mlp_width": ("integer ≥ 0", "transformer only: width of the ReLU MLP (0: no MLP)"),
    "init.kind": ("", "constant (every entry init.scale), gaussian N(0, scale²) (with the population loss "
                  "the N noise tokens are one tied token, so they share one draw), or manifold (Li et al.'s "
                  "positive manifold: init.alpha, init.beta; reduced and embedded models)"),
    "init.scale": ("number > 0", "the initial scale: every entry (constant) or the standard deviation "
                   "(gaussian)"),
    "init.seed": ("integer in [0, 2^63 − 1]", "seed of a gaussian start (init.kind=gaussian only)"),
    "init.alpha": ("number > 0", "manifold only: the norm α₀ of each token's value vector, along the answers "
                   "of its facts"),
    "init.beta": ("number > 0", "manifold only: every attention score β₀"),
    "init.from_run": ("a run directory, or empty", "start from that run's final state (simulate "
                      "--init-from): fine-tuning; tokens added since are initialised by init.*"),
    "loss.kind": ("", "population (exact, over every sequence) or sampled (a fixed seeded sample)"),
    "loss.samples": ("integer ≥ 1", "size of the sampled set (loss.kind=sampled only)"),
    "loss.seed": ("integer in [0, 2^63 − 1]", "seed of the sampled set (loss.kind=sampled only)"),
    "flow.t_max": ("number > 0", "the last recorded flow time"),
    "flow.t_min": ("number > 0, < t_max", "the first recorded time after t = 0 (records are log-spaced)"),
    "flow.points": ("integer ≥ 2", "record points, log-spaced on [t_min, t_max], plus t = 0"),
    "flow.method": ("", "the ODE solver: explicit, implicit, or auto (switches on stiffness); see "
                    "docs/stiff-flows.md; sliding: the ε = 0 sign flow event by event (docs/geometry.md)"),
    "flow.rtol": ("number > 0", "the solver's relative tolerance"),
    "flow.atol": ("number > 0", "the solver's absolute tolerance"),
    "flow.jacobian": ("", "implicit methods' products J·v: difference (one gradient each), hvp (exact "
                      "Hessian-vector product), or blocks (cvode's Newton iteration with the approximate "
                      "Jacobian of flow.newton_preconditioner=blocks: no product costs a gradient, about "
                      "2× fewer gradients in all); cvode and auto read it, bdf, radau, lsoda take a dense "
                      "Jacobian"),
    "flow.newton_preconditioner": ("", "cvode's GMRES (cvode, auto): none, or blocks (the reduced model's "
                                   "closed-form curvature blocks, rebuilt when CVODE asks; linear attention "
                                   "and the gradient flow only)"),
    "flow.first_step": ("number > 0", "the first step, given, not guessed: a symmetric start has ∇L ≈ 0"),
    "flow.max_steps": ("integer ≥ 1", "the solver's step limit; past it the run ends with status max_steps "
                       "(too_slow sooner when its pace projects over twice it)"),
    "flow.modified_lr": ("number ≥ 0", "η > 0 integrates GD's modified flow −P∇L − (η/2)·P H P ∇L instead"),
    "flow.geometry": ("", "the steepest-descent flow dθ/dt = −D(∇L): euclidean (gradient flow), sign (ℓ∞: "
                      "the limit of signSGD and Adam), spectral (per matrix block: Muon's limit); "
                      "docs/geometry.md"),
    "flow.geometry_eps": ("number in [0, 1]; > 0 for sign and spectral, 0 for euclidean",
                          "ε regularising sign and spectral flows where an entry or singular value vanishes "
                          "(smaller: more faithful, stiffer)"),
    "train.optimizer": ("", "the discrete run of --train: gd (full batch, the flow's loss) or a fresh-batch "
                        "optimizer"),
    "train.lr": ("number > 0", "learning rate; step k sits at flow time t = k·lr"),
    "train.batch_size": ("integer ≥ 1", "fresh-batch optimizers: sequences per step (not gd)"),
    "train.steps": ("integer ≥ 1", "number of steps"),
    "train.seed": ("integer in [0, 2^63 − 1]", "seed of the batches (not gd)"),
    "train.beta1": ("number in [0, 1)", "Adam's first-moment decay (adam only)"),
    "train.beta2": ("number in [0, 1)", "Adam's second-moment decay (adam only)"),
    "train.eps": ("number > 0", "Adam's ε (adam only)"),
    "train.momentum": ("number in [0, 1)", "Muon's Nesterov momentum μ (muon only)"),
    "data.holdout": ("integer ≥ 0, < task.subjects", "the last k subjects are never trained (unseen "
                     "subjects); their facts are recorded"),
    "data.warmup_subjects": ("number in (0, 1]; set with warmup_time",
                             "share f of the trained subjects seen during the warm-up (1: no warm-up)"),
    "data.warmup_time": ("number ≥ 0, < flow.t_max; set with warmup_subjects",
                         "the warm-up on the first ⌈f·n⌉ < n trained subjects lasts [0, warmup_time)"),
    "data.zipf": ("number ≥ 0, or none", "the subjects' Zipf exponent trained (none: task.subject_zipf, "
                  "which is what is measured)"),
    "data.zipf_end": ("number ≥ 0, or none", "anneal the trained exponent linearly to this at flow.t_max"),
    "data.replay": ("number in [0, 1)", "a fine-tuning run (init.from_run): the old subjects' share ρ of the "
                    "data; needs new subjects"),
    "data.freeze": ("none, or block names joined by +, not every block",
                    "parameter blocks held fixed, e.g. a (scores) or v (values) of the reduced model"),
    "device": ("cpu or cuda[:N]", "where tensors live"),
}
