"""The exact (ε = 0) sign flow of a config: the run's own gradient, Hessian products and metric handed to
the event-driven Filippov integrator of :mod:`dynamics.solvers.filippov` (docs/geometry.md, "ε = 0: the
exact sign flow")."""

from __future__ import annotations

import numpy as np

from .config import Config
from .errors import ConfigError
from .problem import BuiltRun, build_run, time_grid
from .solvers.filippov import SignFlowResult, integrate_sign_flow


def exact_sign_refusal(config: Config) -> str | None:
    """Why the flow of ``config`` is not the ε = 0 sign flow the sliding integrator follows (None: it is)."""
    f = config.flow
    if f.geometry != "sign":
        return (f"flow.geometry={f.geometry!r}: the sliding method integrates the sign flow only; allowed: "
                "flow.geometry=sign with flow.geometry_eps=0")
    if f.geometry_eps != 0:
        return (f"flow.geometry_eps={f.geometry_eps!r}: the sliding method integrates the ε = 0 sign flow; "
                "allowed: 0 (a smoothed flow takes dopri5, cvode or auto)")
    if f.modified_lr > 0:
        return (f"flow.modified_lr={f.modified_lr!r}: GD's modified flow is not a sign flow; allowed: 0 with "
                "the sliding method")
    return None


def exact_sign_flow(config: Config, times: np.ndarray | None = None, built: BuiltRun | None = None
                    ) -> SignFlowResult:
    """Integrate dθ/dt = −sign(P ∇L(θ)) of ``config`` (``flow.geometry=sign``, ``flow.geometry_eps=0``)
    exactly, as a Filippov system (:func:`~dynamics.solvers.filippov.integrate_sign_flow`), from the run's
    start on ``times`` (default: the config's record grid), with the run's own objective (its closed-form
    gradient and Hessian products where the model has them, autodiff otherwise) and metric P (0 on frozen
    blocks).
    A config it does not fit, or a data schedule (its field changes with t), is refused (ConfigError)."""
    if (why := exact_sign_refusal(config)) is not None:
        raise ConfigError(why)
    built = built or build_run(config)
    if built.tasks is not None:
        raise ConfigError("data.*: a data schedule changes the loss with t; the sliding method integrates "
                          "one loss; allowed: the task's own frequencies throughout")
    field = built.functions()[0]  # the run's own field, which carries its gradient and Hessian products
    grid = time_grid(config) if times is None else np.asarray(times, dtype=np.float64)
    return integrate_sign_flow(field.gradient, field.hessian_vector, built.start.theta0, grid,
                               field.direction_map.scale, max_steps=config.flow.max_steps)
