"""A registry of named entries, the one pattern every extensible concept follows (the solver methods, the
geometries, the model kinds, the optimizers, the run-directory layouts, the commands, the studies): the
built-in entries, those added by a ``register`` call from anywhere, and those of installed packages' entry
points (:mod:`dynamics.plugins`: each names a callable that registers its entries), loaded on first use so
that a process that never ran the registration line (a sweep's worker) finds them too.

This module imports nothing of the project but its errors and plugins (standard library only): every layer
may build a registry on it, and the command line reads its registries without loading the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, Protocol, TypeVar

from .plugins import load_entry_points


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(Mapping[str, T], Generic[T]):
    """The entries by name (a mapping: the built-in ones first, then in order of registration).
    ``key``: what the names are, for the messages (the config key whose values they are, e.g.
    ``flow.geometry``, or a word: ``command``); ``group``: the entry-point group of installed extensions
    (None: none are looked up); ``identifiers``: whether a name must be an identifier (a config value;
    False for a command such as ``sweep-plot``)."""

    def __init__(self, key: str, group: str | None, builtin: Iterable[T], identifiers: bool = True):
        self.key, self.group, self.identifiers = key, group, identifiers
        self._entries: dict[str, T] = {entry.name: entry for entry in builtin}
        self.builtin = tuple(self._entries)

    def _load(self) -> dict[str, T]:
        if self.group is not None:
            load_entry_points(self.group)
        return self._entries

    def __getitem__(self, name: str) -> T:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __setitem__(self, name: str, entry: T) -> None:
        """Add or replace the entry ``name`` unchecked (a test's ``monkeypatch.setitem``; code registers)."""
        self._load()[name] = entry

    def __delitem__(self, name: str) -> None:
        self.unregister(name)

    def get_entry(self, name: str) -> T:
        """The entry called ``name``; a one-line ConfigError naming the allowed ones otherwise."""
        from .errors import ConfigError

        if name not in self:
            raise ConfigError(f"{self.key}={name!r}: must be one of " + ", ".join(self))
        return self[name]

    def register(self, entry: T, replace: bool = False) -> T:
        """Add ``entry``; a name already registered (unless ``replace``), or one that is not an identifier
        where names must be, is refused (ValueError). Returns the entry."""
        where = f"register ({self.key})"
        if entry.name in self._load() and not replace:
            raise ValueError(f"{where}: {entry.name!r}: already registered")
        if self.identifiers and not entry.name.isidentifier():
            raise ValueError(f"{where}: {entry.name!r} must be an identifier (a config value)")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry added by :meth:`register` (the built-in ones stay: ValueError)."""
        if name in self.builtin:
            raise ValueError(f"unregister ({self.key}): {name!r} is built in")
        self._entries.pop(name, None)
