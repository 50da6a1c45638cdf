"""Thread settings for the applications' small CPU workloads."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch


@contextlib.contextmanager
def intra_op_threads(threads: Optional[int]) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(threads)`` and restores the
    previous count afterwards; :obj:`None` leaves torch's setting alone.

    Tensors of about a million elements gain little from a second intra-op
    thread, and on cores shared with other busy processes the waiting threads
    of each parallel region spin and take CPU time from the thread doing the
    work (measured on the calibration: 4-5 times the CPU time with two threads
    than with one while two other processes were busy)."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
