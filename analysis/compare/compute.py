"""ODE against discrete training: every discrete run set beside the exact flow from the same θ(0).

For each discrete run (optimizer, lr, batch size, seed) recorded at t = k·lr, the flow is evaluated at
exactly those times, and the run is summarised by: the largest loss deviation from the flow, the largest
per-fact loss deviation, the relative parameter distance ‖θ_k − θ(t)‖ / ‖θ(t)‖ (both in the parametrisation
with one parameter set per token), the shift of every stage boundary relative to the flow's, and its
status (a diverged run keeps its step). For GD the order of convergence in lr is fitted (slope of log
deviation against log lr), against the flow and against GD's modified flow −P∇L − (η/2) P H P ∇L, which
GD follows to second order (docs/design.md §4.5). Along the flow, the sharpness λ_max(P H) gives the
stability margin lr·λ_max. :func:`compare` returns all of it as a :class:`Comparison`.

Each optimizer is set against its own flow (its registry entry's ``flow``, :mod:`dynamics.optimizers`): GD
and SGD against the gradient flow,
signSGD and Adam against the sign flow (ℓ∞ steepest descent), Muon against the spectral flow. The flow's
geometry is picked from the optimizers; a config that fixes ``flow.geometry`` to another geometry than an
optimizer's is refused. With ``full_batch``, Adam, signSGD and Muon step on the flow's own population loss
(deterministic, like GD), so that their deviation from their flow can vanish as lr → 0 and an order of
convergence is fitted for each (:attr:`Orders.by_optimizer`); with fresh batches they follow another limit
(e.g. signSGD the flow of E[sign ĝ], not of sign E[ĝ]).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dynamics.budget import check_flow_steps, check_memory, check_steps
from dynamics.config import Config
from dynamics.errors import ConfigError, RunError
from dynamics.geometry import get_geometry
from dynamics.io import finite_or_none
from dynamics.optimizers import OPTIMIZERS, optimizers_for
from dynamics.run import flow_sharpness, prepare_run, run_flow, setup, time_grid, train_info, train_run
from dynamics.solvers import Status
from dynamics.solvers.pace import round_down
from dynamics.training import record_steps, train
from dynamics.trajectory import Trajectory, record

from ..loglog import power_law
from ..stages import StageReport, detect_stages

DEFAULT_OPTIMIZERS = "gd,sgd,adam"  # --optimizers' default


def fresh_batch_names() -> str:
    """The optimizers whose compare runs take fresh batches unless ``--full-batch`` (registry order)."""
    return ", ".join(name for name in optimizers_for("compare") if _takes_batches(name))


def _takes_batches(name: str) -> bool:
    entry = OPTIMIZERS[name]
    return entry.batches and "train" in entry.uses


def full_batch_names() -> list[str]:
    """The optimizers that ``--full-batch`` moves from fresh batches to the flow's population loss."""
    return [name for name in optimizers_for("compare")
            if _takes_batches(name) and OPTIMIZERS[name].full_batch]


# A sharpness below this is the rounding of a flat loss (the closed-form Hessian-vector products are exact
# to ~1e-16 relative), not a curvature that bounds GD's learning rate.
FLAT_SHARPNESS = 1e-12


@dataclass(frozen=True)
class CompareSpec:
    """Which discrete runs to set against the flow."""

    lrs: tuple[float, ...] = (0.8, 0.4, 0.2, 0.1)
    optimizers: tuple[str, ...] = tuple(DEFAULT_OPTIMIZERS.split(","))
    batch_sizes: tuple[int, ...] = (64, 256, 1024)  # every fresh-batch run: sgd, adam, signsgd, muon
    seeds: int = 3  # fresh-batch runs: runs per setting, for a mean and a band
    modified_flow: bool = True  # GD against its modified flow, for the second-order check
    sharpness_points: int = 32
    full_batch: bool = False  # adam, signsgd, muon on the flow's population loss (deterministic, one run)

    def __post_init__(self) -> None:
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise ConfigError(f"--lrs={','.join(map(str, self.lrs))!r}: must be positive numbers, "
                              "e.g. 0.4,0.2,0.1")
        allowed = optimizers_for("compare")
        for name in self.optimizers:
            if name not in allowed:
                raise ConfigError(f"--optimizers={name!r}: must be among " + ", ".join(allowed))
        if not self.optimizers:
            raise ConfigError("--optimizers='': must name at least one of " + ", ".join(allowed))
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"--batch-sizes={self.batch_sizes!r}: must be integers >= 1")
        if self.seeds < 1:
            raise ConfigError(f"--seeds={self.seeds!r}: must be an integer >= 1")
        _refuse_repeats("--lrs", self.lrs, lambda lr: f"{lr:g}")
        _refuse_repeats("--optimizers", self.optimizers, str)
        _refuse_repeats("--batch-sizes", self.batch_sizes, str)


