"""ODE against discrete training: every discrete run set beside the exact flow from the same θ(0).

For each discrete run (optimizer, lr, batch size, seed) recorded at t = k·lr, the flow is evaluated at
exactly those times, and the run is summarised by: the largest loss deviation from the flow, the largest
per-fact loss deviation, the relative parameter distance ‖θ_k − θ(t)‖ / ‖θ(t)‖ (both in the parametrisation
with one parameter set per token), the shift of every stage boundary relative to the flow's, and its
status (a diverged run keeps its step). For GD the order of convergence in lr is fitted (slope of log
deviation against log lr), against the flow and against GD's modified flow −P∇L − (η/2) P H P ∇L, which
GD follows to second order. Along the flow, the sharpness λ_max(P H) gives the stability margin lr·λ_max.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.config import Config, ConfigError
from dynamics.errors import RunError
from dynamics.io import atomic_write, atomic_write_json
from dynamics.run import flow_sharpness, run_flow, run_training
from dynamics.trajectory import Trajectory

from .stages import detect_stages

OPTIMIZERS = ("gd", "sgd", "adam")


@dataclass(frozen=True)
class CompareSpec:
    """Which discrete runs to set against the flow."""

    lrs: tuple[float, ...] = (0.8, 0.4, 0.2, 0.1)
    optimizers: tuple[str, ...] = OPTIMIZERS
    batch_sizes: tuple[int, ...] = (64, 256, 1024)  # SGD; Adam uses the config's train.batch_size
    seeds: int = 3  # SGD and Adam: runs per setting, for a mean and a band
    modified_flow: bool = True  # GD against its modified flow, for the second-order check
    sharpness_points: int = 32

    def __post_init__(self) -> None:
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise ConfigError(f"--lrs={','.join(map(str, self.lrs))!r}: must be positive numbers, "
                              "e.g. 0.4,0.2,0.1")
        for name in self.optimizers:
            if name not in OPTIMIZERS:
                raise ConfigError(f"--optimizers={name!r}: must be among " + ", ".join(OPTIMIZERS))
        if not self.optimizers:
            raise ConfigError("--optimizers='': must name at least one of " + ", ".join(OPTIMIZERS))
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"--batch-sizes={self.batch_sizes!r}: must be integers >= 1")
        if self.seeds < 1:
            raise ConfigError(f"--seeds={self.seeds!r}: must be an integer >= 1")


@dataclass(frozen=True)
class RunSpec:
    """One discrete run."""

    optimizer: str
    lr: float
    batch_size: int | None  # None for full-batch GD
    seed: int

    @property
    def name(self) -> str:
        """A readable identifier, e.g. ``sgd_lr0.1_b1024_s0``."""
        batch = "" if self.batch_size is None else f"_b{self.batch_size}"
        seed = "" if self.optimizer == "gd" else f"_s{self.seed}"
        return f"{self.optimizer}_lr{self.lr:g}{batch}{seed}"


def plan_runs(config: Config, spec: CompareSpec) -> list[RunSpec]:
    """Every discrete run of a comparison, GD first."""
    runs: list[RunSpec] = []
    for optimizer in spec.optimizers:
        for lr in spec.lrs:
            if optimizer == "gd":
                runs.append(RunSpec("gd", lr, None, 0))
                continue
            batches = spec.batch_sizes if optimizer == "sgd" else (config.train.batch_size,)
            runs += [RunSpec(optimizer, lr, b, config.train.seed + s)
                     for b in batches for s in range(spec.seeds)]
    return runs


def run_config(config: Config, run: RunSpec) -> Config:
    """The config of one discrete run: same task, model and θ(0); steps to cover the flow's t_max."""
    overrides: dict[str, Any] = {"train.optimizer": run.optimizer, "train.lr": run.lr, "train.seed": run.seed,
                                 "train.steps": max(1, int(round(config.flow.t_max / run.lr)))}
    if run.batch_size is not None:
        overrides["train.batch_size"] = run.batch_size
    return config.override(overrides)


