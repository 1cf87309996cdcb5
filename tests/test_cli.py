"""The ``factrecall`` command line: good runs, run directories, and the bad-input contract.

Bad input must exit 2 with exactly one line on stderr naming the key (or flag) and the value, no traceback,
and nothing half-written: the --out directory does not exist afterwards and its parent holds no temp dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from figures import assert_png

from analysis.cli import main
from dynamics.config import Config, resolve_config
from dynamics.trajectory import Trajectory

FAST = ["--set", "flow.t_max=50", "--set", "flow.points=20"]
FAST_TRAIN = ["--set", "train.steps=100", "--set", "train.batch_size=32"]
RUN_FILES = {"config.json", "trajectory.npz", "summary.json", "loss.png", "stages.json", "stages.npz",
             "facts.png", "fractions.png"}


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    try:
        code = main([str(a) for a in argv])
    except Exception as exc:  # the console script would die with a traceback and exit 1
        pytest.fail(f"main raised {type(exc).__name__}: {exc} (the console script would print a traceback)")
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {err!r}"
    line = lines[0]
    for needle in needles:
        assert needle in line, f"{needle!r} not named in {line!r}"
    return line


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def runs(tmp_path) -> Path:
    """The parent of --out directories, separate from config files so that stray entries show."""
    parent = tmp_path / "runs"
    parent.mkdir()
    return parent


# --- bad input ------------------------------------------------------------------------------------------

# (extra arguments after `simulate --preset tiny --out DIR --quiet`, strings the error line must contain)
BAD_SETTINGS = [
    pytest.param(["--set", "task.foo=1"], ["task.foo", "1"], id="unknown-key"),
    pytest.param(["--set", "foo.bar=1"], ["foo.bar", "1"], id="unknown-section-key"),
    pytest.param(["--preset", "nope"], ["--preset", "nope"], id="unknown-preset"),
    pytest.param(["--set", "task.subjects=abc"], ["task.subjects", "abc"], id="wrong-type-int"),
    pytest.param(["--set", "task.subjects=1.5"], ["task.subjects", "1.5"], id="wrong-type-fraction"),
    pytest.param(["--set", "flow.rtol=small"], ["flow.rtol", "small"], id="wrong-type-float"),
    pytest.param(["--set", "task.subjects=0"], ["task.subjects", "0"], id="zero-subjects"),
    pytest.param(["--set", "task.relations=-1"], ["task.relations", "-1"], id="negative-relations"),
    pytest.param(["--set", "task.answers_per_relation=0"], ["task.answers_per_relation", "0"],
                 id="zero-answers"),
    pytest.param(["--set", "task.seq_len=2"], ["task.seq_len", "2"], id="seq-len-too-short"),
    pytest.param(["--set", "task.noise_tokens=0", "--set", "task.seq_len=32"], ["task.noise_tokens", "0"],
                 id="noise-needed"),
    pytest.param(["--set", "flow.t_max=0"], ["flow.t_max", "0"], id="zero-t-max"),
    pytest.param(["--set", "flow.t_max=-5"], ["flow.t_max", "-5"], id="negative-t-max"),
    pytest.param(["--set", "flow.t_max=nan"], ["flow.t_max", "nan"], id="nan-t-max"),
    pytest.param(["--set", "flow.rtol=0"], ["flow.rtol", "0"], id="zero-rtol"),
    pytest.param(["--set", "flow.rtol=-1e-6"], ["flow.rtol", "-1e-06"], id="negative-rtol"),
    pytest.param(["--set", "train.lr=0"], ["train.lr", "0"], id="zero-lr"),
    pytest.param(["--set", "train.lr=-0.1"], ["train.lr", "-0.1"], id="negative-lr"),
    pytest.param(["--set", "flow.method=euler"], ["flow.method", "euler", "dopri5"], id="unknown-method"),
    pytest.param(["--set", "model.kind=big"], ["model.kind", "big", "reduced"], id="unknown-model-kind"),
    pytest.param(["--set", "task.subjects"], ["--set", "task.subjects"], id="set-without-equals"),
    pytest.param(["--set", "=8"], ["--set", "=8"], id="set-without-key"),
    pytest.param(["--set", "subjects=8"], ["--set", "subjects=8"], id="set-without-section"),
    pytest.param(["--bogus"], ["--bogus"], id="unknown-flag"),
    pytest.param(["--set", "device=gpu"], ["device", "gpu"], id="unknown-device"),
    pytest.param(["--set", "device=cudax"], ["device", "cudax"], id="malformed-cuda-device"),
]


@pytest.mark.parametrize(("extra", "needles"), BAD_SETTINGS)
def test_bad_setting_exits_2_with_one_line(capsys, runs, extra, needles):
    out = runs / "run"
    code, stdout, err = run_cli(capsys, ["simulate", "--preset", "tiny", "--out", out, "--quiet", *extra])
    assert_one_line_error(code, err, *needles)
    assert stdout == ""
    assert not out.exists()
    assert list(runs.iterdir()) == []


def test_unknown_subcommand(capsys, runs):
    code, stdout, err = run_cli(capsys, ["simulatex", "--preset", "tiny"])
    assert_one_line_error(code, err, "simulatex", "simulate")
    assert list(runs.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(capsys, runs):
    out = runs / "run"
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", "--out", out, "--quiet", *FAST,
                                    "--set", "device=cuda"])
    assert_one_line_error(code, err, "device", "cuda")
    assert list(runs.iterdir()) == []


# (name of the config file, its content, strings the error line must contain; the path is added)
BAD_FILES = [
    pytest.param("broken.json", '{"task": {"subjects": 3', ["--config"], id="malformed-json"),
    pytest.param("list.json", "[1, 2]", ["--config"], id="json-not-a-mapping"),
    pytest.param("binary.json", b"\xff\xfe\x00garbage", ["--config"], id="not-utf8"),
    pytest.param("section.json", '{"foo": {"x": 1}}', ["foo"], id="unknown-section"),
    pytest.param("key.json", '{"task": {"foo": 1}}', ["task.foo", "1"], id="unknown-key-in-section"),
    pytest.param("scalar.json", '{"task": 5}', ["task", "5"], id="section-not-a-mapping"),
    pytest.param("type.json", '{"task": {"subjects": "many"}}', ["task.subjects", "many"], id="wrong-type"),
    pytest.param("zero.json", '{"task": {"subjects": 0}}', ["task.subjects", "0"], id="zero-size"),
]


@pytest.mark.parametrize(("name", "content", "needles"), BAD_FILES)
def test_bad_config_file_exits_2_with_one_line(capsys, tmp_path, runs, name, content, needles):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    out = runs / "run"
    code, _, err = run_cli(capsys, ["simulate", "--config", path, "--out", out, "--quiet"])
    line = assert_one_line_error(code, err, *needles)
    if needles == ["--config"]:
        assert name in line
    assert not out.exists()
    assert list(runs.iterdir()) == []


def test_missing_config_file(capsys, tmp_path, runs):
    missing = tmp_path / "nowhere.json"
    out = runs / "run"
    code, _, err = run_cli(capsys, ["simulate", "--config", missing, "--out", out, "--quiet"])
    assert_one_line_error(code, err, "--config", "nowhere.json")
    assert not out.exists()
    assert list(runs.iterdir()) == []


def test_out_directory_holding_another_run(capsys, runs):
    out = runs / "run"
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", out, "--quiet"])
    assert code == 0, err
    before = files_under(out)
    assert RUN_FILES <= before.keys()

    code, stdout, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--set", "init.scale=2e-3",
                                         "--out", out, "--quiet"])
    assert_one_line_error(code, err, "--out", str(out))
    assert "wrote" not in stdout
    assert files_under(out) == before  # the first run is intact, byte for byte
    assert [p.name for p in runs.iterdir()] == ["run"]  # no staging or backup directories left


def test_out_directory_not_empty_without_a_run(capsys, runs):
    out = runs / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", out, "--quiet"])
    assert_one_line_error(code, err, "--out", str(out))
    assert files_under(out) == {"notes.txt": b"mine"}
    assert [p.name for p in runs.iterdir()] == ["run"]


def test_out_is_a_file(capsys, runs):
    out = runs / "run"
    out.write_text("mine")
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", out, "--quiet"])
    assert_one_line_error(code, err, "--out", str(out))
    assert out.read_text() == "mine"
    assert [p.name for p in runs.iterdir()] == ["run"]


def test_out_below_a_file(capsys, runs):
    blocker = runs / "file"
    blocker.write_text("mine")
    out = blocker / "run"
    code, _, err = run_cli(capsys, ["simulate", "--preset", "tiny", *FAST, "--out", out, "--quiet"])
    assert_one_line_error(code, err, "--out", str(out))
    assert blocker.read_text() == "mine"
    assert [p.name for p in runs.iterdir()] == ["file"]


# --- good runs ------------------------------------------------------------------------------------------

def test_simulate_tiny_writes_a_run_directory(capsys, runs):
    out = runs / "run"
    argv = ["simulate", "--preset", "tiny", "--out", out, "--quiet"]
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0, err
    assert "Traceback" not in err
    assert f"wrote {out}" in stdout
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert [p.name for p in runs.iterdir()] == ["run"]  # no temp dirs beside it

    resolved = resolve_config("tiny")
    saved = json.loads((out / "config.json").read_text())
    assert Config.from_dict(saved) == resolved
    assert saved == resolved.to_dict()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok"
    traj = Trajectory.load(out)
    assert summary["final_loss"] == pytest.approx(traj.final_loss, rel=1e-12)  # two files: a stated tolerance
    assert traj.t[-1] == pytest.approx(resolved.flow.t_max)
    assert_png(out / "loss.png")  # decodes to a drawn figure, not only a PNG signature

    # The same command again into the same directory: allowed (same config), replaced cleanly.
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert [p.name for p in runs.iterdir()] == ["run"]
    assert Config.from_dict(json.loads((out / "config.json").read_text())) == resolved


def test_simulate_train_writes_flow_and_train(capsys, runs):
    out = runs / "run"
    argv = ["simulate", "--preset", "tiny", *FAST, *FAST_TRAIN, "--train", "--out", out, "--quiet"]
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0, err
    assert "Traceback" not in err
    resolved = resolve_config("tiny", overrides=["flow.t_max=50", "flow.points=20", "train.steps=100",
                                                 "train.batch_size=32"])
    assert (out / "loss.png").is_file()
    for name in ("flow", "train"):
        sub = out / name
        assert RUN_FILES <= {p.name for p in sub.iterdir()}, name
        assert Config.from_dict(json.loads((sub / "config.json").read_text())) == resolved
        assert json.loads((sub / "summary.json").read_text())["kind"] == name
    assert Trajectory.load(out / "train").t[-1] == pytest.approx(100 * resolved.train.lr)
    assert [p.name for p in runs.iterdir()] == ["run"]

    code, _, err = run_cli(capsys, argv)  # rerun into the same directory
    assert code == 0, err
    assert [p.name for p in runs.iterdir()] == ["run"]


def test_config_file_partial_sections_and_set_overrides(capsys, tmp_path, runs):
    path = tmp_path / "small.json"
    # Partial sections: only some keys of task and flow; everything else keeps its default.
    path.write_text(json.dumps({
        "task": {"subjects": 3, "relations": 2, "answers_per_relation": 2, "noise_tokens": 3, "seq_len": 6},
        "flow": {"t_max": 40, "points": 16},
    }))
    out = runs / "run"
    code, _, err = run_cli(capsys, ["simulate", "--config", path, "--set", "task.subjects=5",
                                    "--set", "init.scale=1e-3", "--out", out, "--quiet"])
    assert code == 0, err
    saved = Config.from_dict(json.loads((out / "config.json").read_text()))
    assert saved.task.subjects == 5  # --set wins over the file
    assert saved.task.relations == 2 and saved.task.seq_len == 6  # from the file
    assert saved.flow.t_max == 40.0 and saved.flow.points == 16  # from the file
    assert saved.init.scale == 1e-3  # from --set
    assert saved.flow.method == Config().flow.method  # untouched keys keep their defaults
    assert saved.task.facts == Config().task.facts
    assert saved == resolve_config(config_file=path, overrides=["task.subjects=5", "init.scale=1e-3"])
    assert Trajectory.load(out).fact_loss.shape[1:] == (5, 2)

    # A preset under a file: the file's partial section is merged into the preset's section.
    preset_path = tmp_path / "partial.json"
    preset_path.write_text(json.dumps({"task": {"subjects": 3}, "flow": {"t_max": 30}}))
    resolved = resolve_config("tiny", preset_path, ["flow.points=10"])
    assert resolved.task.subjects == 3 and resolved.task.relations == 2  # file over tiny
    assert resolved.flow.t_max == 30.0 and resolved.flow.points == 10


# --- the console script ---------------------------------------------------------------------------------

def _console_script() -> str:
    found = shutil.which("factrecall") or str(Path(sys.executable).parent / "factrecall")
    if not os.path.exists(found):
        pytest.skip("the factrecall console script is not installed")
    return found


def test_console_script(tmp_path):
    exe = _console_script()
    out = tmp_path / "run"
    good = subprocess.run([exe, "simulate", "--preset", "tiny", *FAST, "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert good.returncode == 0, good.stderr
    assert "Traceback" not in good.stderr
    assert RUN_FILES <= {p.name for p in out.iterdir()}

    bad_out = tmp_path / "bad"
    bad = subprocess.run([exe, "simulate", "--preset", "tiny", "--set", "task.subjects=0",
                          "--out", str(bad_out)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "task.subjects" in bad.stderr and "0" in bad.stderr
    assert not bad_out.exists()
