"""Where a run starts (``dynamics/start.py``): the whole line of every refusal of a source run, and the
cases the broader tests in test_init_from.py leave open (a facts table of floats, a shape (1,) answer count,
init.* with and without added subjects, ``source_config``). Written for the survivors of
``python tests/mutation.py dynamics/start.py -- tests/test_init_from.py tests/test_mutants_start.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dynamics.config import resolve_config
from dynamics.errors import ConfigError
from dynamics.run import run_flow, setup
from dynamics.start import _one_line, continued_start, source_config, starting_state

OLD = resolve_config("tiny", None, ["task.facts=random", "flow.t_max=20", "flow.points=8"])
SIMULATE = "allowed: a directory written by factrecall simulate"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A run directory of OLD, written once; tests copy it before damaging it."""
    directory = tmp_path_factory.mktemp("source") / "old"
    run_flow(OLD).save(directory, OLD)
    return directory


@pytest.fixture
def source(tmp_path, saved) -> Path:
    copy = tmp_path / "old"
    copy.mkdir()
    for name in ("config.json", "trajectory.npz", "summary.json"):
        (copy / name).write_bytes((saved / name).read_bytes())
    return copy


def tune(directory: Path, **overrides):
    """A fine-tune of OLD from ``directory``, 2 subjects added (and ``overrides``)."""
    return OLD.override({"init.from_run": str(directory), "task.subjects": OLD.task.subjects + 2,
                         **overrides})


def start(directory: Path, **overrides):
    config = tune(directory, **overrides)
    return starting_state(config, setup(config)[1])


def refusal(directory: Path, **overrides) -> str:
    with pytest.raises(ConfigError) as caught:
        start(directory, **overrides)
    return str(caught.value)


def rewrite_npz(path: Path, **arrays) -> None:
    with np.load(path, allow_pickle=False) as data:
        kept = {name: data[name] for name in data.files}
    kept.update(arrays)
    np.savez(path, **{k: v for k, v in kept.items() if v is not None})


def test_not_a_run_directory_is_refused_in_one_whole_line(tmp_path):
    where = repr(str(tmp_path / "nowhere"))
    assert refusal(tmp_path / "nowhere") == (f"init.from_run={where}: not a run directory (no trajectory.npz "
                                             f"with a final state); {SIMULATE}")


def test_a_config_json_that_is_not_an_object_names_what_it_is(source):
    (source / "config.json").write_text("[1, 2]")
    assert refusal(source) == (f"init.from_run={str(source)!r}: cannot read its config.json "
                               "(ValueError: a JSON list, not an object)")


def test_an_error_is_named_by_its_type_and_first_line():
    assert _one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert _one_line(KeyError()) == "KeyError"  # no text: the type alone, no dangling colon


def test_an_unreadable_archive_is_refused_in_one_whole_line(source):
    (source / "trajectory.npz").write_bytes(b"")
    where = re.escape(repr(str(source)))
    pattern = rf"init\.from_run={where}: cannot read trajectory\.npz \(\w+: [^)]+\); {SIMULATE}"
    assert re.fullmatch(pattern, refusal(source))


def test_a_pickled_facts_table_is_never_unpickled(source):
    rewrite_npz(source / "trajectory.npz", facts=np.array([{}], dtype=object))
    assert "cannot read trajectory.npz (ValueError: Object arrays cannot be loaded" in refusal(source)


def test_no_final_state_is_refused_in_one_whole_line(source):
    rewrite_npz(source / "trajectory.npz", final_state=None)
    assert refusal(source) == (f"init.from_run={str(source)!r}: its trajectory.npz holds no final state "
                               "(written before runs kept it, or by a discrete run); rerun it")


@pytest.mark.parametrize("case", ["float facts", "facts a vector", "answers a vector"])
def test_a_facts_table_that_is_not_an_integer_matrix_is_refused(source, case):
    """The values are right in each case (float or reshaped copies of the table): only the kind and shape
    of the arrays are wrong, so nothing later would refuse them."""
    with np.load(source / "trajectory.npz") as data:
        facts, answers = data["facts"], data["answers_per_relation"]
    change = {"float facts": {"facts": facts.astype(np.float64)}, "facts a vector": {"facts": facts.ravel()},
              "answers a vector": {"answers_per_relation": answers.reshape(1)}}[case]
    rewrite_npz(source / "trajectory.npz", **change)
    assert refusal(source) == (f"init.from_run={str(source)!r}: its trajectory.npz holds no integer facts "
                               f"table; {SIMULATE}")


def test_a_config_json_changed_after_the_save_is_refused_naming_the_source(source):
    tree = json.loads((source / "config.json").read_text())
    tree["task"]["seed"] = 1
    (source / "config.json").write_text(json.dumps(tree))
    assert refusal(source, **{"task.seed": 1}).startswith(
        f"init.from_run={str(source)!r}: its config.json does not match its trajectory.npz (config.json was "
        "changed after the run was saved)")


def test_removing_subjects_is_refused_in_one_whole_line(source):
    assert refusal(source, **{"task.subjects": 3}) == ("task.subjects=3: must be >= the old run's 4 "
                                                       "(subjects can be added, not removed)")


def test_init_settings_must_be_the_old_runs_only_when_no_subject_is_added(source):
    assert refusal(source, **{"task.subjects": 4, "init.scale": 0.01}) == (
        "init.scale=0.01: has no effect: a run started from init.from_run initialises only the subjects it "
        "adds, and task.subjects=4 adds none; allowed: the old run's init.scale=0.001, or more task.subjects")
    grown = start(source, **{"init.scale": 0.01})  # the added subjects' tokens take it
    assert grown.old_subjects == 4


def structured(subjects: int):
    return resolve_config("tiny", None, [f"task.subjects={subjects}"])


def test_a_table_whose_old_rows_change_is_refused_naming_the_source(source):
    """task.facts=structured spreads the subjects over the answers: with 6 subjects instead of 4, old subject
    2's answers move."""
    old, new = structured(4), structured(6)
    state = setup(old)[1].initial_parameters(old.init).numpy()
    model = setup(new)[1]
    tail = ("the old subjects' facts differ in this task (task.facts='structured'); allowed: "
            "task.facts=random, whose table keeps the old subjects' rows when subjects are added")
    with pytest.raises(ConfigError) as caught:
        continued_start(new, model, old, state)
    assert str(caught.value) == f"init.from_run='the old run': {tail}"
    with pytest.raises(ConfigError) as caught:
        continued_start(new, model, old, state, str(source))
    assert str(caught.value) == f"init.from_run={str(source)!r}: {tail}"


def test_starting_state_names_the_source_directory(tmp_path):
    """starting_state passes the directory it read to the check of the old subjects' rows."""
    old = resolve_config("tiny", None, ["flow.t_max=5", "flow.points=4"])  # task.facts=structured
    run_flow(old).save(tmp_path / "structured", old)
    config = old.override({"init.from_run": str(tmp_path / "structured"), "task.subjects": 6})
    with pytest.raises(ConfigError) as caught:
        starting_state(config, setup(config)[1])
    where = repr(str(tmp_path / "structured"))
    message = str(caught.value)
    assert message.startswith(f"init.from_run={where}: the old subjects' facts differ"), message


def test_source_config_is_the_source_runs_config(source):
    assert source_config(OLD) is None
    assert source_config(tune(source)).to_dict() == OLD.to_dict()
    assert source_config(tune(source.parent / "nowhere")) is None
