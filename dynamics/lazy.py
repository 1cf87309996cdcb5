"""Imports deferred to first use, so that what needs no numerics (resolving and checking a config, the command
line's help and refusals) loads no torch, SciPy or matplotlib.

Three forms: a package's public names resolved on first access (:func:`lazy_exports`, the module
``__getattr__`` of PEP 562), a registry entry's implementation named by where it lives (:class:`Lazy`,
imported when first called), and a third-party package imported with one of its modules deferred
(:func:`import_deferring`). Standard library only: every layer may use it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
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


@dataclass(frozen=True)
class LazyAttributes(Lazy):
    """A :class:`Lazy` whose attributes are the target's too (a class's class methods): reading one imports
    the target's module, as a call does."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and the like ask for these: not the target's
            raise AttributeError(name)
        return getattr(self.resolve(), name)


def import_deferring(package: str, submodule: str) -> ModuleType:
    """Import ``package`` (or return it, already imported) with its module ``submodule`` (a dotted name)
    deferred: while ``package`` imports, ``submodule`` is a stand-in whose every public name is a
    :class:`LazyAttributes` of the real name, so the real module, and what it imports, loads when one of
    those names is first called or one of its attributes read. For a package that imports, at its own
    import, a module with a slow dependency that the caller may never use: torchdiffeq imports its SciPy
    wrapper (and so ``scipy.integrate``, 0.45 s of CPU) for one method, ``scipy_solver``, that
    ``flow.method`` does not offer."""
    if package in sys.modules or submodule in sys.modules:
        return importlib.import_module(package)

    def __getattr__(name: str) -> LazyAttributes:
        if name.startswith("__"):  # the import system's own questions (__path__, ...): a plain module
            raise AttributeError(name)
        return LazyAttributes(f"{submodule}:{name}")

    stand_in = ModuleType(submodule)
    stand_in.__getattr__ = __getattr__  # type: ignore[method-assign]  # PEP 562
    sys.modules[submodule] = stand_in
    try:
        return importlib.import_module(package)
    finally:
        if sys.modules.get(submodule) is stand_in:  # the real module imports on the first call
            del sys.modules[submodule]
