"""dynamics.lazy's three deferred imports on modules written for the test: a Lazy's bound arguments, a
package's public names imported on first read, and a package imported with one of its modules deferred until
one of its names is called. Written for the survivors of a mutation sample of dynamics/lazy.py
(docs/testing.md)."""

from __future__ import annotations

import sys

import pytest

from dynamics.lazy import Lazy, LazyAttributes, import_deferring, lazy_exports


def test_a_lazy_calls_its_target_with_its_arguments_before_the_calls_own():
    assert Lazy("operator:sub", (10,))(3) == 7
    assert Lazy("builtins:int")("ff", base=16) == 255


def test_lazy_attributes_are_the_targets_but_not_its_dunders():
    ordered = LazyAttributes("collections:OrderedDict")
    assert list(ordered.fromkeys("ab")) == ["a", "b"]
    with pytest.raises(AttributeError):
        ordered.__deepcopy__  # noqa: B018  (copy asks for it: not the target's)


def write_package(root, name, files):
    (root / name).mkdir()
    for file, text in files.items():
        (root / name / file).write_text(text)


def test_lazy_exports_import_a_name_on_its_first_read_and_keep_it(tmp_path, monkeypatch):
    write_package(tmp_path, "lazypkg", {
        "__init__.py": "from dynamics.lazy import lazy_exports\n"
                       "__getattr__, __dir__ = lazy_exports(__name__, {'answer': '.deep'})\n",
        "deep.py": "answer = 42\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazypkg
    monkeypatch.setitem(sys.modules, "lazypkg", lazypkg)
    assert "answer" not in vars(lazypkg) and "answer" in dir(lazypkg)
    assert lazypkg.answer == 42
    assert vars(lazypkg)["answer"] == 42  # an ordinary attribute from now on
    with pytest.raises(AttributeError, match="module 'lazypkg' has no attribute 'question'"):
        lazypkg.question  # noqa: B018
    getattr_, dir_ = lazy_exports("lazypkg", {"other": ".deep"})
    assert "other" in dir_() and "answer" in dir_()


def test_import_deferring_loads_the_deferred_module_on_the_first_call_of_its_names(tmp_path, monkeypatch):
    write_package(tmp_path, "deferpkg", {
        "__init__.py": "from .slow import double\n",
        "slow.py": "import sys\nsys.slow_imported = True\ndef double(x):\n    return 2 * x\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "slow_imported", False, raising=False)
    for name in ("deferpkg", "deferpkg.slow"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    package = import_deferring("deferpkg", "deferpkg.slow")
    assert not sys.slow_imported and "deferpkg.slow" not in sys.modules
    assert package.double(21) == 42
    assert sys.slow_imported
    assert import_deferring("deferpkg", "deferpkg.slow") is package  # imported already: returned as it is
