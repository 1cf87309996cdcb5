"""Thread policy for small tensor work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SMALL_PROBLEM = 1 << 16  # parameters below which one intra-op thread is faster


@contextmanager
def threads_for(theta: torch.Tensor) -> Iterator[None]:
    """Run small problems on one intra-op thread, then restore the setting.

    On tensors of a few thousand entries, waking and synchronising a thread pool costs more than the
    work, and stalls for milliseconds per operation when another process shares the cores (measured:
    SGD on Figure 5 ran 20x slower on two threads than on one while the machine was busy).
    """
    before = torch.get_num_threads()
    if theta.numel() < SMALL_PROBLEM and theta.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