def fitted_order(lrs: Sequence[float], deviations: Sequence[float]) -> float | None:
    """Slope of log deviation against log lr (least squares); None with fewer than two usable points."""
    pairs = [(math.log(lr), math.log(d)) for lr, d in zip(lrs, deviations, strict=True)
             if d is not None and math.isfinite(d) and d > 0]
    if len(pairs) < 2:
        return None
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


def _flow_at(config: Config, times: np.ndarray, modified_lr: float = 0.0) -> Trajectory:
    """The flow (or GD's modified flow) evaluated exactly at ``times``, integrated tightly enough that its
    own error is far below the deviations measured."""
    tight = {"flow.rtol": min(config.flow.rtol, 1e-8), "flow.atol": min(config.flow.atol, 1e-12),
             "flow.modified_lr": modified_lr}
    return run_flow(config.override(tight), times=np.concatenate([[0.0], times[times > 0]]), keep_states=True)


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


def compare(config: Config, spec: CompareSpec, log: Callable[[str], None] = lambda message: None
            ) -> dict[str, Any]:
    """Run the flow and every discrete run of ``spec`` from the same θ(0); return every measure.

    The result holds ``flow`` (stages, sharpness), ``runs`` (one dict per discrete run, with its
    trajectory under the private key ``_trajectory`` and time series under ``_series``), ``groups`` (SGD
    and Adam summaries over seeds: mean and spread of the largest deviation) and ``orders`` (GD's fitted
    orders of convergence against the flow and the modified flow).
    """
    flow = run_flow(config, keep_states=True)
    flow_stages = detect_stages(flow)
    log(f"flow: {flow.info.status}, {flow_stages.summary()}")
    t_sharp, lam = flow_sharpness(config, spec.sharpness_points)
    lam_max = float(np.nanmax(lam))
    runs = []
    for run in plan_runs(config, spec):
        traj = run_training(run_config(config, run), keep_states=True)
        runs.append((run, traj))
        log(f"{run.name}: {traj.info.status} ({traj.info.cost.function_evals} steps)")
    all_times = np.unique(np.concatenate([traj.t for _, traj in runs] + [np.zeros(1)]))
    exact = _flow_at(config, all_times)
    if not exact.info.ok:
        raise RunError(f"flow stopped early ({exact.info.status} at t = {exact.info.status_time}): "
                          "the discrete runs have no reference to be compared with; shorten the runs or "
                          "loosen flow.rtol/flow.atol")
    records = []
    for run, traj in runs:
        measures = deviation_measures(traj, exact)
        info = traj.info
        entry = {**asdict(run), "name": run.name, "status": info.status.value,
                 "status_step": info.train.status_step, "status_time": info.status_time,
                 "message": info.message, "steps": info.cost.function_evals,
                 # a finite blow-up (loss above its start) is a divergence too, not only NaN
                 "diverged": not info.ok or not traj.loss[-1] <= traj.loss[0],
                 "first_loss_increase_step": info.train.first_loss_increase_step,
                 "lr_times_sharpness": run.lr * lam_max, "predicted_stable": run.lr * lam_max < 2,
                 "final_loss": traj.final_loss, "stages": detect_stages(traj).names,
                 "stage_shift": stage_shifts(traj, flow_stages.transitions),
                 **{k: v for k, v in measures.items() if not isinstance(v, np.ndarray)}}
        entry["_trajectory"] = traj
        entry["_series"] = {k: v for k, v in measures.items() if isinstance(v, np.ndarray)}
        if run.optimizer == "gd" and spec.modified_flow:
            # Backward-error analysis is an expansion in lr·λ_max: beyond the stability margin (or past a
            # divergence) the modified flow predicts nothing, and it gets stiff (9 minutes on tiny with
            # init.kind=gaussian, init.scale=1 at lr 100).
            if entry["predicted_stable"] and entry["status"] == "ok":
                modified = deviation_measures(traj, _flow_at(config, traj.t, modified_lr=run.lr))
                entry["max_loss_deviation_modified"] = modified["max_loss_deviation"]
                log(f"{run.name}: modified flow, deviation {entry['max_loss_deviation_modified']:.3g}")
            else:
                entry["max_loss_deviation_modified"] = None
                log(f"{run.name}: modified flow skipped (lr·λ_max = {entry['lr_times_sharpness']:.3g}, "
                    f"status {entry['status']})")
        records.append(entry)
    return {"config": config.to_dict(), "spec": asdict(spec),
            "flow": {"status": flow.info.status.value, "function_evals": flow.info.cost.function_evals,
                     "stages": flow_stages.to_dict(), "sharpness_t": t_sharp.tolist(),
                     "sharpness": lam.tolist(), "max_sharpness": lam_max,
                     "stable_lr_bound": 2.0 / lam_max if lam_max > 0 else None,
                     "_trajectory": flow},
            "runs": records, "groups": _groups(records), "orders": _orders(records)}


