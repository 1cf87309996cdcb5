"""What a config asks of the machine, estimated before any work, and the refusal of what is beyond reason.

Memory (:func:`estimate_memory`): the bytes a run allocates, from the config alone (no tensor is made): the
parameters at every record point, the solver's and the optimizer's working vectors, the per-fact records
(K×S×R; an array held on disk as the run goes counts nothing) and the temporaries of their evaluation, the
population tables of one evaluation, the sampled loss's counts (``loss.samples × V``), the training batch
(``train.batch_size × V``), the transformer's activations, the embeddings (``model.dim²``) and the
transformer's attention table (heads × facts × V), and what the solvers and torch's optimizers load on first
use. Its part above the fixed baseline is held within 1.5× of the peak RSS of real runs by a table of configs
(tests/test_budget_estimates.py). It is compared with a limit (:func:`memory_limit`):
``FACTRECALL_MEMORY_LIMIT`` when set (:func:`parse_size`: bytes, K/M/G/T with or without B or iB, or a
fraction of the available memory), else the memory the machine has available now (``MemAvailable`` of
``/proc/meminfo``; the physical memory elsewhere).

Time: discrete step counts (``train.steps``, ``compare``'s ``flow.t_max / lr``, a capacity grid) are compared
with a fixed limit (``FACTRECALL_STEP_LIMIT`` changes it; :func:`env_limit` reads such a limit, also the
sweep's ``FACTRECALL_GRID_LIMIT``, whose policy is the sweep's own). A flow's step count (:func:`flow_steps`):
a euclidean flow by an explicit method from its stiffness at θ(0) (dopri5 is stable only for steps h ≲ 3.3/ρ,
ρ the spectral radius of the field's Jacobian); a sign or spectral flow, by any method, from the pace of a
short probe of that method (their fields are stiff at scale 1/ε along directions the flow need not excite, so
the stiffness at θ(0) says little). A sign or spectral flow at ε = 0 is refused (it chatters), but for the
event-driven ``flow.method=sliding`` of the sign flow. The
probe also times its steps (CPU seconds: its method's evaluations per step times their cost on the run's own
field); a flow whose probe, at its pace in log t, needs more than 2,000 steps and more than
``FACTRECALL_TIME_LIMIT`` (:func:`~dynamics.solvers.pace.time_limit`, 30 min by default) is refused
(:func:`estimate_seconds`), and the same limit is the pace stop's while the flow runs
(:mod:`dynamics.solvers.pace`).

Every refusal is one :class:`~dynamics.errors.ConfigError` line with the estimate and the limit.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import rundir
from .config import Config
from .errors import ConfigError
from .geometry import get_geometry
from .models.registry import get_model_kind
from .optimizers import get_optimizer
from .solvers.pace import time_limit
from .solvers.registry import get_method
from .task import vocab_size
from .trajectory import RECORD_ELEMENTS

if TYPE_CHECKING:
    from .problem import BuiltRun

FLOAT = 8  # bytes of a float64 (and of an int64 index)
BASELINE = 400 * 2**20  # the interpreter, torch and numpy themselves
SOLVER_VECTORS = 16  # parameter-sized vectors a solver keeps (Runge–Kutta stages, CVODE's Krylov basis)
OPTIMIZER_VECTORS = 6  # θ, gradient, Adam's two moments, a step and a spare
AUTODIFF_COPIES = 3  # a forward pass's activations kept for the backward pass, roughly
STEP_LIMIT = 10**9  # discrete or flow steps of one command (a day at ~100 µs a step)
STABLE_STEP = 3.3  # dopri5 is stable for h·ρ ≲ 3.3 on the negative real axis
MAX_STEPS_FACTOR = 10  # refuse a flow estimated to need this many times flow.max_steps ...
MIN_REFUSED_STEPS = 10**5  # ... and more steps than this (a small budget is a choice, not a mistake)
PROBE_STEPS = 64  # a sign or spectral flow's probe: enough steps to leave the first step's transient
CURVE_FLOATS = 12  # float64 per recorded point: t, three losses, four attention parts, norms, the grid
RECORD_FLOATS = 4  # float64 per recorded point and fact (loss, p(a*), p(relation), p(subject)); + int8 class
# Measured (peak RSS above the imports; tests/test_budget_estimates.py holds the table): what a run allocates
# once whatever its size, and the record's temporaries per state and fact and per block element.
FLOW_FIRST_USE = 16 * 2**20
CVODE_FIRST_USE = 5 * 2**20  # SUNDIALS' bindings (cvode, auto)
SCIPY_FIRST_USE = 38 * 2**20  # scipy, loaded by a cvode or scipy flow's first solve (SUNDIALS' bindings)
TRAIN_FIRST_USE = 72 * 2**20  # torch.optim's first step imports torch._dynamo
RECORD_METRICS = 26  # float64 per recorded state and fact while a chunk is evaluated
RECORD_BLOCK_COPIES = 2.4  # copies of the factorised record's block tables (or of the logits) held at once
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class MemoryPart:
    """One term of an estimate: what it is (with the config keys and values that size it) and its bytes;
    ``on_disk``: bytes held in a temporary file as the run goes (the per-fact record beyond
    :data:`~dynamics.rundir.SPOOL_BYTES`), not in memory."""

    what: str
    bytes: int
    on_disk: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated memory of a run: its parts and their total (bytes, exact integers: no overflow)."""

    parts: tuple[MemoryPart, ...]

    @property
    def total(self) -> int:
        """The sum of the parts in memory."""
        return sum(p.bytes for p in self.parts if not p.on_disk)

    @property
    def largest(self) -> MemoryPart:
        """The part in memory that dominates."""
        return max((p for p in self.parts if not p.on_disk), key=lambda p: p.bytes)

    @property
    def disk(self) -> int:
        """The bytes held on disk as the run goes."""
        return sum(p.bytes for p in self.parts if p.on_disk)


