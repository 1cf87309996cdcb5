"""A registry of named entries, the pattern an extensible concept follows (a geometry, ...): the built-in
entries, those added by a ``register`` call from anywhere, and those of installed packages' entry points
(:mod:`dynamics.plugins`: each names a callable that registers its entries), loaded on first use so that a
process that never ran the registration line (a sweep's worker) finds them too.

This module imports nothing of the project but its errors and plugins: every layer may build a registry on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, Protocol, TypeVar

from .plugins import load_entry_points


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(Mapping[str, T], Generic[T]):
    """The entries by name (a read-only mapping: the built-in ones first, then in order of registration).
    ``key``: the config key whose values are the names (for the refusals, e.g. ``flow.geometry``);
    ``group``: the entry-point group of installed extensions."""

    def __init__(self, key: str, group: str, builtin: Iterable[T]):
        self.key, self.group = key, group
        self._entries: dict[str, T] = {entry.name: entry for entry in builtin}
        self.builtin = tuple(self._entries)

    def _load(self) -> dict[str, T]:
        load_entry_points(self.group)
        return self._entries

    def __getitem__(self, name: str) -> T:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def get_entry(self, name: str) -> T:
        """The entry called ``name``; a one-line ConfigError naming the allowed ones otherwise."""
        from .errors import ConfigError

        if name not in self:
            raise ConfigError(f"{self.key}={name!r}: must be one of " + ", ".join(self))
        return self[name]

    def register(self, entry: T) -> T:
        """Add ``entry``; a name already registered, or one that is not an identifier (a config value), is
        refused (ValueError). Returns the entry."""
        where = f"register ({self.key})"
        if entry.name in self._load():
            raise ValueError(f"{where}: {entry.name!r} is already registered")
        if not entry.name.isidentifier():
            raise ValueError(f"{where}: {entry.name!r} must be an identifier (a config value)")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry added by :meth:`register` (the built-in ones stay: ValueError)."""
        if name in self.builtin:
            raise ValueError(f"unregister ({self.key}): {name!r} is built in")
        self._entries.pop(name, None)