def _orders(records: list[dict[str, Any]]) -> dict[str, Any]:
    # Orders are asymptotic in lr: fit over the GD runs that finished inside the stability margin.
    gd = [r for r in records if r["optimizer"] == "gd" and r["status"] == "ok" and r["predicted_stable"]]
    lrs = [r["lr"] for r in gd]
    return {"gd_lrs": lrs,
            "gd_vs_flow": fitted_order(lrs, [r["max_loss_deviation"] for r in gd]),
            "gd_vs_modified_flow": fitted_order(lrs, [r.get("max_loss_deviation_modified") for r in gd])}


def _groups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r["optimizer"] != "gd":
            groups.setdefault((r["optimizer"], r["lr"], r["batch_size"]), []).append(r)
    summary = []
    for (optimizer, lr, batch), members in groups.items():
        ok = [m["max_loss_deviation"] for m in members if m["status"] == "ok"]
        summary.append({"optimizer": optimizer, "lr": lr, "batch_size": batch, "runs": len(members),
                        "diverged": sum(m["status"] != "ok" for m in members),
                        "mean_max_loss_deviation": float(np.mean(ok)) if ok else None,
                        "min_max_loss_deviation": float(np.min(ok)) if ok else None,
                        "max_max_loss_deviation": float(np.max(ok)) if ok else None})
    return summary


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready part of a comparison (private trajectories and series dropped, NaN → None)."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not str(k).startswith("_")}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        return value

    return clean(result)


def tidy_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run and recorded time: what ``compare.csv`` holds (the flow's own rows included)."""
    rows = []
    flow = result["flow"]["_trajectory"]
    for k, t in enumerate(flow.t):
        rows.append({"run": "flow", "optimizer": "flow", "lr": "", "batch_size": "", "seed": "", "t": t,
                     "loss": flow.loss[k], "relation_loss": flow.relation_loss[k],
                     "subject_loss": flow.subject_loss[k], "flow_loss": flow.loss[k], "loss_deviation": 0.0,
                     "param_distance": 0.0})
    for r in result["runs"]:
        traj, series = r["_trajectory"], r["_series"]
        for k, t in enumerate(traj.t):
            rows.append({"run": r["name"], "optimizer": r["optimizer"], "lr": r["lr"],
                         "batch_size": r["batch_size"] if r["batch_size"] is not None else "",
                         "seed": r["seed"], "t": t, "loss": traj.loss[k],
                         "relation_loss": traj.relation_loss[k], "subject_loss": traj.subject_loss[k],
                         "flow_loss": series["flow_loss"][k],
                         "loss_deviation": series["loss_deviation"][k],
                         "param_distance": series.get("param_distance", np.full(len(traj.t), np.nan))[k]})
    return rows


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """``compare.json`` and ``compare.csv`` into ``out`` (atomically each)."""
    atomic_write_json(out / "compare.json", public(result))
    rows = tidy_rows(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "compare.csv", lambda f: f.write(buffer.getvalue().encode()))
