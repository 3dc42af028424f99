"""Which GPU slots of a node a request would take.

Whole-GPU requests take the lowest-index fully free GPUs (the device plugin's
order); a GPU-sharing request takes the tightest GPU that fits, lowest index on
ties, so shared GPUs fill up before fresh ones are broken into.
"""

from __future__ import annotations

import numpy as np

from scoring.request import PodRequest
from scoring.state import MILLI_PER_GPU, IntArray


def gpus_that_fit(free_milli: IntArray, request: PodRequest) -> IntArray:
    """Number of GPUs per row that could each hold one share of the request.

    free_milli : ndarray of shape (n_rows, max_gpus)
    """
    return (free_milli >= request.milli_per_gpu).sum(axis=1)  # type: ignore[no-any-return]


def tightest_gpu(free_milli: IntArray, milli: int) -> IntArray:
    """Slot of the GPU with the least free milli that still holds ``milli``; -1 if none."""
    fits = free_milli >= milli
    # Non-fitting slots get a key above any real free value, so argmin skips them;
    # argmin returns the first minimum, which is the lowest index on ties.
    key = np.where(fits, free_milli, MILLI_PER_GPU + 1)
    slot = key.argmin(axis=1)
    return np.where(fits.any(axis=1), slot, -1)


def lowest_free_gpus(free_milli: IntArray, count: int) -> IntArray:
    """The ``count`` lowest-index fully free slots per row, shape (n_rows, count).

    Rows with fewer fully free GPUs get -1 in the missing places.
    """
    full = free_milli >= MILLI_PER_GPU
    # A stable sort on "not full" puts full slots first, in index order.
    order = np.argsort(~full, axis=1, kind="stable")[:, :count]
    taken_full = np.take_along_axis(full, order, axis=1)
    slots = np.where(taken_full, order, -1)
    if count > slots.shape[1]:
        # More GPUs asked for than any node has slots: the missing ones are -1.
        missing = np.full((slots.shape[0], count - slots.shape[1]), -1, dtype=slots.dtype)
        slots = np.hstack([slots, missing])
    return slots


def choose_gpus(free_milli: IntArray, request: PodRequest) -> IntArray:
    """Slots the request would take on each row, shape (n_rows, gpu_count)."""
    if request.gpu_count == 0:
        return np.zeros((free_milli.shape[0], 0), dtype=np.int64)
    if request.is_sharing:
        return tightest_gpu(free_milli, request.milli_per_gpu)[:, None]
    return lowest_free_gpus(free_milli, request.gpu_count)
