"""Documentation generated from the code: ``python -m analysis.docgen`` rewrites the generated blocks of
``docs/configuration.md`` (every key of ``dynamics/config/schema.py`` with its default, allowed values and
``KEY_DOCS`` line; every preset), ``docs/cli.md`` (every command and option of the argument parser, with
the defaults ``--help`` shows), ``docs/api.md`` (the Python API, from its signatures and docstrings) and
the glossary of ``docs/stages.md`` (:mod:`analysis.glossary`).

A generated block sits between ``<!-- BEGIN GENERATED name ... -->`` and ``<!-- END GENERATED name -->``;
the text around the blocks is written by hand and kept as it is. ``--check`` rewrites nothing and exits 1
when a file is not what the code gives; a name of API that is gone is left out of the page and named,
exit status 2 (tests/test_docs.py checks both).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMAND = "python -m analysis.docgen"
WIDTH = 100  # the usage lines' width, fixed so that the output does not depend on the terminal

# The Python API reference: (section, its one-line introduction, dotted names). A name that no longer
# exists is named by the generator and by tests/test_docs.py, so the reference cannot go stale unseen.
API: list[tuple[str, str, list[str]]] = [
    ("Configuration", "A config is resolved once, validated, and then only read.",
     ["dynamics.resolve_config", "dynamics.Config", "dynamics.ConfigError", "dynamics.RunError"]),
    ("Runs", "A config in, a `Trajectory` out; the checks of `dynamics.budget` are made before any work.",
     ["dynamics.run_flow", "dynamics.run_flow_batch", "dynamics.run_training", "dynamics.log_time_grid"]),
    ("Records", "What a run gives: the trajectory, its `RunInfo` (summary.json), the per-fact classes.",
     ["dynamics.Trajectory", "dynamics.RunInfo", "dynamics.Status", "dynamics.Cost", "dynamics.FactClass"]),
    ("Commands as functions", "Each command of the command line, callable from Python.",
     ["analysis.simulate.simulate", "analysis.stages.analyse_run_directory", "analysis.compare.compare",
      "analysis.compare.run_compare", "analysis.sweep.run_sweep", "analysis.capacity.run_capacity",
      "analysis.bench.run_bench", "analysis.study.runner.run_study"]),
    ("Stages", "Detection of the aggregate stages and of every fact's state (the words: "
     "[stages.md](stages.md)).",
     ["analysis.stages.detect_stages", "analysis.stages.StageReport", "analysis.stages.Stage",
      "analysis.stages.detect_fact_stages", "analysis.stages.FactStages", "analysis.stages.theory_for"]),
    ("Figures", "Each writes one PNG from a trajectory (and its detected stages).",
     ["analysis.stages.plot_losses", "analysis.stages.plot_stage_losses", "analysis.stages.plot_fact_heatmap",
      "analysis.stages.plot_fact_fractions", "analysis.compare.plot_comparison",
      "analysis.sweep.plot_heatmap", "analysis.sweep.plot_lines"]),
    ("The engine", "Any vector field of a flat parameter vector, integrated by any method.",
     ["dynamics.FactTask", "dynamics.build_model", "dynamics.make_objective", "dynamics.gradient_field",
      "dynamics.integrate_flow", "dynamics.FlowResult", "dynamics.manifold_flow"]),
    ("Building a run", "The one way every entry point builds a run from its config (docs/design.md §6.2).",
     ["dynamics.problem.build_run", "dynamics.problem.BuiltRun", "dynamics.run.prepare_run",
      "dynamics.run.integrate_run", "dynamics.run.train_run"]),
    ("Registries", "Each concept a user may extend, one registry each, every one a `Registry` "
     "([extending.md](extending.md)).",
     ["dynamics.registry.Registry", "dynamics.Geometry", "dynamics.register_geometry",
      "dynamics.geometry.make_geometry",
      "dynamics.ModelKind", "dynamics.register_model", "dynamics.Optimizer", "dynamics.register_optimizer",
      "analysis.cli.Command", "analysis.cli.register_command", "analysis.study.registry.Study",
      "analysis.study.registry.register_study"]),
    ("Run directories", "The one owner of the run-directory format ([run-directory.md](run-directory.md)).",
     ["dynamics.rundir.Layout", "dynamics.rundir.register_layout", "dynamics.rundir.output_files",
      "dynamics.rundir.read_record", "dynamics.rundir.read_arrays", "dynamics.rundir.write_arrays"]),
]


class DocgenError(Exception):
    """A documentation file that cannot be generated: a missing block marker or an API name that is gone."""


# --- blocks ---------------------------------------------------------------------------------------------

def begin_marker(name: str) -> str:
    """The line that opens generated block ``name``."""
    return f"<!-- BEGIN GENERATED {name}: {COMMAND} rewrites this block; edit the code, not this text -->"


def end_marker(name: str) -> str:
    """The line that closes generated block ``name``."""
    return f"<!-- END GENERATED {name} -->"


def fill(text: str, blocks: dict[str, str], path: str = "") -> str:
    """``text`` with the content of each named block replaced by ``blocks[name]``."""
    for name, content in blocks.items():
        begin, end = begin_marker(name), end_marker(name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        if len(pattern.findall(text)) != 1:
            raise DocgenError(f"{path}: needs exactly one block {begin!r} ... {end!r}")
        block = f"{begin}\n{content.rstrip()}\n{end}"
        text = pattern.sub(lambda _, block=block: block, text)  # a function: no escapes read in the text
    return text


# --- configuration.md -----------------------------------------------------------------------------------

def config_keys() -> list[tuple[str, Any]]:
    """Every dotted key of the schema with its default, in the schema's order."""
    from dynamics.config.schema import Config

    keys = []
    for section in dataclasses.fields(Config):
        if section.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
                section.default_factory):
            for key in dataclasses.fields(section.default_factory):
                default = key.default if key.default_factory is dataclasses.MISSING else key.default_factory()
                keys.append((f"{section.name}.{key.name}", default))
        else:
            keys.append((section.name, section.default))
    return keys


