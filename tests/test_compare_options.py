"""``compare``'s options do what they say: every fresh-batch optimizer runs at each of ``--batch-sizes``;
a repeated value is refused (it would be reported as another seed); every documented optimizer is accepted
alone and in any position of ``--optimizers``."""

from __future__ import annotations

import pytest

import analysis.compare.command as compare_command
from analysis.cli import main
from analysis.compare import CompareSpec
from analysis.compare.compute import check_budget, plan_runs
from dynamics.config import ConfigError, resolve_config
from dynamics.optimizers import optimizers_for

TINY = resolve_config("tiny", overrides={"flow.t_max": 4.0, "flow.points": 8})


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "signsgd", "muon"])
def test_every_fresh_batch_optimizer_runs_at_each_batch_size(optimizer):
    config = TINY.override({"train.batch_size": 999})  # not one of --batch-sizes: must not be used
    runs = plan_runs(config, CompareSpec(lrs=(0.2, 0.1), optimizers=(optimizer,), batch_sizes=(16, 64),
                                         seeds=2))
    assert sorted({r.batch_size for r in runs}) == [16, 64]
    assert len(runs) == 2 * 2 * 2 and len({r.name for r in runs}) == len(runs)


def test_full_batch_runs_have_no_batch_size():
    spec = CompareSpec(lrs=(0.2,), optimizers=("gd", "adam", "muon_svd"), batch_sizes=(16, 64),
                       full_batch=True)
    runs = plan_runs(TINY, spec)
    assert [(r.optimizer, r.batch_size) for r in runs] == [("gd", None), ("adam", None), ("muon_svd", None)]


