"""Geometries of steepest descent: the maps D that turn a gradient into the flow's direction
(:mod:`dynamics.geometry.maps`) and the registry that names them and says what each can do
(:mod:`dynamics.geometry.registry`; ``flow.geometry`` is one of its names)."""

from ..lazy import lazy_exports
from .registry import (
    GEOMETRIES,
    Geometry,
    SteepestDescent,
    entry_of,
    geometry_keys,
    get_geometry,
    make_geometry,
    register_geometry,
    unregister_geometry,
)

# the maps compute (torch), loaded when first read; the registry alone checks a config
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(
    ("DiagonalMetric", "ParameterBlock", "SignDescent", "SpectralDescent"), ".maps"))

__all__ = ["GEOMETRIES", "DiagonalMetric", "Geometry", "ParameterBlock", "SignDescent", "SpectralDescent",
           "SteepestDescent", "entry_of", "geometry_keys", "get_geometry", "make_geometry",
           "register_geometry", "unregister_geometry"]
