"""Run directories written all at once: built under a temporary name, then renamed into place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dynamics.config import Config, ConfigError
from dynamics.io import atomic_write_json


def config_digest(config: Config) -> str:
    """A short stable hash of a resolved config (names default run directories)."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_dir(config: Config, name: str) -> Path:
    """``runs/<name>-<digest>``: one directory per distinct resolved config."""
    return Path("runs") / f"{name}-{config_digest(config)}"


def check_target(path: Path, config: Config) -> None:
    """Refuse a target that exists and holds something other than a run of this very config."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out={str(path)!r}: {str(ancestor)!r} is not a directory; allowed: a path "
                          "whose existing parent is a directory")
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"--out={str(path)!r}: exists and is not a directory; allowed: a new or empty "
                          "directory, or one holding a run of the same config")
    existing = path / "config.json"
    if not any(path.iterdir()):
        return
    if existing.is_file():
        try:
            same = json.loads(existing.read_text()) == json.loads(json.dumps(config.to_dict()))
        except json.JSONDecodeError:
            same = False
        if same:
            return
        raise ConfigError(f"--out={str(path)!r}: already holds another run (different config); allowed: a "
                          "new directory or one holding a run of the same config")
    raise ConfigError(f"--out={str(path)!r}: is not empty and holds no run; allowed: a new or empty "
                      "directory, or one holding a run of the same config")


@contextmanager
def staged_run_dir(path: Path, config: Config) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary directory is removed and ``path`` is left as it was.
    """
    check_target(path, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    staging.chmod(0o777 & ~_umask())  # mkdtemp creates 0700; the run directory gets ordinary permissions
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: Path) -> Any:
    """Load a JSON file written by this tool."""
    return json.loads(Path(path).read_text())
