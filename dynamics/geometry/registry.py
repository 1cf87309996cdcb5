"""The one list of steepest-descent geometries: each name with how it is built and what it can do.

The config's validation (``flow.geometry`` and the keys a geometry reads), the fields
(:mod:`dynamics.fields`), the run builder (:mod:`dynamics.problem`), the budget, the stage theory and
``compare`` ask an entry of this registry instead of testing geometry names. A geometry from outside the
package is one :func:`register_geometry` call, or an entry point of :data:`ENTRY_POINT_GROUP` naming a
callable that makes it (docs/extending.md, "A geometry").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    import torch

    from .maps import ParameterBlock


class SteepestDescent(Protocol):
    """What a geometry's map offers the fields: ``direction`` D(g) and ``negative_direction`` −D(g) of a
    gradient g of shape (P,) (and of a batch (B, P) when its entry is ``batched``); ``smooth``: whether
    ``derivative`` (D'(g)·δg) is offered. A ``linear`` entry's map also has ``scale`` (P, or None for 1)
    and ``row_scale()``."""

    name: str
    smooth: bool

    def direction(self, grad: torch.Tensor) -> torch.Tensor: ...

    def negative_direction(self, grad: torch.Tensor) -> torch.Tensor: ...


Builder = Callable[["torch.Tensor | None", "list[ParameterBlock]", float], SteepestDescent]


@dataclass(frozen=True)
class Geometry:
    """A steepest-descent geometry. ``build(scale, blocks, eps)``: its map, from the model's diagonal metric
    P (``scale``: a tensor of θ's shape, 0 on frozen blocks, or None for 1), its parameter blocks and
    ``flow.geometry_eps``.

    Capabilities, asked by the layers instead of the name: ``linear``: D(g) = P g, so the field is −P∇L with
    Jacobian −P H (dense Jacobians, GD's modified flow, the step estimate from the stiffness at θ(0));
    ``batched``: the map acts on a batch of gradients (B, P) at once (else a batch is mapped row by row);
    ``keys``: the config keys it reads besides ``flow.geometry`` (a key another geometry reads, set on this
    one, is refused: :meth:`check_keys`); ``needs_eps``: its field is discontinuous at ε = 0 (refused there:
    an adaptive solver chatters), and ``suggested_eps`` is the smallest ε the refusal advises;
    ``reference_eps``: the ε a flow of this geometry gets when a command picks it for the user (``compare``)
    and the config leaves ε at 0; ``gradient_flow_theory``: the first-order rates of the gradient flow
    describe it."""

    name: str
    build: Builder
    summary: str = ""
    linear: bool = False
    batched: bool = True
    keys: tuple[str, ...] = ()
    needs_eps: bool = False
    suggested_eps: float = 0.0
    reference_eps: float = 0.0
    gradient_flow_theory: bool = False

    def check_keys(self, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        """Refuse (one ConfigError line) a key that another geometry reads and this one does not, set in
        ``values`` (dotted key → value) to other than its value in ``defaults``."""
        for key in sorted(geometry_keys() - set(self.keys)):
            if key in values and values[key] != defaults[key]:
                read = " or ".join(g.name for g in GEOMETRIES.values() if key in g.keys)
                raise ConfigError(f"{key}={values[key]!r}: has no effect on flow.geometry={self.name!r} "
                                  f"(read by flow.geometry={read}); allowed: {defaults[key]!r} (the "
                                  f"default), or flow.geometry={read}")


# the built-in builders import their maps (torch) when a map is first built: a config is checked without them
def _euclidean(scale: torch.Tensor | None, blocks: list[ParameterBlock], eps: float) -> SteepestDescent:
    from .maps import DiagonalMetric

    return DiagonalMetric(scale)


def _sign(scale: torch.Tensor | None, blocks: list[ParameterBlock], eps: float) -> SteepestDescent:
    from .maps import SignDescent

    return SignDescent(scale, eps)


def _spectral(scale: torch.Tensor | None, blocks: list[ParameterBlock], eps: float) -> SteepestDescent:
    from .maps import SpectralDescent

    return SpectralDescent(blocks, scale, eps)


def _builtin() -> list[Geometry]:
    # measured ε: the suggested ones finish to t = 20 on the tiny task with dopri5, cvode and (sign) auto; the
    # reference ones keep compare's flows close to their optimizers (the sign flow chatters at ε = 0 from a
    # symmetric start, the spectral flow grows stiff as ε shrinks: docs/geometry.md)
    geometries = [
        Geometry("euclidean", _euclidean, linear=True,
                 gradient_flow_theory=True, summary="gradient flow in the metric P: D(g) = P g"),
        Geometry("sign", _sign, keys=("flow.geometry_eps",),
                 needs_eps=True, suggested_eps=1e-4, reference_eps=1e-8,
                 summary="ℓ∞ steepest descent (signSGD's and Adam's flow): D(g) = x/√(x² + ε²), x = P g"),
        Geometry("spectral", _spectral,
                 keys=("flow.geometry_eps",), needs_eps=True, suggested_eps=1e-3, reference_eps=1e-7,
                 summary="spectral-norm steepest descent per matrix block (Muon's flow): D(G) = U Vᵀ"),
    ]
    return geometries


ENTRY_POINT_GROUP = "factrecall.geometries"
GEOMETRIES: Registry[Geometry] = Registry("flow.geometry", ENTRY_POINT_GROUP, _builtin())


def geometry_keys() -> set[str]:
    """Every config key some registered geometry reads (besides ``flow.geometry``)."""
    return {key for g in GEOMETRIES.values() for key in g.keys}


def get_geometry(name: str) -> Geometry:
    """The geometry called ``name``; a ConfigError naming the allowed ones otherwise."""
    return GEOMETRIES.get_entry(name)


def entry_of(metric: SteepestDescent) -> Geometry:
    """The registry entry of a built map (by its ``name``); a ValueError for a map whose geometry is not
    registered (its capabilities would be guessed)."""
    name = getattr(metric, "name", None)
    if name not in GEOMETRIES:
        raise ValueError(f"a geometry map named {name!r} is not registered (registered: "
                         + ", ".join(GEOMETRIES) + "); register_geometry(...) it first")
    return GEOMETRIES[name]


def register_geometry(geometry: Geometry) -> Geometry:
    """Add ``geometry`` to the registry (from anywhere: a user's own file), so that ``flow.geometry`` may name
    it in every command and API. A name already registered, or not an identifier, is refused (ValueError);
    returns the entry."""
    return GEOMETRIES.register(geometry)


def unregister_geometry(name: str) -> None:
    """Remove a geometry added by :func:`register_geometry` (the built-in ones stay: ValueError)."""
    GEOMETRIES.unregister(name)


def make_geometry(name: str, scale: torch.Tensor | None, blocks: list[ParameterBlock], eps: float
                  ) -> SteepestDescent:
    """The map of the geometry called ``name`` with metric ``scale``, the model's ``blocks`` and
    regularisation ``eps`` (each geometry reads what it needs)."""
    return get_geometry(name).build(scale, blocks, eps)
