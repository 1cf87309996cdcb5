"""Large states reuse freed memory blocks (dynamics.numerics.reused_large_blocks).

glibc's malloc maps every block above 32 MiB afresh and unmaps it when freed, so a flow whose state is that
large faults each temporary of its size in page by page at every evaluation. Inside ``compute_settings`` of
such a state the freed blocks are kept and reused: counted here by the process's minor page faults.
"""

from __future__ import annotations

import resource

import pytest
import torch

from dynamics import numerics

pytestmark = pytest.mark.skipif(numerics._glibc() is None, reason="glibc's malloc only")

BLOCK = 6_000_000  # float64 entries: 48 MB, above glibc's largest mmap threshold
PAGES = BLOCK * 8 // resource.getpagesize()


def _faults(times: int = 4) -> int:
    """Minor page faults of ``times`` evaluations that each make and drop three blocks of a large state's
    size (as a gradient does: its input, temporaries, its output), after one evaluation to warm up."""
    def evaluate():
        state = torch.ones(BLOCK, dtype=torch.float64)
        doubled = state * 2.0
        total = doubled + state
        del state, doubled, total

    evaluate()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        evaluate()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident() -> int:
    """The process's resident memory in pages."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1])


def test_a_large_state_reuses_freed_blocks_and_gives_them_back_after():
    large = torch.zeros(numerics.LARGE_STATE_BYTES // 8, dtype=torch.float64)
    outside = _faults()
    with numerics.compute_settings(large):
        inside = _faults()
        held = _resident()
    given_back = held - _resident()
    assert outside > 0.9 * 12 * PAGES  # each block faulted in afresh
    assert inside < outside / 2  # reused (glibc's aligned allocation carves some anew)
    assert given_back > 2 * PAGES  # the freed blocks the heap kept are returned when the flow ends


def test_a_small_state_changes_nothing():
    small = torch.zeros(1000, dtype=torch.float64)
    with numerics.compute_settings(small):
        inside = _faults()
    assert inside > 0.9 * 12 * PAGES


def test_nested_scopes_restore_only_when_the_outer_one_ends():
    with numerics.reused_large_blocks(), numerics.reused_large_blocks():
        pass
    with numerics.reused_large_blocks():
        with numerics.reused_large_blocks():
            pass
        inside = _faults()
    assert inside < 6 * PAGES  # half of what a flow outside the scope faults
    assert numerics._reusing == 0