def format_bytes(n: int | float) -> str:
    """``n`` bytes in the largest binary unit below it, e.g. ``3.2 GB``; beyond EB in powers of ten."""
    if n >= 2**70:
        return f"10^{len(str(int(n))) - 1} bytes"
    for unit in ("EB", "PB", "TB", "GB", "MB", "kB"):
        scale = 2 ** (10 * ("kMGTPE".index(unit[0]) + 1))
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _parameters(config: Config, untied: bool) -> int:
    """The parameter count of the config's model, from its kind's entry (``untied``: one parameter set per
    vocabulary token, the model of discrete training and of the sampled loss)."""
    return get_model_kind(config.model.kind).parameters(config, untied)


def _reads(config: Config, key: str) -> bool:
    """Whether the config's model kind reads ``key`` (its arrays are sized by it: ``model.dim`` embeddings,
    ``model.heads`` attention tables)."""
    return key in get_model_kind(config.model.kind).reads


def _batches(config: Config) -> bool:
    """Whether the discrete run of ``train.optimizer`` steps on fresh batches of the model with one parameter
    set per token (not gd, which steps on the flow's own objective)."""
    return get_optimizer(config.train.optimizer).batches


def _evaluation(config: Config, batch: int, label: str) -> list[MemoryPart]:
    """The arrays of one loss evaluation on ``batch`` sampled sequences (``label`` names the batch's key):
    the counts (B × V), the sampler's noise draws (B × (T − 3), indices and ones), the logits and the
    attention weights, kept for the backward pass."""
    t, m = config.task, config.model
    vocab = vocab_size(t)
    answers = t.relations * t.answers_per_relation
    heads = m.heads if _reads(config, "model.heads") else 1
    noise = max(t.seq_len - 3, 0)
    return [MemoryPart(f"{label} × vocabulary = {batch} × {vocab} counts", batch * vocab * FLOAT),
            MemoryPart(f"{label} × noise positions (task.seq_len - 3) = {batch} × {noise} draws",
                       2 * batch * noise * FLOAT),
            MemoryPart(f"{label} × (answers + heads × vocabulary) = {batch} × ({answers} + {heads} × {vocab})"
                       " activations", AUTODIFF_COPIES * batch * (answers + heads * vocab) * FLOAT),
            *([MemoryPart(f"{label} × task.seq_len × (2 model.dim + heads × task.seq_len + model.mlp_width)"
                          f" = {batch} × {t.seq_len} × ({2 * m.dim} + {heads * t.seq_len} + {m.mlp_width}) "
                          "transformer activations",
                          batch * t.seq_len * (2 * m.dim + heads * t.seq_len + m.mlp_width) * FLOAT)]
              if _reads(config, "model.heads") else [])]


