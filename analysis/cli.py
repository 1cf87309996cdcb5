"""The ``factrecall`` command line: the argument parser of every subcommand and the dispatch to the
command's function. An invalid input exits 2 and a run that cannot deliver its result exits 1, each with
one line on stderr."""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from dynamics.lazy import Lazy
from dynamics.registry import Registry  # standard library only: --help loads no engine


class UsageError(Exception):
    """A command line argparse cannot parse: one line, exit status 2. Not ConfigError, whose module loads
    the engine: a mistyped option is reported without loading torch."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2, and shows defaults in ``--help``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help unless the help already states its default or the
    default means "not given" (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _load_presets() -> ModuleType:
    """dynamics/config/presets.py loaded on its own: importing it as ``dynamics.config.presets`` would run
    ``dynamics/__init__``, which loads torch, and the parser (``--help``, ``presets``) must stay fast. The
    file is data only, with no imports of the package."""
    spec = importlib.util.find_spec("dynamics")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "config" / "presets.py"
    module_spec = importlib.util.spec_from_file_location("_factrecall_presets", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def version() -> str:
    """The installed package's version, or pyproject.toml's in a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("factrecall")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        return found.group(1) if found else "unknown"


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print factrecall's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"factrecall {version()}")
        parser.exit(0)


def _add_config_options(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    parser.add_argument("--config", metavar="FILE", help="JSON (or YAML) config file of sections")
    parser.add_argument("--preset", metavar="NAME",
                        help=f"named preset, one of {', '.join(presets.PRESETS)} (default: "
                             f"{presets.DEFAULT_PRESET}, none with --config; factrecall presets describes "
                             "them)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one dotted key, e.g. --set task.subjects=8 (repeatable)")


def _simulate_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    _add_config_options(parser, presets)
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<preset>-<config hash>)")
    parser.add_argument("--train", action="store_true", help="also run the discrete training of train.*")
    parser.add_argument("--init-from", metavar="RUN_DIR",
                        help="start from this run's final state, with its config (then --set): fine-tuning; "
                        "the same as --set init.from_run=RUN_DIR on that config")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _stages_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    from .glossary import attach

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by factrecall simulate")
    attach(parser)  # the words of the stage table, defined once (docs/stages.md is generated from them)


def _compare_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    # the optimizer registry loads torch, which --help must not: the names are listed by its refusal
    # and by docs/cli.md (compare's Python default is compare.compute.DEFAULT_OPTIMIZERS, tested equal)
    _add_config_options(parser, presets)
    parser.add_argument("--out", metavar="DIR", required=True, help="output directory")
    parser.add_argument("--lrs", default="0.8,0.4,0.2,0.1", help="learning rates (comma-separated)")
    parser.add_argument("--optimizers", default="gd,sgd,adam",
                        help="optimizers of the registry that compare runs, each against its own flow (a "
                             "name it cannot run is refused with the list)")
    parser.add_argument("--full-batch", action="store_true",
                        help="the optimizers of fresh batches that can, on the flow's population loss "
                             "instead (deterministic)")
    parser.add_argument("--batch-sizes", default=None,
                        help="batch sizes of the fresh-batch runs (not with --full-batch) (default: "
                             "64,256,1024)")
    parser.add_argument("--seeds", default=None, help="fresh-batch runs per setting, for a mean and a band "
                                                      "(default: 3)")
    parser.add_argument("--no-modified", action="store_true", help="skip GD's modified flows")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _sweep_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    _add_config_options(parser, presets)
    parser.add_argument("--grid", metavar="KEY=VALUES", action="append", default=[],
                        help="a grid axis: KEY=v1,v2,... or KEY=start:stop:log:n (repeatable)")
    parser.add_argument("--out", metavar="DIR", required=True, help="sweep directory (resumable)")
    parser.add_argument("--workers", default="1", help="worker processes (default: 1)")
    parser.add_argument("--backend", default="local", help="local or dask")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler (default: a local cluster)")
    parser.add_argument("--train", action="store_true", help="also run train.* at every point")
    parser.add_argument("--keep-trajectories", action="store_true", help="save every point's trajectory")
    parser.add_argument("--no-batch", action="store_true", help="integrate every point on its own")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _sweep_plot_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument("--x", required=True, help="grid key on the x axis")
    parser.add_argument("--y", help="grid key on the y axis (omit for a line plot)")
    parser.add_argument("--value", required=True, help="results.csv column to show")


