"""class_placement: interactive pods on on-demand capacity, batch pods on spot and into fragments.

    interactive: score = (on_demand + 1 - preemptible_milli / gpu_capacity_milli) / 2
    batch:       score = (spot + 1 - free_milli / gpu_capacity_milli) / 2

``on_demand`` and ``spot`` are 1 on nodes of that capacity type, else 0; the
milli are the node's before the placement.  Interactive inference keeps to
capacity that is not reclaimed under it and away from nodes full of preemptible
batch work (which reclaims and restarts churn); batch takes the cheap, revocable
capacity and the partly used nodes, leaving whole nodes for interactive and
large pods.  A node without GPUs counts as empty (free share 1) and free of
preemptible work; a pod without GPUs is neutral (0.5 everywhere).
"""

from __future__ import annotations

import numpy as np

from scoring.candidates import Candidates
from scoring.fragmentation import FloatArray
from scoring.request import PodClass
from scoring.state import MILLI_PER_GPU, SPOT


def class_placement(candidates: Candidates) -> FloatArray:
    state, request, rows = candidates.state, candidates.request, candidates.rows
    if request.gpu_count == 0 or len(rows) == 0:
        return np.full(len(rows), 0.5)
    capacity = state.gpu_count[rows] * MILLI_PER_GPU
    spot = (state.capacity_type[rows] == SPOT).astype(float)
    if request.pod_class is PodClass.INTERACTIVE:
        # Zero GPU capacity: nothing preemptible there, the fraction counts as 0.
        preemptible = np.divide(
            state.preemptible_milli[rows], capacity, out=np.zeros(len(rows)), where=capacity > 0
        )
        return (1.0 - spot + 1.0 - preemptible) / 2.0  # type: ignore[no-any-return]
    # Zero GPU capacity: the node counts as empty (free share 1), no fragment to fill.
    free = np.divide(
        state.free_milli[rows].sum(axis=1), capacity, out=np.ones(len(rows)), where=capacity > 0
    )
    return (spot + 1.0 - free) / 2.0  # type: ignore[no-any-return]