def _refuse_repeats(flag: str, values: Sequence[Any], name: Callable[[Any], str]) -> None:
    """One ConfigError when two of ``values`` name the same run (``name``: how a run's name spells a value,
    so 0.1 and 0.1000001 are one lr there): a repeated run would be counted as another seed."""
    seen: dict[str, Any] = {}
    for value in values:
        if name(value) in seen:
            same = (f"{value!r} is repeated" if value == seen[name(value)] else
                    f"{seen[name(value)]!r} and {value!r} are the same run {name(value)!r}")
            raise ConfigError(f"{flag}={','.join(map(str, values))!r}: {same}; allowed: distinct values "
                              "(more runs of one setting: --seeds)")
        seen[name(value)] = value


@dataclass(frozen=True)
class RunSpec:
    """One discrete run."""

    optimizer: str
    lr: float
    batch_size: int | None  # None for full-batch GD
    seed: int

    @property
    def name(self) -> str:
        """A readable identifier, e.g. ``sgd_lr0.1_b1024_s0``, ``gd_lr0.1``, ``signsgd_lr0.01_full``."""
        if self.batch_size is None:
            return f"{self.optimizer}_lr{self.lr:g}" + ("_full" if OPTIMIZERS[self.optimizer].batches else "")
        return f"{self.optimizer}_lr{self.lr:g}_b{self.batch_size}_s{self.seed}"

    @property
    def full_batch(self) -> bool:
        """Steps on the flow's own population loss (GD, or adam/signsgd/muon with ``full_batch``)."""
        return self.batch_size is None


def plan_runs(config: Config, spec: CompareSpec) -> list[RunSpec]:
    """Every discrete run of a comparison, in the order of ``spec.optimizers``: one full-batch run per lr
    for an optimizer that steps on the flow's own loss (gd), one that is not a ``train.optimizer``
    (muon_svd), or one that ``--full-batch`` puts on the population loss; else its fresh-batch runs."""
    runs: list[RunSpec] = []
    for optimizer in spec.optimizers:
        entry = OPTIMIZERS[optimizer]
        for lr in spec.lrs:
            if not _takes_batches(optimizer) or spec.full_batch and entry.full_batch:
                runs.append(RunSpec(optimizer, lr, None, 0))
                continue
            runs += [RunSpec(optimizer, lr, b, config.train.seed + s)
                     for b in spec.batch_sizes for s in range(spec.seeds)]
    return runs


def run_config(config: Config, run: RunSpec) -> Config:
    """The config of one discrete run: same task, model and θ(0); steps to cover the flow's t_max."""
    overrides: dict[str, Any] = {"train.optimizer": run.optimizer, "train.lr": run.lr, "train.seed": run.seed,
                                 "train.steps": max(1, int(round(config.flow.t_max / run.lr)))}
    if "train" not in OPTIMIZERS[run.optimizer].uses:  # not a train.optimizer: run_discrete passes it on
        overrides["train.optimizer"] = _stand_in(run.optimizer)
    if run.batch_size is not None:
        overrides["train.batch_size"] = run.batch_size
    return config.override(overrides)


def _stand_in(name: str) -> str:
    """The ``train.optimizer`` a run config of the compare-only optimizer ``name`` names: the first train
    optimizer that reads every key it reads (muon for muon_svd), so that the config keeps its keys and the
    memory estimate counts the model it runs on (one parameter set per token)."""
    reads = set(OPTIMIZERS[name].reads)
    return next(o for o in optimizers_for("train") if reads <= set(OPTIMIZERS[o].reads) and _takes_batches(o))


