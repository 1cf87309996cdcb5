"""Data over time: schedules of the training distribution, held-out subjects, starts from another run, frozen
blocks. Each test compares against an independent computation (the same flow run another way)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from close import assert_close

from dynamics import resolve_config, run_flow, run_training
from dynamics.config import ConfigError
from dynamics.objective import gradient, make_objective
from dynamics.run import integrate_config_flow, setup, time_grid
from dynamics.schedule import (
    Phase,
    Schedule,
    TaskSchedule,
    evaluation_task,
    per_time,
    schedule_of,
    task_schedule,
)
from dynamics.start import Start, starting_state
from dynamics.task import FactTask

TINY = resolve_config("tiny", None, ["task.facts=random", "task.subjects=6", "flow.points=40"])


def _schedule(*phases: tuple[float, tuple[int, int]]) -> Schedule:
    """Consecutive phases from (start, subjects) pairs."""
    starts = [start for start, _ in phases] + [math.inf]
    return Schedule(tuple(Phase(starts[i], starts[i + 1], subjects)
                          for i, (_, subjects) in enumerate(phases)))


def test_a_one_phase_schedule_on_all_subjects_is_the_plain_run_bit_for_bit():
    task, model, objective = setup(TINY)
    theta0 = model.initial_parameters(TINY.init)
    grid = time_grid(TINY)
    plain = integrate_config_flow(TINY, model, objective, theta0, grid)
    # forced through the per-time path: the field of the task trained at t, rebuilt from the schedule
    tasks = TaskSchedule(task, _schedule((0.0, (0, task.S))))
    scheduled = integrate_config_flow(TINY, model, objective, theta0, grid, tasks=tasks)
    assert torch.equal(plain.states, scheduled.states)
    assert plain.cost.function_evals == scheduled.cost.function_evals


def test_a_two_phase_schedule_is_two_runs_with_the_state_handed_over():
    t1 = 30.0
    grid = np.unique(np.concatenate([time_grid(TINY), [t1]]))
    first, second = grid[grid <= t1], grid[grid >= t1]
    both = run_flow(TINY, times=grid, schedule=_schedule((0.0, (0, 3)), (t1, (0, 6))), keep_states=True)
    one = run_flow(TINY, times=first, schedule=_schedule((0.0, (0, 3))), keep_states=True)
    two = run_flow(TINY, times=second, schedule=_schedule((0.0, (0, 6))), keep_states=True,
                   start=Start(torch.as_tensor(one.final_state)))
    joined = np.concatenate([one.states, two.states[1:]])
    np.testing.assert_array_equal(both.states, joined)
    np.testing.assert_array_equal(both.fact_loss, np.concatenate([one.fact_loss, two.fact_loss[1:]]))


def test_the_solver_takes_no_step_across_a_phase_boundary():
    t1 = 37.3  # not a record time: the solver must stop there all the same
    seen: list[tuple[float, int]] = []

    class Watched(TaskSchedule):
        def key(self, t):
            seen.append((float(t), self.schedule.index(t)))
            return super().key(t)

    task, model, objective = setup(TINY)
    tasks = Watched(task, _schedule((0.0, (0, 3)), (t1, (0, 6))))
    integrate_config_flow(TINY, model, objective, model.initial_parameters(TINY.init), time_grid(TINY),
                          tasks=tasks)
    times = np.array(seen)
    assert (times[times[:, 1] == 0, 0] < t1).all() and (times[times[:, 1] == 1, 0] >= t1).all()
    assert (times[:, 1] == 0).any() and (times[:, 1] == 1).any()
    assert np.isclose(times[:, 0], t1, rtol=0, atol=1e-12).any()  # the second piece starts at t1 exactly


def test_warm_up_trains_only_its_subjects_until_it_ends():
    config = TINY.override({"data.warmup_subjects": 0.5, "data.warmup_time": 40.0})
    schedule = schedule_of(config)
    assert [p.subjects for p in schedule.phases] == [(0, 3), (0, 6)] and schedule.breakpoints == (40.0,)
    traj = run_flow(config, keep_states=True)
    a = traj.states[:, :12]  # one parameter set per vocabulary token: the scores of V = 6 + 2 + 3 + 1 tokens
    before = traj.t < 40.0
    # subjects 3..5 have no fact in the warm-up: their scores do not move until it ends, then they do
    assert np.array_equal(a[before][:, 3:6], np.broadcast_to(a[0, 3:6], a[before][:, 3:6].shape))
    assert not np.allclose(a[-1, 3:6], a[0, 3:6])
    assert not np.allclose(a[before][-1, :3], a[0, :3])


def test_an_annealed_zipf_exponent_moves_linearly_and_sampling_follows_it():
    config = TINY.override({"data.zipf_end": 2.0})
    (phase,) = schedule_of(config).phases
    assert phase.exponent(0.0) == 0.0 and phase.exponent(200.0) == pytest.approx(1.0)
    # α(t) = zipf + (zipf_end − zipf)·1 at and past the end: equal to zipf_end up to one rounding
    assert [phase.exponent(config.flow.t_max), phase.exponent(1e9)] == pytest.approx([2.0, 2.0], rel=1e-15)
    u = phase.subject_weights(6, config.flow.t_max)
    np.testing.assert_allclose(u, np.arange(1, 7) ** -2.0 / (np.arange(1, 7) ** -2.0).sum(), rtol=1e-15)
    assert run_flow(config).info.ok


def test_replay_mixes_old_and_new_subjects_with_its_share():
    phase = Phase(0.0, math.inf, (4, 6), replay=0.25, replay_subjects=(0, 4))
    u = phase.subject_weights(7, 0.0)
    np.testing.assert_allclose(u, [1 / 16] * 4 + [3 / 8] * 2 + [0.0], rtol=1e-15)
    # a steep Zipf on a range of late subjects: (s + 1)^−α underflows, the frequencies relative to the
    # range's first subject do not (u ∝ 1, (1002/1001)^−200, (1003/1001)^−200)
    steep = Phase(0.0, math.inf, (1000, 1003), zipf=200.0).subject_weights(1003, 0.0)[1000:]
    ratios = (np.arange(1001, 1004) / 1001.0) ** -200.0
    np.testing.assert_allclose(steep, ratios / ratios.sum(), rtol=1e-12)
    # α = 2000: every subject but the first underflows to 0, none overflows
    assert Phase(0.0, math.inf, (0, 3), zipf=2000.0).subject_weights(3, 0.0).tolist() == [1.0, 0.0, 0.0]
    # a replayed range inside the trained one (a Schedule given to run_flow): the two shares add up
    mixed = Phase(0.0, math.inf, (0, 6), replay=0.5, replay_subjects=(0, 2)).subject_weights(6, 0.0)
    np.testing.assert_allclose(mixed, [1 / 3] * 2 + [1 / 12] * 4, rtol=1e-15)


def test_an_annealed_phase_trains_the_frequencies_of_each_time_not_of_its_first():
    """Within one annealed phase the task trained at t follows α(t) (a fresh task per t, not one cached per
    phase), so ``data.zipf_end`` changes the run: as α rises to 2 the frequent subjects are learned first."""
    config = TINY.override({"data.zipf_end": 2.0, "flow.t_max": 200.0})
    task, _, _ = setup(config)
    schedule = schedule_of(config)
    tasks = TaskSchedule(task, schedule)
    for t in (0.0, 50.0, 200.0, 120.0):
        np.testing.assert_allclose(tasks.at(t).subject_weights, schedule.phases[0].subject_weights(6, t),
                                   rtol=1e-15)
    annealed = run_flow(config)
    assert annealed.info.ok
    by_subject = annealed.fact_loss[-1].mean(1)
    assert (np.diff(by_subject) > 0).all(), by_subject  # the plain run (α = 0 throughout) is flat


def test_an_annealed_phase_moves_from_its_own_start_and_is_constant_after_anneal_until():
    """α = zipf at the phase's start (not at t = 0), linear to zipf_end at anneal_until, zipf_end after it;
    a phase that starts at or after anneal_until trains zipf_end throughout."""
    late = Phase(40.0, math.inf, (0, 6), zipf=0.0, zipf_end=2.0, anneal_until=240.0)  # after a warm-up
    assert [late.exponent(t) for t in (40.0, 140.0, 240.0, 1e6)] == pytest.approx([0.0, 1.0, 2.0, 2.0],
                                                                                   rel=1e-15)
    short = Phase(0.0, math.inf, (0, 6), zipf=1.0, zipf_end=3.0, anneal_until=0.5)  # a span below 1
    assert short.exponent(0.25) == pytest.approx(2.0, rel=1e-15)
    for until in (10.0, 5.0):  # no span left: zipf_end from the start, never a division by zero
        done = Phase(10.0, math.inf, (0, 6), zipf=1.0, zipf_end=3.0, anneal_until=until)
        assert [done.exponent(10.0), done.exponent(20.0)] == pytest.approx([3.0, 3.0], rel=1e-15)


def test_schedule_of_reads_every_data_key():
    """data.zipf, data.zipf_end, data.replay (with the old subjects replayed), a warm-up shorter than 1, and
    the refusal of a replay with nothing to replay beside (one line naming why)."""
    assert schedule_of(TINY.override({"data.zipf": 1.0})).phases[0].zipf == 1.0
    fine = TINY.override({"data.replay": 0.2, "data.zipf": 1.0, "data.zipf_end": 2.0})
    assert schedule_of(fine, old_subjects=4).phases == (
        Phase(0.0, math.inf, (4, 6), 0.2, (0, 4), zipf=1.0, zipf_end=2.0, anneal_until=TINY.flow.t_max),)
    short = TINY.override({"data.warmup_time": 0.5, "data.warmup_subjects": 0.5})
    assert schedule_of(short).breakpoints == (0.5,)
    alone = r"^data.replay=0.5: .* not started from another run \(init.from_run\); allowed: 0, or start from"
    with pytest.raises(ConfigError, match=alone):
        schedule_of(TINY.override({"data.replay": 0.5}))
    nothing_new = r"^data.replay=0.2: .* beyond the 6 of the run it starts from \(task.subjects=6, "
    with pytest.raises(ConfigError, match=nothing_new):
        schedule_of(TINY.override({"data.replay": 0.2}), old_subjects=6)


def test_the_phases_recorded_in_summary_json():
    config = TINY.override({"data.warmup_time": 40.0, "data.warmup_subjects": 0.5, "data.zipf_end": 1.0})
    common = {"replay": 0.0, "replay_subjects": [0, 0], "zipf": 0.0, "zipf_end": 1.0, "anneal_until": 400.0}
    assert schedule_of(config).as_records() == [{"start": 0.0, "end": 40.0, "subjects": [0, 3], **common},
                                                {"start": 40.0, "end": None, "subjects": [0, 6], **common}]
    forever = Schedule((Phase(0.0, math.inf, (0, 6), zipf=1.0, zipf_end=2.0),)).as_records()[0]
    assert forever["end"] is None and forever["anneal_until"] is None  # JSON has no infinity


def test_a_constant_phase_builds_its_task_and_field_once_and_passes_t_on():
    """TaskSchedule.at gives one task object per constant phase (its caches built once) and per_time builds
    what it is given once per such phase, calling it with the t it was called with."""
    task, _, _ = setup(TINY)
    tasks = TaskSchedule(task, _schedule((0.0, (0, 3)), (40.0, (0, 6))))
    assert tasks.at(1.0) is tasks.at(39.0) and tasks.at(40.0) is tasks.at(300.0)
    assert tasks.at(1.0) is not tasks.at(40.0)
    built = []

    def build(trained):
        built.append(trained)
        return lambda t, x: (t, x)

    field = per_time(build, tasks)
    times = (1.0, 2.0, 50.0, 60.0)
    assert [field(t, "θ") for t in times] == [(t, "θ") for t in times]
    assert len(built) == 2 and built[0] is tasks.at(1.0) and built[1] is tasks.at(50.0)


@pytest.mark.parametrize("share,first", [(0.4, 3), (0.5, 3), (0.01, 1), (0.8, 5)])
def test_the_warm_up_takes_the_ceiling_of_its_share(share, first):
    # ⌈f·n⌉ subjects, at least one: 0.4 · 6 = 2.4 -> 3, where the floor would give 2
    config = TINY.override({"data.warmup_subjects": share, "data.warmup_time": 40.0})
    assert [p.subjects for p in schedule_of(config).phases] == [(0, first), (0, 6)]


def test_a_one_phase_schedule_with_replay_is_not_the_plain_run():
    """One constant phase on all subjects still changes the frequencies when it replays a range: it must
    train them (and a fixed sampled loss, drawn once from the task's own frequencies, cannot follow it)."""
    replaying = Schedule((Phase(0.0, math.inf, (0, 6), replay=0.5, replay_subjects=(0, 2)),))
    assert not replaying.is_plain(6, 0.0)
    assert Schedule((Phase(0.0, math.inf, (0, 6)),)).is_plain(6, 0.0)
    traj = run_flow(TINY.override({"flow.t_max": 200.0}), schedule=replaying)
    by_subject = traj.fact_loss[-1].mean(1)
    # subjects 0, 1 are trained at 1/12 + 1/4 each, the others at 1/12: learned first
    assert by_subject[:2].max() < by_subject[2:].min(), by_subject
    with pytest.raises(ConfigError, match="loss.kind='sampled'"):
        run_flow(TINY.override({"loss.kind": "sampled"}), schedule=replaying)


def test_held_out_subjects_start_at_log_A_and_are_never_part_of_the_loss():
    config = TINY.override({"data.holdout": 2})
    traj = run_flow(config)
    num_answers = config.task.relations * config.task.answers_per_relation
    np.testing.assert_allclose(traj.fact_loss[0, 4:], math.log(num_answers), rtol=1e-12)
    assert (traj.fact_weights[4:] == 0).all() and traj.fact_weights.sum() == pytest.approx(1.0)
    # the gradient of the trained distribution does not see the held-out subjects' answers
    task, model, _ = setup(config)
    trained = TaskSchedule(task, schedule_of(config)).at(0.0)
    changed = trained.with_subject_weights(trained.subject_weights)
    changed.facts = trained.facts.copy()
    changed.facts[4:] = (changed.facts[4:] + 1) % config.task.answers_per_relation + \
        (changed.facts[4:] // config.task.answers_per_relation) * config.task.answers_per_relation
    assert not np.array_equal(changed.facts, trained.facts)
    theta = torch.randn(model.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g1 = gradient(make_objective(model.with_task(trained), trained, config.loss), theta)
    g2 = gradient(make_objective(model.with_task(changed), changed, config.loss), theta)
    assert torch.equal(g1[1], g2[1]) and torch.equal(g1[0], g2[0])


def test_one_held_out_subject_is_measured_at_weight_zero():
    task, _, _ = setup(TINY)
    measured = evaluation_task(task, TINY.override({"data.holdout": 1}))
    u = task.subject_weights[:5] / task.subject_weights[:5].sum()
    np.testing.assert_allclose(measured.subject_weights, [*u, 0.0], rtol=1e-15)
    assert evaluation_task(task, TINY) is task


def test_held_out_subjects_are_never_sampled_by_sgd():
    config = TINY.override({"data.holdout": 2, "train.steps": 200})
    traj = run_training(config, keep_states=True)
    # one parameter set per vocabulary token: subjects 4, 5 never appear in a batch, their scores never move
    held_out = traj.states[:, 4:6]
    assert np.array_equal(held_out, np.broadcast_to(held_out[0], held_out.shape))
    assert not np.array_equal(traj.states[-1, :4], traj.states[0, :4])


@pytest.mark.parametrize("optimizer", ["flow", "sgd", "adam", "muon", "signsgd"])
def test_frozen_blocks_stay_exactly_fixed(optimizer):
    config = TINY.override({"data.freeze": "a", "train.steps": 100, "train.lr": 0.05,
                            "train.optimizer": optimizer if optimizer != "flow" else "sgd"})
    run = run_flow if optimizer == "flow" else run_training
    traj = run(config, keep_states=True)
    vocab = 6 + 2 + 3 + 1
    a = traj.states[:, :vocab]
    assert np.array_equal(a, np.broadcast_to(a[0], a.shape))
    assert not np.array_equal(traj.states[-1, vocab:], traj.states[0, vocab:])


def test_an_unknown_frozen_block_is_one_line():
    with pytest.raises(ConfigError, match=r"data.freeze='a\+w': 'w' is not a parameter block .* a, v"):
        run_flow(TINY.override({"data.freeze": "a+w"}))


def _saved_run(tmp_path, config, name="old"):
    traj = run_flow(config)
    directory = tmp_path / name
    directory.mkdir()
    traj.save(directory, config)
    return directory, traj


def test_a_start_from_a_run_with_nothing_new_continues_it(tmp_path):
    config = TINY.override({"flow.rtol": 1e-10, "flow.atol": 1e-14, "flow.t_max": 100.0})
    directory, old = _saved_run(tmp_path, config)
    resumed_config = config.override({"init.from_run": str(directory)})
    resumed = run_flow(resumed_config)
    # the start is the old final state, bit for bit, and the schedule is the task's own
    np.testing.assert_array_equal(starting_state(resumed_config, setup(config)[1]).theta0, old.final_state)
    assert resumed.info.old_subjects == 6 and resumed.info.phases[0]["subjects"] == [0, 6]
    # continuing: the flow to 100 + t equals the fresh flow to 100 + t (an autonomous field), to the solver's
    # tolerance
    times = 100.0 + resumed.t
    longer = run_flow(config.override({"flow.t_max": 200.0}), times=np.concatenate([[0.0], times]))
    np.testing.assert_allclose(resumed.fact_loss, longer.fact_loss[1:], rtol=1e-7, atol=1e-9)


def test_a_start_from_a_run_with_new_subjects_keeps_the_old_tokens(tmp_path):
    directory, old = _saved_run(tmp_path, TINY)
    config = TINY.override({"task.subjects": 9, "init.from_run": str(directory), "data.replay": 0.2})
    task, model, _ = setup(config)
    start = starting_state(config, model)
    assert start.old_subjects == 6
    _, old_model, _ = setup(TINY)
    a_old, v_old = old_model.token_parameters(torch.as_tensor(old.final_state))
    a, v = model.token_parameters(start.theta0)
    index = list(range(6)) + [9 + k for k in range(old_model.num_tokens - 6)]
    assert torch.equal(a[index], a_old) and torch.equal(v[index], v_old)
    assert torch.equal(a[6:9], torch.full((3,), config.init.scale, dtype=torch.float64))
    traj = run_flow(config)
    assert traj.info.phases[0]["subjects"] == [6, 9] and traj.info.phases[0]["replay"] == 0.2
    # the old facts were recalled; the new facts get learned
    assert (traj.p_correct[0, :6] > 0.5).all() and (traj.p_correct[0, 6:] < 0.5).all()
    assert (traj.p_correct[-1, 6:] > 0.5).all()


@pytest.mark.parametrize("change, message", [
    ({"task.relations": 3}, "task.relations=3: a run started from init.from_run keeps"),
    ({"task.subjects": 4}, "task.subjects=4: must be >= the old run's 6"),
    ({"task.facts": "structured", "task.subjects": 7}, "task.facts=.*"),
])
def test_an_incompatible_start_is_one_line(tmp_path, change, message):
    directory, _ = _saved_run(tmp_path, TINY)
    with pytest.raises(ConfigError, match=message):
        run_flow(TINY.override({"init.from_run": str(directory), **change}))


def test_a_sampled_loss_cannot_follow_a_schedule():
    config = TINY.override({"loss.kind": "sampled", "data.holdout": 1})
    with pytest.raises(ConfigError, match=r"^loss.kind='sampled': a fixed sample cannot follow a data sched"
                                          r".*; allowed: loss.kind=population$"):
        run_flow(config)
    plain = TINY.override({"loss.kind": "sampled"})  # the task's own frequencies: a sample can stand for them
    assert task_schedule(plain, FactTask(plain.task)) == (schedule_of(plain), None)


def test_simulate_init_from_on_the_command_line(tmp_path):
    cli = [sys.executable, "-m", "analysis.cli"]
    old = tmp_path / "old"
    base = ["--preset", "tiny", "--set", "task.facts=random", "--set", "task.subjects=6", "--quiet"]
    subprocess.run([*cli, "simulate", *base, "--out", str(old)], check=True, capture_output=True)
    new = tmp_path / "new"
    done = subprocess.run([*cli, "simulate", "--init-from", str(old), "--set", "task.subjects=8", "--set",
                           "data.replay=0.1", "--out", str(new), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    saved = __import__("json").loads((new / "config.json").read_text())
    assert saved["init"]["from_run"] == str(old) and saved["task"]["subjects"] == 8
    bad = subprocess.run([*cli, "simulate", "--init-from", str(tmp_path / "nowhere"), "--quiet"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a run directory" in bad.stderr


# ---------------------------------------------------------------------------------------------------
# The timeline analysis: per-fact events and groups, read from the record


def _record(p_correct: np.ndarray, t: np.ndarray, fact_weights: np.ndarray, old_subjects=None):
    """A bare trajectory whose p(a*) is ``p_correct`` (K, S, R); other per-fact arrays consistent with it."""
    from dynamics.records import RunInfo
    from dynamics.solvers import Cost, Status
    from dynamics.trajectory import Trajectory

    K, S, R = p_correct.shape
    zeros = np.zeros(K)
    info = RunInfo(kind="flow", status=Status.OK, status_time=None, message="", final_loss=0.0, num_params=1,
                   cost=Cost(), phases=[{"start": 0.0, "end": None, "subjects": [0, S], "replay": 0.0}],
                   old_subjects=old_subjects)
    return Trajectory(t=t, loss=zeros, relation_loss=zeros, subject_loss=zeros, fact_loss=-np.log(p_correct),
                      p_correct=p_correct, p_relation=np.ones_like(p_correct), p_subject=p_correct,
                      argmax_class=np.where(p_correct > 0.5, 2, 1).astype(np.int8),
                      facts=np.zeros((S, R), dtype=np.int64), fact_weights=fact_weights,
                      answers_per_relation=4, attention=np.zeros((K, 4)), norms={}, info=info)


def test_fact_events_are_the_crossings_of_one_half_in_log_t():
    from analysis.timeline import fact_events, groups_of, has_timeline

    t = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    p = np.empty((5, 3, 1))
    p[:, 0, 0] = [0.1, 0.3, 0.7, 0.9, 0.9]   # learned between t = 1 and 10: 1/2 at log-midpoint √10
    p[:, 1, 0] = [0.9, 0.7, 0.3, 0.2, 0.7]   # known, forgotten at √10 · ..., relearned between 100 and 1000
    p[:, 2, 0] = [0.9, 0.9, 0.9, 0.9, 0.9]   # known throughout: no event
    weights = np.array([[0.5], [0.5], [0.0]])
    traj = _record(p, t, weights, old_subjects=2)  # subject 1 trained before: its fact can be forgotten
    events = fact_events(traj)
    assert events.learned[0, 0] == pytest.approx(10 ** 0.5, rel=1e-12)
    assert events.forgotten[1, 0] == pytest.approx(10 ** 0.5, rel=1e-12)
    assert events.relearned[1, 0] == pytest.approx(10 ** 2.6, rel=1e-12)  # 0.2 -> 0.7 over 100 -> 1000
    assert np.isnan(events.learned[1:, 0]).all() and np.isnan(events.forgotten[[0, 2], 0]).all()
    groups = groups_of(traj)
    assert {k: v.tolist() for k, v in groups.items()} == {"unseen": [2], "old": [0, 1]}
    assert has_timeline(traj)
    plain = _record(p, t, np.full((3, 1), 1 / 3))
    assert not has_timeline(plain) and list(groups_of(plain)) == ["trained"]


def test_simulate_writes_the_timeline_only_when_the_data_change(tmp_path):
    from analysis.simulate import simulate

    plain = simulate(TINY, tmp_path / "plain")["flow"]
    assert plain.timeline is None and not (tmp_path / "plain" / "timeline.json").exists()
    held = simulate(TINY.override({"data.holdout": 2}), tmp_path / "held")["flow"]
    # simulate's own files, timeline included: the run can be replaced by a rerun
    from analysis.rundir import check_target
    check_target(tmp_path / "held", TINY.override({"data.holdout": 2}))
    assert (tmp_path / "held" / "timeline.png").is_file()
    unseen = held.timeline["unseen"]
    num_answers = TINY.task.relations * TINY.task.answers_per_relation
    assert unseen["loss_start"] == pytest.approx(math.log(num_answers), rel=1e-12)  # the symmetric start
    # the held-out curve, recomputed from the records: subjects 4, 5, relations of equal weight
    assert TINY.task.relation_zipf == 0
    traj = held.trajectory
    curve = traj.fact_loss[:, 4:, :].mean(axis=(1, 2))
    low, peak = int(np.argmin(curve)), int(np.argmax(curve))
    assert_close({k: unseen[k] for k in ("loss_min", "t_loss_min", "loss_max", "t_loss_max", "loss_end")},
                 {"loss_min": curve[low], "t_loss_min": traj.t[low], "loss_max": curve[peak],
                  "t_loss_max": traj.t[peak], "loss_end": curve[-1]}, rel=1e-12)
    # what the model says of subjects it never saw: first the relation's answers (below log|A|, measured
    # 1.10 vs 1.39 at t = 43), then a confident wrong one (hallucinating: far above log|A|, 4.1 at the end)
    assert unseen["loss_min"] < math.log(num_answers) - 0.1 and unseen["loss_end"] > math.log(num_answers) + 1
    assert unseen["max_fraction_hallucinating"] > 0.5
    assert held.timeline["groups"] == {"unseen": [4, 6], "trained": [0, 4]}
    # factrecall stages redoes the timeline of such a run
    (tmp_path / "held" / "timeline.json").unlink()
    from analysis.cli import main
    assert main(["stages", str(tmp_path / "held")]) == 0
    assert (tmp_path / "held" / "timeline.json").is_file()


@pytest.mark.slow  # 16 s on 2 cores
def test_gd_follows_the_flow_across_a_phase_start_at_order_one():
    # GD's step k trains w(k·lr); the flow switches at t1 exactly: the deviation is still O(lr)
    config = TINY.override({"data.warmup_subjects": 0.5, "data.warmup_time": 60.0, "flow.t_max": 200.0,
                            "train.optimizer": "gd"})
    deviations = []
    lrs = (0.4, 0.2, 0.1)
    for lr in lrs:
        gd = run_training(config.override({"train.lr": lr, "train.steps": int(200 / lr)}))
        flow = run_flow(config.override({"flow.rtol": 1e-10, "flow.atol": 1e-14}), times=gd.t)
        deviations.append(np.abs(gd.p_correct - flow.p_correct).max())
    order = np.polyfit(np.log(lrs), np.log(deviations), 1)[0]
    assert 0.9 < order < 1.1, (deviations, order)


def test_a_schedule_is_sweepable(tmp_path):
    from analysis.sweep import run_sweep

    grid = {"data.warmup_time": [25.0, 50.0], "data.warmup_subjects": [0.5]}
    rows = run_sweep(TINY, grid, tmp_path / "sweep")
    assert [row["status"] for row in rows] == ["ok", "ok"]
    short, warm = sorted(rows, key=lambda row: row["data.warmup_time"])
    assert short["final_loss"] != warm["final_loss"]
    # the warm-up point is the run of its config
    alone = run_flow(TINY.override({"data.warmup_time": 50.0, "data.warmup_subjects": 0.5}))
    assert warm["final_loss"] == pytest.approx(alone.final_loss, rel=1e-12)
