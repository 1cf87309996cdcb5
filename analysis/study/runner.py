"""Running a named study into its directory: the ``--out`` check before any work, the sweep's resumable
point store, a progress bar over the points, worker processes, and the study's files written atomically.

A study directory holds ``study.json`` (the study's name and whether it is the ``--quick`` one), the
sweep's point store (``sweep.json``, ``points/<id>.json`` written atomically as each point finishes,
``results.csv``: every point's row, which ``factrecall sweep-plot`` draws) and the study's own files
(:attr:`~analysis.study.registry.Study.outputs`). A rerun skips the finished points: a killed study loses
at most the points in flight."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_json

from ..rundir import check_output_dir, check_writable
from ..sweep import SweepDirectory, grid_points, point_id, worker_pool
from .registry import STUDIES, Study

RECORD = "study.json"
STORE = ("sweep.json", "points", "results.csv")  # what the sweep's point store writes


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: the point store's ``base`` config (a directory holds one) and ``grids``, each a
    product of value lists (the points of all grids, duplicates once); ``order``: a sort key of a point's
    values, the order in which the points run (default: grid order)."""

    base: Config
    grids: list[dict[str, list[Any]]] = field(default_factory=list)
    order: Callable[[dict[str, Any]], Any] | None = None

    def points(self) -> list[dict[str, Any]]:
        """Every point's values, each once, in :attr:`order`."""
        points = list({point_id(p): p for grid in self.grids for p in grid_points(grid)}.values())
        return points if self.order is None else sorted(points, key=self.order)


def allowed(study: Study) -> str:
    """What ``--out`` of ``study`` may name (ends its refusals)."""
    return f"a new or empty directory, or one holding the {study.name} study of the same --quick (to resume)"


def check_study_dir(out: Path, study: Study, quick: bool, plan: StudyPlan
                    ) -> tuple[SweepDirectory, dict[str, Any] | None]:
    """Refuse (one-line ConfigError) a ``--out`` that cannot hold this study: what :mod:`analysis.rundir`
    refuses of every output directory, a non-empty directory that holds no study, another study or the
    other size (``--quick``), files the study did not write, or a damaged point store. Writes nothing;
    returns the point store and its manifest (None before the first point)."""
    flag = f"--out={str(out)!r}"
    check_output_dir(out, allowed(study))
    if out.exists() and any(out.iterdir()):
        record = out / RECORD
        try:
            held = json.loads(record.read_text()) if record.is_file() else None
        except (ValueError, OSError):
            held = None
        if not isinstance(held, dict):
            raise ConfigError(f"{flag}: is not empty and holds no study; allowed: {allowed(study)}")
        if held.get("study") != study.name or held.get("quick") != quick:
            what = f"the {held.get('study')} study" + (" (--quick)" if held.get("quick") else "")
            raise ConfigError(f"{flag}: holds {what}; allowed: {allowed(study)}")
        known = {RECORD, *STORE, *study.outputs}
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in known and not _leftover(p) and not _sweep_figure(p))
        if foreign:
            raise ConfigError(f"{flag}: holds files factrecall study {study.name} did not write "
                              f"({', '.join(foreign[:3])}); allowed: {allowed(study)}")
    check_writable(out)
    store = SweepDirectory(out)
    # a study killed between writing study.json and the store's manifest has no store yet
    return store, store.check(plan.base) if store.manifest.exists() else None


def _sweep_figure(path: Path) -> bool:
    """A figure ``factrecall sweep-plot`` draws from the store's results.csv (``phase_*.png``,
    ``sweep_*.png``)."""
    return path.suffix == ".png" and path.name.startswith(("phase_", "sweep_")) and path.is_file()


