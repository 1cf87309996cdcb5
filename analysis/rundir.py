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


def config_digest(config: Config) -> str:
    """A short stable hash of a resolved config (names default run directories)."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_dir(config: Config, name: str) -> Path:
    """``runs/<name>-<digest>``: one directory per distinct resolved config."""
    return Path("runs") / f"{name}-{config_digest(config)}"


def check_target(path: Path, config: Config) -> None:
    """Refuse a target that cannot be a directory, or exists and holds something other than a run of
    this very config."""
    check_output_dir(path, RUN_ALLOWED)
    if not path.exists() or not any(path.iterdir()):
        return
    existing = path / "config.json"
    if existing.is_file():
        try:
            same = json.loads(existing.read_text()) == json.loads(json.dumps(config.to_dict()))
        except json.JSONDecodeError:
            same = False
        if same:
            return
        raise ConfigError(f"--out={str(path)!r}: already holds another run (different config); allowed: "
                          f"{RUN_ALLOWED}")
    raise ConfigError(f"--out={str(path)!r}: is not empty and holds no run; allowed: {RUN_ALLOWED}")


@contextmanager
def staged_run_dir(path: Path, config: Config) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``, holding ``config.json``; on success it replaces
    ``path`` in one rename.

    On any error the temporary directory is removed and ``path`` is left as it was.
    """
    check_target(path, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    staging.chmod(0o777 & ~umask())  # mkdtemp creates 0700; the run directory gets ordinary permissions
    try:
        atomic_write_json(staging / "config.json", config.to_dict())
        yield staging
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "run")
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
