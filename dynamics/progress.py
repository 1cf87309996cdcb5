"""Progress bars on stderr for long work (plain text, also in notebooks)."""

from __future__ import annotations

import math
from collections.abc import Callable


def log_progress_bar(t_min: float, t_max: float, description: str, enabled: bool = True,
                     mininterval: float = 0.1) -> tuple[Callable[[float], None], Callable[[], None]]:
    """A tqdm bar advancing in log t from t_min to t_max; returns (update(t), close()). It shows the flow
    time reached, the wall time so far and an estimate of the time left at the pace so far in log t (a
    plateau is as quick per decade as a transition for an adaptive solver only roughly: an estimate)."""
    from tqdm.std import tqdm  # plain text on stderr, also in notebooks (no ipywidgets)

    bar = tqdm(total=1000, desc=description, disable=not enabled, leave=False, mininterval=mininterval,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}, ETA {remaining}]")
    span = math.log(t_max / t_min)

    def update(t: float) -> None:
        done = int(1000 * min(max(math.log(max(t, t_min) / t_min) / span, 0.0), 1.0))
        if done > bar.n:
            bar.set_description_str(f"{description} t={t:.4g}", refresh=False)  # drawn by the update
            bar.update(done - bar.n)

    return update, bar.close


def step_progress_bar(steps: int, description: str, enabled: bool = True
                      ) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A tqdm bar over ``steps`` steps; returns (update(k), close())."""
    from tqdm.std import tqdm

    bar = tqdm(total=steps, desc=description, disable=not enabled, leave=False, mininterval=0.2)
    return (lambda k: bar.update(1)), bar.close
