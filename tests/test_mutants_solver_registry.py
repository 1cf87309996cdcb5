"""The built-in integration methods as dynamics.solvers.registry lists them: names, kinds, the Jacobian
products they use and the integrator each is bound to. ``_methods()`` runs at import, before a mutation run
picks a mutant, so it is called again here (docs/testing.md). Written for the survivors of a mutation sample
of dynamics/solvers/registry.py."""

from __future__ import annotations

from dynamics.solvers import auto, explicit, implicit, sliding
from dynamics.solvers.registry import METHODS, _methods

EXPECTED = [  # name, kind, uses, batched, the integrator, its bound arguments
    *((name, "explicit", None, True, explicit.integrate_explicit, (name,))
      for name in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")),
    ("cvode", "implicit", "jacobian_vector", False, implicit.integrate_implicit, ("cvode",)),
    *((name, "implicit", "jacobian", False, implicit.integrate_implicit, (name,))
      for name in ("bdf", "radau", "lsoda")),
    ("auto", "strategy", "jacobian_vector", False, auto.integrate_auto, ()),
    ("sliding", "event", None, False, sliding.integrate_sliding, ()),
]


def test_each_built_in_method_is_bound_to_its_integrator():
    methods = _methods()
    listed = [(m.name, m.kind, m.uses, m.batched, m.integrate.resolve(), m.integrate.args) for m in methods]
    assert listed == EXPECTED
    assert [m.exact_geometry for m in methods] == [None] * 10 + ["sign"]
    assert METHODS.builtin == tuple(m.name for m in methods)