def _probed_choices(key: str) -> str:
    """The allowed values of a string key as its own check states them (a registry's names stay current)."""
    from dynamics.config.schema import Config
    from dynamics.errors import ConfigError

    try:
        Config().override({key: "\x00"})
    except ConfigError as err:
        found = re.search(r"must be one of (.*)$", str(err))
        if found:
            return ", ".join(f"`{name}`" for name in found.group(1).split(", "))
        return str(err).split(": ", 1)[-1]
    return ""


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return str(value)


def render_keys() -> str:
    """The table of every configuration key."""
    from dynamics.config.schema import KEY_DOCS

    rows = ["| key | default | allowed | what it does |", "|---|---|---|---|"]
    for key, default in config_keys():
        allowed, what = KEY_DOCS.get(key, ("", "**undocumented**: add it to KEY_DOCS in "
                                                "dynamics/config/schema.py"))
        allowed = allowed or _probed_choices(key)
        rows.append(f"| `{key}` | {_value(default)} | {_cell(allowed)} | {_cell(what)} |".replace("\n", " "))
    return "\n".join(rows)


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def render_presets() -> str:
    """The table of every preset: its description and the keys it sets."""
    from dynamics.config.presets import DEFAULT_PRESET, DESCRIPTIONS, PRESETS

    rows = ["| preset | what it is | keys it sets |", "|---|---|---|"]
    for name, tree in PRESETS.items():
        mark = " (default)" if name == DEFAULT_PRESET else ""
        keys = ", ".join(f"`{k}={_value(v).strip('`')}`" for k, v in _flatten(tree)) or "none (the defaults)"
        rows.append(f"| `{name}`{mark} | {_cell(DESCRIPTIONS.get(name, ''))} | {_cell(keys)} |")
    return "\n".join(rows)


# --- cli.md ---------------------------------------------------------------------------------------------