@pytest.mark.parametrize("flag, values, needle", [
    ("--lrs", "0.02,0.02", "0.02 is repeated"),
    ("--lrs", "0.1,0.1000001", "the same run '0.1'"),  # one run name lr0.1 for both
    ("--optimizers", "signsgd,signsgd", "'signsgd' is repeated"),
    ("--batch-sizes", "64,64", "64 is repeated"),
])
def test_a_repeated_value_is_refused_with_one_line(flag, values, needle, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("compare ran although a value was repeated")

    monkeypatch.setattr(compare_command, "compare", never)
    out = tmp_path / "cmp"
    code = main(["compare", "--preset", "tiny", "--out", str(out), "--quiet", flag, values])
    captured = capsys.readouterr()
    lines = captured.err.strip("\n").splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err
    assert lines[0].startswith(f"factrecall: {flag}=") or flag in lines[0]
    assert needle in lines[0] and "--seeds" in lines[0]
    assert not out.exists()


def test_a_repeated_value_is_refused_by_the_python_api_too():
    with pytest.raises(ConfigError, match="--optimizers='gd,sgd,gd': 'gd' is repeated"):
        CompareSpec(optimizers=("gd", "sgd", "gd"))
    with pytest.raises(ConfigError, match="--lrs"):
        CompareSpec(lrs=(0.4, 0.4))


ORDERS = [(name,) for name in optimizers_for("compare")] + [
    ("gd", "muon_svd"), ("muon_svd", "gd"), ("signsgd", "muon_svd"), ("muon_svd", "adam", "sgd")]


@pytest.mark.parametrize("optimizers", ORDERS, ids=[",".join(o) for o in ORDERS])
def test_every_documented_optimizer_passes_the_budget_check_in_any_position(optimizers):
    check_budget(TINY, CompareSpec(lrs=(0.2,), optimizers=optimizers, batch_sizes=(16,), seeds=1))


@pytest.mark.slow  # about 10 s: the spectral flow and its exact reference at the runs' times
def test_muon_svd_alone_runs_from_the_cli(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--preset", "tiny", "--set", "flow.t_max=1.0", "--set", "flow.points=8", "--out",
                 str(out), "--quiet", "--lrs", "0.1", "--optimizers", "muon_svd"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "muon_svd_lr0.1_full" in captured.out


def test_fitted_orders_of_a_fresh_batch_optimizer_use_its_largest_batch():
    # the deviation of the small batch is noise (flat in lr); the largest batch's is lr: order 1 exactly
    from types import SimpleNamespace

    from analysis.compare.compute import _orders

    def run(batch, lr, deviation):
        return SimpleNamespace(optimizer="adam", status="ok", lr=lr, batch_size=batch,
                               max_loss_deviation=deviation, max_param_distance=deviation,
                               spec=SimpleNamespace(full_batch=False))

    runs = [run(b, lr, lr if b == 64 else 10.0) for b in (16, 64) for lr in (0.4, 0.2, 0.1)]
    adam = _orders(runs).by_optimizer["adam"]
    assert adam["lrs"] == [0.1, 0.2, 0.4] and adam["max_loss_deviation"] == pytest.approx([0.1, 0.2, 0.4])
    assert adam["order_loss"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("extra, needle", [
    (["--optimizers", "gd", "--seeds", "2"], "--seeds=2: has no effect"),
    (["--optimizers", "gd,muon_svd", "--batch-sizes", "64"], "--batch-sizes='64': has no effect"),
    (["--optimizers", "gd,adam", "--full-batch", "--seeds", "2"], "--seeds=2: has no effect"),
    (["--optimizers", "gd,sgd", "--full-batch"], "--full-batch: has no effect"),
    (["--optimizers", "sgd", "--no-modified"], "--no-modified: has no effect"),
])
def test_an_option_no_run_reads_is_refused(extra, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare_command, "compare", lambda *a, **k: pytest.fail("compare ran"))
    code = main(["compare", "--preset", "tiny", "--out", str(tmp_path / "cmp"), "--quiet", *extra])
    lines = capsys.readouterr().err.strip("\n").splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "allowed: leave it out" in lines[0]


@pytest.mark.parametrize("extra", [["--optimizers", "gd,sgd", "--seeds", "2", "--batch-sizes", "16"],
                                   ["--optimizers", "gd,adam", "--full-batch", "--no-modified"],
                                   ["--optimizers", "gd"]])
def test_options_that_runs_read_pass(extra, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(compare_command, "compare", lambda config, spec, log: ran.append(spec) or
                        pytest.skip("stopped after the checks"))
    with pytest.raises(pytest.skip.Exception):
        main(["compare", "--preset", "tiny", "--out", str(tmp_path / "cmp"), "--quiet", *extra])
    assert len(ran) == 1


def test_progress_note_counts_runs_and_estimates_the_time_left():
    from analysis.compare.compute import progress_note

    assert progress_note(1, 4, 10.0) == "1/4, 10 s, about 30 s left"  # 3 runs left at 10 s each
    assert progress_note(3, 4, 30.0) == "3/4, 30 s, about 10 s left"
    assert progress_note(4, 4, 41.0) == "4/4, 41 s"


def _stopped_flow(status_time: float):
    """A reference flow that stopped too_slow at ``status_time`` (what compare sees from run_flow)."""
    from types import SimpleNamespace

    from dynamics.solvers import Status
    info = SimpleNamespace(ok=False, status=Status.TOO_SLOW, status_time=status_time, message="too slow")
    return SimpleNamespace(info=info, t=[0.0, status_time])


def test_a_reference_flow_that_stops_is_refused_before_any_discrete_run(monkeypatch):
    """The spectral reference at compare's ε = 1e-7 stops early on tiny at t_max 400: compare must say so
    before training (it used to train every run first and then advise tolerances it overrides)."""
    import analysis.compare.compute as compute
    from analysis.compare import compare
    from dynamics.errors import RunError

    monkeypatch.setattr(compute, "run_flow", lambda config, **k: _stopped_flow(2.717))
    monkeypatch.setattr(compute, "detect_stages", lambda flow: type("S", (), {"summary": lambda self: ""})())
    monkeypatch.setattr(compute, "run_discrete", lambda *a, **k: pytest.fail("trained without a reference"))
    with pytest.raises(RunError) as stop:
        compare(resolve_config("tiny"), CompareSpec(lrs=(0.1,), optimizers=("muon_svd",)))
    message = str(stop.value)
    assert "\n" not in message and "spectral flow stopped early (too_slow at t = 2.717; " in message
    assert "the reference of --optimizers muon_svd, flow.geometry_eps=1e-07)" in message
    assert "--set flow.t_max=2.7 (reached)" in message
    assert "--set flow.geometry=spectral --set flow.geometry_eps=0.001" in message


def test_the_smoother_reference_is_advised_only_when_every_optimizer_follows_it():
    """With gd beside muon_svd, ``flow.geometry=spectral`` is refused (gd follows the gradient flow), so
    only the shorter horizon is advised."""
    from analysis.compare.compute import reference_stopped

    spec = CompareSpec(lrs=(0.1,), optimizers=("gd", "muon_svd"))
    message = reference_stopped(resolve_config("tiny"), spec, "spectral", _stopped_flow(0.0123))
    assert "the reference of --optimizers muon_svd, flow.geometry_eps=1e-07)" in message
    assert "flow.t_max=0.012 (reached)" in message and "flow.geometry=" not in message


@pytest.mark.slow
def test_the_advice_of_a_stopped_reference_works(tmp_path, capsys):
    """Following each way out of the refusal runs the comparison (tiny, muon_svd at compare's ε)."""
    argv = ["compare", "--preset", "tiny", "--optimizers", "muon_svd", "--lrs", "0.1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 1
    advice = capsys.readouterr().err.split("allowed: ")[1]
    for k, way in enumerate(advice.split(" or ")):
        sets = way.split(" (")[0].split()
        assert main([*argv, *sets, "--out", str(tmp_path / str(k))]) == 0, way
