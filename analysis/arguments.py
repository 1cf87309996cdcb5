"""Command-line strings turned into checked values for the commands: the config of ``--preset``,
``--config`` and ``--set`` on a device this machine has, comma-separated lists, counts. Every invalid
value is a one-line ConfigError (the CLI exits 2)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from dynamics.config import DEFAULT_PRESET, Config, resolve_config
from dynamics.config.loading import parse_set, refuse_unread_grid
from dynamics.errors import ConfigError


def config_from_args(args: argparse.Namespace) -> Config:
    """The config of ``--preset``/``--config``/``--set``, refused when its device is not on this machine."""
    config = resolve_config(args.preset, args.config, args.overrides)
    require_device(config.device)
    return config


def check_config(args: argparse.Namespace) -> None:
    """Refuse the config of ``--preset``/``--config``/``--set`` (:func:`config_from_args`, what ``simulate``,
    ``compare`` and ``sweep`` resolve first) before the command's module loads the engine; a config taken
    from another run (``--init-from``) is left to the command, which reads that run first."""
    if not getattr(args, "init_from", None):
        config_from_args(args)


def refuse_unread_settings(args: argparse.Namespace, config: Config,
                           grid: Mapping[str, Sequence[Any]] | None = None) -> None:
    """Refuse (one ConfigError) a ``train.*`` setting that the runs of ``simulate``/``sweep`` would not read:
    any key of ``--set`` or ``--grid`` that no run reads, and any value of a ``--config`` file that no run
    reads unless it is the default or a preset's (an earlier run's ``config.json`` holds every key). With
    ``--init-from``, the source run's own values are not choices either."""
    explicit: dict[str, Any] = {k: v for k, v in parse_set(args.overrides).items() if k.startswith("train.")}
    source = None
    if getattr(args, "init_from", None):
        source = resolve_config(None, args.config)
    preset = args.preset or (None if args.config else DEFAULT_PRESET)
    refuse_unread_grid(config, grid or {}, train=bool(getattr(args, "train", False)), explicit=explicit,
                       preset=preset, source=source)


def require_device(device: str) -> None:
    """Refuse a CUDA device this machine does not have (``cpu`` is always there)."""
    if device == "cpu":
        return
    import torch

    index = torch.device(device).index or 0
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        raise ConfigError(f"device={device!r}: not available on this machine ({count} CUDA devices); "
                          "allowed: cpu" + (f" or cuda:0..cuda:{count - 1}" if count else ""))


def parse_list(flag: str, text: str, kind: type) -> tuple:
    """A comma-separated list of ``kind`` values, at least one."""
    try:
        values = tuple(kind(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ConfigError(f"{flag}={text!r}: must be a comma-separated list of {kind.__name__} values"
                          ) from None
    if not values:
        raise ConfigError(f"{flag}={text!r}: must list at least one value")
    return values


def parse_count(flag: str, text: str) -> int:
    """One integer >= 1 (``--seeds``, ``--workers``): a clear error rather than silently taking the first."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{flag}={text!r}: must be one integer >= 1")
    return value
