"""Output directories: the one check every command makes of its ``--out`` path, run directories written
all at once (built under a temporary name, then renamed into place), and their default names."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_json, umask

RUN_ALLOWED = "a new or empty directory, or one holding a run of the same config"

# What each command writes into its output directory (paths relative to it). The kind of a directory is
# read from the files only that kind writes, so that no command replaces another's output.
SIMULATE_FILES = ("config.json", "trajectory.npz", "summary.json", "stages.json", "stages.npz", "loss.png",
                  "facts.png", "fractions.png", "timeline.json", "timeline.npz", "timeline.png")
CAPACITY_FILES = ("trials.csv", "summary.json", "capacity.png", "tradeoff.png")


def output_files(kind: str) -> frozenset[str]:
    """The paths a ``kind`` command (simulate, compare, capacity) may write in its output directory."""
    if kind == "simulate":
        nested = {f"{run}/{name}" for run in ("flow", "train") for name in SIMULATE_FILES}
        return frozenset({*SIMULATE_FILES, "flow", "train", *nested})
    if kind == "compare":
        from .compare.plots import FIGURES

        return frozenset({"config.json", "compare.json", "compare.csv", *FIGURES})
    if kind == "capacity":
        return frozenset(CAPACITY_FILES)
    raise ValueError(f"unknown output kind {kind!r}")


def output_kind(path: Path) -> str | None:
    """Which command wrote the directory ``path`` (sweep, compare, simulate, capacity), judged by the files
    only that command writes; None when none did."""
    if (path / "sweep.json").exists():
        return "sweep"
    if (path / "compare.json").exists():
        return "compare"
    if any((path / run / "trajectory.npz").exists() for run in (".", "flow", "train")):
        return "simulate"
    if (path / "trials.csv").exists():
        return "capacity"
    return None


def check_kind(path: Path, kind: str, allowed: str = RUN_ALLOWED, flag: str = "--out") -> bool:
    """Refuse (a one-line ConfigError) a non-empty ``path`` that holds another command's output, or files the
    ``kind`` command does not write (the user's own, which replacing the directory would delete). Returns
    whether ``path`` holds an output of ``kind`` (False: new or empty)."""
    if not path.exists() or not any(path.iterdir()):
        return False
    found = output_kind(path)
    if found is None:
        raise ConfigError(f"{flag}={str(path)!r}: is not empty and holds no {kind} run; allowed: {allowed}")
    if found != kind:
        raise ConfigError(f"{flag}={str(path)!r}: holds the output of factrecall {found}, not of {kind}; "
                          f"allowed: {allowed}")
    known = output_files(kind)
    foreign = sorted(str(p.relative_to(path)) for p in path.rglob("*")
                     if str(p.relative_to(path)) not in known or p.is_symlink()
                     or (p.is_dir() != (p.name in ("flow", "train") and p.parent == path)))
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"{flag}={str(path)!r}: holds files factrecall {kind} did not write ({listed}); "
                          f"allowed: {allowed}")
    return True


def check_output_dir(path: Path, allowed: str = "a directory path", flag: str = "--out") -> None:
    """Refuse (a one-line ConfigError) an output path that cannot become a directory: one that lies below
    a file, or one that exists and is not a directory. ``allowed`` ends the message."""
    path = Path(path)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag}={str(path)!r}: lies below a file ({str(ancestor)!r} is not a directory); "
                          f"allowed: {allowed}")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}={str(path)!r}: exists and is not a directory; allowed: {allowed}")


def check_writable(where: Path, path: Path | None = None, flag: str = "--out") -> None:
    """Refuse (a one-line ConfigError naming ``path``, default ``where``) an output path that cannot be
    written: a probe directory is made (and removed at once) in ``where`` or its nearest existing
    ancestor, where the output (or its staging directory) will be created."""
    path = Path(where) if path is None else Path(path)
    ancestor = Path(where)
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        probe = tempfile.mkdtemp(dir=ancestor, prefix=".factrecall-probe.")
        os.rmdir(probe)
    except OSError as err:
        raise ConfigError(f"{flag}={str(path)!r}: cannot be written ({err.strerror or err} in "
                          f"{str(ancestor)!r}); allowed: a path in a writable directory") from None


def config_digest(config: Config) -> str:
    """A short stable hash of a resolved config (names default run directories)."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_dir(config: Config, name: str) -> Path:
    """``runs/<name>-<digest>``: one directory per distinct resolved config."""
    return Path("runs") / f"{name}-{config_digest(config)}"


def check_target(path: Path, config: Config, kind: str = "simulate") -> None:
    """Refuse a target that cannot be a writable directory, or exists and holds something other than a
    ``kind`` output (simulate or compare) of this very config and the files that command writes."""
    check_output_dir(path, RUN_ALLOWED)
    if not check_kind(path, kind):
        check_writable(path.parent, path)
        return
    existing = path / "config.json"
    if existing.is_file():
        try:
            same = json.loads(existing.read_text()) == json.loads(json.dumps(config.to_dict()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            same = False
        if same:
            check_writable(path.parent, path)
            return
        raise ConfigError(f"--out={str(path)!r}: already holds another run (different config); allowed: "
                          f"{RUN_ALLOWED}")
    raise ConfigError(f"--out={str(path)!r}: is not empty and holds no run; allowed: {RUN_ALLOWED}")


@contextmanager
def staged_run_dir(path: Path, config: Config, kind: str = "simulate") -> Iterator[Path]:
    """Yield a temporary directory beside ``path``, holding ``config.json``; on success it replaces
    ``path`` in one rename.

    On any error the temporary directory is removed and ``path`` is left as it was: an old run being
    replaced is moved aside, and moved back if the new one cannot take its place.
    """
    check_target(path, config, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    staging.chmod(0o777 & ~umask())  # mkdtemp creates 0700; the run directory gets ordinary permissions
    try:
        atomic_write_json(staging / "config.json", config.to_dict())
        yield staging
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            try:
                os.replace(path, old / "run")
            except BaseException:
                os.rmdir(old)
                raise
            try:
                os.replace(staging, path)
            except BaseException:
                os.replace(old / "run", path)  # the old run back: never neither
                os.rmdir(old)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