def flow_geometries(config: Config, optimizers: Sequence[str]) -> dict[str, str]:
    """The flow geometry each optimizer is compared with (its entry's ``flow``). Raises ConfigError (one
    line) when ``flow.geometry`` is set to a geometry other than euclidean (the default, which lets each
    optimizer pick its own) and an optimizer's flow is another one."""
    chosen = config.flow.geometry
    pairs = {name: OPTIMIZERS[name].flow for name in optimizers}
    wrong = [name for name, geometry in pairs.items() if chosen != "euclidean" and geometry != chosen]
    if wrong:
        fitting = ", ".join(name for name in optimizers_for("compare") if OPTIMIZERS[name].flow == chosen)
        raise ConfigError(f"flow.geometry={chosen!r}: does not match --optimizers {wrong[0]} (whose flow is "
                          f"{pairs[wrong[0]]}); allowed: optimizers {fitting}, or leave flow.geometry at "
                          "euclidean and each optimizer is set against its own flow")
    return pairs


def geometry_config(config: Config, geometry: str) -> Config:
    """``config`` with ``flow.geometry`` = ``geometry`` (ε: the geometry's ``reference_eps`` when the config
    leaves ``flow.geometry_eps`` at 0; a geometry that does not read ε keeps the default)."""
    entry = get_geometry(geometry)
    eps = config.flow.geometry_eps or entry.reference_eps
    return config.override({"flow.geometry": geometry, "flow.geometry_eps": eps if "flow.geometry_eps"
                            in entry.keys else Config().flow.geometry_eps})


def refuse_full_batch_settings(config: Config, optimizers: Sequence[str]) -> None:
    """Refuse (one ConfigError), before any work, a setting that the full-batch runs of ``optimizers``
    (fresh-batch optimizers with ``--full-batch``; muon_svd always) would ignore: they step on the plain
    population loss from ``init.*`` in the plain metric, so ``data.*`` and ``init.from_run`` have no effect
    there, and they need linear attention and the population loss."""
    names = ",".join(optimizers)
    defaults = Config().data
    for name in ("holdout", "warmup_subjects", "warmup_time", "zipf", "zipf_end", "replay", "freeze"):
        value = getattr(config.data, name)
        if value != getattr(defaults, name):
            raise ConfigError(f"data.{name}={value!r}: the full-batch runs of compare ({names}) train the "
                              "task's own population loss, without a data schedule or frozen blocks; "
                              "allowed: leave it out, or optimizers that take batches "
                              f"({fresh_batch_names()} without --full-batch) and gd")
    if config.init.from_run:
        raise ConfigError(f"init.from_run={config.init.from_run!r}: the full-batch runs of compare ({names}) "
                          "start from init.*, not from another run; allowed: leave it out, or optimizers "
                          f"that take batches ({fresh_batch_names()} without --full-batch) and gd")
    if config.model.attention != "linear" or config.loss.kind != "population":
        raise ConfigError(f"model.attention={config.model.attention!r}, loss.kind={config.loss.kind!r}: "
                          f"the full-batch runs of compare ({names}) need linear attention and the "
                          "population loss; allowed: those, or optimizers without --full-batch")


def full_batch_optimizers(config: Config, spec: CompareSpec) -> list[str]:
    """The optimizers of ``spec`` run by :func:`run_full_batch` (not gd, which steps on the flow's loss)."""
    return list(dict.fromkeys(run.optimizer for run in plan_runs(config, spec)
                              if run.full_batch and OPTIMIZERS[run.optimizer].batches))


def run_full_batch(config: Config, optimizer: str | None = None, keep_states: bool = True) -> Trajectory:
    """``optimizer`` (default ``train.optimizer``: adam, signsgd, muon; or muon_svd) on the flow's own
    population loss, from the flow's θ(0), recorded at t = k·lr: the deterministic run whose lr → 0 limit is
    the optimizer's flow.

    Runs on the model with one parameter set per token (as the fresh-batch optimizers do): Muon's blocks
    are then the untied model's matrices, which the tied geometry reproduces exactly. Linear attention only
    (the untied population loss with expected noise counts is exact there).
    """
    refuse_full_batch_settings(config, [optimizer or config.train.optimizer])
    task, tied, _ = setup(config)
    model, expand = tied.untied()
    theta0 = expand(tied.initial_parameters(config.init))
    opts = config.train
    optimizer = optimizer or opts.optimizer
    result = train(lambda k: model.population_loss, theta0, optimizer=optimizer, lr=opts.lr,
                   steps=opts.steps, record=record_steps(time_grid(config), opts.lr, opts.steps),
                   preconditioner=model.preconditioner, beta1=opts.beta1, beta2=opts.beta2, eps=opts.eps,
                   momentum=opts.momentum, blocks=model.parameter_blocks())
    trajectory = record(model, task, result.t, result.states, train_info(optimizer, opts.lr, result, model))
    if keep_states:
        trajectory.states = result.states.detach().cpu().numpy()
    return trajectory


