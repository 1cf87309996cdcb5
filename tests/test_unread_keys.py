"""Settings that a run kind does not read are refused, not recorded as if they mattered.

* ``train.*``: a key that ``train.optimizer`` does not read (Adam's moments with SGD, a batch size with
  GD, Muon's momentum with Adam), and any ``train.*`` key on ``simulate``/``sweep`` without ``--train``.
  Refused when the user chose it (``--set``, ``--grid``, a value of a config file that is neither the
  default nor a preset's); a preset's batch size or an earlier run's ``config.json`` is not a choice.
* ``compare``'s full-batch runs (adam/signsgd/muon with ``--full-batch``, muon_svd) train the plain
  population loss from ``init.*``: ``data.*`` and ``init.from_run`` are refused for them.
* ``init.*`` on a fine-tune that adds no subject initialises nothing: refused.
* The documented ``simulate``/``sweep``/``compare`` commands (README.md, docs/cli.md) pass all of these
  checks.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

import analysis.compare.command as compare_command
import analysis.compare.compute as compute
import analysis.simulate as simulate_module
import analysis.sweep.command as sweep_command
from analysis.cli import main
from analysis.compare import CompareSpec, compare
from analysis.compare.compute import run_full_batch
from dynamics.config import Config, ConfigError, TrainConfig, resolve_config
from dynamics.optimizers import OPTIMIZERS, optimizers_for
from dynamics.run import run_flow, run_training, setup
from dynamics.start import starting_state

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "flow.t_max=20", "--set", "flow.points=8", "--quiet"]


class Reached(Exception):
    """Raised by a stand-in for the work a command does after its checks."""


def _stop(*args, **kwargs):
    raise Reached


def refused(capsys, argv, out: Path, *needles: str) -> str:
    """Run ``argv``; assert exit 2, one line on stderr holding ``needles``, and nothing written at ``out``."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("factrecall: error: "), err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    return err


def reaches_work(argv, monkeypatch) -> None:
    """``argv`` passes every check and reaches the command's work (stood in for by :class:`Reached`)."""
    monkeypatch.setattr(simulate_module, "simulate", _stop)
    monkeypatch.setattr(sweep_command, "run_sweep", _stop)
    monkeypatch.setattr(compare_command, "run_compare", _stop)
    with pytest.raises(Reached):
        main([str(a) for a in argv])


# --- which optimizer reads which train.* key --------------------------------------------------------------

def test_every_optimizer_entry_reads_train_keys():
    keys = {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)}
    assert all(set(OPTIMIZERS[name].reads) <= keys for name in optimizers_for("train"))


@pytest.mark.parametrize("optimizer, key, value", [("gd", "batch_size", 16), ("gd", "seed", 3),
                                                   ("sgd", "beta1", 0.5), ("sgd", "momentum", 0.1),
                                                   ("adam", "momentum", 0.1), ("adam", "beta1", 0.5)])
def test_the_table_says_what_training_reads(optimizer, key, value):
    """A key the table says is unread leaves the discrete run bit-for-bit the same; one it says is read
    changes it (same code, same process: exact equality). Run below run_training, which refuses the
    unread ones: the table is checked against what the stepper really reads."""
    from dynamics.run import prepare_run, train_run

    def train(config):
        return train_run(prepare_run(config, train=True, flow=False))

    base = resolve_config("tiny", overrides={"train.optimizer": optimizer, "train.steps": 20,
                                             "train.lr": 0.05, "flow.t_max": 1.0, "flow.points": 4})
    a, b = train(base), train(base.override({f"train.{key}": value}))
    same = bool((a.loss == b.loss).all())
    assert same == (f"train.{key}" not in OPTIMIZERS[optimizer].reads)


# --- simulate and sweep: train.* keys nothing reads ----------------------------------------------------

@pytest.mark.parametrize("extra, needles", [
    (["--set", "train.lr=0.2"], ["train.lr=0.2", "without --train"]),
    (["--set", "train.lr=0.1"], ["train.lr=0.1", "without --train"]),  # explicit, even at its default
    (["--train", "--set", "train.beta1=0.8"], ["train.beta1=0.8", "only adam reads it", "'sgd'"]),
    (["--train", "--set", "train.optimizer=gd", "--set", "train.batch_size=64"],
     ["train.batch_size=64", "train.optimizer='gd'"]),
    (["--train", "--set", "train.optimizer=gd", "--set", "train.seed=3"], ["train.seed=3"]),
    (["--train", "--set", "train.optimizer=adam", "--set", "train.momentum=0.5"],
     ["train.momentum=0.5", "only muon reads it"]),
    (["--train", "--set", "train.optimizer=signsgd", "--set", "train.eps=1e-6"], ["train.eps=1e-6"]),
], ids=["no-train", "no-train-default", "beta1-sgd", "batch-gd", "seed-gd", "momentum-adam", "eps-signsgd"])
def test_simulate_refuses_a_train_key_the_run_does_not_read(capsys, tmp_path, extra, needles):
    out = tmp_path / "run"
    refused(capsys, ["simulate", "--preset", "tiny", *FAST, *extra, "--out", out], out, *needles)


