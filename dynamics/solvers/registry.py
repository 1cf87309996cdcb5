"""The one list of integration methods: each name with its kind, what it can use, and how it integrates.

Every other part of the project (the config's validation, the run entry points, the docs' tables) asks this
registry instead of listing method names itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from .auto import integrate_auto
from .explicit import ADAPTIVE_METHODS, integrate_explicit
from .implicit import SCIPY_METHODS, integrate_implicit
from .options import FlowProblem, SolverOptions
from .results import FlowResult


@dataclass(frozen=True)
class Method:
    """An integration method. ``kind``: ``explicit`` (Runge–Kutta), ``implicit`` (BDF-type, for stiff
    flows) or ``strategy`` (combines others). ``uses``: the Jacobian product it can take from the problem
    (``jacobian_vector``: matrix-free J·v; ``jacobian``: a dense P×P matrix; None). ``batched``: whether it
    integrates a batch of flows with shared steps (explicit methods only)."""

    name: str
    kind: str
    uses: str | None
    integrate: Callable[[FlowProblem, SolverOptions], FlowResult]
    batched: bool = False
    summary: str = ""


def _methods() -> dict[str, Method]:
    methods = {name: Method(name, "explicit", None, partial(integrate_explicit, name), batched=True,
                            summary="torchdiffeq adaptive Runge–Kutta")
               for name in ADAPTIVE_METHODS}
    methods["cvode"] = Method("cvode", "implicit", "jacobian_vector", partial(integrate_implicit, "cvode"),
                              summary="SUNDIALS CVODE: variable-order BDF, matrix-free GMRES")
    for name, scipy_name in SCIPY_METHODS.items():
        methods[name] = Method(name, "implicit", "jacobian", partial(integrate_implicit, name),
                               summary=f"SciPy {scipy_name} with a dense Jacobian (small models)")
    methods["auto"] = Method("auto", "strategy", "jacobian_vector", integrate_auto,
                             summary="dopri5, then cvode once the flow is stiff for long")
    return methods


METHODS: dict[str, Method] = _methods()


def get_method(name: str) -> Method:
    """The method called ``name``; a ValueError naming the allowed ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"method={name!r}: allowed " + ", ".join(METHODS))
    return METHODS[name]
