"""What the analysis side's registries share (the commands of :mod:`analysis.cli`, the studies of
:mod:`analysis.study`): adding an entry under its name once. Standard library only, so that
``factrecall --help`` loads no engine."""

from __future__ import annotations

from typing import Protocol, TypeVar


class _Named(Protocol):
    name: str


T = TypeVar("T", bound=_Named)


def register_once(entries: dict[str, T], entry: T, what: str) -> T:
    """Add ``entry`` to ``entries`` under its name and return it; a name taken is refused (ValueError
    naming ``what`` it is: a command, a study)."""
    if entry.name in entries:
        raise ValueError(f"{what} {entry.name!r}: already registered")
    entries[entry.name] = entry
    return entry
