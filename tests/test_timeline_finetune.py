"""The timeline and the stage table of runs whose data change, fine-tunes above all.

* forgotten counts only facts known before the run (an old subject's fact known at the start), never a
  new subject's fact that sits at p(a*) ≥ 1/2 by chance at the start;
* a fine-tune's stage table is per group (old and new facts), each group detected on its own record;
* which runs get a timeline (``has_timeline``): every run that trains other data than it is measured on,
  a fixed ``data.zipf`` included (docs/cli.md's ``data.zipf=0.75``);
* the pieces that only a hand-made record can pin: a record exactly at a phase end, a fact exactly at 1/2
  at the start, a recorded count of learned facts, phase stage times on the run's clock, ``first_time``.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import numpy as np
import pytest

import analysis.stages.report as stages_report
import analysis.timeline.report as timeline_report
from analysis.stages import analyse_trajectory, detect_stages, format_stage_table
from analysis.stages.report import fine_tune_groups, group_trajectory
from analysis.study.timeline import first_time
from analysis.timeline import analyse_timeline, fact_events, has_timeline, phase_slices
from analysis.timeline.report import phase_trajectory
from dynamics import resolve_config, run_flow
from dynamics.records import RunInfo
from dynamics.solvers import Cost, Status
from dynamics.trajectory import Trajectory

T = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])


def record(p: np.ndarray, t: np.ndarray = T, weights: np.ndarray | None = None, old_subjects=None,
           phases=None, with_info: bool = True) -> Trajectory:
    """A hand-made record whose p(a*) is ``p`` (K, S, R); the other per-fact arrays consistent with it."""
    K, S, R = p.shape
    weights = np.full((S, R), 1.0 / (S * R)) if weights is None else weights
    phases = phases or [{"start": 0.0, "end": None, "subjects": [0, S], "replay": 0.0, "zipf": 0.0,
                         "zipf_end": None}]
    info = RunInfo(kind="flow", status=Status.OK, status_time=None, message="", final_loss=0.0, num_params=1,
                   cost=Cost(), phases=phases, old_subjects=old_subjects) if with_info else None
    fact_loss = -np.log(p)
    loss = (weights * fact_loss).sum((1, 2))
    return Trajectory(t=t, loss=loss, relation_loss=np.zeros(K), subject_loss=loss, fact_loss=fact_loss,
                      p_correct=p, p_relation=np.ones_like(p), p_subject=p,
                      argmax_class=np.where(p > 0.5, 2, 1).astype(np.int8),
                      facts=np.tile(np.arange(R) * 2, (S, 1)), fact_weights=weights, answers_per_relation=2,
                      attention=np.zeros((K, 4)), norms={}, info=info)


# --- forgotten: only what was known before the run --------------------------------------------------------

def test_a_new_subjects_chance_knowledge_is_not_forgotten():
    p = np.empty((5, 4, 1))
    p[:, 0, 0] = [0.9, 0.7, 0.3, 0.2, 0.7]   # old, known at the start: forgotten, then relearned
    p[:, 1, 0] = [0.5, 0.5, 0.3, 0.3, 0.3]   # old, exactly 1/2 at the start: known (p ≥ 1/2), forgotten
    p[:, 2, 0] = [0.9, 0.7, 0.3, 0.2, 0.7]   # new, the same curve: above 1/2 by chance, then learned
    p[:, 3, 0] = [0.6, 0.7, 0.8, 0.9, 0.9]   # new, above 1/2 from the start on: no event at all
    events = fact_events(record(p, old_subjects=2))
    assert events.forgotten[0, 0] == pytest.approx(10 ** 0.5, rel=1e-12)
    assert events.relearned[0, 0] == pytest.approx(10 ** 2.6, rel=1e-12)
    assert events.forgotten[1, 0] == 1.0  # still 1/2 at t = 1, below at t = 10: it leaves 1/2 at t = 1
    assert np.isnan(events.forgotten[2:, 0]).all() and np.isnan(events.relearned[2:, 0]).all()
    assert events.learned[2, 0] == pytest.approx(10 ** 2.6, rel=1e-12)  # rises through 1/2 from below
    assert np.isnan(events.learned[[0, 1, 3], 0]).all()


def test_a_fresh_run_knew_nothing_before_and_a_bare_record_keeps_the_first_record_rule():
    p = np.empty((5, 1, 1))
    p[:, 0, 0] = [0.6, 0.7, 0.3, 0.2, 0.7]
    fresh = fact_events(record(p))  # a run record without old subjects: a start from initialisation
    assert np.isnan(fresh.forgotten).all() and fresh.learned[0, 0] == pytest.approx(10 ** 2.6, rel=1e-12)
    bare = fact_events(record(p, with_info=False))  # no record of the run: known at the start = before
    assert bare.forgotten[0, 0] == pytest.approx(10 ** 0.5, rel=1e-12) and np.isnan(bare.learned).all()


def test_the_timeline_counts_learned_and_forgotten_facts_per_group(tmp_path):
    p = np.empty((5, 4, 1))
    p[:, 0, 0] = [0.9, 0.7, 0.3, 0.2, 0.7]   # old: forgotten, relearned
    p[:, 1, 0] = [0.9, 0.9, 0.9, 0.9, 0.9]   # old: known throughout
    p[:, 2, 0] = [0.1, 0.3, 0.7, 0.9, 0.9]   # new: learned
    p[:, 3, 0] = [0.1, 0.1, 0.1, 0.1, 0.1]   # new: never learned
    payload = analyse_timeline(record(p, old_subjects=2), tmp_path)
    assert payload["events"]["old"] == {
        "facts": 2, "learned": 0, "median_learned": None, "forgotten": 1,
        "median_forgotten": pytest.approx(10 ** 0.5, rel=1e-12), "relearned": 1,
        "median_relearned": pytest.approx(10 ** 2.6, rel=1e-12)}
    assert payload["events"]["new"]["learned"] == 1 and payload["events"]["new"]["forgotten"] == 0
    assert payload["events"]["new"]["median_learned"] == pytest.approx(10 ** 0.5, rel=1e-12)


# --- phases: the record at a phase end, stage times on the run's clock -------------------------------------

def test_a_record_exactly_at_a_phase_end_belongs_to_that_phase():
    phases = [{"start": 0.0, "end": 10.0, "subjects": [0, 1], "replay": 0.0, "zipf": 0.0, "zipf_end": None},
              {"start": 10.0, "end": None, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None}]
    traj = record(np.full((5, 2, 1), 0.3), phases=phases)
    slices = [window for _, window in phase_slices(traj)]
    assert slices == [slice(0, 3), slice(2, 5)]  # t = 10 ends the first and starts the second


@contextlib.contextmanager
def no_figures():
    """The analyses without their figures (drawing is most of their time; the figures have tests of their
    own)."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (stages_report, timeline_report):
            patch.setattr(module, "draw_or_skip", lambda *args, **kwargs: None)
        yield