def run_discrete(config: Config, run: RunSpec) -> Trajectory:
    """The discrete run ``run`` from the flow's θ(0), with its states kept."""
    run_cfg = run_config(config, run)
    if run.full_batch and OPTIMIZERS[run.optimizer].batches:
        return run_full_batch(run_cfg, run.optimizer)
    # not run_training: each run sets its own optimizer on the user's base config, whose train.* keys
    # (a batch size read by sgd, betas read by adam) are for the runs that read them
    return train_run(prepare_run(run_cfg, train=True, flow=False), keep_states=True)


def fitted_order(lrs: Sequence[float], deviations: Sequence[float]) -> float | None:
    """Slope of log deviation against log lr (least squares); None with fewer than two usable points."""
    fit = power_law(lrs, deviations)
    return None if fit is None else fit[0]


def _flow_at(config: Config, times: np.ndarray, modified_lr: float = 0.0) -> Trajectory:
    """The flow (or GD's modified flow) evaluated exactly at ``times``, integrated tightly enough that its
    own error is far below the deviations measured."""
    return run_flow(tight(config, modified_lr), times=np.concatenate([[0.0], times[times > 0]]),
                    keep_states=True)


def tight(config: Config, modified_lr: float = 0.0) -> Config:
    """``config`` at the tolerances of a reference flow (rtol ≤ 1e-8, atol ≤ 1e-12), with GD's modified
    flow at ``modified_lr`` (0: the flow itself)."""
    flow = config.flow
    return config.override({"flow.rtol": min(flow.rtol, 1e-8), "flow.atol": min(flow.atol, 1e-12),
                            "flow.modified_lr": modified_lr})


def _lookup(reference: Trajectory, times: np.ndarray) -> np.ndarray:
    index = np.searchsorted(reference.t, times)
    index = np.clip(index, 0, len(reference.t) - 1)
    if not np.allclose(reference.t[index], times, rtol=1e-12, atol=0):
        raise RuntimeError("flow was not evaluated at the discrete run's times")
    return index


def deviation_measures(run: Trajectory, flow: Trajectory) -> dict[str, Any]:
    """Largest loss and per-fact deviation of ``run`` from ``flow`` (evaluated at the run's times), and the
    relative parameter distance over time."""
    index = _lookup(flow, run.t)
    loss_dev = np.abs(run.loss - flow.loss[index])
    fact_dev = np.abs(run.fact_loss - flow.fact_loss[index])
    result: dict[str, Any] = {"max_loss_deviation": float(loss_dev.max()),
                              "max_fact_deviation": float(fact_dev.max()),
                              "loss_deviation": loss_dev, "flow_loss": flow.loss[index]}
    if run.states is not None and flow.states is not None:
        exact = flow.states[index]
        scale = np.maximum(np.linalg.norm(exact, axis=1), 1e-300)
        distance = np.linalg.norm(run.states - exact, axis=1) / scale
        result.update(param_distance=distance, max_param_distance=float(distance.max()),
                      final_param_distance=float(distance[-1]))
    return result


def stage_shifts(run: Trajectory, flow_transitions: list[dict[str, Any]]) -> dict[str, float | None]:
    """Relative shift (t_run − t_flow)/t_flow of every flow stage boundary in ``run`` (None if missing)."""
    found = {(tr["from"], tr["to"]): tr["t"] for tr in detect_stages(run).transitions}
    shifts: dict[str, float | None] = {}
    for tr in flow_transitions:
        key = (tr["from"], tr["to"])
        shifts[f"{key[0]}->{key[1]}"] = (found[key] - tr["t"]) / tr["t"] if key in found else None
    return shifts


