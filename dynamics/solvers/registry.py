"""The one list of integration methods: each name with its kind, what it can use, and how it integrates.

Every other part of the project (the config's validation, the run entry points, the docs' tables) asks this
registry instead of listing method names itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..lazy import Lazy
from ..registry import Registry

if TYPE_CHECKING:
    from .options import FlowProblem, SolverOptions
    from .results import FlowResult

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")  # torchdiffeq's, by name
SCIPY_METHODS = {"bdf": "BDF", "radau": "Radau", "lsoda": "LSODA"}  # our name -> scipy.integrate class


@dataclass(frozen=True)
class Method:
    """An integration method. ``kind``: ``explicit`` (Runge–Kutta), ``implicit`` (BDF-type, for stiff
    flows), ``strategy`` (combines others) or ``event`` (steps from one discontinuity of the field to the
    next). ``uses``: the Jacobian product it can take from the problem (``jacobian_vector``: matrix-free
    J·v; ``jacobian``: a dense P×P matrix; None). ``batched``: whether it integrates a batch of flows with
    shared steps (explicit methods only). ``exact_geometry``: the one geometry it integrates, at ε = 0
    (its discontinuous field, which the others refuse), None for any geometry at any ε."""

    name: str
    kind: str
    uses: str | None
    integrate: Callable[[FlowProblem, SolverOptions], FlowResult]
    batched: bool = False
    summary: str = ""
    exact_geometry: str | None = None


def _methods() -> list[Method]:
    # each integrator is imported when it first integrates (torch, torchdiffeq, SciPy): a config is checked
    # without them
    explicit = "dynamics.solvers.explicit:integrate_explicit"
    implicit = "dynamics.solvers.implicit:integrate_implicit"
    methods = [Method(name, "explicit", None, Lazy(explicit, (name,)), batched=True,
                      summary="torchdiffeq adaptive Runge–Kutta") for name in ADAPTIVE_METHODS]
    methods.append(Method("cvode", "implicit", "jacobian_vector", Lazy(implicit, ("cvode",)),
                          summary="SUNDIALS CVODE: variable-order BDF, matrix-free GMRES"))
    methods += [Method(name, "implicit", "jacobian", Lazy(implicit, (name,)),
                       summary=f"SciPy {scipy_name} with a dense Jacobian (small models)")
                for name, scipy_name in SCIPY_METHODS.items()]
    methods.append(Method("auto", "strategy", "jacobian_vector", Lazy("dynamics.solvers.auto:integrate_auto"),
                          summary="dopri5, then cvode once the flow is stiff for long"))
    methods.append(Method("sliding", "event", None, Lazy("dynamics.solvers.sliding:integrate_sliding"),
                          exact_geometry="sign", summary="the ε = 0 sign flow event by event, with Filippov "
                          "sliding (small models)"))
    return methods


METHODS: Registry[Method] = Registry("method", None, _methods())


def get_method(name: str) -> Method:
    """The method called ``name``; a ConfigError (a ValueError) naming the allowed ones otherwise."""
    return METHODS.get_entry(name)
