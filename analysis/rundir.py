"""The command line's side of output directories: the one check every command makes of its ``--out`` path,
run directories written all at once (built under a temporary name, then renamed into place), and their
default names. What each command writes, and how a run's files are written, read and checked, is
:mod:`dynamics.rundir`'s (``output_kind``, ``run_layout`` and ``output_files`` are its, named here too)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dynamics.config import Config
from dynamics.errors import ConfigError
from dynamics.io import atomic_write_json, umask
from dynamics.rundir import LAYOUTS, foreign_paths, output_files, output_kind, run_layout

__all__ = ["RUN_ALLOWED", "check_kind", "check_output_dir", "check_output_file", "check_path", "check_target",
           "check_writable", "config_digest", "default_run_dir", "output_files", "output_kind", "run_layout",
           "staged_run_dir"]

RUN_ALLOWED = "a new or empty directory, or one holding a run of the same config"


def check_kind(path: Path, kind: str, allowed: str = RUN_ALLOWED, flag: str = "--out") -> bool:
    """Refuse (a one-line ConfigError) a non-empty ``path`` that holds another command's output, or files the
    ``kind`` command does not write (the user's own, which replacing the directory would delete). Returns
    whether ``path`` holds an output of ``kind`` (False: new or empty)."""
    path = Path(path)
    if not path.exists() or not any(path.iterdir()):
        return False
    found = output_kind(path)
    if found is None:
        raise ConfigError(f"{flag}={str(path)!r}: is not empty and holds no {kind} run; allowed: {allowed}")
    if found != kind:
        raise ConfigError(f"{flag}={str(path)!r}: holds the output of factrecall {found}, not of {kind}; "
                          f"allowed: {allowed}")
    foreign = foreign_paths(path, kind)
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"{flag}={str(path)!r}: holds files factrecall {kind} did not write ({listed}); "
                          f"allowed: {allowed}")
    return True


def check_output_dir(path: Path, allowed: str = "a directory path", flag: str = "--out") -> None:
    """Refuse (a one-line ConfigError) an output path that cannot become a directory: :func:`check_path`'s
    refusals (empty, the current directory or one above it, a symbolic link, below a file), or one that
    exists and is not a directory. ``allowed`` ends the message."""
    path = check_path(path, allowed, flag)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}={str(path)!r}: exists and is not a directory; allowed: {allowed}")


def check_path(path: Path | str, allowed: str, flag: str = "--out") -> Path:
    """The checks every output path gets, whatever it names (``check_output_dir``, ``check_output_file``):
    refuse an empty path, the current directory or a directory above it (a command replaces or fills its
    output: never the folder it runs in), a symbolic link (dangling, or one that writing would replace by
    a real file or directory), a path below a file, and one inside another command's output directory.
    Returns ``path`` as a Path."""
    text = str(path)
    if not text.strip():
        raise ConfigError(f"{flag}={text!r}: must not be empty; allowed: {allowed}")
    path = Path(path)
    here = Path.cwd().resolve()
    if not path.is_symlink() and (path.resolve() == here or path.resolve() in here.parents):
        raise ConfigError(f"{flag}={text!r}: is the current directory or one above it; allowed: {allowed} "
                          "(name a directory inside it)")
    if path.is_symlink():
        target = os.readlink(path)
        what = "dangling" if not path.exists() else ("to a directory" if path.is_dir() else "to a file")
        raise ConfigError(f"{flag}={text!r}: is a symbolic link ({what}: {target!r}), which writing would "
                          f"replace; allowed: {allowed} (give the path it points to)")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag}={text!r}: lies below a file ({str(ancestor)!r} is not a directory); "
                          f"allowed: {allowed}")
    found = output_kind(ancestor)
    if found in ("simulate", "compare") and not (ancestor / "config.json").is_file():
        found = None  # a folder of runs, two of them named flow and train, is not a --train run
    if found is not None:  # a command's output holds only what that command writes
        raise ConfigError(f"{flag}={text!r}: lies inside the output of factrecall {found} "
                          f"({str(ancestor)!r}); allowed: {allowed}")
    return path


def check_output_file(path: Path | str, allowed: str, flag: str = "--out", suffix: str = ".json",
                      replaceable: Callable[[Path], bool] = lambda p: False) -> Path:
    """Refuse (a one-line ConfigError) a path that cannot take a new output file: :func:`check_path`'s
    refusals, a name not ending in ``suffix``, a directory, an existing file that ``replaceable`` does not
    recognise as this command's own output (a run's summary.json is not a bench result), or a directory
    that cannot be written. Returns ``path``."""
    path = check_path(path, allowed, flag)
    if path.suffix != suffix:
        raise ConfigError(f"{flag}={str(path)!r}: must end in {suffix}; allowed: {allowed}")
    if path.is_dir():
        raise ConfigError(f"{flag}={str(path)!r}: is a directory; allowed: {allowed}")
    if path.exists() and not (path.is_file() and replaceable(path)):
        raise ConfigError(f"{flag}={str(path)!r}: exists and was not written by this command (replacing it "
                          f"would lose it); allowed: {allowed}")
    check_writable(path.parent, path, flag)
    return path


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


def config_digest(config: Config, kind: str = "") -> str:
    """A short stable hash of a resolved config and the kind of run made of it (names default run
    directories)."""
    text = json.dumps(config.to_dict(), sort_keys=True) + (f"|{kind}" if kind else "")
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_dir(config: Config, name: str, train: bool = False) -> Path:
    """``runs/<name>-<digest>`` (``runs/<name>-train-<digest>`` for ``simulate --train``): one directory
    per distinct resolved config and kind of run, so that a flow run and a ``--train`` run never share
    one."""
    if train:
        return Path("runs") / f"{name}-train-{config_digest(config, 'train')}"
    return Path("runs") / f"{name}-{config_digest(config)}"


def check_target(path: Path | str, config: Config, kind: str = "simulate", train: bool | None = None) -> bool:
    """Refuse a target that cannot be a writable directory, or exists and holds something other than a
    ``kind`` output (simulate or compare) of this very config and the files that command writes; for
    simulate with ``train`` given, also a run of the other layout (a ``--train`` run replaced by a flow
    run, or the reverse). Returns whether ``path`` holds such a run, which the new one will replace."""
    path = Path(path)
    check_output_dir(path, RUN_ALLOWED)
    if not check_kind(path, kind):
        check_writable(path.parent, path)
        return False
    if kind == "simulate" and train is not None:
        held, wanted = run_layout(path), ("train" if train else "flow")
        if held != wanted:
            raise ConfigError(f"--out={str(path)!r}: holds {LAYOUTS[held].description}, not "
                              f"{LAYOUTS[wanted].description}; allowed: {RUN_ALLOWED} and kind")
    existing = path / "config.json"
    if existing.is_file():
        try:
            same = json.loads(existing.read_text()) == json.loads(json.dumps(config.to_dict()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            same = False
        if same:
            check_writable(path.parent, path)
            return True
        raise ConfigError(f"--out={str(path)!r}: already holds another run (different config); allowed: "
                          f"{RUN_ALLOWED}")
    raise ConfigError(f"--out={str(path)!r}: is not empty and holds no run; allowed: {RUN_ALLOWED}")


@contextmanager
def staged_run_dir(path: Path | str, config: Config, kind: str = "simulate", train: bool | None = None,
                   tree: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``, holding ``config.json`` (``tree``, the config's JSON tree
    when the caller has made it: :func:`~dynamics.rundir.config_tree`); on success it replaces ``path`` in
    one rename (after :func:`check_target`).

    On any error the temporary directory is removed and ``path`` is left as it was: an old run being
    replaced is moved aside, and moved back if the new one cannot take its place.
    """
    path = Path(path)
    check_target(path, config, kind, train)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    staging.chmod(0o777 & ~umask())  # mkdtemp creates 0700; the run directory gets ordinary permissions
    try:
        atomic_write_json(staging / "config.json", config.to_dict() if tree is None else tree)
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
