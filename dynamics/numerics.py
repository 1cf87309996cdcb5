"""CPU settings for the engine's inner loops: thread count, denormal flushing, reuse of large blocks."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch

SMALL_PROBLEM = 1 << 16  # parameters below which one intra-op thread is faster

# glibc's malloc serves every block above its mmap threshold (at most 32 MiB) by a fresh mapping and
# unmaps it when freed, so each later block of that size is faulted in page by page again: at 10^6 facts
# (a 65 MB state) that was a fifth of the process's CPU time, in the kernel. For states of at least this
# many bytes the flow runs with mmap off (M_MMAP_MAX = 0) and the heap's top never trimmed: freed blocks
# stay in the heap for the next evaluation's temporaries; the heap is trimmed when the flow ends.
LARGE_STATE_BYTES = 32 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (malloc.h) and glibc's defaults
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int


@contextmanager
def compute_settings(theta: torch.Tensor) -> Iterator[None]:
    """Run an integration or a training loop with settings that suit it, then restore the previous ones.

    * Small problems use one intra-op thread: on tensors of a few thousand entries, waking and
      synchronising a thread pool costs more than the work, and stalls for milliseconds per operation
      when another process shares the cores (docs/performance.md).
    * Denormal floats are flushed to zero: parameters that the gradient never touches decay towards
      zero through the subnormal range, where CPU arithmetic is many times slower;
      values below 2.2e-308 carry no information for the flow.
    * States of ``LARGE_STATE_BYTES`` or more (on the CPU, with glibc) reuse freed blocks instead of
      mapping fresh pages for every temporary of their size (:func:`reused_large_blocks`).
    """
    threads = torch.get_num_threads()
    if theta.numel() < SMALL_PROBLEM and theta.device.type == "cpu":
        torch.set_num_threads(1)
    flushed = torch.set_flush_denormal(True)
    large = theta.device.type == "cpu" and theta.numel() * theta.element_size() >= LARGE_STATE_BYTES
    try:
        with reused_large_blocks(large):
            yield
    finally:
        torch.set_num_threads(threads)
        if flushed:
            torch.set_flush_denormal(False)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not all(hasattr(libc, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc


_reusing = 0  # how many reused_large_blocks scopes are open (they nest: a flow inside a study's flow)


@contextmanager
def reused_large_blocks(active: bool = True) -> Iterator[None]:
    """With glibc, turn malloc's mmap and heap trimming off while the block runs (freed large blocks are
    reused, not unmapped), then restore glibc's defaults and give the heap's free memory back
    (malloc_trim). Elsewhere, or with ``active`` false, nothing."""
    global _reusing
    libc = _glibc() if active else None
    if libc is None:
        yield
        return
    if _reusing == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
    _reusing += 1
    try:
        yield
    finally:
        _reusing -= 1
        if _reusing == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