def _leftover(path: Path) -> bool:
    """A temporary file an atomic write left when killed (``.NAME.*.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


def _open_store(store: SweepDirectory, held: dict[str, Any] | None, study: Study, quick: bool,
                plan: StudyPlan) -> None:
    """Write ``study.json`` and record the plan's grids in the store's manifest; remove what a killed run
    left half-written."""
    store.path.mkdir(parents=True, exist_ok=True)
    for leftover in filter(_leftover, store.path.iterdir()):
        leftover.unlink()
    atomic_write_json(store.path / RECORD, {"study": study.name, "quick": quick})
    grids = list(held["grids"]) if held else []
    for grid in plan.grids:
        store.write_manifest(plan.base, {"grids": grids}, grid)
        grids = grids if grid in grids else [*grids, grid]


def module_of(study: Study) -> ModuleType:
    """The module that runs ``study``."""
    return importlib.import_module(study.module)


def _run_point(module: str, values: dict[str, Any]) -> dict[str, Any]:
    return importlib.import_module(module).compute(values)


def _results(study: Study, todo: list[dict[str, Any]], workers: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(identifier, row) of each point of ``todo`` as it finishes: here, or in ``workers`` processes."""
    if workers <= 1 or len(todo) <= 1:
        for values in todo:
            yield point_id(values), _run_point(study.module, values)
        return
    with worker_pool(min(workers, len(todo)), f"study {study.name}") as pool:
        futures = {pool.submit(_run_point, study.module, values): point_id(values) for values in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_points(store: SweepDirectory, study: Study, plan: StudyPlan, workers: int = 1,
               progress: bool = False) -> list[dict[str, Any]]:
    """Run every point of ``plan`` that ``store`` does not hold yet, saving each as it finishes, with a
    progress bar (points done of all, and the time left at the pace so far); returns every point's row in
    plan order. ``results.csv`` is rewritten once at the end (and when interrupted), from the rows held."""
    from tqdm.std import tqdm  # plain text on stderr, also in notebooks

    points = plan.points()
    held = store.scan()[0]
    todo = [p for p in points if point_id(p) not in held]
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"study {study.name}",
               unit="point", disable=not progress, leave=False)
    try:
        for pid, row in _results(study, todo, workers):
            store.save_point(pid, row if "status" in row else {**row, "status": "ok"})  # the store needs one
            held[pid] = store.point_row(pid)  # as stored: a resumed study reads the same values
            bar.update(1)
    finally:
        bar.close()
        store.write_results(held)
    return [held[point_id(p)] for p in points]


def study_args(name: str, quick: bool = False, **options: Any) -> argparse.Namespace:
    """The options of study ``name`` as its command line would give them: its defaults, ``quick`` and
    ``options`` (by their attribute names, e.g. ``imports=[...]``, ``no_sgd=True``); one ConfigError
    names an option the study does not have."""
    if name not in STUDIES:
        raise ConfigError(f"study={name!r}: not a study; allowed: {', '.join(STUDIES)}")
    parser = argparse.ArgumentParser(add_help=False)
    STUDIES[name].options(parser)
    args = parser.parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise ConfigError(f"{unknown[0]}={options[unknown[0]]!r}: not an option of the {name} study; "
                          f"allowed: {', '.join(sorted(vars(args))) or 'none'}")
    return argparse.Namespace(**{**vars(args), **options, "quick": quick})


def run_study(name: str, out: Path | str, quick: bool = False, workers: int = 1, progress: bool = False,
              report: Callable[[str], None] = lambda text: None, **options: Any) -> str:
    """Run study ``name`` into ``out`` as ``factrecall study NAME`` does, its options given as keywords
    (:func:`study_args`); returns what the command prints."""
    return run_parsed(name, out, study_args(name, quick, **options), workers, progress, report)


def run_parsed(name: str, out: Path | str, args: argparse.Namespace, workers: int = 1,
               progress: bool = False, report: Callable[[str], None] = lambda text: None) -> str:
    """Run study ``name`` with its parsed options ``args`` (``quick`` and the study's own) into ``out``:
    check ``out`` before any work, run the unfinished points, write the study's files; returns what the
    command prints."""
    if name not in STUDIES:
        raise ConfigError(f"study={name!r}: not a study; allowed: {', '.join(STUDIES)}")
    study, out = STUDIES[name], Path(out)
    module = module_of(study)
    plan = module.plan(args)
    store, held = check_study_dir(out, study, bool(args.quick), plan)
    check = getattr(module, "check", None)
    if check is not None:  # the study's own paths (e.g. --figure, --import), before any work
        check(out, args)
    _open_store(store, held, study, bool(args.quick), plan)
    prepare = getattr(module, "prepare", None)
    if prepare is not None:
        prepare(out, args, store)
    rows = run_points(store, study, plan, workers, progress)
    text = module.finish(out, args, rows)
    report(f"wrote {', '.join(study.outputs)} in {out}")
    return text
