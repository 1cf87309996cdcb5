"""tests/mutation.py's own arithmetic: which arguments are modules, which file a mutant comes from, the
stratified draw that a larger size extends, and the pooled score of several modules (docs/testing.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mutation  # noqa: E402


def test_the_leading_package_files_and_globs_are_the_modules_and_a_shell_expanded_pycache_is_passed_over():
    targets = ["dynamics/io.py", "dynamics/models/*", "dynamics/config/__pycache__", "dynamics/run.py",
               "tests/test_npz.py", "-k", "not slow_one"]
    assert mutation.split_targets(targets) == (
        ["dynamics/io.py", "dynamics/models/*", "dynamics/run.py"],
        ["tests/test_npz.py", "-k", "not slow_one"])


def test_the_command_line_splits_at_the_double_dash():
    args = mutation.parse(["dynamics/io.py", "dynamics/run.py", "--sample", "3", "--", "tests/test_npz.py",
                           "-k", "not x"])
    assert (args.modules, args.tests, args.sample) == (
        ["dynamics/io.py", "dynamics/run.py"], ["tests/test_npz.py", "-k", "not x"], 3)


def test_a_mutant_name_gives_its_file():
    assert mutation.module_of("dynamics.models.tokens.x_encode__mutmut_3") == "dynamics/models/tokens.py"
    assert mutation.module_of("dynamics.problem.xǁProblemǁ__init____mutmut_1") == "dynamics/problem.py"
    assert mutation.module_of("dynamics.models.x_build__mutmut_2") == "dynamics/models/__init__.py"


NAMES = ([f"dynamics.io.x_f__mutmut_{i}" for i in range(40)]
         + [f"dynamics.run.x_g__mutmut_{i}" for i in range(3)])


def test_the_draw_takes_n_per_module_or_a_share_of_a_large_one_and_a_larger_n_extends_a_smaller_one():
    small, large = mutation.draw(NAMES, 4, 0.0, seed=1), mutation.draw(NAMES, 8, 0.0, seed=1)
    assert [mutation.module_of(n) for n in small].count("dynamics/io.py") == 4
    assert [mutation.module_of(n) for n in small].count("dynamics/run.py") == 3  # all it has
    assert set(small) < set(large)
    assert len(mutation.draw(NAMES, 4, 0.25, seed=1)) == 10 + 3  # ⌈0.25 · 40⌉ of io.py
    assert mutation.draw(NAMES, 4, 0.0, seed=2) != small


def test_the_pooled_score_weights_each_module_by_its_mutants():
    # 100 mutants at 9/10 and 300 at 20/20: p = 0.25 · 0.9 + 0.75 · 1
    p, low, high = mutation.pooled([(100, 10, 9), (300, 20, 20), (7, 0, 0)])
    assert p == pytest.approx(0.975, rel=1e-12)
    assert low < p < high < 1
    # one module: the effective sample size is its own, so the interval is its Wilson interval
    assert mutation.pooled([(100, 10, 9)])[1:] == pytest.approx(mutation.wilson(9, 10), rel=1e-12)
    # all killed: no variance, Wilson's at all the draws
    everything = mutation.pooled([(100, 10, 10), (50, 5, 5)])
    assert everything[1:] == pytest.approx(mutation.wilson(15, 15), rel=1e-12)
