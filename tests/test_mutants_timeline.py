"""The timeline analysis (analysis.timeline) on hand-made records: groups, the curves' relation-weighted
means, the held-out subjects' summary, the phases' windows and stage times, timeline.json/.npz and the
terminal lines. Written for the survivors of a mutation run of analysis/timeline/events.py and report.py
(docs/testing.md); every test goes through the package's public functions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_timeline_finetune import T, no_figures, record

from analysis.stages import detect_stages
from analysis.timeline import (
    analyse_timeline,
    fact_events,
    format_timeline,
    groups_of,
    has_timeline,
    phase_slices,
)
from analysis.timeline.events import group_curves, trained_before, unseen_summary
from analysis.timeline.report import phase_trajectory


def weights_of(subjects: np.ndarray, relations: np.ndarray) -> np.ndarray:
    w = np.outer(subjects, relations)
    return w / w.sum()


def test_groups_split_unseen_old_and_new_and_leave_out_empty_ones():
    p = np.full((5, 5, 1), 0.3)
    held = weights_of(np.array([1.0, 1, 1, 0, 1]), np.ones(1))
    assert {g: i.tolist() for g, i in groups_of(record(p, weights=held, old_subjects=2)).items()} == {
        "unseen": [3], "old": [0, 1], "new": [2, 4]}
    assert {g: i.tolist() for g, i in groups_of(record(p, weights=held)).items()} == {
        "unseen": [3], "trained": [0, 1, 2, 4]}
    assert list(groups_of(record(p, old_subjects=5))) == ["old"]  # no new, no unseen: left out
    assert list(groups_of(record(p, with_info=False))) == ["trained"]  # a bare record: no old subjects


def test_what_was_trained_before_the_run():
    p = np.full((5, 4, 1), 0.3)
    assert trained_before(record(p, with_info=False)).tolist() == [True] * 4
    assert trained_before(record(p, with_info=False)).dtype == bool  # a mask, also of a bare record
    assert trained_before(record(p)).tolist() == [False] * 4
    assert trained_before(record(p, old_subjects=2)).tolist() == [True, True, False, False]


def test_an_event_exactly_at_one_half():
    p = np.empty((5, 2, 1))
    p[:, 0, 0] = [0.3, 0.5, 0.7, 0.7, 0.7]  # reaches 1/2 at t = 1: learned there
    p[:, 1, 0] = [0.7, 0.5, 0.5, 0.4, 0.6]  # known; at 1/2 is still known: forgotten between 10 and 100
    events = fact_events(record(p, old_subjects=2))
    assert events.learned[0, 0] == pytest.approx(1.0, rel=1e-12) and np.isnan(events.forgotten[0, 0])
    assert events.forgotten[1, 0] == pytest.approx(10.0, rel=1e-12)  # leaves 1/2 after t = 10
    assert events.relearned[1, 0] == pytest.approx(10 ** 2.5, rel=1e-12)  # 0.4 → 0.6 crosses at mid-log
    touching = np.array([0.7, 0.5, 0.9, 0.9, 0.9])[:, None, None]  # known, at 1/2 once, never below
    for traj in (record(touching, old_subjects=1), record(touching, with_info=False)):
        assert np.isnan(fact_events(traj).forgotten).all() and np.isnan(fact_events(traj).learned).all()


def test_group_curves_weigh_relations_by_their_frequencies():
    rng = np.random.default_rng(0)
    K, S, R = 5, 3, 2
    p = rng.uniform(0.05, 0.95, (K, S, R))
    q = np.array([0.25, 0.75])
    traj = record(p, weights=weights_of(np.ones(S), q))
    groups = {"a": np.array([0, 2]), "b": np.array([1])}
    curves = group_curves(traj, groups)
    np.testing.assert_array_equal(curves.t, T)
    for g, index in groups.items():
        mean = sum(q[r] * p[:, index, r].mean(1) for r in range(R))
        np.testing.assert_allclose(curves.p_correct[g], mean, rtol=1e-12)
        np.testing.assert_allclose(curves.loss[g], sum(q[r] * -np.log(p[:, index, r]).mean(1)
                                                       for r in range(R)), rtol=1e-12)
        recalled = sum(q[r] * (p[:, index, r] > 0.5).mean(1) for r in range(R))
        np.testing.assert_allclose(curves.recalled[g], recalled, rtol=1e-12)
        # p(relation) = 1 in the record: every fact not recalled is hallucinating
        np.testing.assert_allclose(curves.hallucinating[g], 1 - recalled, rtol=1e-12)


def test_the_unseen_summary_reads_the_held_out_curve():
    p = np.full((5, 3, 2), 0.6)
    p[:, 2, :] = np.array([0.5, 0.2, 0.1, 0.6, 0.4])[:, None]  # held out: loss highest at 10, lowest at 100
    p[:, 2, 1] = [0.5, 0.2, 0.1, 0.6, 0.7]  # one fact recalled at the end
    traj = record(p, weights=weights_of(np.array([1.0, 1, 0]), np.ones(2)))
    summary = unseen_summary(traj, group_curves(traj, groups_of(traj)))
    loss = -(np.log(p[:, 2, 0]) + np.log(p[:, 2, 1])) / 2
    expected = {"loss_start": loss[0], "loss_max": loss[2], "t_loss_max": 10.0, "loss_min": loss[3],
                "t_loss_min": 100.0, "loss_end": loss[4], "log_answers": math.log(4), "log_D": math.log(2),
                "H(A|R)": traj.levels["H(A|R)"], "max_fraction_hallucinating": 1.0,
                "final_fraction_hallucinating": 0.5}
    assert summary == {key: pytest.approx(value, rel=1e-12) for key, value in expected.items()}
    assert unseen_summary(record(p), group_curves(record(p), groups_of(record(p)))) is None


def test_phase_windows_without_records_and_without_a_run_record():
    p = np.full((5, 2, 1), 0.3)
    assert phase_slices(record(p, with_info=False)) == [({"start": 0.0, "end": None}, slice(0, 5))]
    phases = [{"start": 0.0, "end": 0.5, "subjects": [0, 1], "replay": 0.0, "zipf": 0.0, "zipf_end": None},
              {"start": 2.0, "end": 5.0, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None},
              {"start": 5.0, "end": None, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None}]
    # no record inside [2, 5]: that phase is left out; an open end reaches the last record
    assert [(ph["start"], w) for ph, w in phase_slices(record(p, phases=phases))] == [
        (0.0, slice(0, 1)), (5.0, slice(2, 5))]


def test_has_timeline_for_phases_held_out_subjects_and_part_of_the_subjects():
    plain = {"start": 0.0, "end": None, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None}
    p = np.full((5, 2, 1), 0.3)
    assert not has_timeline(record(p, phases=[plain]))
    assert has_timeline(record(p, phases=[dict(plain, end=10.0), dict(plain, start=10.0)]))
    assert has_timeline(record(p, phases=[dict(plain, subjects=[0, 1])]))
    assert has_timeline(record(p, phases=[plain], weights=weights_of(np.array([1.0, 0]), np.ones(1))))
    assert has_timeline(record(p, phases=[dict(plain, replay=0.2, replay_subjects=[0, 1])]))


def test_a_phase_trajectory_is_its_window_from_the_phase_start():
    p = np.random.default_rng(1).uniform(0.1, 0.9, (5, 2, 1))
    traj = record(p)
    traj.norms = {"W": np.arange(5.0)}
    piece = phase_trajectory(traj, slice(2, 5), 10.0)
    np.testing.assert_array_equal(piece.t, T[2:] - 10.0)
    np.testing.assert_array_equal(piece.p_correct, p[2:])
    np.testing.assert_array_equal(piece.loss, traj.loss[2:])
    np.testing.assert_array_equal(piece.fact_loss, traj.fact_loss[2:])
    np.testing.assert_array_equal(piece.attention, traj.attention[2:])
    np.testing.assert_array_equal(piece.norms["W"], [2.0, 3.0, 4.0])
    assert piece.states is None
    np.testing.assert_array_equal(piece.facts, traj.facts)  # per-fact, not per-time: kept whole


def fine_tune_record():
    p = np.empty((5, 4, 1))
    p[:, 0, 0] = [0.9, 0.7, 0.3, 0.2, 0.7]   # old: forgotten, relearned
    p[:, 1, 0] = [0.9, 0.9, 0.3, 0.2, 0.3]   # old: forgotten, never relearned
    p[:, 2, 0] = [0.1, 0.3, 0.7, 0.9, 0.9]   # new: learned
    p[:, 3, 0] = [0.1, 0.1, 0.1, 0.6, 0.9]   # new: learned
    return record(p, old_subjects=2)


def test_timeline_json_npz_and_the_terminal_lines(tmp_path):
    traj = fine_tune_record()
    with no_figures():
        payload = analyse_timeline(traj, tmp_path)
    assert payload["groups"] == {"old": [0, 2], "new": [2, 4]}
    old, new = payload["events"]["old"], payload["events"]["new"]
    assert (old["facts"], old["forgotten"], old["relearned"], old["learned"]) == (2, 2, 1, 0)
    # the median of two times is their mean; a group without the event has None
    assert old["median_forgotten"] == pytest.approx((10 ** 0.5 + 10 ** (2 / 3)) / 2, rel=1e-12)
    assert old["median_relearned"] == pytest.approx(10 ** 2.6, rel=1e-12)
    assert old["median_learned"] is None
    assert (new["facts"], new["learned"], new["forgotten"], new["median_forgotten"]) == (2, 2, 0, None)
    assert new["median_learned"] == pytest.approx((10 ** 0.5 + 10 ** 1.8) / 2, rel=1e-12)
    assert payload["final_fraction_recalled"] == {"old": 0.5, "new": 1.0}
    assert payload["unseen"] is None
    assert json.loads((tmp_path / "timeline.json").read_text()) == json.loads(json.dumps(payload))
    arrays = np.load(tmp_path / "timeline.npz")
    np.testing.assert_array_equal(arrays["t"], T)
    events = fact_events(traj)
    for name in ("learned", "forgotten", "relearned"):
        np.testing.assert_array_equal(arrays[name], getattr(events, name))
    lines = format_timeline("flow", payload).splitlines()
    assert lines[0] == "flow timeline: 1 phase(s)"
    assert lines[1] == ("  old      2 facts, learned 0, "
                        f"forgotten 2 (median t = {old['median_forgotten']:.4g}), "
                        f"relearned 1 (median t = {old['median_relearned']:.4g}), recalled at the end 50%")
    assert lines[2] == (f"  new      2 facts, learned 2 (median t = {new['median_learned']:.4g}), "
                        "recalled at the end 100%")
    assert len(lines) == 3


def test_the_terminal_line_of_the_held_out_subjects():
    payload = {"phases": [{}, {}], "events": {}, "final_fraction_recalled": {},
               "unseen": {"loss_start": 1.5, "loss_max": 2.25, "t_loss_max": 12.5, "loss_end": 0.75,
                          "log_answers": 2.0, "log_D": 0.5, "H(A|R)": 0.25}}
    assert format_timeline("train", payload).splitlines() == [
        "train timeline: 2 phase(s)",
        "  unseen loss 1.500 -> max 2.250 (t = 12.5) -> 0.750; log|A| = 2.000, log D = 0.500, H(A|R) = 0.250"]


def test_phase_stages_only_where_a_phase_has_three_records(tmp_path):
    phases = [{"start": 0.0, "end": 1.0, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None},
              {"start": 1.0, "end": None, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None}]
    p = np.empty((5, 2, 1))
    p[:, :, 0] = np.array([0.25, 0.25, 0.26, 0.9, 0.99])[:, None]
    with no_figures():
        stages = analyse_timeline(record(p, phases=phases), tmp_path)["phases"]
    assert [s["phase"]["start"] for s in stages] == [0.0, 1.0]
    assert "stages" not in stages[0] and "sequence" not in stages[0]  # two records: nothing to detect
    assert stages[1]["sequence"] and len(stages[1]["stages"]) == len(stages[1]["sequence"])
    assert stages[1]["stages"][0]["t_start"] >= 1.0  # on the run's clock


def test_phase_stages_from_three_records_on_the_runs_clock(tmp_path):
    phases = [{"start": 0.0, "end": 10.0, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None},
              {"start": 10.0, "end": None, "subjects": [0, 2], "replay": 0.0, "zipf": 0.0, "zipf_end": None}]
    p = np.empty((5, 2, 1))
    p[:, :, 0] = np.array([0.25, 0.3, 0.26, 0.9, 0.99])[:, None]
    traj = record(p, phases=phases)
    with no_figures():
        entries = analyse_timeline(traj, tmp_path)["phases"]
    assert [window for _, window in phase_slices(traj)] == [slice(0, 3), slice(2, 5)]  # three records each
    for entry, (phase, window) in zip(entries, phase_slices(traj), strict=True):
        own = detect_stages(phase_trajectory(traj, window, phase["start"])).stages
        assert [s["t_start"] for s in entry["stages"]] == [s.t_start + phase["start"] for s in own]
        assert [s["t_end"] for s in entry["stages"]] == [None if s.t_end is None else s.t_end + phase["start"]
                                                         for s in own]
    assert all("stages" in entry and "sequence" in entry for entry in entries)  # three records suffice


def test_the_timeline_holds_the_unseen_summary(tmp_path):
    p = np.full((5, 3, 2), 0.6)
    p[:, 2, :] = np.array([0.5, 0.2, 0.1, 0.6, 0.4])[:, None]
    traj = record(p, weights=weights_of(np.array([1.0, 1, 0]), np.ones(2)))
    with no_figures():
        payload = analyse_timeline(traj, tmp_path)
    assert payload["unseen"] == unseen_summary(traj, group_curves(traj, groups_of(traj)))
    assert payload["unseen"]["loss_start"] == pytest.approx(-math.log(0.5), rel=1e-12)