@dataclass
class ComparedRun:
    """One discrete run set beside the flow: what ``compare.json`` records of it (:meth:`to_dict`), its
    trajectory, and its deviation from the flow at every recorded time (what ``compare.csv`` adds)."""

    spec: RunSpec
    trajectory: Trajectory
    status: Status
    status_step: int | None  # the step at which a run that stopped early stopped
    status_time: float | None
    message: str
    steps: int
    diverged: bool  # stopped early, or ended above its starting loss (a finite blow-up)
    first_loss_increase_step: int | None
    lr_times_sharpness: float  # lr · λ_max of the flow
    predicted_stable: bool  # lr · λ_max < 2
    final_loss: float
    stages: list[str]  # the run's own stage names
    stage_shift: dict[str, float | None]  # per flow boundary "a->b": (t_run − t_flow)/t_flow, None: not found
    max_loss_deviation: float
    max_fact_deviation: float
    loss_deviation: np.ndarray  # |L_run − L_flow| at the run's times
    flow_loss: np.ndarray  # the flow's loss at the run's times
    param_distance: np.ndarray | None = None  # ‖θ_k − θ(t)‖ / ‖θ(t)‖; None without kept states
    max_loss_deviation_modified: float | None = None  # GD against its modified flow; None: not computed

    @property
    def name(self) -> str:
        """The run's identifier, e.g. ``sgd_lr0.1_b1024_s0``."""
        return self.spec.name

    @property
    def optimizer(self) -> str:
        return self.spec.optimizer

    @property
    def lr(self) -> float:
        return self.spec.lr

    @property
    def batch_size(self) -> int | None:
        return self.spec.batch_size

    @property
    def max_param_distance(self) -> float | None:
        """The largest relative parameter distance from the flow (None without kept states)."""
        return None if self.param_distance is None else float(self.param_distance.max())

    def to_dict(self, modified_flow: bool = False) -> dict[str, Any]:
        """The run's entry in ``compare.json`` (no arrays). ``modified_flow``: the comparison checked GD
        against its modified flow, so a GD entry carries ``max_loss_deviation_modified`` (None: skipped)."""
        entry: dict[str, Any] = {
            **asdict(self.spec), "name": self.name, "status": self.status.value,
            "status_step": self.status_step, "status_time": self.status_time, "message": self.message,
            "steps": self.steps, "diverged": self.diverged,
            "first_loss_increase_step": self.first_loss_increase_step,
            "lr_times_sharpness": self.lr_times_sharpness, "predicted_stable": self.predicted_stable,
            "final_loss": self.final_loss, "stages": self.stages, "stage_shift": self.stage_shift,
            "max_loss_deviation": self.max_loss_deviation, "max_fact_deviation": self.max_fact_deviation}
        if self.param_distance is not None:
            entry.update(max_param_distance=self.max_param_distance,
                         final_param_distance=float(self.param_distance[-1]))
        if modified_flow and self.optimizer == "gd":
            entry["max_loss_deviation_modified"] = self.max_loss_deviation_modified
        return entry


@dataclass
class SeedGroup:
    """The SGD or Adam runs of one (optimizer, lr, batch size) over seeds: the spread of their largest loss
    deviation over the runs that finished (None: none did)."""

    optimizer: str
    lr: float
    batch_size: int | None
    runs: int
    diverged: int  # runs that did not finish (status other than ok)
    mean_max_loss_deviation: float | None
    min_max_loss_deviation: float | None
    max_max_loss_deviation: float | None


@dataclass
class Orders:
    """GD's fitted orders of convergence in lr (:func:`fitted_order`), over the GD runs that finished inside
    the stability margin (``gd_lrs``); None with fewer than two usable points. ``by_optimizer``: for every
    optimizer, its flow's geometry, whether it ran full batch, the lrs fitted and the orders of its largest
    loss deviation and largest relative parameter distance from its own flow (fresh-batch optimizers: the
    mean over seeds)."""

    gd_lrs: list[float]
    gd_vs_flow: float | None
    gd_vs_modified_flow: float | None
    by_optimizer: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


