"""Large states reuse freed memory blocks (dynamics.numerics.reused_large_blocks).

glibc's malloc maps every block above 32 MiB afresh and unmaps it when freed, so a flow whose state is that
large faults each temporary of its size in page by page at every evaluation. Inside ``compute_settings`` of
such a state the freed blocks are kept and reused: counted here by the process's minor page faults.

Each count is taken in a fresh interpreter: what a process did before (a large flow leaves free chunks in
the heap, which a later block of that size takes instead of a fresh mapping) changes its counts, and the
suite's workers run tests in any order.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from dynamics import numerics

pytestmark = pytest.mark.skipif(numerics._glibc() is None, reason="glibc's malloc only")

BLOCK = 6_000_000  # float64 entries: 48 MB, above glibc's largest mmap threshold
PAGES = BLOCK * 8 // resource.getpagesize()
# Reused blocks take a few evaluations to settle: Python's small objects land between the large blocks,
# and where an aligned block does not fit the hole left, it is carved from fresh pages. Over 16
# evaluations (48 blocks) inside the scope, 40 fresh interpreters faulted 1, 4, 5 or 9 blocks in all
# (0 to 8 of them in the first four evaluations), so the tests count 16 and allow a third.
EVALUATIONS = 16
FRESH = 3 * EVALUATIONS * PAGES  # what evaluations that map every block afresh fault

_MEASURE = f"""
import json, resource, torch
EVALUATIONS = {EVALUATIONS}
from dynamics import numerics

def faults(times=EVALUATIONS):
    # minor page faults of `times` evaluations that each make and drop three blocks of a large state's size
    # (as a gradient does: its input, temporaries, its output), after one evaluation to warm up
    def evaluate():
        state = torch.ones({BLOCK}, dtype=torch.float64)
        doubled = state * 2.0
        total = doubled + state
        del state, doubled, total
    evaluate()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        evaluate()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1])
"""

_SCENARIOS = {
    "large": """
large = torch.zeros(numerics.LARGE_STATE_BYTES // 8, dtype=torch.float64)
outside = faults()
with numerics.compute_settings(large):
    inside = faults()
    held = resident()
result = {"outside": outside, "inside": inside, "given_back": held - resident()}
""",
    "small": """
with numerics.compute_settings(torch.zeros(1000, dtype=torch.float64)):
    result = {"inside": faults()}
""",
    "nested": """
with numerics.reused_large_blocks(), numerics.reused_large_blocks():
    pass
with numerics.reused_large_blocks():
    with numerics.reused_large_blocks():
        pass
    inside = faults()
result = {"inside": inside, "open": numerics._reusing}
""",
}


def _measured(scenario: str) -> dict[str, int]:
    """The counts of ``scenario`` in a fresh interpreter."""
    code = _MEASURE + _SCENARIOS[scenario] + "print(json.dumps(result))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_large_state_reuses_freed_blocks_and_gives_them_back_after():
    counts = _measured("large")
    assert counts["outside"] > 0.9 * FRESH  # each block faulted in afresh
    assert counts["inside"] < counts["outside"] / 3  # reused, but for a few carved anew (see EVALUATIONS)
    assert counts["given_back"] > 2 * PAGES  # the freed blocks the heap kept are returned when the flow ends


def test_a_small_state_changes_nothing():
    assert _measured("small")["inside"] > 0.9 * FRESH


def test_nested_scopes_restore_only_when_the_outer_one_ends():
    counts = _measured("nested")
    assert counts["inside"] < FRESH / 3  # reused, but for a few carved anew (see EVALUATIONS)
    assert counts["open"] == 0
