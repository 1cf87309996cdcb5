"""Resolving a configuration: defaults, a preset, a config file, then ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..optimizers import OPTIMIZERS, get_optimizer, optimizers_for
from .presets import DEFAULT_PRESET, PRESETS
from .schema import Config, TrainConfig, fail

TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def parse_set(assignments: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from ``--set`` into a dict; a malformed one raises ConfigError."""
    parsed: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or "." not in key and key != "device":
            fail("--set", item, "must look like section.key=value, e.g. task.subjects=8")
        parsed[key] = value.strip()
    return parsed


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a nested config dict from a JSON file (or YAML via ``yaml.safe_load`` when PyYAML is present)."""
    path = Path(path)
    if not path.is_file():
        fail("--config", str(path), "must be an existing JSON or YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        fail("--config", str(path), f"must be a readable UTF-8 JSON or YAML file ({type(err).__name__})")
    try:
        tree = _parse(path, text)
    except RecursionError:
        fail("--config", str(path), "must not nest deeper than Python's recursion limit")
    if not isinstance(tree, dict):
        fail("--config", str(path), "must hold a mapping of sections (task, model, init, ...)")
    return tree


def _parse(path: Path, text: str) -> Any:
    """The tree of a JSON file, or of a YAML one (``.yaml``/``.yml``, through ``yaml.safe_load``)."""
    if path.suffix not in (".yaml", ".yml"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            fail("--config", str(path), f"must be valid JSON ({err.msg} at line {err.lineno})")
    try:
        import yaml  # optional: only to read YAML configs
    except ImportError:
        fail("--config", str(path), "YAML configs need PyYAML installed; use a .json file")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        fail("--config", str(path), f"must be valid YAML ({str(err).splitlines()[0]})")


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: Mapping[str, Any] | Iterable[str] = ()) -> Config:
    """Defaults, then a preset, then a config file, then dotted overrides: the resolved config.

    ``overrides`` is a mapping of dotted keys or an iterable of ``key=value`` strings.
    """
    name = preset or (None if config_file else DEFAULT_PRESET)
    config = Config()
    if name is not None:
        if name not in PRESETS:
            fail("--preset", name, "must be one of " + ", ".join(PRESETS))
        config = config.override(PRESETS[name])
    if config_file is not None:
        merged = config.to_dict()
        for section, content in load_config_file(config_file).items():
            if isinstance(content, Mapping) and isinstance(merged.get(section), dict):
                merged[section].update(content)
            else:
                merged[section] = content
        config = Config.from_dict(merged)
    if not isinstance(overrides, Mapping):
        overrides = parse_set(overrides)
    return config.override(overrides)


def unread_train_keys(config: Config, train: bool) -> dict[str, str]:
    """The ``train.*`` keys a run of ``config`` does not read, each with why: all of them without ``train``
    (no discrete run), else those that ``train.optimizer`` does not read (its entry's ``reads``,
    :mod:`dynamics.optimizers`)."""
    if not train:
        return {f"train.{name}": "nothing is trained without --train (Python: train=True)"
                for name in TRAIN_KEYS}
    optimizer = config.train.optimizer
    reads = get_optimizer(optimizer).reads
    unread = {}
    for name in TRAIN_KEYS:
        if f"train.{name}" not in reads:
            readers = [o for o in optimizers_for("train") if f"train.{name}" in OPTIMIZERS[o].reads]
            unread[f"train.{name}"] = (f"only {', '.join(readers)} read{'s' if len(readers) == 1 else ''} "
                                       f"it (train.optimizer={optimizer!r})")
    return unread


def _unset_values(key: str, preset: str | None, source: Config | None) -> list[Any]:
    """The values of ``key`` that nobody chose for this run: the schema's default, the preset's value
    (every preset's when the preset is not known, e.g. a config file or a Config from Python), and the
    value of ``source``, the config a run is started from (``--init-from``)."""
    section, name = key.split(".", 1)
    values = [getattr(getattr(Config(), section), name)]
    presets = [PRESETS[preset]] if preset in PRESETS else list(PRESETS.values())
    values += [p[key] for p in presets if key in p]
    if source is not None:
        values.append(getattr(getattr(source, section), name))
    return values


def refuse_unread_grid(config: Config, grid: Mapping[str, Sequence[Any]], *, train: bool,
                       explicit: Mapping[str, Any] = {}, preset: str | None = None,
                       source: Config | None = None) -> None:
    """:func:`refuse_unread` over the points of a sweep's ``grid`` on ``config``: a ``train.*`` grid key
    counts as set explicitly, and a key is read when any point's run reads it. Only ``train.*`` keys change
    what is read, so only they are expanded; an invalid point is left to the sweep (an error row)."""
    explicit = {**explicit, **{k: ",".join(map(str, v)) for k, v in grid.items() if k.startswith("train.")}}
    points: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        if key.startswith("train."):
            points = [{**p, key: v} for p in points for v in values]
    configs = []
    for point in points:
        try:
            configs.append(config.override(point))
        except ConfigError:
            continue
    refuse_unread(configs, train=train, explicit=explicit, preset=preset, source=source)


def refuse_unread(configs: Config | Sequence[Config], *, train: bool, explicit: Mapping[str, Any] = {},
                  preset: str | None = None, source: Config | None = None) -> None:
    """Refuse a ``train.*`` key that no run of ``configs`` (one config, or a sweep's points) reads, with
    one ConfigError naming the key, the value and why.

    A key in ``explicit`` (``--set`` or ``--grid``: the key and the value shown) is refused whatever its
    value; any other is refused only when its value was chosen by someone (:func:`_unset_values`): a
    ``config.json`` written by an earlier run holds every key, and a preset's batch size is not a choice.
    """
    configs = [configs] if isinstance(configs, Config) else list(configs)
    if not configs:
        return
    unread = [unread_train_keys(c, train) for c in configs]
    for name in TRAIN_KEYS:
        key = f"train.{name}"
        if not all(key in u for u in unread):
            continue  # some run reads it
        value = getattr(configs[0].train, name)
        if key in explicit:
            value = explicit[key]
        elif value in _unset_values(key, preset, source):
            continue
        shown = value if isinstance(value, str) and key in explicit else repr(value)
        allowed = "add --train, or leave it out" if not train else "leave it out, or an optimizer reading it"
        raise ConfigError(f"{key}={shown}: has no effect: {unread[0][key]}; allowed: {allowed}")
