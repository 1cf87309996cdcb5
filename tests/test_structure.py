"""The project's structure, checked: import layers and no circles, one list of method names, and
documentation that resolves inside the repository."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import pytest

from dynamics.solvers import METHODS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dynamics", "analysis")
BELOW_EVERY_LAYER = {"dynamics.numerics", "dynamics.registry", "dynamics.plugins", "dynamics.errors",
                     "dynamics.lazy"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (module level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    for guard in guards:
        guard.body = []  # imports for type annotations only are not imports at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # "from pkg import name" names a submodule or an attribute: keep what is a module
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                # a package's __init__ re-exporting its own submodules is not a circle
                # (whichever module of the circle the search entered first)
                if not any(all(m.startswith(p + ".") or m == p for m in cycle) for p in cycle):
                    pytest.fail("import circle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_layers():
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("dynamics"):
            assert not {t for t in targets if t.startswith("analysis")}, f"{module} imports analysis"
        if module.startswith("dynamics.solvers"):
            # below every layer: the numerics settings, the one registry class and the deferred imports
            outside = {t for t in targets if not t.startswith("dynamics.solvers")} - BELOW_EVERY_LAYER
            assert not outside, f"{module} (a solver) imports {sorted(outside)}"


def test_the_method_registry_is_the_only_list_of_method_names():
    names = set(METHODS)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "solvers" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    listed = {e.value for e in node.elts if isinstance(e, ast.Constant)} & names
                    assert len(listed) < 2, f"{path.relative_to(ROOT)}:{node.lineno} lists methods {listed}"


def _lists_of(names: set[str], registry: Path) -> list[str]:
    """Where a tuple, list or set of the project (outside ``registry``) spells two or more of ``names``."""
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path == registry:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    listed = {e.value for e in node.elts if isinstance(e, ast.Constant)} & names
                    if len(listed) >= 2:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} lists {sorted(listed)}")
    return found


def test_the_model_registry_is_the_only_list_of_model_kinds():
    from dynamics.models.registry import BUILTIN

    assert _lists_of(set(BUILTIN), ROOT / "dynamics" / "models" / "registry.py") == []


def test_the_optimizer_registry_is_the_only_list_of_optimizer_names():
    from dynamics.optimizers import BUILTIN

    assert _lists_of(set(BUILTIN), ROOT / "dynamics" / "optimizers.py") == []


def test_the_command_and_study_registries_are_the_only_lists_of_their_names():
    """analysis/cli.py's COMMANDS names the commands, analysis/study/registry.py's STUDIES the studies;
    analysis/rundir.py names the kinds of output directory, which are the commands that write one."""
    from analysis.cli import COMMANDS
    from analysis.study import STUDIES

    commands = _lists_of(set(COMMANDS), ROOT / "analysis" / "cli.py")
    assert [found for found in commands if not found.startswith("analysis/rundir.py")] == []
    assert _lists_of(set(STUDIES), ROOT / "analysis" / "study" / "registry.py") == []


def _project_modules() -> list[ModuleType]:
    """Every module of the project, imported."""
    modules = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules.append(root)
        modules += [importlib.import_module(info.name)
                    for info in pkgutil.walk_packages(root.__path__, f"{package}.")]
    return modules


def _named_entries(value: object) -> bool:
    """Whether ``value`` holds entries by their names, as a registry does: a non-empty mapping whose every
    value has a ``name`` equal to its key."""
    return (isinstance(value, Mapping) and len(value) > 0
            and all(getattr(entry, "name", None) == key for key, entry in value.items()))


def test_every_registry_is_a_registry():
    """A module-level mapping of entries by name (an UPPER_CASE name whose values carry their own ``name``)
    is an instance of the one Registry class: the built-in entries, ``register``, the entry points and the
    one-line refusals work the same for all (a plain dict beside them fails here)."""
    from dynamics.registry import Registry

    found: dict[str, object] = {}
    for module in _project_modules():
        for name, value in vars(module).items():
            if name.isupper() and _named_entries(value):
                found[f"{module.__name__}.{name}"] = value
    plain = sorted(where for where, value in found.items() if not isinstance(value, Registry))
    assert not plain, "registries that are not a dynamics.registry.Registry: " + ", ".join(plain)
    registries = {where.rpartition(".")[2] for where in found}
    # the detector sees the registries the project has (a changed rule that finds none fails here)
    assert registries >= {"METHODS", "GEOMETRIES", "MODEL_KINDS", "OPTIMIZERS", "LAYOUTS", "COMMANDS",
                          "STUDIES"}, registries


def _text_files():
    for pattern in ("dynamics/**/*.py", "analysis/**/*.py", "tests/*.py", "docs/*.md", "README.md",
                    "notebooks/*.ipynb", "pyproject.toml"):
        yield from ROOT.glob(pattern)


def test_every_cited_section_is_a_heading_of_the_design_document():
    headings = set(re.findall(r"^#+ (§[0-9.]+)", (ROOT / "docs" / "design.md").read_text(), re.M))
    for path in _text_files():
        for cited in re.findall(r"§ ?([0-9]+(?:\.[0-9]+)*)", path.read_text()):
            assert f"§{cited}" in headings, f"{path.relative_to(ROOT)} cites §{cited}: no such heading"


def test_no_reference_to_documents_outside_the_repository():
    # spelled in pieces so that this line does not match itself
    pieces = ["DES" + "IGN", "REFER" + r"ENCE\.md", r"\bis" + r"sue \d", "sha" + "red/"]
    pattern = re.compile("|".join(pieces))
    for path in _text_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


def test_local_links_of_the_docs_resolve():
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to missing {target}"
