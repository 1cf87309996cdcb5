"""docs/design.md is true to the code: every module, file and name it cites exists, and every entry of every
registry is described there (a new entry without its line in §6.1 fails here)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "design.md").read_text()
CODE_SPANS = re.findall(r"`([^`\n]+)`", PAGE)


def _registries() -> dict[str, list[str]]:
    from analysis.cli import COMMANDS
    from analysis.study.registry import STUDIES
    from dynamics import GEOMETRIES, MODEL_KINDS, OPTIMIZERS
    from dynamics.rundir import LAYOUTS
    from dynamics.solvers.registry import METHODS

    def names(registry) -> list[str]:
        # the built-in entries: a test elsewhere may have registered (and not yet removed) a toy one
        return list(getattr(registry, "builtin", registry))

    return {"METHODS": names(METHODS), "GEOMETRIES": names(GEOMETRIES), "MODEL_KINDS": names(MODEL_KINDS),
            "OPTIMIZERS": names(OPTIMIZERS), "LAYOUTS": names(LAYOUTS), "COMMANDS": names(COMMANDS),
            "STUDIES": names(STUDIES)}


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or a module's attribute (``a.b.name``, ``a.b.Class.attr``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


DOTTED = sorted({span for span in CODE_SPANS if re.fullmatch(r"(dynamics|analysis)(\.\w+)+", span)})
PATHS = sorted({span for span in CODE_SPANS
                if re.fullmatch(r"(dynamics|analysis|tests|docs)/[\w/.\-]*", span)})


def test_the_page_cites_code_at_all():
    # the lists below are not empty by accident of a changed regular expression
    assert len(DOTTED) >= 10 and len(PATHS) >= 5


@pytest.mark.parametrize("dotted", DOTTED)
def test_every_cited_name_exists(dotted):
    assert _resolves(dotted), f"docs/design.md cites `{dotted}`: no such module or name"


@pytest.mark.parametrize("path", PATHS)
def test_every_cited_file_exists(path):
    assert (ROOT / path).exists(), f"docs/design.md cites `{path}`: no such file or folder"


@pytest.mark.parametrize("registry", ["METHODS", "GEOMETRIES", "MODEL_KINDS", "OPTIMIZERS", "LAYOUTS",
                                      "COMMANDS", "STUDIES"])
def test_every_registry_and_entry_is_described(registry):
    names = _registries()[registry]
    assert f"`{registry}`" in PAGE, f"docs/design.md §6.1 does not name the registry {registry}"
    missing = [name for name in names if f"`{name}`" not in PAGE]
    assert not missing, f"docs/design.md §6.1 does not describe {registry} entries {missing}"


def test_every_registry_entry_class_is_named():
    from analysis.cli import Command
    from analysis.study.registry import Study
    from dynamics import Geometry, ModelKind, Optimizer
    from dynamics.rundir import Layout
    from dynamics.solvers.registry import Method

    for cls in (Method, Geometry, ModelKind, Optimizer, Layout, Command, Study):
        assert f"`{cls.__name__}`" in PAGE, f"docs/design.md does not name the entry class {cls.__name__}"