def test_phase_stages_are_on_the_runs_clock(tmp_path):
    # the second phase (from t = 5) has two stages, init and recall: their boundary lies inside it
    config = resolve_config("tiny", overrides={"data.warmup_subjects": 0.5, "data.warmup_time": 5.0,
                                               "flow.t_max": 400.0, "flow.points": 48})
    traj = run_flow(config)
    with no_figures():
        phases = analyse_timeline(traj, tmp_path)["phases"]
    assert [p["phase"]["start"] for p in phases] == [0.0, 5.0] and len(phases[1]["stages"]) == 2
    for entry, (phase, window) in zip(phases, phase_slices(traj), strict=True):
        own = detect_stages(phase_trajectory(traj, window, phase["start"])).stages
        assert own, "each phase has stages to place"
        starts = [s["t_start"] for s in entry["stages"]]
        assert starts == pytest.approx([s.t_start + phase["start"] for s in own], rel=1e-12)
        assert min(starts) >= phase["start"]
        ends = [s["t_end"] for s in entry["stages"]]
        assert ends == [None if s.t_end is None else pytest.approx(s.t_end + phase["start"], rel=1e-12)
                        for s in own]


# --- which runs get a timeline ----------------------------------------------------------------------------

def test_has_timeline_reads_every_way_the_trained_data_differ():
    plain = {"start": 0.0, "end": None, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None}
    p = np.full((5, 2, 1), 0.3)
    assert not has_timeline(record(p, phases=[plain]))
    assert has_timeline(record(p, phases=[dict(plain, zipf_end=1.0)]))  # annealed from the task's own 0
    assert has_timeline(record(p, phases=[dict(plain, zipf=0.75)]))  # a fixed trained exponent
    assert has_timeline(record(p, phases=[dict(plain, replay=0.1, replay_subjects=[0, 1])]))
    assert has_timeline(record(p, old_subjects=1))
    assert not has_timeline(record(p, with_info=False))


