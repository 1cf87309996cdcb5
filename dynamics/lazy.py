"""Imports deferred to first use, so that what needs no numerics (resolving and checking a config, the command
line's help and refusals) loads no torch, SciPy or matplotlib.

Two forms: a package's public names resolved on first access (:func:`lazy_exports`, the module
``__getattr__`` of PEP 562), and a registry entry's implementation named by where it lives (:class:`Lazy`,
imported when first called). Standard library only: every layer may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Lazy:
    """A callable named by ``target`` (``"package.module:attribute"``): its module is imported on the first
    call, which then calls the attribute with ``args`` before the call's own arguments (as
    :func:`functools.partial` would)."""

    target: str
    args: tuple[Any, ...] = ()

    def resolve(self) -> Callable[..., Any]:
        """The callable ``target`` names, its module imported now."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*self.args, *args, **kwargs)


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` for the public names of the module ``package`` (a package,
    or a module) that live in other modules: ``exports`` maps each name to the module (relative to the
    package, e.g. ``".run"``) that defines it, which is imported when the name is first read (then the name
    is an ordinary attribute of ``package``)."""

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(package)
        value = getattr(importlib.import_module(where, module.__package__), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__