def test_a_preset_batch_size_is_not_a_choice(monkeypatch, tmp_path):
    """tiny sets train.batch_size; GD does not read it, and nobody chose it: accepted."""
    reaches_work(["simulate", "--preset", "tiny", *FAST, "--train", "--set", "train.optimizer=gd",
                  "--out", tmp_path / "run"], monkeypatch)


def test_a_config_file_refuses_only_chosen_values(capsys, monkeypatch, tmp_path):
    """An earlier run's config.json holds every key: its defaults and preset values pass; a value
    chosen in a file that the run does not read is refused (a --train run's config.json without --train)."""
    flow_run = tmp_path / "flow.json"
    flow_run.write_text(json.dumps(resolve_config("tiny").to_dict()))
    reaches_work(["simulate", "--config", flow_run, *FAST, "--out", tmp_path / "a"], monkeypatch)
    gd_run = tmp_path / "gd.json"
    gd_run.write_text(json.dumps(resolve_config("tiny", overrides={"train.optimizer": "gd"}).to_dict()))
    reaches_work(["simulate", "--config", gd_run, *FAST, "--train", "--out", tmp_path / "b"], monkeypatch)
    monkeypatch.undo()
    out = tmp_path / "c"
    refused(capsys, ["simulate", "--config", gd_run, *FAST, "--out", out], out, "train.optimizer='gd'",
            "without --train")
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps({"train": {"beta1": 0.7}}))
    refused(capsys, ["simulate", "--config", chosen, *FAST, "--train", "--out", out], out,
            "train.beta1=0.7", "only adam reads it")


