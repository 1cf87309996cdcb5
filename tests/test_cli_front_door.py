"""The command line's front door: --version, bare factrecall, defaults in every --help, factrecall config,
factrecall presets, and none of the quick answers loading torch."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import cli
from analysis.cli import build_parser, main
from dynamics.config import DEFAULT_PRESET, PRESETS, resolve_config
from dynamics.config.presets import DESCRIPTIONS

ROOT = Path(__file__).resolve().parents[1]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # --help and --version exit through argparse
        return int(stop.code or 0)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def test_version_prints_the_package_version(capsys):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"factrecall {importlib.metadata.version('factrecall')}"


def test_version_falls_back_to_pyproject_when_not_installed(monkeypatch):
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    expected = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert cli.version() == expected.group(1)


def test_bare_factrecall_prints_usage_and_every_command(capsys):
    assert _exit_code([]) == 2  # a missing command is a usage error, as argparse reports one
    err = capsys.readouterr().err
    assert err.startswith("usage: factrecall")
    assert "required" not in err
    for name, parser in _subcommands().items():
        assert name in err
        assert parser.description and " ".join(parser.description.split()[:3]) in " ".join(err.split())


def test_every_subcommand_help_shows_its_defaults(capsys):
    for name, parser in _subcommands().items():
        assert _exit_code([name, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert parser.description in text  # the command's one line opens its help
        for action in parser._actions:
            if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
                continue
            shown = " ".join(parser._get_formatter()._expand_help(action).split())
            assert "default" in shown, (name, action.option_strings)
            assert shown in text
    compare, sweep = _subcommands()["compare"], _subcommands()["sweep"]
    assert "(default: 0.8,0.4,0.2,0.1)" in " ".join(compare.format_help().split())
    assert "(default: gd,sgd,adam)" in " ".join(compare.format_help().split())
    assert "local or dask (default: local)" in " ".join(sweep.format_help().split())


def test_preset_help_lists_every_preset(capsys):
    for name, parser in _subcommands().items():
        if not any("--preset" in a.option_strings for a in parser._actions):
            continue
        text = " ".join(parser.format_help().split())
        listed = re.search(r"one of ([\w, ]+) \(default: (\w+)", text)
        assert listed, name
        assert listed.group(1).split(", ") == list(PRESETS)
        assert listed.group(2) == DEFAULT_PRESET


def test_config_prints_the_resolved_config(capsys):
    assert main(["config", "--preset", "tiny", "--set", "task.subjects=5"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == resolve_config("tiny", None, ["task.subjects=5"]).to_dict()
    assert out.startswith('{\n  "task": {\n    "subjects": 5,')  # indent 2


def test_config_refuses_a_bad_key_in_one_line(capsys):
    assert main(["config", "--set", "task.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("factrecall: error: task.bogus='1': unknown key")


def test_presets_lists_each_preset_with_its_description(capsys):
    assert set(DESCRIPTIONS) == set(PRESETS)
    assert all(text and "\n" not in text for text in DESCRIPTIONS.values())
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    for line, name in zip(lines, PRESETS, strict=True):
        assert DESCRIPTIONS[name] in line
        assert line.endswith("(default)") == (name == DEFAULT_PRESET)


def _passes(script: str, timeout: float) -> None:
    """Run ``script`` in a fresh interpreter (a clean ``sys.modules``): it must print ``ok`` and exit 0."""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_quick_answers_do_not_load_torch():
    script = (
        "import contextlib, io, sys\n"
        "from analysis.cli import main\n"
        "for argv in (['--version'], [], ['presets'], ['--help'], ['compare', '--help'], ['nosuch'],"
        " ['simulate', '--nosuch']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    assert 'torch' not in sys.modules, argv\n"
        "print('ok')\n")
    _passes(script, timeout=60)


def test_an_implicit_run_loads_no_explicit_solver_library():
    """torchdiffeq loads when an explicit method first runs (without the scipy.integrate of its SciPy
    wrapper: tests/test_startup.py): importing the simulate command and running a cvode flow need neither;
    a dopri5 flow loads torchdiffeq."""
    script = (
        "import sys\n"
        "import analysis.simulate\n"
        "from dynamics import resolve_config, run_flow\n"
        "unused = ('torchdiffeq', 'scipy.integrate')\n"
        "assert not [m for m in unused if m in sys.modules], 'import'\n"
        "traj = run_flow(resolve_config('tiny', overrides={'flow.method': 'cvode', 'flow.t_max': 2.0}))\n"
        "assert not [m for m in unused if m in sys.modules], 'cvode'\n"
        "assert traj.info.versions['torchdiffeq'] not in ('', 'unknown')\n"
        "run_flow(resolve_config('tiny', overrides={'flow.method': 'dopri5', 'flow.t_max': 2.0}))\n"
        "assert 'torchdiffeq' in sys.modules\n"
        "print('ok')\n")
    _passes(script, timeout=120)


def test_a_closed_output_pipe_is_no_traceback():
    process = subprocess.Popen([sys.executable, "-m", "analysis.cli", "config"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # closed before the config is written (the engine takes a while to load)
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 128 + signal.SIGPIPE
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["nosuch"], ["simulate", "--nosuch"]])
def test_usage_errors_stay_one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("factrecall")


def test_config_prints_a_device_this_machine_lacks(capsys):
    """A config may be printed here for a run on another machine: the device is checked in form only."""
    assert main(["config", "--preset", "tiny", "--set", "device=cuda:7"]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "cuda:7"
