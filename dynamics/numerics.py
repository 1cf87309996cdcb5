"""CPU settings for the engine's inner loops: thread count and denormal flushing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SMALL_PROBLEM = 1 << 16  # parameters below which one intra-op thread is faster


@contextmanager
def compute_settings(theta: torch.Tensor) -> Iterator[None]:
    """Run an integration or a training loop with settings that suit it, then restore the previous ones.

    * Small problems use one intra-op thread: on tensors of a few thousand entries, waking and
      synchronising a thread pool costs more than the work, and stalls for milliseconds per operation
      when another process shares the cores (docs/performance.md).
    * Denormal floats are flushed to zero: parameters that the gradient never touches decay towards
      zero through the subnormal range, where CPU arithmetic is many times slower;
      values below 2.2e-308 carry no information for the flow.
    """
    threads = torch.get_num_threads()
    if theta.numel() < SMALL_PROBLEM and theta.device.type == "cpu":
        torch.set_num_threads(1)
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if flushed:
            torch.set_flush_denormal(False)