def _capacity_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    parser.add_argument("kind", metavar="KIND", help="linear, mlp, transformer or tradeoff")
    parser.add_argument("--quick", action="store_true", help="small grids that run in minutes on a CPU")
    parser.add_argument("--seeds", default=None, help="seeds per model size (default: 1 quick, 5 full)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: runs/capacity-KIND[-quick])")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _bench_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller problem sizes (a smoke run)")
    parser.add_argument("--out", metavar="FILE", default="bench.json",
                        help="where to save the JSON (the scale figure goes beside it, .png)")
    parser.add_argument("--sizes", default=None, metavar="SxR,...",
                        help="tables of the scale section, e.g. 64x8,256x16 (default: 12x8,64x8,125x8)")
    parser.add_argument("--huge", action="store_true",
                        help="add 10^6 facts (10^4 x 100) to the large section")
    parser.add_argument("--only", default=None, metavar="SECTION,...",
                        help="run only these sections (end_to_end, sgd_vs_flow, gd_evals, long_horizon, "
                             "batched_sweep, record, gradient, large, scale, newton; default: all)")


def _no_arguments(parser: argparse.ArgumentParser, presets: ModuleType) -> None:
    pass


@dataclass(frozen=True)
class Command:
    """One ``factrecall`` subcommand: its ``name``, the one line of ``factrecall --help`` (``summary``), the
    function that runs it (``function`` of ``module``, imported only when the command runs, given the
    parsed arguments, returning the exit status) and the one that adds its options to its parser
    (``arguments(parser, presets)``; None: the ``add_arguments(parser, presets)`` of ``module``, which is
    then imported to build the parser and so must import only the standard library at its top).
    ``engine``: False for a command that runs before the engine (and torch) is loaded, which then also
    refuses its own invalid input (no ConfigError is caught for it). ``check``: the command's first check of
    its arguments (``"module:function"``, given the parsed arguments), run before ``module`` is imported,
    so that what it refuses (a config) is refused without loading what the command computes with; the
    command runs it again. The files a command writes into its output directory are listed in
    :mod:`analysis.rundir` beside the checks of ``--out``."""

    name: str
    summary: str
    module: str
    function: str = "command"
    arguments: Callable[[argparse.ArgumentParser, ModuleType], None] | None = None
    engine: bool = True
    check: str | None = None

    def add_arguments(self, parser: argparse.ArgumentParser, presets: ModuleType) -> None:
        """Add this command's options and arguments to its subparser ``parser``."""
        if self.arguments is not None:
            self.arguments(parser, presets)
        else:
            importlib.import_module(self.module).add_arguments(parser, presets)

    def entry(self) -> Callable[[argparse.Namespace], int]:
        """The function that runs the command, its module imported now (this module's own when run as
        ``python -m analysis.cli``, not a second copy)."""
        here = self.module == "analysis.cli"
        owner = sys.modules[__name__] if here else importlib.import_module(self.module)
        return getattr(owner, self.function)


def register_command(command: Command) -> Command:
    """Add ``command`` to :data:`COMMANDS` (and so to ``factrecall --help``); a name taken is refused."""
    return COMMANDS.register(command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every registered subcommand."""
    presets = _load_presets()
    parser = _Parser(prog="factrecall", description="Simulate how a one-layer transformer learns facts.",
                     epilog="factrecall <command> --help lists a command's options and their defaults.")
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="command", title="commands",
                                     parser_class=_Parser)
    for command in COMMANDS.values():  # a command's --help opens with its one line
        command.add_arguments(commands.add_parser(command.name, help=command.summary,
                                                  description=command.summary), presets)
    return parser


# options and arguments whose empty value would silently mean the default (or the current directory)
NON_EMPTY = {"out": "--out", "preset": "--preset", "config": "--config", "run_dir": "RUN_DIR", "dir": "DIR",
             "scheduler": "--scheduler", "init_from": "--init-from"}


def _refuse_empty(args: argparse.Namespace) -> None:
    from dynamics.errors import ConfigError

    for attr, flag in NON_EMPTY.items():
        value = getattr(args, attr, None)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{flag}={value!r}: must not be empty; omit it for the default")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that every path that cleans up after Ctrl-C (a staged run
    directory removed, a sweep's finished points listed) cleans up after it too."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
    raise Terminated()


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``factrecall`` console script. Exit status: 0 done, 1 a run that cannot deliver,
    2 bad input, 130 interrupted (Ctrl-C), 141 output pipe closed, 143 terminated (SIGTERM). Ctrl-C is one
    line at any moment, also while the libraries load: this module imports none of them before it can
    catch it."""
    try:
        with _terminate_as_interrupt():
            return _dispatch(argv, one_command=argv is None)
    except KeyboardInterrupt as err:
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"factrecall: {how}; nothing was written for the unfinished run", file=sys.stderr)
        return exit_status(err)
    except BrokenPipeError:  # the reader went away (``factrecall config | head``): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail
        return 128 + signal.SIGPIPE


