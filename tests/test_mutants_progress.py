"""dynamics.progress's bars as they are drawn on stderr: nothing when disabled, the count of steps, and the
share of log t reached with the flow time. Written for the survivors of a mutation sample of
dynamics/progress.py (docs/testing.md)."""

from __future__ import annotations

import pytest

from dynamics.progress import log_progress_bar, step_progress_bar


@pytest.mark.parametrize("bar", [lambda on: step_progress_bar(5, "train", enabled=on),
                                 lambda on: log_progress_bar(1e-2, 1e3, "flow", enabled=on)])
def test_a_disabled_bar_draws_nothing(bar, capsys):
    update, close = bar(False)
    update(1)
    close()
    assert capsys.readouterr().err == ""


def test_the_step_bar_counts_steps_of_its_total(capsys):
    update, close = step_progress_bar(5, "train")
    for k in range(5):
        update(k)
    close()
    assert "train:   0%|          | 0/5 [" in capsys.readouterr().err


def test_the_log_bar_shows_the_share_of_log_t_reached_and_the_time(capsys):
    update, close = log_progress_bar(1e-2, 1e3, "flow", mininterval=0.0)
    update(1.0)  # log(1 / 1e-2) / log(1e3 / 1e-2) = 2/5 of the way
    update(0.5)  # back in time: the bar does not move back
    update(1e4)  # past t_max: full
    close()
    drawn = capsys.readouterr().err
    assert "flow t=1:  40%|" in drawn
    assert "t=0.5" not in drawn
    assert "flow t=1e+04: 100%|" in drawn
