"""The packing floor: how few GPUs any policy could leave idle at arrived = 100%.

At arrived = 100% the GPU request equals capacity, so the unallocated GPUs are at
least the milli that GPU-sharing pods leave unusable on the GPUs they occupy.
Packing the sharing pods that have arrived by then offline, first-fit decreasing
into 1000-milli GPUs, estimates that floor.  It is an estimate, not a bound: a
policy that lets some large sharing pods fail can go below it, and GPU-model
constraints are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scoring import MILLI_PER_GPU, PodRequest


def first_fit_decreasing_waste_milli(shares_milli: Sequence[int]) -> int:
    """Milli left over on the GPUs that FFD packing of ``shares_milli`` opens."""
    room = np.zeros(len(shares_milli), dtype=np.int64)
    opened = 0
    for share in sorted(shares_milli, reverse=True):
        fits = np.flatnonzero(room[:opened] >= share)
        if len(fits):
            room[fits[0]] -= share
        else:
            room[opened] = MILLI_PER_GPU - share
            opened += 1
    return int(room[:opened].sum())


def packing_floor_pct(workload: Sequence[PodRequest], capacity_milli: int) -> float:
    """Unallocated GPU % that FFD packing of the sharing pods arrived by 100% leaves."""
    arrived = 0
    shares: list[int] = []
    for request in workload:
        arrived += request.gpu_milli
        if arrived > capacity_milli:
            break
        if request.is_sharing:
            shares.append(request.milli_per_gpu)
    return round(100.0 * first_fit_decreasing_waste_milli(shares) / capacity_milli, 2)
