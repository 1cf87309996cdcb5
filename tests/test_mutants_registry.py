"""dynamics.registry.Registry on a registry of its own: entries of an installed package's entry point loaded
on the first look-up, registration refusals, removal, and the one-line refusal of an unknown name. Written
for the survivors of a mutation sample of dynamics/registry.py (docs/testing.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dynamics import plugins
from dynamics.errors import ConfigError
from dynamics.registry import Registry

GROUP = "factrecall.test_things"


@dataclass(frozen=True)
class Thing:
    name: str
    value: int = 0


@pytest.fixture
def things(monkeypatch):
    """A registry whose group has one installed entry point, registering ``b``."""
    registry = Registry("thing.kind", GROUP, [Thing("a")])

    class Point:
        def load(self):
            return lambda: registry.register(Thing("b"))

    monkeypatch.setattr(plugins, "entry_points", lambda group: [Point()] if group == GROUP else [])
    monkeypatch.setattr(plugins, "_LOADED", set())
    return registry


def test_an_installed_entry_point_registers_its_entry_on_the_first_look_up(things):
    assert list(things) == ["a", "b"]
    assert len(things) == 2
    assert things["b"] == Thing("b")
    assert things.builtin == ("a",)


def test_a_name_registered_twice_is_refused_unless_replaced(things):
    with pytest.raises(ValueError, match=r"^register \(thing.kind\): 'a': already registered$"):
        things.register(Thing("a", 1))
    assert things.register(Thing("a", 2), replace=True) == Thing("a", 2)
    assert things["a"].value == 2


def test_a_config_value_must_be_an_identifier_a_command_need_not(things):
    with pytest.raises(ValueError, match=r"^register \(thing.kind\): 'x-y' must be an identifier"):
        things.register(Thing("x-y"))
    commands = Registry("command", None, [], identifiers=False)
    commands.register(Thing("sweep-plot"))
    assert list(commands) == ["sweep-plot"]


def test_unregister_removes_an_added_entry_quietly_and_refuses_a_built_in_one(things):
    things.register(Thing("c"))
    things.unregister("c")
    things.unregister("c")  # already gone: nothing to do
    del things["b"]
    assert list(things) == ["a"]
    with pytest.raises(ValueError, match=r"^unregister \(thing.kind\): 'a' is built in$"):
        things.unregister("a")


def test_an_unknown_name_is_refused_in_one_line_naming_the_allowed_ones(things):
    with pytest.raises(ConfigError) as refused:
        things.get_entry("z")
    assert str(refused.value) == "thing.kind='z': must be one of a, b"
    assert things.get_entry("b") == Thing("b")
