"""The ``factrecall`` command line: the argument parser of every subcommand and the dispatch to the
command's function. An invalid input exits 2 and a run that cannot deliver its result exits 1, each with
one line on stderr."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

# subcommand -> (module, function), imported on use: a command loads only its own analysis modules
COMMANDS = {"simulate": ("analysis.simulate", "command"),
            "stages": ("analysis.stages.command", "command"),
            "compare": ("analysis.compare.command", "command"),
            "sweep": ("analysis.sweep.command", "command"),
            "sweep-plot": ("analysis.sweep.command", "plot_command"),
            "bench": ("analysis.bench.command", "command"),
            "capacity": ("analysis.capacity.command", "command"),
            "config": ("analysis.cli", "config_command"),
            "presets": ("analysis.cli", "presets_command")}
# commands that need no engine: they run before dynamics (and torch) is imported
LIGHT_COMMANDS = {"presets"}


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    presets = _load_presets()
    parser = _Parser(prog="factrecall", description="Simulate how a one-layer transformer learns facts.",
                     epilog="factrecall <command> --help lists a command's options and their defaults.")
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="command", title="commands",
                                     parser_class=_Parser)

    sim = commands.add_parser("simulate", help="integrate the gradient flow into a run directory")
    _add_config_options(sim, presets)
    sim.add_argument("--out", metavar="DIR", help="run directory (default: runs/<preset>-<config hash>)")
    sim.add_argument("--train", action="store_true", help="also run the discrete training of train.*")
    sim.add_argument("--init-from", metavar="RUN_DIR",
                     help="start from this run's final state, with its config (then --set): fine-tuning; "
                     "the same as --set init.from_run=RUN_DIR on that config")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")

    stages = commands.add_parser("stages", help="detect the stages of a run directory and write them")
    stages.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by factrecall simulate")

    comp = commands.add_parser("compare", help="the flow against discrete training from the same start")
    _add_config_options(comp, presets)
    comp.add_argument("--out", metavar="DIR", required=True, help="output directory")
    comp.add_argument("--lrs", default="0.8,0.4,0.2,0.1", help="learning rates (comma-separated)")
    comp.add_argument("--optimizers", default="gd,sgd,adam",
                      help="among gd, sgd, adam, signsgd, muon, muon_svd (each against its own flow)")
    comp.add_argument("--full-batch", action="store_true",
                      help="adam, signsgd, muon on the flow's population loss (deterministic)")
    comp.add_argument("--batch-sizes", default=None,
                      help="batch sizes of the fresh-batch runs: sgd, and adam, signsgd, muon without "
                           "--full-batch (default: 64,256,1024)")
    comp.add_argument("--seeds", default=None, help="fresh-batch runs per setting, for a mean and a band "
                                                    "(default: 3)")
    comp.add_argument("--no-modified", action="store_true", help="skip GD's modified flows")
    comp.add_argument("--quiet", action="store_true", help="no progress lines")

    sweep = commands.add_parser("sweep", help="a grid of simulations summarised by their stages")
    _add_config_options(sweep, presets)
    sweep.add_argument("--grid", metavar="KEY=VALUES", action="append", default=[],
                       help="a grid axis: KEY=v1,v2,... or KEY=start:stop:log:n (repeatable)")
    sweep.add_argument("--out", metavar="DIR", required=True, help="sweep directory (resumable)")
    sweep.add_argument("--workers", default="1", help="worker processes (default: 1)")
    sweep.add_argument("--backend", default="local", help="local or dask")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler (default: a local cluster)")
    sweep.add_argument("--train", action="store_true", help="also run train.* at every point")
    sweep.add_argument("--keep-trajectories", action="store_true", help="save every point's trajectory")
    sweep.add_argument("--no-batch", action="store_true", help="integrate every point on its own")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    splot = commands.add_parser("sweep-plot", help="redraw a phase diagram from a sweep's results.csv")
    splot.add_argument("dir", metavar="DIR")
    splot.add_argument("--x", required=True, help="grid key on the x axis")
    splot.add_argument("--y", help="grid key on the y axis (omit for a line plot)")
    splot.add_argument("--value", required=True, help="results.csv column to show")

    cap = commands.add_parser("capacity", help="facts stored against parameters (paper Figures 1 and 4)")
    cap.add_argument("kind", metavar="KIND", help="linear, mlp, transformer or tradeoff")
    cap.add_argument("--quick", action="store_true", help="small grids that run in minutes on a CPU")
    cap.add_argument("--seeds", default=None, help="seeds per model size (default: 1 quick, 5 full)")
    cap.add_argument("--out", metavar="DIR", help="output directory (default: runs/capacity-KIND[-quick])")
    cap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    cap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    bench = commands.add_parser("bench", help="benchmark the flow against discrete training")
    bench.add_argument("--quick", action="store_true", help="smaller problem sizes (a smoke run)")
    bench.add_argument("--out", metavar="FILE", default="bench.json",
                       help="where to save the JSON (the scale figure goes beside it, .png)")
    bench.add_argument("--sizes", default=None, metavar="SxR,...",
                       help="tables of the scale section, e.g. 64x8,256x16 (default: 12x8,64x8,125x8)")
    bench.add_argument("--huge", action="store_true", help="add 10^6 facts (10^4 x 100) to the large section")
    bench.add_argument("--only", default=None, metavar="SECTION,...",
                       help="run only these sections (end_to_end, sgd_vs_flow, gd_evals, long_horizon, "
                            "batched_sweep, gradient, large, scale; default: all)")

    conf = commands.add_parser("config", help="print the resolved config as JSON and exit (runs nothing)")
    _add_config_options(conf, presets)

    commands.add_parser("presets", help="list the named presets, one line each")
    for listed in commands._choices_actions:  # a command's --help opens with its one line
        commands.choices[listed.dest].description = listed.help
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
            return _dispatch(argv)
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


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function of command ``name``, its module imported now (this module's own when run as
    ``python -m analysis.cli``, not a second copy)."""
    module, function = COMMANDS[name]
    owner = sys.modules[__name__] if module == "analysis.cli" else importlib.import_module(module)
    return getattr(owner, function)


def _dispatch(argv: Sequence[str] | None) -> int:
    """Parse, run the command, and turn its refusals into one line and exit status 2 or 1."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command is None:  # a missing command is a usage error (2), as argparse has it; show the commands
        parser.print_help(sys.stderr)
        return 2
    if args.command in LIGHT_COMMANDS:
        return _command(args.command)(args)
    from dynamics.errors import ConfigError, RunError  # the engine loads here, under main's Ctrl-C handler

    try:
        _refuse_empty(args)
        return _command(args.command)(args)
    except ConfigError as err:
        message = str(err)
        print(message if message.startswith("factrecall") else f"factrecall: error: {message}",
              file=sys.stderr)
        return 2
    except RunError as err:
        print(f"factrecall: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
