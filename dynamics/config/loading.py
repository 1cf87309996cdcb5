"""Resolving a configuration: defaults, a preset, a config file, then ``--set`` overrides."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .presets import DEFAULT_PRESET, PRESETS
from .schema import Config, fail


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