def test_the_python_api_refuses_the_same(tmp_path, monkeypatch):
    from analysis.simulate import simulate

    monkeypatch.setattr(simulate_module, "prepare_run", _stop)  # the run is checked and built there
    for config, train, needle in [
        (resolve_config("tiny", overrides={"train.beta1": 0.8}), True, "train.beta1=0.8"),
        (resolve_config("tiny", overrides={"train.lr": 0.3}), False, "train.lr=0.3"),
        (resolve_config("tiny", overrides={"train.optimizer": "gd", "train.batch_size": 8}), True,
         "train.batch_size=8"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            simulate(config, tmp_path / "run", train=train)
        assert not (tmp_path / "run").exists()
    with pytest.raises(Reached):  # the preset's batch size with gd: not a choice
        simulate(resolve_config("tiny", overrides={"train.optimizer": "gd"}), tmp_path / "run", train=True)


def test_sweep_refuses_grids_and_sets_nothing_reads(capsys, monkeypatch, tmp_path):
    out = tmp_path / "sweep"
    refused(capsys, ["sweep", "--preset", "tiny", *FAST, "--grid", "train.lr=0.1,0.2", "--out", out], out,
            "train.lr=0.1,0.2", "without --train")
    refused(capsys, ["sweep", "--preset", "tiny", *FAST, "--train", "--set", "train.optimizer=gd",
                     "--grid", "train.batch_size=16,32", "--out", out], out, "train.batch_size=16,32")
    refused(capsys, ["sweep", "--preset", "tiny", *FAST, "--grid", "init.scale=0.001,0.002", "--set",
                     "train.steps=10", "--out", out], out, "train.steps=10")
    # adam, one of the grid's optimizers, reads beta1: accepted
    reaches_work(["sweep", "--preset", "tiny", *FAST, "--train", "--grid", "train.optimizer=sgd,adam",
                  "--set", "train.beta1=0.8", "--out", out], monkeypatch)


# --- fine-tuning: the source run's values are not choices; init.* without new subjects ----------------

@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    """A short flow run of a tiny random task, saved with an adam config (its train.* keys set)."""
    config = resolve_config("tiny", overrides={"task.facts": "random", "flow.t_max": 5.0, "flow.points": 6,
                                               "train.optimizer": "adam", "train.lr": 0.05})
    directory = tmp_path_factory.mktemp("source") / "old"
    run_flow(config).save(directory, config)
    return directory


def test_init_from_keeps_the_source_run_values(capsys, monkeypatch, tmp_path, source_dir):
    reaches_work(["simulate", "--init-from", source_dir, "--set", "task.subjects=6", *FAST, "--out",
                  tmp_path / "tuned"], monkeypatch)
    monkeypatch.undo()
    out = tmp_path / "tuned"
    refused(capsys, ["simulate", "--init-from", source_dir, "--set", "task.subjects=6", "--set",
                     "train.lr=0.3", *FAST, "--out", out], out, "train.lr=0.3", "without --train")


@pytest.mark.parametrize("key, value", [("scale", 0.01), ("kind", "gaussian")])
def test_init_keys_on_a_fine_tune_without_new_subjects_are_refused(capsys, tmp_path, source_dir, key, value):
    old = Config.from_dict(json.loads((source_dir / "config.json").read_text()))
    same = old.override({"init.from_run": str(source_dir), f"init.{key}": value})
    with pytest.raises(ConfigError, match=rf"init\.{key}=.*adds none"):
        starting_state(same, setup(same)[1])
    grown = same.override({"task.subjects": old.task.subjects + 2})  # new subjects read init.*
    assert starting_state(grown, setup(grown)[1]).old_subjects == old.task.subjects
    out = tmp_path / "tuned"
    refused(capsys, ["simulate", "--init-from", source_dir, "--set", f"init.{key}={value}", *FAST,
                     "--out", out], out, f"init.{key}=", "adds none")


# --- compare: full-batch runs ignore the data schedule and the start from a run -------------------------

@pytest.mark.parametrize("sets, needle", [(["data.zipf=0.5"], "data.zipf=0.5"),
                                          (["data.holdout=1"], "data.holdout=1"),
                                          (["data.freeze=a"], "data.freeze='a'"),
                                          (["init.from_run=somewhere"], "init.from_run='somewhere'")])
def test_compare_refuses_what_full_batch_runs_ignore(capsys, monkeypatch, tmp_path, sets, needle):
    monkeypatch.setattr(compare_command, "run_compare", _stop)
    out = tmp_path / "cmp"
    argv = ["compare", "--preset", "tiny", *FAST, *[a for s in sets for a in ("--set", s)], "--lrs", "0.1",
            "--out", out]
    refused(capsys, [*argv, "--optimizers", "adam", "--full-batch"], out, needle, "full-batch runs")
    refused(capsys, [*argv, "--optimizers", "gd,muon_svd"], out, needle, "muon_svd")
    config = resolve_config("tiny", overrides=dict(s.split("=") for s in sets))
    monkeypatch.setattr(compute, "run_flow", _stop)  # the Python API refuses before any work
    with pytest.raises(ConfigError, match=re.escape(needle)):
        compare(config, CompareSpec(lrs=(0.1,), optimizers=("signsgd",), full_batch=True))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        run_full_batch(config.override({"train.optimizer": "adam"}))


def test_compare_without_full_batch_runs_takes_the_data_schedule(monkeypatch, tmp_path):
    reaches_work(["compare", "--preset", "tiny", *FAST, "--set", "data.zipf=0.5", "--lrs", "0.1",
                  "--optimizers", "gd,sgd", "--out", tmp_path / "cmp"], monkeypatch)


def test_compare_refuses_softmax_full_batch_before_any_work(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(compare_command, "run_compare", _stop)
    out = tmp_path / "cmp"
    refused(capsys, ["compare", "--preset", "tiny", *FAST, "--set", "model.attention=softmax", "--lrs", "0.1",
                     "--optimizers", "signsgd", "--full-batch", "--out", out], out, "linear attention")


# --- the documented commands (README.md, docs/cli.md) still pass every check ------------------------------

def _readme_commands() -> list[list[str]]:
    text = "".join((ROOT / page).read_text(encoding="utf-8") for page in ("README.md", "docs/cli.md"))
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if words[:1] == ["factrecall"] and words[1:2] and words[1] in ("simulate", "sweep", "compare") \
                    and "--config" not in words and "--init-from" not in words and "[" not in line:
                commands.append(words[1:])
    return commands


def test_the_readme_has_commands_to_check():
    assert len(_readme_commands()) >= 5


@pytest.mark.parametrize("argv", _readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_the_readme_commands_pass_validation(monkeypatch, tmp_path, argv):
    argv = [a for a in argv]
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(tmp_path / "out")
    else:
        argv += ["--out", str(tmp_path / "out")]
    reaches_work(argv, monkeypatch)



def test_run_training_refuses_a_train_key_its_optimizer_does_not_read():
    """The Python entry point of a discrete run makes the command line's check: sgd reads no Adam betas."""
    config = resolve_config("tiny", overrides={"train.optimizer": "sgd", "train.beta1": 0.5,
                                               "train.steps": 5})
    with pytest.raises(ConfigError, match=r"train\.beta1=0\.5: has no effect"):
        run_training(config)
    adam = config.override({"train.optimizer": "adam"})
    assert run_training(adam).info.status == "ok"  # adam reads it
