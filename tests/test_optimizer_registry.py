"""The optimizer registry: one name per optimizer, what each entry answers (the keys it reads, its flow as
lr → 0, where it may be used), and a user's own optimizer registered from outside the package running in
``simulate --train`` and ``compare`` and refused cleanly once removed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dynamics.config import ConfigError, resolve_config
from dynamics.config.loading import unread_train_keys
from dynamics.optimizers import (
    OPTIMIZERS,
    Optimizer,
    Stepper,
    StepSettings,
    get_optimizer,
    make_stepper,
    optimizers_for,
    register_optimizer,
    unregister_optimizer,
)


def _heavy_ball(theta0: torch.Tensor, lr: float, settings: StepSettings) -> Stepper:
    """Gradient descent with heavy-ball momentum μ and step η(1 − μ): its steps k·η follow the gradient flow
    as η → 0 (the momentum's mean step is η g)."""
    mu = settings.momentum
    return Stepper.single(theta0, lambda leaves: torch.optim.SGD(leaves, lr=lr * (1 - mu), momentum=mu))


HEAVY_BALL = Optimizer("heavy_ball", _heavy_ball,
                       ("train.optimizer", "train.lr", "train.steps", "train.momentum"), "euclidean",
                       batches=False, full_batch=False, label="heavy ball", marker="*", color="C8",
                       summary="full-batch GD with heavy-ball momentum")


@pytest.fixture
def heavy_ball():
    register_optimizer(HEAVY_BALL)
    try:
        yield HEAVY_BALL
    finally:
        unregister_optimizer("heavy_ball")


def _tiny(**overrides):
    return resolve_config("tiny", overrides={"flow.t_max": 4.0, "flow.points": 8, **overrides})


def test_each_use_lists_its_optimizers_and_refuses_the_others():
    assert optimizers_for("train") == ("gd", "sgd", "adam", "signsgd", "muon")
    assert optimizers_for("compare") == ("gd", "sgd", "adam", "signsgd", "muon", "muon_svd")
    assert optimizers_for("fit") == ("adam", "adamw")
    assert {name: entry.flow for name, entry in OPTIMIZERS.items()} == {
        "gd": "euclidean", "sgd": "euclidean", "adam": "sign", "signsgd": "sign", "muon": "spectral",
        "muon_svd": "spectral", "adamw": None}
    with pytest.raises(ConfigError, match=r"^train.optimizer='muon_svd': must be one of gd, sgd, adam, "):
        _tiny(**{"train.optimizer": "muon_svd"})
    with pytest.raises(ConfigError, match=r"^optimizer='sgd': must be one of adam, adamw$"):
        get_optimizer("sgd", "fit", "optimizer")


def test_register_refuses_a_taken_name_keys_outside_train_and_an_unknown_use(heavy_ball):
    with pytest.raises(ValueError, match="already registered"):
        register_optimizer(HEAVY_BALL)
    with pytest.raises(ValueError, match="train"):
        register_optimizer(Optimizer("other", _heavy_ball, ("model.dim",), "euclidean"))
    with pytest.raises(ValueError, match="uses"):
        register_optimizer(Optimizer("other", _heavy_ball, (), "euclidean", uses=("sweep",)))
    with pytest.raises(ValueError, match="flow"):
        register_optimizer(Optimizer("other", _heavy_ball, (), None, uses=("compare",)))
    with pytest.raises(ValueError, match="built in"):
        unregister_optimizer("gd")


def test_the_entry_says_which_train_keys_are_read(heavy_ball):
    config = _tiny(**{"train.optimizer": "heavy_ball"})
    unread = unread_train_keys(config, train=True)
    assert "train.momentum" not in unread and "train.lr" not in unread
    assert unread["train.batch_size"].startswith("only sgd, adam, signsgd, muon read it")
    assert "heavy_ball" in unread_train_keys(_tiny(**{"train.optimizer": "gd"}), True)["train.momentum"]


def test_a_registered_optimizer_steps_as_its_stepper_says(heavy_ball):
    theta = make_stepper("heavy_ball", torch.zeros(3, dtype=torch.float64), 0.1, StepSettings(momentum=0.5))
    theta.step(torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64))
    theta.step(torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64))
    # v₁ = g, v₂ = μ v₁ + g = 1.5 g; θ = −η(1 − μ)(v₁ + v₂) = −0.125 g
    torch.testing.assert_close(theta.theta, torch.tensor([-0.125, 0.0, 0.25], dtype=torch.float64),
                               rtol=1e-15, atol=0)


@pytest.mark.slow
def test_a_registered_optimizer_trains_and_is_compared_with_its_flow(heavy_ball, tmp_path, capsys):
    from analysis.cli import main
    from analysis.compare import CompareSpec, compare
    from analysis.stages.theory import theory_applies

    cli = ["--preset", "tiny", "--quiet", "--set", "flow.t_max=4", "--set", "flow.points=8"]
    assert main(["simulate", *cli, "--train", "--set", "train.optimizer=heavy_ball", "--set",
                 "train.momentum=0.5", "--set", "train.lr=0.2", "--set", "train.steps=20",
                 "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "train" / "trajectory.npz").is_file()
    capsys.readouterr()
    assert main(["simulate", *cli, "--train", "--set", "train.optimizer=heavy_ball", "--set",
                 "train.batch_size=64", "--out", str(tmp_path / "refused")]) == 2
    assert capsys.readouterr().err.strip().startswith("factrecall: error: train.batch_size=64: has no effect")
    config = _tiny(**{"train.momentum": 0.5})
    comparison = compare(config, CompareSpec(lrs=(0.2, 0.1), optimizers=("heavy_ball",), sharpness_points=4))
    assert comparison.geometries == {"heavy_ball": "euclidean"}
    assert [r.status for r in comparison.runs] == ["ok", "ok"]
    coarse, fine = comparison.runs
    assert fine.max_loss_deviation < coarse.max_loss_deviation  # it approaches its flow as lr → 0
    info = comparison.runs[0].trajectory.info
    assert theory_applies(config, info=info)[1] == theory_applies(config)[1]  # it follows the gradient flow
    unregister_optimizer("heavy_ball")
    capsys.readouterr()
    assert main(["simulate", *cli, "--train", "--set", "train.optimizer=heavy_ball",
                 "--out", str(tmp_path / "gone")]) == 2
    assert capsys.readouterr().err.strip() == ("factrecall: error: train.optimizer='heavy_ball': must be one "
                                               "of gd, sgd, adam, signsgd, muon")
    register_optimizer(HEAVY_BALL)  # the fixture removes it again


def test_the_documented_optimizer_is_the_one_tested():
    """docs/extending.md's example, run as written: the same steps as :data:`HEAVY_BALL`."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    section = text.split("## An optimizer")[1].split("\n## ")[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/extending.md", "exec"), namespace)
    documented = namespace["HEAVY_BALL"]
    assert (documented.reads, documented.flow, documented.batches) == (HEAVY_BALL.reads, "euclidean", False)
    steps = []
    for entry in (documented, HEAVY_BALL):
        stepper = entry.stepper(torch.zeros(2, dtype=torch.float64), 0.1, StepSettings(momentum=0.5))
        for _ in range(3):
            stepper.step(torch.tensor([1.0, -1.0], dtype=torch.float64))
        steps.append(stepper.theta)
    torch.testing.assert_close(*steps, rtol=0, atol=0)