@dataclass
class Comparison:
    """The flow and every discrete run of ``spec`` from the same θ(0), with every measure: what
    ``compare.json`` (:meth:`to_dict`) and ``compare.csv`` (:func:`tidy_rows`) hold and the figures read."""

    config: Config
    spec: CompareSpec
    flow: Trajectory  # on the config's own record grid
    flow_stages: StageReport
    sharpness_t: np.ndarray
    sharpness: np.ndarray  # λ_max(P H) along the flow at ``sharpness_t``
    max_sharpness: float
    runs: list[ComparedRun]
    groups: list[SeedGroup]
    orders: Orders
    # every flow the runs are set against, by geometry (``flow`` is the first optimizer's), and its stages
    flows: dict[str, Trajectory] = field(default_factory=dict)
    flows_stages: dict[str, StageReport] = field(default_factory=dict)
    geometries: dict[str, str] = field(default_factory=dict)  # optimizer -> its flow's geometry

    def flow_of(self, optimizer: str) -> tuple[Trajectory, StageReport]:
        """The flow ``optimizer`` is set against and its stages (the main flow when not recorded)."""
        geometry = self.geometries.get(optimizer)
        if geometry in self.flows:
            return self.flows[geometry], self.flows_stages[geometry]
        return self.flow, self.flow_stages

    @property
    def stable_lr_bound(self) -> float | None:
        """2 / λ_max: GD leaves the flow for larger lr (None when λ_max ≤ FLAT_SHARPNESS: a flat loss)."""
        return 2.0 / self.max_sharpness if self.max_sharpness > FLAT_SHARPNESS else None

    def to_dict(self) -> dict[str, Any]:
        """What ``compare.json`` holds: strict-JSON-ready (NaN and infinities as None, no arrays)."""
        flow = {"status": self.flow.info.status.value, "function_evals": self.flow.info.cost.function_evals,
                "stages": self.flow_stages.to_dict(), "sharpness_t": self.sharpness_t.tolist(),
                "sharpness": self.sharpness.tolist(), "max_sharpness": self.max_sharpness,
                "stable_lr_bound": self.stable_lr_bound, "geometries": dict(self.geometries),
                "flows": {g: {"status": f.info.status.value, "function_evals": f.info.cost.function_evals,
                              "geometry_eps": geometry_config(self.config, g).flow.geometry_eps,
                              "stages": self.flows_stages[g].to_dict()} for g, f in self.flows.items()}}
        return finite_or_none({"config": self.config.to_dict(), "spec": asdict(self.spec), "flow": flow,
                               "runs": [r.to_dict(self.spec.modified_flow) for r in self.runs],
                               "groups": [asdict(g) for g in self.groups], "orders": asdict(self.orders)})


def check_budget(config: Config, spec: CompareSpec) -> None:
    """Refuse, before any work, a comparison beyond the machine: a learning rate whose steps to
    ``flow.t_max`` exceed the step limit, or memory for the flow and the largest SGD/Adam batch
    (:mod:`dynamics.budget`)."""
    for lr in spec.lrs:
        check_steps("--lrs", f"{lr!r} (flow.t_max / lr)", config.flow.t_max / lr)
    # the run that needs the most memory: the largest batch, else one on the untied model (any optimizer
    # but gd); run_config spells its optimizer as train.optimizer does (muon_svd is muon there)
    largest = max(plan_runs(config, spec),
                  key=lambda run: (run.batch_size or 0, OPTIMIZERS[run.optimizer].batches))
    trained = run_config(config, largest).override({"train.steps": 1})  # steps: checked per lr above
    check_memory(trained, train=True)
    for geometry in dict.fromkeys(OPTIMIZERS[name].flow for name in spec.optimizers):  # each reference flow
        check_flow_steps(geometry_config(trained, geometry))


def reference_stopped(config: Config, spec: CompareSpec, geometry: str, flow: Trajectory) -> str:
    """The one line for a reference flow that stopped early: which flow, where, and settings that reach
    the end — ``flow.t_max`` at the time it reached (a shorter comparison), or, when every optimizer
    follows this geometry, the geometry set explicitly with its suggested (smoother) ε."""
    info = flow.info
    followers = [name for name in spec.optimizers if OPTIMIZERS[name].flow == geometry]
    eps = geometry_config(config, geometry).flow.geometry_eps
    what = f"the reference of --optimizers {','.join(followers)}"
    what += f", flow.geometry_eps={eps:g}" if eps else ""
    ways = []
    if info.status_time and info.status_time > 0:
        ways.append(f"--set flow.t_max={round_down(info.status_time):g} (reached)")
    entry = get_geometry(geometry)
    if entry.needs_eps and len(followers) == len(spec.optimizers) and entry.suggested_eps > eps:
        ways.append(f"--set flow.geometry={geometry} --set flow.geometry_eps={entry.suggested_eps:g} "
                    "(a smoother reference)")
    why = "" if info.status == Status.TOO_SLOW else f": {info.message}"  # the pace's own advice is the above
    advice = f"; allowed: {' or '.join(ways)}" if ways else ""
    return (f"{geometry} flow stopped early ({info.status} at t = {info.status_time:.4g}; {what}){why}; the "
            f"discrete runs would have nothing to be compared with{advice}")


def progress_note(done: int, total: int, elapsed: float) -> str:
    """``k/N, elapsed, ETA`` for a log line: the time left assumes the remaining runs take the mean time of
    those done (``elapsed·(N−k)/k``)."""
    left = elapsed * (total - done) / done if done else float("nan")
    return f"{done}/{total}, {elapsed:.0f} s, about {left:.0f} s left" if done < total else \
        f"{done}/{total}, {elapsed:.0f} s"


