"""best_fit: prefer the node left fullest after the placement.

    score = 1 - (gpu_free_after / gpu_capacity + cpu_free_after / cpu_capacity) / 2

A node without GPUs counts its GPU part as full (nothing left to strand), and a
node with zero CPU capacity counts its CPU part as full.
"""

from __future__ import annotations

import numpy as np

from scoring.candidates import Candidates
from scoring.fragmentation import FloatArray
from scoring.state import MILLI_PER_GPU


def best_fit(candidates: Candidates) -> FloatArray:
    state, request, rows = candidates.state, candidates.request, candidates.rows
    gpu_capacity = state.gpu_count[rows] * MILLI_PER_GPU
    gpu_free_after = state.free_milli[rows].sum(axis=1) - request.gpu_milli
    cpu_capacity = state.cpu_capacity_milli[rows]
    cpu_free_after = state.cpu_free_milli[rows] - request.cpu_milli
    # Zero capacity: nothing is left free there, so that part counts as full.
    gpu_left = np.divide(
        gpu_free_after, gpu_capacity, out=np.zeros(len(rows)), where=gpu_capacity > 0
    )
    cpu_left = np.divide(
        cpu_free_after, cpu_capacity, out=np.zeros(len(rows)), where=cpu_capacity > 0
    )
    return 1.0 - (gpu_left + cpu_left) / 2.0  # type: ignore[no-any-return]