def test_a_fixed_data_zipf_run_has_a_timeline_and_the_tasks_own_zipf_has_none():
    # simulate and factrecall stages write timeline.* exactly where has_timeline holds
    base = {"flow.t_max": 5.0, "flow.points": 8}
    assert resolve_config("data_zipf").data.zipf == 0.75 and resolve_config("data_zipf").data.zipf_end is None
    assert has_timeline(run_flow(resolve_config("tiny", overrides={**base, "data.zipf": 0.75})))
    assert not has_timeline(run_flow(resolve_config("tiny", overrides={**base, "task.subject_zipf": 0.75})))
    assert not has_timeline(run_flow(resolve_config("tiny", overrides={**base, "data.zipf": 0.0})))


# --- a real fine-tune --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finetune(tmp_path_factory):
    """tiny on a random table (4 subjects, known at the end), then 4 new subjects with nothing replayed."""
    root = tmp_path_factory.mktemp("finetune")
    old = resolve_config("tiny", overrides={"task.facts": "random", "flow.points": 48})
    run_flow(old).save(root / "old", old)
    config = old.override({"task.subjects": 8, "init.from_run": str(root / "old")})
    traj = run_flow(config)
    with no_figures():
        return SimpleNamespace(trajectory=traj, stages=analyse_trajectory(traj, config, root),
                               timeline=analyse_timeline(traj, root))


def test_a_finetunes_new_facts_are_learned_never_forgotten(finetune):
    traj, timeline = finetune.trajectory, finetune.timeline
    assert timeline["groups"] == {"old": [0, 4], "new": [4, 8]}
    new = timeline["events"]["new"]
    # two new facts sit above 1/2 at the start by chance (D = 2); neither was known before
    assert (traj.p_correct[0, 4:] >= 0.5).any()
    assert new["forgotten"] == 0 and new["relearned"] == 0
    assert new["learned"] == int(np.isfinite(fact_events(traj).learned[4:]).sum()) > 0
    assert timeline["events"]["old"]["forgotten"] > 0  # nothing replayed: old facts are lost


def test_a_finetunes_stage_table_is_per_group(finetune):
    traj, payload = finetune.trajectory, finetune.stages
    assert set(payload["groups"]) == {"old", "new"}
    new = payload["groups"]["new"]
    assert new["subjects"] == [4, 8]
    assert new["sequence"] == detect_stages(group_trajectory(traj, np.arange(4, 8))).names
    assert new["sequence"][-1] == "recall" and len(new["sequence"]) >= 2  # something before the recall
    table = format_stage_table("flow", payload)
    assert "new facts (subjects 4..7): " + new["summary"] in table
    assert "old facts (subjects 0..3): " + payload["groups"]["old"]["summary"] in table
    rows = [line.split() for line in table.splitlines()
            if line.startswith("    ") and "level name" not in line]
    assert rows and all(row[0] in ("-", *payload["groups"]["new"]["sequence"],
                                   *payload["groups"]["old"]["sequence"]) for row in rows)


def test_group_trajectory_is_the_record_of_its_facts_alone(finetune):
    traj = finetune.trajectory
    assert {k: v.tolist() for k, v in fine_tune_groups(traj).items()} == {"old": [0, 1, 2, 3],
                                                                       "new": [4, 5, 6, 7]}
    whole = group_trajectory(traj, np.arange(8))  # every fact: the record's own curves
    for name in ("loss", "relation_loss", "subject_loss"):
        np.testing.assert_allclose(getattr(whole, name), getattr(traj, name), rtol=1e-9, atol=1e-12)
    new = group_trajectory(traj, np.arange(4, 8))
    assert new.p_correct.shape[1:] == (4, 2)
    np.testing.assert_allclose(new.loss, traj.fact_loss[:, 4:].mean((1, 2)), rtol=1e-12)


def test_first_time_includes_a_value_exactly_at_the_level():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    assert first_time(t, np.array([0.0, 0.5, 0.9, 1.0]), 0.5) == 1.0
    assert math.isnan(first_time(t, np.array([0.0, 0.1, 0.2, 0.3]), 0.5))