def compare(config: Config, spec: CompareSpec, log: Callable[[str], None] = lambda message: None
            ) -> Comparison:
    """Run the flow and every discrete run of ``spec`` from the same θ(0); return every measure.

    Raises RunError when the reference flow at the runs' times stops early (nothing to compare with), and
    ConfigError, before any work, for what the command's budget check refuses.
    """
    full_batch = full_batch_optimizers(config, spec)
    if full_batch:
        refuse_full_batch_settings(config, full_batch)
    check_budget(config, spec)
    geometries = flow_geometries(config, spec.optimizers)
    flows: dict[str, Trajectory] = {}
    flows_stages: dict[str, StageReport] = {}
    for geometry in dict.fromkeys(geometries.values()):
        # at the reference's tolerances: a flow that stops there stops before any discrete run
        flows[geometry] = run_flow(tight(geometry_config(config, geometry)), keep_states=True)
        flows_stages[geometry] = detect_stages(flows[geometry])
        log(f"{geometry} flow: {flows[geometry].info.status}, {flows_stages[geometry].summary()}")
        if not flows[geometry].info.ok:  # before any discrete run: without it they compare with nothing
            raise RunError(reference_stopped(config, spec, geometry, flows[geometry]))
    main = geometries[spec.optimizers[0]]
    flow, flow_stages = flows[main], flows_stages[main]
    # the sharpness of the gradient flow bounds GD's and SGD's lr (for the others it is for context only)
    t_sharp, lam = flow_sharpness(geometry_config(config, "euclidean"), spec.sharpness_points)
    lam_max = float(np.nanmax(lam))
    trained = []
    planned = plan_runs(config, spec)
    started = time.monotonic()
    for k, run in enumerate(planned, start=1):
        traj = run_discrete(config, run)
        trained.append((run, traj))
        log(f"[{progress_note(k, len(planned), time.monotonic() - started)}] {run.name}: {traj.info.status} "
            f"({traj.info.cost.function_evals} steps)")
    exact_flows = {}
    for geometry in flows:
        times = [traj.t for run, traj in trained if geometries[run.optimizer] == geometry]
        exact = _flow_at(geometry_config(config, geometry), np.unique(np.concatenate(times + [np.zeros(1)])))
        if not exact.info.ok:
            raise RunError(reference_stopped(config, spec, geometry, exact))
        exact_flows[geometry] = exact
    runs = []
    for run, traj in trained:
        geometry = geometries[run.optimizer]
        measures = deviation_measures(traj, exact_flows[geometry])
        info = traj.info
        compared = ComparedRun(
            spec=run, trajectory=traj, status=info.status, status_step=info.train.status_step,
            status_time=info.status_time, message=info.message, steps=info.cost.function_evals,
            # a finite blow-up (loss above its start) is a divergence too, not only NaN
            diverged=not info.ok or not traj.loss[-1] <= traj.loss[0],
            first_loss_increase_step=info.train.first_loss_increase_step,
            lr_times_sharpness=run.lr * lam_max, predicted_stable=run.lr * lam_max < 2,
            final_loss=traj.final_loss, stages=detect_stages(traj).names,
            stage_shift=stage_shifts(traj, flows_stages[geometry].transitions),
            max_loss_deviation=measures["max_loss_deviation"],
            max_fact_deviation=measures["max_fact_deviation"], loss_deviation=measures["loss_deviation"],
            flow_loss=measures["flow_loss"], param_distance=measures.get("param_distance"))
        if run.optimizer == "gd" and spec.modified_flow:
            # Backward-error analysis is an expansion in lr·λ_max: beyond the stability margin (or past a
            # divergence) the modified flow predicts nothing, and it gets very stiff there.
            if compared.predicted_stable and compared.status == "ok":
                modified = deviation_measures(traj, _flow_at(config, traj.t, modified_lr=run.lr))
                compared.max_loss_deviation_modified = modified["max_loss_deviation"]
                log(f"{run.name}: modified flow, deviation {compared.max_loss_deviation_modified:.3g}")
            else:
                log(f"{run.name}: modified flow skipped (lr·λ_max = {compared.lr_times_sharpness:.3g}, "
                    f"status {compared.status})")
        runs.append(compared)
    return Comparison(config=config, spec=spec, flow=flow, flow_stages=flow_stages, sharpness_t=t_sharp,
                      sharpness=lam, max_sharpness=lam_max, runs=runs, groups=_groups(runs),
                      orders=_orders(runs, geometries), flows=flows, flows_stages=flows_stages,
                      geometries=geometries)


