"""The boundaries between the analysis packages: a package is imported by the others only through its
``__init__`` (its public names), never through one of its modules or a name with a leading underscore; and
the packages' analysis code (all but the ``command`` modules, which sit above every package as the CLI's
entries) imports in one direction only: no two packages import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


def _imports() -> list[tuple[Path, int, list[str], list[str]]]:
    """(file, line, imported module as parts, imported names) of every analysis import in analysis/,
    at any depth (imports inside functions too)."""
    found = []
    for path in sorted(ANALYSIS.rglob("*.py")):
        parts = ["analysis", *path.relative_to(ANALYSIS).with_suffix("").parts]
        package = parts if parts[-1] == "__init__" else parts[:-1]
        package = [p for p in package if p != "__init__"]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "analysis":
                target = node.module.split(".")
            else:
                continue
            found.append((path, node.lineno, target, [alias.name for alias in node.names]))
    return found


def _unit(path_or_parts: Path | list[str]) -> str:
    """The package a file or module belongs to (``stages``), or ``analysis.x`` for a top-level module."""
    parts = (["analysis", *path_or_parts.relative_to(ANALYSIS).with_suffix("").parts]
             if isinstance(path_or_parts, Path) else path_or_parts)
    if len(parts) >= 2 and (ANALYSIS / parts[1]).is_dir():
        return parts[1]
    return ".".join(parts[:2])


def test_packages_are_imported_through_their_public_names():
    wrong = []
    for path, line, target, names in _imports():
        unit = _unit(target)
        if unit == _unit(path) or not (ANALYSIS / unit).is_dir():
            continue
        if len(target) > 2:
            wrong.append(f"{path.relative_to(ANALYSIS.parent)}:{line} imports {'.'.join(target)}")
        wrong += [f"{path.relative_to(ANALYSIS.parent)}:{line} imports {name}" for name in names
                  if name.startswith("_")]
    assert not wrong, "import the package, not its modules or private names:\n" + "\n".join(wrong)


def test_no_two_packages_import_each_other():
    edges: dict[str, set[str]] = {}
    for path, _, target, _ in _imports():
        if path.stem == "command":  # the CLI's entries: above every package
            continue
        source, unit = _unit(path), _unit(target)
        if source != unit:
            edges.setdefault(source, set()).add(unit)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in edges.get(start, ()))

    cycles = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if reaches(b, a, {b}))
    assert not cycles, "packages importing each other (directly or through others): " + ", ".join(cycles)


def _sources() -> dict[str, str]:
    root = ANALYSIS.parent
    return {str(p.relative_to(root)): p.read_text() for folder in ("analysis", "dynamics")
            for p in sorted((root / folder).rglob("*.py"))}


def test_helpers_are_written_once():
    """The vocabulary size V = S + R + N + 1 is TaskConfig.vocabulary (dynamics.task.vocab_size reads it, and
    the model kinds' refusals without torch; the reduced model's tokens, noise tied,
    dynamics.models.reduced.token_count); a log–log least-squares fit is
    analysis.loglog.power_law (stages/detect.py fits a loss against log t: a slope in one log only)."""
    import re

    vocab = sorted(path for path, text in _sources().items()
                   if re.search(r"noise_tokens\s*\+\s*1\b|\.N\s*\+\s*1\b", text))
    assert vocab == ["dynamics/config/schema.py"], vocab
    tied = sorted(path for path, text in _sources().items()
                  if re.search(r"min\([\w.]*(noise_tokens|N), 1\)", text))
    assert tied == ["dynamics/models/reduced.py"], tied  # the reduced model's tokens: token_count
    fits = sorted(path for path, text in _sources().items() if "polyfit(" in text or "lstsq(" in text)
    assert fits == ["analysis/loglog.py", "analysis/stages/detect.py"], fits


def test_the_sweeps_grid_policy_is_the_sweeps():
    """The grid limit is defined and checked in analysis/sweep/grid.py only; a run's budget knows no grid."""
    import dynamics.budget
    from analysis.sweep import grid

    assert not [name for name in vars(dynamics.budget) if "grid" in name.lower()]
    assert grid.GRID_LIMIT == 10**5 and grid.grid_limit() == grid.GRID_LIMIT


# called by a library, never by name in the project: torchdiffeq's step callbacks
CALLED_BY_LIBRARIES = {"callback_accept_step", "callback_reject_step"}


def test_no_public_function_is_called_only_by_tests():
    """Every public function and method of analysis/ and dynamics/ is used by the package (a name in the
    code, not only an import or an ``__all__`` entry) or documented (docs/, README.md, notebooks/): one
    called only by tests is dead code."""
    import re

    sources = _sources()
    root = ANALYSIS.parent
    documents = "".join(p.read_text() for p in [*root.glob("docs/*.md"), root / "README.md",
                                                 *root.glob("notebooks/*.ipynb")])
    used: set[str] = set()
    for text in sources.values():
        tree = ast.parse(text)
        exported = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                    for c in ast.walk(node.value)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in exported
                  and re.fullmatch(r"[\w.:]+", node.value)):  # "module:function", getattr(module, "name")
                used.update(re.split(r"[.:]", node.value))
    unused = []
    for path, text in sources.items():
        for node in ast.parse(text).body:
            functions = [n for n in node.body if isinstance(n, ast.FunctionDef)] \
                if isinstance(node, ast.ClassDef) else [node]
            unused += [f"{path}:{f.lineno} {f.name}" for f in functions if isinstance(f, ast.FunctionDef)
                       and not f.name.startswith("_") and f.name not in used | CALLED_BY_LIBRARIES
                       and not re.search(rf"\b{f.name}\b", documents)]
    assert not unused, "public functions no code uses (remove them, or use them):\n" + "\n".join(unused)


def test_each_registry_name_is_defined_once():
    """METHODS, OPTIMIZERS, COMMANDS and STUDIES each name one registry, defined in one module."""
    names = ("METHODS", "OPTIMIZERS", "COMMANDS", "STUDIES")
    defined: dict[str, list[str]] = {}
    for path, text in _sources().items():
        for node in ast.parse(text).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names:
                    defined.setdefault(target.id, []).append(path)
    assert {name: len(paths) for name, paths in defined.items()} == dict.fromkeys(names, 1), defined


def test_the_clis_compare_default_is_compares():
    """--help loads no torch, so the CLI spells compare's default optimizers; they must be compare's own."""
    from analysis.cli import build_parser
    from analysis.compare.compute import DEFAULT_OPTIMIZERS

    assert build_parser().parse_args(["compare", "--out", "x"]).optimizers == DEFAULT_OPTIMIZERS


def test_every_study_is_a_command():
    """Only the command line itself (and the docs' generator) runs as ``python -m``: a study is an entry
    of ``factrecall study`` (analysis/study/registry.py), not a script with its own argparse."""
    scripts = sorted(path for path, text in _sources().items() if '__name__ == "__main__"' in text)
    assert scripts == ["analysis/cli.py", "analysis/docgen.py"], scripts