def exit_status(err: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by ``err``: 128 + the signal's number (SIGTERM 143, Ctrl-C 130).
    """
    return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)


def config_command(args: argparse.Namespace) -> int:
    """``factrecall config``: the config of ``--preset``/``--config``/``--set`` as JSON (what a run's
    config.json would hold), every value checked, without running anything. The device is not required
    to be on this machine: a config may be printed here for a run elsewhere."""
    from dynamics.config import resolve_config

    config = resolve_config(args.preset, args.config, args.overrides)
    print(json.dumps(config.to_dict(), indent=2))
    return 0


def presets_command(args: argparse.Namespace) -> int:
    """``factrecall presets``: each preset's name and one-line description, the default marked."""
    presets = _load_presets()
    width = max(map(len, presets.PRESETS))
    for name in presets.PRESETS:
        mark = " (default)" if name == presets.DEFAULT_PRESET else ""
        print(f"{name:<{width}}  {presets.DESCRIPTIONS.get(name, '')}{mark}")
    return 0


@contextmanager
def _imports_kept(kept: bool) -> Iterator[None]:
    """With ``kept`` (a process that runs one command, then exits): what the block imports (torch,
    matplotlib: some 300,000 objects) is loaded with the cyclic garbage collector paused and then frozen
    (:func:`gc.freeze`), so that no later collection walks it again. figure5's ``simulate`` spent 0.39 of
    its 2.9 CPU seconds in collections over those objects that freed nothing (0.02 s after); the garbage
    the imports leave, about 8,000 objects, stays. Without ``kept`` (``main`` called with arguments, as
    from Python or a test): nothing changes."""
    paused = kept and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def _dispatch(argv: Sequence[str] | None, one_command: bool = False) -> int:
    """Parse, run the command, and turn its refusals into one line and exit status 2 or 1. ``one_command``:
    the process exits after it (:func:`_imports_kept`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command is None:  # a missing command is a usage error (2), as argparse has it; show the commands
        parser.print_help(sys.stderr)
        return 2
    command = COMMANDS[args.command]
    if not command.engine:
        return command.entry()(args)
    from dynamics.errors import ConfigError, RunError  # the engine loads here, under main's Ctrl-C handler

    try:
        _refuse_empty(args)
        if command.check is not None:
            Lazy(command.check)(args)
        with _imports_kept(one_command):
            run = command.entry()
        return run(args)
    except ConfigError as err:
        message = str(err)
        print(message if message.startswith("factrecall") else f"factrecall: error: {message}",
              file=sys.stderr)
        return 2
    except RunError as err:
        print(f"factrecall: {err}", file=sys.stderr)
        return 1



# what simulate, compare and sweep check first; their modules load torch and matplotlib
_CONFIG_FIRST = "analysis.arguments:check_config"

# every subcommand, in the order of factrecall --help
COMMANDS: Registry[Command] = Registry("command", None, (
        Command("simulate", "integrate the gradient flow into a run directory", "analysis.simulate",
                arguments=_simulate_arguments, check=_CONFIG_FIRST),
        Command("stages", "detect the stages of a run directory and write them", "analysis.stages.command",
                arguments=_stages_arguments),
        Command("compare", "the flow against discrete training from the same start",
                "analysis.compare.command", arguments=_compare_arguments, check=_CONFIG_FIRST),
        Command("sweep", "a grid of simulations summarised by their stages", "analysis.sweep.command",
                arguments=_sweep_arguments, check=_CONFIG_FIRST),
        Command("sweep-plot", "redraw a phase diagram from a sweep's results.csv", "analysis.sweep.command",
                "plot_command", arguments=_sweep_plot_arguments),
        Command("capacity", "facts stored against parameters (paper Figures 1 and 4)",
                "analysis.capacity.command", arguments=_capacity_arguments),
        Command("bench", "benchmark the flow against discrete training", "analysis.bench.command",
                arguments=_bench_arguments),
        Command("study", "a named study of many runs into a resumable directory (scale, geometry, ...)",
                "analysis.study.command", arguments=None),
        Command("config", "print the resolved config as JSON and exit (runs nothing)", "analysis.cli",
                "config_command", arguments=_add_config_options),
        Command("presets", "list the named presets, one line each", "analysis.cli", "presets_command",
                arguments=_no_arguments, engine=False)), identifiers=False)


if __name__ == "__main__":
    sys.exit(main())