def _orders(runs: list[ComparedRun], geometries: dict[str, str] | None = None) -> Orders:
    # Orders are asymptotic in lr: fit over the GD runs that finished inside the stability margin.
    gd = [r for r in runs if r.optimizer == "gd" and r.status == "ok" and r.predicted_stable]
    lrs = [r.lr for r in gd]
    by_optimizer: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.optimizer for r in runs):
        members = gd if name == "gd" else [r for r in runs if r.optimizer == name and r.status == "ok"]
        by_lr: dict[float, list[ComparedRun]] = {}
        largest = max((m.batch_size for m in members if m.batch_size is not None), default=None)
        for r in members:
            if r.batch_size != largest:
                continue  # fresh batches: the largest batch size (full batch: every run)
            by_lr.setdefault(r.lr, []).append(r)
        fit_lrs = sorted(by_lr)

        def mean(values: list[float | None]) -> float | None:
            kept = [v for v in values if v is not None]
            return float(np.mean(kept)) if kept else None

        loss = [mean([r.max_loss_deviation for r in by_lr[lr]]) for lr in fit_lrs]
        params = [mean([r.max_param_distance for r in by_lr[lr]]) for lr in fit_lrs]
        by_optimizer[name] = {
            "geometry": (geometries or {}).get(name, OPTIMIZERS[name].flow),
            "full_batch": all(r.spec.full_batch for r in members) if members else None,
            "lrs": fit_lrs, "max_loss_deviation": loss, "max_param_distance": params,
            "order_loss": fitted_order(fit_lrs, loss), "order_params": fitted_order(fit_lrs, params)}
    return Orders(gd_lrs=lrs, gd_vs_flow=fitted_order(lrs, [r.max_loss_deviation for r in gd]),
                  gd_vs_modified_flow=fitted_order(lrs, [r.max_loss_deviation_modified for r in gd]),
                  by_optimizer=by_optimizer)


def _groups(runs: list[ComparedRun]) -> list[SeedGroup]:
    groups: dict[tuple, list[ComparedRun]] = {}
    for r in runs:
        if r.optimizer != "gd":
            groups.setdefault((r.optimizer, r.lr, r.batch_size), []).append(r)
    summary = []
    for (optimizer, lr, batch), members in groups.items():
        ok = [m.max_loss_deviation for m in members if m.status == "ok"]
        summary.append(SeedGroup(optimizer=optimizer, lr=lr, batch_size=batch, runs=len(members),
                                 diverged=sum(m.status != "ok" for m in members),
                                 mean_max_loss_deviation=float(np.mean(ok)) if ok else None,
                                 min_max_loss_deviation=float(np.min(ok)) if ok else None,
                                 max_max_loss_deviation=float(np.max(ok)) if ok else None))
    return summary


CSV_COLUMNS = ("run", "optimizer", "lr", "batch_size", "seed", "t", "loss", "relation_loss", "subject_loss",
               "flow_loss", "loss_deviation", "param_distance")


def tidy_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per run and recorded time (columns :data:`CSV_COLUMNS`): what ``compare.csv`` holds, the
    flow's own rows first."""
    rows = []
    flow = comparison.flow
    for k, t in enumerate(flow.t):
        rows.append({"run": "flow", "optimizer": "flow", "lr": "", "batch_size": "", "seed": "", "t": t,
                     "loss": flow.loss[k], "relation_loss": flow.relation_loss[k],
                     "subject_loss": flow.subject_loss[k], "flow_loss": flow.loss[k], "loss_deviation": 0.0,
                     "param_distance": 0.0})
    for r in comparison.runs:
        traj = r.trajectory
        distance = r.param_distance if r.param_distance is not None else np.full(len(traj.t), np.nan)
        for k, t in enumerate(traj.t):
            rows.append({"run": r.name, "optimizer": r.optimizer, "lr": r.lr,
                         "batch_size": r.batch_size if r.batch_size is not None else "",
                         "seed": r.spec.seed, "t": t, "loss": traj.loss[k],
                         "relation_loss": traj.relation_loss[k], "subject_loss": traj.subject_loss[k],
                         "flow_loss": r.flow_loss[k], "loss_deviation": r.loss_deviation[k],
                         "param_distance": distance[k]})
    return rows