def _population(config: Config) -> list[MemoryPart]:
    """The tables of the population loss and of the per-fact record: the fact table, and per evaluation the
    S×R×|A| logits (not formed by the factorised linear reduced model) or the transformer's attention."""
    t, m = config.task, config.model
    facts = t.subjects * t.relations
    answers = t.relations * t.answers_per_relation
    keys = f"task.subjects × task.relations = {t.subjects} × {t.relations}"
    parts = [MemoryPart(f"fact tables {keys}", 4 * facts * FLOAT)]
    if m.kind == "reduced" and m.attention == "linear":
        parts.append(MemoryPart(f"factorised tables ({keys}) + (subjects + relations) × answers",
                                (8 * facts + 4 * (t.subjects + t.relations) * answers) * FLOAT))
    else:
        parts.append(MemoryPart(f"population logits {keys} × answers {answers}", 4 * facts * answers * FLOAT))
    if _reads(config, "model.heads"):
        vocab = vocab_size(t)
        parts.append(MemoryPart(f"attention table {keys} × model.heads {m.heads} × vocabulary {vocab}",
                                facts * (m.heads * (vocab + m.head_dim) + vocab) * FLOAT))
    return parts


def _embeddings(config: Config) -> list[MemoryPart]:
    """The embedding and unembedding tables (and the d × d orthogonalisation behind orthonormal ones)."""
    t, m = config.task, config.model
    if not _reads(config, "model.dim"):
        return []
    rows = vocab_size(t) + t.relations * t.answers_per_relation
    square = 6 * m.dim * m.dim if _reads(config, "model.embeddings") and m.embeddings in ("orthonormal",
                                                                                         "hadamard") else 0
    return [MemoryPart(f"embeddings (vocabulary + answers) × model.dim = {rows} × {m.dim}"
                       + (" and model.dim² orthogonalisations" if square else ""),
                       (2 * rows * m.dim + square) * FLOAT)]


def _factorised(config: Config) -> bool:
    """Whether the record is the factorised one (no S×R×|A| table): the reduced model, linear attention."""
    return config.model.kind == "reduced" and config.model.attention == "linear"


