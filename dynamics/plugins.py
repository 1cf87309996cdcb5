"""Registrations declared by installed packages: an entry point of a group names a function that registers
entries (a model kind, an optimizer) when called. Each group is loaded once per process, on the first look-up
of its registry, so that a process that never ran a registration line (a sweep's spawned worker) finds the
entries all the same."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

_LOADED: set[str] = set()


def entry_points(group: str) -> list[EntryPoint]:
    """The installed entry points of ``group`` (:mod:`importlib.metadata`, imported on first use:
    ``factrecall --help`` looks none up)."""
    from importlib.metadata import entry_points as installed

    return list(installed(group=group))


def load_entry_points(group: str) -> None:
    """Call, once per process, every entry point of ``group``."""
    if group in _LOADED:
        return
    _LOADED.add(group)
    for point in entry_points(group=group):
        point.load()()
