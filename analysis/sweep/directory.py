"""The on-disk state of a sweep: ``sweep.json`` (the base config and the grids), ``points/<id>.json`` (one
file per point), ``results.csv`` (rebuilt from the point files) and ``trajectories/<id>/`` (run directories).
Every file is checked when read: a damaged point file is not a finished point, a damaged manifest or a
part of the wrong kind is one ConfigError. The names are those of the sweep's layout in
:mod:`dynamics.rundir`.

The point store is public to other commands (a study keeps its points in one): ``SweepDirectory(path)``,
``check(base)`` (refuse a path that cannot hold a sweep of ``base``; returns the manifest or None),
``write_manifest(base, held, grid)``, ``scan(grid)``, ``point_row(pid)``, ``finished()``,
``save_point(pid, row, flow=None, config=None)``, ``save_trajectory``, ``has_trajectory``, ``rows()`` and
``write_results()``; the attributes ``path``, ``manifest``, ``points_dir``, ``trajectories_dir`` and
``results``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_csv, atomic_write_json, umask
from dynamics.rundir import KEPT_RUNS_DIR, POINTS_DIR, SWEEP_MANIFEST, SWEEP_RESULTS, is_complete_run
from dynamics.trajectory import Trajectory

from ..rundir import check_output_dir, check_writable
from .grid import point_id

ERROR = "error"  # the status of a point that raised instead of giving a trajectory
SWEEP_ALLOWED = "a new directory or one holding a sweep of the same base config (to resume or extend)"


def _sort_value(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def _normalised(tree: Any) -> Any:
    """A manifest's base config with the defaults of keys added since it was written filled in (so that a
    new config key with a default does not orphan existing sweeps); as stored when it does not load."""
    try:
        return json.loads(json.dumps(Config.from_dict(tree).to_dict()))
    except (ConfigError, TypeError, ValueError):
        return tree


def _valid_manifest(held: Any) -> bool:
    return (isinstance(held, dict) and isinstance(held.get("base"), dict)
            and isinstance(held.get("grids"), list)
            and all(isinstance(g, dict) and all(isinstance(v, list) for v in g.values())
                    for g in held["grids"]))


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The JSON in ``path``, or None and what is wrong with it."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError:
        return None, "empty" if not path.read_bytes().strip() else "not JSON (truncated?)"
    except RecursionError:
        return None, "nested too deeply"
    except OSError as err:
        return None, err.strerror or type(err).__name__


class SweepDirectory:
    """The on-disk state of a sweep: manifest, point files, results table, kept trajectories."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.points_dir = self.path / POINTS_DIR
        self.trajectories_dir = self.path / KEPT_RUNS_DIR
        self.manifest = self.path / SWEEP_MANIFEST
        self.results = self.path / SWEEP_RESULTS

    def check(self, base: Config) -> dict[str, Any] | None:
        """Refuse (a one-line ConfigError) a path that cannot hold this sweep: not a writable directory,
        not empty without a sweep, a damaged ``sweep.json``, one of another base config, or its parts of
        the wrong kind. Writes nothing; returns the manifest (None for a new sweep)."""
        flag = f"--out={str(self.path)!r}"
        check_output_dir(self.path, SWEEP_ALLOWED)
        check_writable(self.path)
        if not self.manifest.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise ConfigError(f"{flag}: is not empty and holds no sweep; allowed: {SWEEP_ALLOWED}")
            return None
        held, problem = _read_json(self.manifest) if self.manifest.is_file() else (None, "not a file")
        if problem is None and not _valid_manifest(held):
            problem = "not a sweep manifest (base and grids)"
        if problem is not None:
            raise ConfigError(f"{flag}: sweep.json is damaged ({problem}); allowed: {SWEEP_ALLOWED}")
        if _normalised(held["base"]) != json.loads(json.dumps(base.to_dict())):
            raise ConfigError(f"{flag}: holds a sweep of a different base config; allowed: {SWEEP_ALLOWED}")
        for part, is_kind, kind in ((self.points_dir, Path.is_dir, "a directory"),
                                    (self.trajectories_dir, Path.is_dir, "a directory"),
                                    (self.results, Path.is_file, "a file")):
            if part.exists() and not is_kind(part):
                raise ConfigError(f"{flag}: its {part.name} is not {kind}; allowed: {SWEEP_ALLOWED}")
        return held

    def write_manifest(self, base: Config, held: dict[str, Any] | None, grid: dict[str, list[Any]]) -> None:
        """Record the base config and ``grid`` among the grids; remove what a killed sweep left half-written
        (temporary files of point files and kept trajectories)."""
        self.points_dir.mkdir(parents=True, exist_ok=True)
        grids = list(held["grids"]) if held else []
        if grid not in grids:
            grids.append(grid)
        atomic_write_json(self.manifest, {"base": base.to_dict(), "grids": grids})
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        for pattern in (f".{SWEEP_RESULTS}.*.tmp", f".{SWEEP_MANIFEST}.*.tmp", f"{POINTS_DIR}/.p*.tmp"):
            for tmp in self.path.glob(pattern):
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink()
        if self.trajectories_dir.is_dir():
            for tmp in self.trajectories_dir.glob(".p*.tmp"):
                shutil.rmtree(tmp, ignore_errors=True)

    def _key_sets(self) -> list[list[str]]:
        held, problem = _read_json(self.manifest)
        return [list(g) for g in held["grids"]] if problem is None and _valid_manifest(held) else []

    def read_point(self, path: Path, key_sets: list[list[str]]) -> tuple[dict[str, Any] | None, str | None]:
        """A point file's row, or None and what is wrong: not JSON, not an object, no status, or not the
        point its name says (its values of some grid's keys must give its identifier)."""
        row, problem = _read_json(path)
        if problem is not None:
            return None, problem
        if not isinstance(row, dict) or not row:
            return None, "not a point (an empty or non-object JSON)"
        if not isinstance(row.get("status"), str):
            return None, "not a point (no status)"
        for keys in key_sets:
            if all(k in row for k in keys) and point_id({k: row[k] for k in keys}) == path.stem:
                return row, None
        return None, "not the point its name says"

    def scan(self, grid: dict[str, list[Any]] | None = None
             ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Every point file: the valid rows by identifier, and the damaged files by name with the problem.
        A row is valid for the keys of a recorded grid, or of ``grid`` (one not yet recorded)."""
        key_sets = self._key_sets() + ([list(grid)] if grid else [])
        rows, damaged = {}, {}
        if self.points_dir.is_dir():
            for path in sorted(self.points_dir.glob("p*.json")):
                row, problem = self.read_point(path, key_sets)
                if row is None:
                    damaged[path.name] = problem or "unreadable"
                else:
                    rows[path.stem] = row
        return rows, damaged

    def point_row(self, pid: str) -> dict[str, Any] | None:
        """The valid row of one point, or None."""
        return self.read_point(self.points_dir / f"{pid}.json", self._key_sets())[0]

    def finished(self) -> set[str]:
        """Identifiers of the points done (a valid point file whose status is not ``error``)."""
        return {pid for pid, row in self.scan()[0].items() if row.get("status") != ERROR}

    def has_trajectory(self, pid: str) -> bool:
        """Whether the point's kept trajectory is a whole run directory."""
        return is_complete_run(self.trajectories_dir / pid)

    def save_point(self, pid: str, row: dict[str, Any], flow: Trajectory | None = None,
                   config: Config | None = None) -> None:
        """Write one point (and, first, its trajectory when kept, which needs ``config``), atomically."""
        if flow is not None:
            if config is None:
                raise ValueError("save_point: a kept trajectory needs the point's config")
            self.save_trajectory(pid, config, flow)
        atomic_write_json(self.points_dir / f"{pid}.json", row, sort_keys=False)

    def save_trajectory(self, pid: str, config: Config, flow: Trajectory) -> None:
        """Write ``trajectories/<pid>/`` as a run directory (``config.json``, ``trajectory.npz``,
        ``summary.json``) built under a temporary name and renamed into place."""
        self.trajectories_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.trajectories_dir, prefix=f".{pid}.", suffix=".tmp"))
        try:
            staging.chmod(0o777 & ~umask())
            flow.save(staging, config)
            target = self.trajectories_dir / pid
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)  # an incomplete one this sweep wrote
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def rows(self, held: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every valid point's row, in grid order (sorted by the grid values). ``held``: the valid rows by
        identifier as the caller keeps them (a running sweep); default: the point files, read now."""
        rows = list((self.scan()[0] if held is None else held).values())
        keys = [k for keys in self._key_sets() for k in keys]
        return sorted(rows, key=lambda row: [_sort_value(row.get(k)) for k in keys])

    def write_results(self, held: dict[str, dict[str, Any]] | None = None) -> None:
        """Rebuild ``results.csv`` (atomically) from the valid point files, or from ``held``
        (:meth:`rows`)."""
        rows = self.rows(held)
        if rows:
            atomic_write_csv(self.results, rows)