def _run(config: Config, kind: str) -> list[MemoryPart]:
    """The parts of one run (``flow`` or ``train``): the states it holds (a flow: one record chunk, as the
    record is taken as it goes; a discrete run: every recorded step), its working vectors, its per-fact
    records and their stage analysis."""
    t, f = config.task, config.flow
    untied = (kind == "train" and _batches(config)) or config.loss.kind == "sampled"
    params = _parameters(config, untied)
    facts = t.subjects * t.relations
    work = OPTIMIZER_VECTORS if kind == "train" else SOLVER_VECTORS
    if kind == "flow":  # the record is taken as the flow goes: one record chunk of states is held
        per_state = facts * (4 if _factorised(config) else t.relations * t.answers_per_relation)
        held, what = min(f.points, max(1, RECORD_ELEMENTS // per_state)), "one record chunk of states"
    else:  # a discrete run keeps θ_k at every recorded step
        held, what = f.points, "states flow.points"
    parts = [MemoryPart(f"{kind} {what} × parameters = {held} × {params}", held * params * FLOAT),
             MemoryPart(f"{kind} working vectors {work} × parameters {params}", work * params * FLOAT),
             *_per_fact_records(kind, config),
             MemoryPart(f"{kind} curves flow.points × {CURVE_FLOATS} = {f.points} × {CURVE_FLOATS}",
                        f.points * CURVE_FLOATS * FLOAT)]
    if kind == "flow" and get_method(f.method).uses == "jacobian":
        parts.append(MemoryPart(f"dense Jacobian parameters² = {params}²", 2 * params * params * FLOAT))
    if kind == "flow":
        parts.append(_record_evaluation(config, held))
        first_use = FLOW_FIRST_USE + (CVODE_FIRST_USE + SCIPY_FIRST_USE  # an explicit flow loads no SciPy
                                      if get_method(f.method).kind != "explicit" else 0)
        parts.append(MemoryPart("flow: what the solvers and the record allocate on first use", first_use))
    else:
        parts.append(MemoryPart("train: what torch's optimizers load on their first step", TRAIN_FIRST_USE))
    return parts


def _per_fact_records(kind: str, config: Config) -> list[MemoryPart]:
    """The per-fact records: each (K, S, R) array larger than SPOOL_BYTES is held on disk as the run goes
    (:class:`~dynamics.rundir.Spool`), the others in memory."""
    t, points = config.task, config.flow.points
    cells = points * t.subjects * t.relations
    sizes = [FLOAT] * RECORD_FLOATS + [1]  # four float64 arrays and the int8 classes
    what = (f"{kind} per-fact records flow.points × task.subjects × task.relations = {points} × "
            f"{t.subjects} × {t.relations}")
    in_memory = sum(size for size in sizes if cells * size <= rundir.SPOOL_BYTES)
    parts = [MemoryPart(what, cells * in_memory)]
    if in_memory < sum(sizes):
        parts.append(MemoryPart(f"{what}, beyond {rundir.SPOOL_BYTES // 2**20} MiB an array", cells *
                                (sum(sizes) - in_memory), on_disk=True))
    return parts


def _record_evaluation(config: Config, held: int) -> MemoryPart:
    """The temporaries of the per-fact record of ``held`` states: its metrics per state and fact, and the
    factorised engine's per-block tables (states × ((S + R) × |A| + S × R), at most RECORD_ELEMENTS at once)
    or the logits (states × S × R × |A|, bounded by RECORD_ELEMENTS through the chunk)."""
    t = config.task
    facts, answers = t.subjects * t.relations, t.relations * t.answers_per_relation
    metrics = RECORD_METRICS * held * facts
    if _factorised(config):
        block = min(RECORD_ELEMENTS, held * ((t.subjects + t.relations) * answers + facts))
        what = f"(subjects + relations) × answers tables of {held} states"
    else:
        block = min(RECORD_ELEMENTS, held * facts * answers)
        what = f"logits of {held} states × facts × answers"
    return MemoryPart(f"record evaluation: metrics of {held} states × {facts} facts and the {what}",
                      int((metrics + RECORD_BLOCK_COPIES * block) * FLOAT))


def estimate_memory(config: Config, train: bool = False) -> MemoryEstimate:
    """The memory the flow of ``config`` (and, with ``train``, its discrete run of ``train.*``) needs, in
    its dominant arrays (module docstring). An estimate: the 10^5-fact run of docs/performance.md is
    estimated at 1.7 GB and peaks at 1.9 GB."""
    parts = [MemoryPart("interpreter and libraries", BASELINE), *_run(config, "flow"), *_population(config),
             *_embeddings(config)]
    if config.loss.kind == "sampled":
        parts += _evaluation(config, config.loss.samples, "loss.samples")
    if train:
        parts += _run(config, "train")
        if _batches(config):
            parts += _evaluation(config, config.train.batch_size, "train.batch_size")
    return MemoryEstimate(tuple(parts))


SIZE = re.compile(r"(?P<number>(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?)\s*(?P<unit>[KMGT]?)(?P<suffix>I?B)?",
                  re.IGNORECASE)


def parse_size(name: str, text: str, available: int | None = None) -> int:
    """Bytes from ``text``: a number of bytes (``1000000``), with a binary unit K, M, G or T, written alone or
    with ``B`` or ``iB`` (``512M``, ``8GiB``, ``1.5TB``: powers of 2^10), or a fraction in (0, 1) of
    ``available`` (``0.5``: half of it). Anything else, or a size under one byte, is one ConfigError line
    naming ``name``."""
    match = SIZE.fullmatch(text.strip())
    value = math.nan
    if match and not (match["suffix"] and match["suffix"].upper() == "IB" and not match["unit"]):
        number = float(match["number"])
        value = number * UNITS[match["unit"].upper()]
        if not match["unit"] and not match["suffix"] and 0 < number < 1:
            value = number * available if available is not None else math.nan
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"{name}={text!r}: must be a size of at least one byte: bytes (1000000), with a "
                          "unit K, M, G or T (512M, 8GiB, 1.5TB) or a fraction of the available memory (0.5)")
    return int(value)


def _meminfo(field: str) -> int | None:
    """A ``/proc/meminfo`` field in bytes, or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_limit() -> tuple[int | None, str]:
    """The memory a run may use and where that number comes from: ``FACTRECALL_MEMORY_LIMIT`` when set
    (:func:`parse_size`; a fraction is of the memory below), else the available memory (``/proc/meminfo``),
    else the physical memory; (None, ...) when unknown."""
    text = os.environ.get("FACTRECALL_MEMORY_LIMIT")
    available, source = _meminfo("MemAvailable"), "the available memory; FACTRECALL_MEMORY_LIMIT sets another"
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            source = "the physical memory"
        except (ValueError, OSError, AttributeError):
            available, source = None, "unknown"
    if text is not None:
        return parse_size("FACTRECALL_MEMORY_LIMIT", text, available), "FACTRECALL_MEMORY_LIMIT"
    return available, source


def check_memory(config: Config, train: bool = False) -> MemoryEstimate:
    """Refuse (ConfigError) a config whose :func:`estimate_memory` is above :func:`memory_limit`; return the
    estimate otherwise."""
    estimate = estimate_memory(config, train)
    limit, source = memory_limit()
    if limit is not None and estimate.total > limit:
        raise ConfigError(f"memory: this config needs about {format_bytes(estimate.total)}, above the limit "
                          f"of {format_bytes(limit)} ({source}); largest part: {estimate.largest.what}")
    if estimate.disk:
        where = tempfile.gettempdir()
        free = disk_free(where)
        if free is not None and estimate.disk > free:
            held = max((p for p in estimate.parts if p.on_disk), key=lambda p: p.bytes)
            raise ConfigError(f"disk: this config's record needs about {format_bytes(estimate.disk)} on disk "
                              f"as it runs, above the {format_bytes(free)} free in {where} (TMPDIR sets "
                              f"another); largest part: {held.what}")
    return estimate


def disk_free(directory: str) -> int | None:
    """The bytes free for this user in ``directory``, or None when unknown."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def env_limit(name: str, default: int) -> int:
    """An integer limit from the environment variable ``name`` (default when unset); a value that is not an
    integer >= 1 is one ConfigError."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={text!r}: must be an integer >= 1")
    return value


def check_steps(key: str, value: object, steps: float) -> None:
    """Refuse ``steps`` discrete steps asked for by ``key=value`` beyond ``FACTRECALL_STEP_LIMIT`` (default
    :data:`STEP_LIMIT`), or not finite."""
    limit = env_limit("FACTRECALL_STEP_LIMIT", STEP_LIMIT)
    if not math.isfinite(steps) or steps > limit:
        shown = f"{steps:.3g}" if math.isfinite(steps) else "more than 1.8e308"
        raise ConfigError(f"{key}={value}: needs {shown} steps, above the limit of {limit:.3g} steps "
                          "(FACTRECALL_STEP_LIMIT sets another)")


@dataclass(frozen=True)
class StepEstimate:
    """A flow's estimated step count over ``span`` of flow time. A smooth (euclidean) field's is dopri5's at
    the stiffness ρ of θ(0), span·ρ / 3.3 (``radius`` = ρ); a sign or spectral field's is extrapolated from
    a probe of the config's own method (``radius`` None): ``probe_steps`` accepted steps reached flow time
    ``reached``, and the estimate is probe_steps · span / reached (the probe's count when it finished);
    ``seconds_per_step``: the probe's CPU seconds per accepted step — its method's evaluations per step times
    their cost on the run's own field (:func:`estimate_seconds`)."""

    radius: float | None
    span: float
    steps: float
    probe_steps: int = 0
    reached: float = math.nan
    seconds_per_step: float = math.nan


def _start_words(config: Config) -> str:
    """Where the gradient entries of θ(0) sit at 0 (the constant start: all of them) or cross it."""
    if config.init.kind == "constant" and not config.init.from_run:
        return "at the symmetric start (init.kind='constant'), where every gradient entry is 0"
    return "where gradient entries (singular values) cross 0 on the way"


def _geometry_advice(config: Config) -> str:
    """What makes a sign or spectral flow integrable: a larger ε, at least its ``suggested_eps``."""
    f = config.flow
    eps = max(get_geometry(f.geometry).suggested_eps, 100 * f.geometry_eps)
    return f"allowed: flow.geometry_eps={eps:g} or larger (a smoother field; docs/geometry.md)"


def check_geometry_eps(config: Config) -> None:
    """Refuse a sign or spectral flow at ``flow.geometry_eps`` = 0: its field is discontinuous where a
    gradient entry (a singular value) is 0, which every entry is at the constant start and which entries
    cross from any other (measured: the tiny task's spectral flow from a Gaussian start needs about 3.5e5
    dopri5 steps to t = 20 at ε = 0; the transformer's did not finish in two minutes by bosh3, cvode or
    auto); an adaptive solver of any method chatters there without getting anywhere."""
    f = config.flow
    exact = getattr(get_method(f.method), "exact_geometry", None) == f.geometry  # integrates the ε = 0 field
    if get_geometry(f.geometry).needs_eps and f.geometry_eps == 0 and not exact:
        raise ConfigError(f"flow.geometry_eps=0.0: the {f.geometry} field is discontinuous at ε = 0 and "
                          f"chatters {_start_words(config)}; " + _geometry_advice(config))


def _probe(problem, method: str, options) -> StepEstimate | None:
    """Run ``method`` (the config's own) for at most :data:`PROBE_STEPS` accepted steps on ``problem`` with
    the run's solver ``options`` and extrapolate its pace (module docstring); None when the probe ended
    otherwise (a non-finite field, a step underflow: the run itself ends so at once and is saved with its
    status)."""
    from .solvers import integrate_problem
    from .solvers.pace import cpu_seconds

    started = cpu_seconds()
    result = integrate_problem(problem, method, options.replace(max_steps=PROBE_STEPS))
    taken = result.cost.accepted_steps
    per_step = (cpu_seconds() - started) / max(taken, 1)
    span = float(problem.times[-1] - problem.times[0])
    if result.status == "ok":
        return StepEstimate(None, span, float(taken), taken, float(problem.times[-1]), per_step)
    if result.status != "max_steps":
        return None
    reached = float(result.status_time) - float(problem.times[0])
    steps = taken * span / reached if reached > 0 else math.inf
    return StepEstimate(None, span, steps, taken, float(result.status_time), per_step)


_ESTIMATES: dict[Config, StepEstimate | None] = {}  # by config: a sweep's or compare's checks, then the run's
MAX_ESTIMATES = 64


def flow_steps(config: Config, built: BuiltRun | None = None) -> StepEstimate | None:
    """The step count the flow of ``config`` needs (:class:`StepEstimate`). A euclidean flow: an explicit
    method's (or ``auto``'s opening dopri5 stretch, to ``flow.t_min``) at the stiffness of θ(0), from ten
    Jacobian products; None for implicit methods (their steps are not bounded by stiffness). A sign or
    spectral flow, by any method: from a probe of :data:`PROBE_STEPS` steps, as its field is stiff at scale
    1/ε only along directions the flow need not excite (the stiffness at θ(0) says little: figure5's sign
    flow at ε = 1e-8 has ρ ≈ 1e5 there and finishes to t = 100 in 41 steps). None where the field at θ(0)
    is not finite (the run fails at once and is saved with its status). The probe integrates the field of
    ``built`` (the run's :class:`~dynamics.problem.BuiltRun`, which the run goes on to use) from the run's
    own start (for a fine-tune: the state it continues; ``built`` of another config, a member of a batch:
    the start of ``config``'s ``init.*``); without it, builds the run
    (:func:`~dynamics.problem.build_run`): call it after :func:`check_memory`. Estimates are kept by
    config."""
    if config not in _ESTIMATES:
        if len(_ESTIMATES) >= MAX_ESTIMATES:
            _ESTIMATES.pop(next(iter(_ESTIMATES)))
        _ESTIMATES[config] = _flow_steps(config, built)
    return _ESTIMATES[config]


def _flow_steps(config: Config, built: BuiltRun | None) -> StepEstimate | None:
    from .problem import build_run  # the run builder sits above the budget
    from .solvers.stiffness import spectral_radius

    kind = get_method(config.flow.method).kind
    smooth = get_geometry(config.flow.geometry).linear  # its stiffness at θ(0) bounds an explicit step
    if kind == "implicit" and smooth:
        return None
    built = built or build_run(config, flow=True)
    if built.config != config:  # a member of a batch: the one-flow field from the member's own start
        problem = built.problem(theta0=built.model.initial_parameters(config.init))
    else:  # the run's own problem (made by build_run) from the run's own start
        problem = built.problem() if built.flow is None else built.flow
    if not smooth:
        return _probe(problem, config.flow.method, built.options)
    radius, _ = spectral_radius(problem.field, 0.0, problem.theta0, problem.jacobian_vector)
    if not math.isfinite(radius):
        return None
    span = config.flow.t_min if kind == "strategy" else config.flow.t_max
    return StepEstimate(radius, span, span * radius / STABLE_STEP)


def check_flow_steps(config: Config, built: BuiltRun | None = None) -> StepEstimate | None:
    """Refuse a flow whose :func:`flow_steps` exceeds both 10 × ``flow.max_steps`` (it would stop at its
    budget having covered under a tenth of its time) and 10^5 steps, or exceeds the step limit; and a sign or
    spectral flow that :func:`check_geometry_eps` refuses. The advice names what works for the geometry:
    cvode for a stiff euclidean flow, a larger ε for a sign or spectral one. ``built``: as for
    :func:`flow_steps`."""
    check_geometry_eps(config)
    estimate = flow_steps(config, built)
    if estimate is None:
        return None
    f = config.flow
    budget = max(MAX_STEPS_FACTOR * f.max_steps, MIN_REFUSED_STEPS)
    limit = min(budget, env_limit("FACTRECALL_STEP_LIMIT", STEP_LIMIT))
    if estimate.steps > limit:
        shown = f"{estimate.steps:.3g}" if math.isfinite(estimate.steps) else "unboundedly many"
        if estimate.radius is None:
            raise ConfigError(f"flow.geometry_eps={f.geometry_eps:g}: about {shown} {f.method} steps to "
                              f"flow.t_max={f.t_max:g} for the {f.geometry} flow (a probe of "
                              f"{estimate.probe_steps} steps reached t = {estimate.reached:.3g}), above the "
                              f"limit of {limit:.3g} (from flow.max_steps={f.max_steps}); "
                              + _geometry_advice(config))
        until = "flow.t_min" if get_method(f.method).kind == "strategy" else "flow.t_max"
        modified = f" with flow.modified_lr={f.modified_lr:g}" if f.modified_lr > 0 else ""
        raise ConfigError(f"flow.method={f.method!r}{modified}: about {shown} dopri5 steps to "
                          f"{until}={estimate.span:g} (stiffness at θ(0): ρ = {estimate.radius:.3g}, stable "
                          f"steps h ≤ 3.3/ρ), above the limit of {limit:.3g} (from flow.max_steps="
                          f"{f.max_steps}); allowed: flow.method=cvode, or a less stiff config")
    _check_time(config, estimate)
    return estimate


def estimate_seconds(estimate: StepEstimate, t_min: float) -> tuple[float, float]:
    """(steps, CPU seconds) of a flow from its probe (a sign or spectral flow's; nan, nan without one): the
    steps at the probe's pace in log time s = log(t + t_min) — as the pace stop measures it, optimistic:
    exact for a step growing like t, too low for one that grows more slowly — times the probe's CPU
    seconds per step, the cost of its method's evaluations on the run's own field."""
    if estimate.radius is not None or not math.isfinite(estimate.seconds_per_step):
        return math.nan, math.nan
    steps = float(estimate.probe_steps)
    if estimate.reached < estimate.span:  # the probe stopped short of the end
        done = math.log1p(estimate.reached / t_min)
        steps = steps * math.log1p(estimate.span / t_min) / done if done > 0 else math.inf
    return steps, steps * estimate.seconds_per_step


def _check_time(config: Config, estimate: StepEstimate) -> None:
    """Refuse a flow whose :func:`estimate_seconds` exceeds :func:`time_limit` with more steps than the pace
    stop's ``FEW_STEPS`` (a flow of few dear steps runs as long as it needs): it is far beyond reach even at
    the optimistic pace."""
    from .solvers.pace import FEW_STEPS, format_seconds

    f = config.flow
    steps, seconds = estimate_seconds(estimate, f.t_min)
    limit = time_limit()
    if steps > FEW_STEPS and seconds > limit:
        raise ConfigError(f"flow.t_max={f.t_max:g}: the {f.geometry} flow by {f.method} needs at least "
                          f"{steps:.3g} steps of {format_seconds(estimate.seconds_per_step)} (a probe of "
                          f"{estimate.probe_steps} steps reached t = {estimate.reached:.3g}), "
                          f"{format_seconds(seconds)} of CPU, above the time limit of "
                          f"{format_seconds(limit)} (FACTRECALL_TIME_LIMIT); " + _geometry_advice(config))


def check_sizes(config: Config, train: bool = False, flow: bool = True) -> None:
    """The checks of a run of ``config`` from the config alone, before anything is built: its memory (with
    ``train``: and its discrete run's), ``train.steps``, and with ``flow`` the flow's ``flow.geometry_eps``
    (:func:`check_geometry_eps`). Raises ConfigError."""
    check_memory(config, train)
    if train:
        check_steps("train.steps", config.train.steps, config.train.steps)
    if flow:
        check_geometry_eps(config)


def check_config(config: Config, train: bool = False) -> None:
    """Every check of this module for a run of ``config`` (with ``train``: and its discrete run): memory,
    discrete steps, the flow's steps (which builds the run: :func:`dynamics.run.prepare_run` builds it once
    for the checks and the run). Raises ConfigError; call it before any work."""
    check_sizes(config, train)
    check_flow_steps(config)