@contextmanager
def _fixed_width() -> Iterator[None]:
    """argparse wraps at the terminal's width (COLUMNS): fixed while the docs are generated."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH + 2)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _usage(prog: str, parser: argparse.ArgumentParser) -> str:
    """The usage line, built from the actions (argparse's own layout differs between Python versions)."""
    words = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            words.append("{" + ",".join(action.choices) + "} ...")
            continue
        if not action.option_strings:
            words.append(_metavar(action))
            continue
        flag = action.option_strings[-1]
        word = flag if action.nargs == 0 else f"{flag} {_metavar(action)}"
        if isinstance(action, argparse._AppendAction):
            word += " ..."
        words.append(word if action.required else f"[{word}]")
    text = textwrap.fill(" ".join(w.replace(" ", "\x00") for w in words), WIDTH, initial_indent=prog + " ",
                         subsequent_indent=" " * (len(prog) + 1), break_on_hyphens=False,
                         break_long_words=False)
    return text.replace("\x00", " ")  # an option and its value stay on one line


def _help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option's help as ``--help`` prints it, defaults included."""
    if not action.help:
        return ""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _render_parser(prog: str, parser: argparse.ArgumentParser, summary: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{prog}`", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ".", ""]
    lines += ["```", _usage(prog, parser), "```", ""]
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            name += "" if action.nargs == 0 else f" {_metavar(action)}"
        else:
            name = _metavar(action)
        rows.append(f"| `{_cell(name)}` | {_cell(_help_text(parser, action))} |")
    if rows:
        lines += ["| argument | meaning (default) |", "|---|---|", *rows, ""]
    epilog = textwrap.dedent(parser.epilog or "").strip()
    if "\n" in epilog:  # laid out by hand (the stage glossary): kept as printed
        lines += ["```", epilog, "```", ""]
    elif epilog:
        lines += [epilog[0].upper() + epilog[1:], ""]
    helps = _command_help(parser)
    for name, sub in subcommands(parser).items():
        lines += _render_parser(f"{prog} {name}", sub, helps.get(name, ""), level + 1)
    return lines


def render_commands() -> str:
    """One line per command, linking to its reference."""
    from analysis.cli import build_parser

    with _fixed_width():
        parser = build_parser()
        helps = _command_help(parser)
        return "\n".join(f"* [`factrecall {name}`](#factrecall-{name}) — {helps.get(name, '')}"
                         for name in subcommands(parser))


def render_reference() -> str:
    """Every command: usage, each argument with its help and default, its epilog, its subcommands."""
    from analysis.cli import build_parser

    with _fixed_width():
        parser = build_parser()
        lines = ["```", _usage("factrecall", parser), "```", ""]
        helps = _command_help(parser)
        for name, sub in subcommands(parser).items():
            lines += _render_parser(f"factrecall {name}", sub, helps.get(name, ""), 3)
        return "\n".join(lines)


# --- api.md ---------------------------------------------------------------------------------------------

def resolve(dotted: str) -> Any:
    """The object named ``module.attribute`` (DocgenError naming it when it is gone)."""
    module, _, attribute = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise DocgenError(f"{dotted}: not found ({err}); update API in analysis/docgen.py") from err


def _annotation(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _default(value: Any) -> str:
    if inspect.isfunction(value):  # a function's repr holds its address: its name, or a lambda's source
        return "lambda ..." if value.__name__ == "<lambda>" else value.__name__
    shown = repr(value)
    return re.sub(r" at 0x[0-9a-f]+", "", shown)


def signature(obj: Any, name: str, method: bool = False) -> str:
    """``name(parameters) -> return`` with the annotations as written, one parameter a line when long;
    ``method``: without the first parameter (self or cls)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = list(sig.parameters.values())[1 if method else 0:]
    parts = []
    for parameter in params:
        text = parameter.name
        if parameter.kind is parameter.VAR_POSITIONAL:
            text = "*" + text
        elif parameter.kind is parameter.VAR_KEYWORD:
            text = "**" + text
        if parameter.annotation is not parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not parameter.empty:
            text += f" = {_default(parameter.default)}" if parameter.annotation is not parameter.empty \
                else f"={_default(parameter.default)}"
        parts.append(text)
    keyword_only = next((i for i, p in enumerate(params) if p.kind is p.KEYWORD_ONLY), None)
    if keyword_only is not None and not any(p.kind is p.VAR_POSITIONAL for p in params):
        parts.insert(keyword_only, "*")
    returns = "" if sig.return_annotation is sig.empty else f" -> {_annotation(sig.return_annotation)}"
    one_line = f"{name}({', '.join(parts)}){returns}"
    if len(one_line) <= WIDTH:
        return one_line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in parts) + f"){returns}"


def markdown(text: str) -> str:
    """A docstring's reST markup as Markdown: ``x`` and :func:`x` become `x`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _doc(obj: Any) -> str:
    return markdown(inspect.cleandoc(obj.__doc__)) if obj.__doc__ else "(no docstring)"


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """A class's public methods and properties defined by the project, in source order."""
    seen = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith(("dynamics", "analysis")):
            continue
        for member, value in vars(klass).items():
            if member.startswith("_") or member in seen:
                continue
            if isinstance(value, (property, staticmethod, classmethod)) or inspect.isfunction(value):
                seen.add(member)
                yield member, value


def _render_class(dotted: str, cls: type) -> list[str]:
    short = dotted.rsplit(".", 1)[1]
    lines = []
    if dataclasses.is_dataclass(cls):
        fields = ", ".join(f.name for f in dataclasses.fields(cls))
        lines += [f"Fields: {fields}.", ""]
    elif issubclass(cls, BaseException):
        pass
    elif hasattr(cls, "__members__"):  # an enum
        lines += ["Values: " + ", ".join(f"`{m}`" for m in cls.__members__) + ".", ""]
    for member, value in _members(cls):
        if isinstance(value, property):
            lines.append(f"* `{short}.{member}` (property) — {_first_paragraph(value.fget)}")
        else:
            function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            call = signature(function, f"{short}.{member}", method=not isinstance(value, staticmethod))
            lines.append(f"* `{call}` — {_first_paragraph(function)}"
                         .replace("(\n    ", "(").replace(",\n    ", ", ").replace(",\n)", ")"))
    return [*lines, ""]


def _first_paragraph(obj: Any) -> str:
    if not obj.__doc__:
        return "(no docstring)"
    return markdown(" ".join(inspect.cleandoc(obj.__doc__).split("\n\n")[0].split()))


def render_api() -> str:
    """Every name of API: its signature, its docstring, and for a class its public members."""
    lines: list[str] = []
    for section, intro, names in API:
        lines += [f"## {section}", "", intro, ""]
        for dotted in names:
            try:
                obj = resolve(dotted)
            except DocgenError:
                continue  # left out of the page; main() names it and fails
            short = dotted.rsplit(".", 1)[1]
            lines += [f"### `{dotted}`", ""]
            if inspect.isclass(obj) and (dataclasses.is_dataclass(obj) or issubclass(obj, BaseException)
                                         or hasattr(obj, "__members__")):
                lines += ["```python", f"class {short}", "```", ""]
            else:
                lines += ["```python", signature(obj, short), "```", ""]
            lines += [_doc(obj), ""]
            if inspect.isclass(obj):
                lines += _render_class(dotted, obj)
            while lines[-2:] == ["", ""]:
                lines.pop()
    return "\n".join(lines)


# --- the files ------------------------------------------------------------------------------------------

FILES: dict[str, dict[str, Callable[[], str]]] = {
    "configuration.md": {"presets": render_presets, "keys": render_keys},
    "cli.md": {"commands": render_commands, "reference": render_reference},
    "api.md": {"reference": render_api},
    "stages.md": {"glossary": lambda: importlib.import_module("analysis.glossary").markdown()},
}


def missing_api_names() -> list[str]:
    """The names of API that no longer exist, each with why."""
    missing = []
    for _, _, names in API:
        for dotted in names:
            try:
                resolve(dotted)
            except DocgenError as err:
                missing.append(str(err))
    return missing


def generate(docs: Path | None = None) -> dict[Path, tuple[str, str]]:
    """Each generated file's path in ``docs`` (default DOCS): (its text now, the text the code gives)."""
    docs = DOCS if docs is None else docs
    result = {}
    for name, blocks in FILES.items():
        path = docs / name
        text = path.read_text(encoding="utf-8")
        result[path] = (text, fill(text, {block: render() for block, render in blocks.items()}, str(path)))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the generated blocks (``--check``: only report the files that are not current, exit 1)."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    try:
        generated = generate()
    except DocgenError as err:
        print(f"docgen: error: {err}", file=sys.stderr)
        return 2
    stale = [path for path, (old, new) in generated.items() if old != new]
    for path in stale:
        if args.check:
            print(f"docs/{path.name} is not current: run {COMMAND}")
        else:
            path.write_text(generated[path][1], encoding="utf-8")
            print(f"rewrote docs/{path.name}")
    missing = missing_api_names()
    for message in missing:
        print(f"docgen: error: {message}", file=sys.stderr)
    return 2 if missing else 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
