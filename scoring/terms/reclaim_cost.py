"""reclaim_cost: an over-share team's batch pods go where taking them back later is cheap.

    score = min(1, (preemptible_milli + request gpu_milli) / gpu_capacity_milli)

for a preemptible batch pod of a team in ``ClusterState.over_share_teams``: the
share of the node that preemptible batch work would hold after the placement.
Such pods run on borrowed GPUs and are the first victims when the lenders come
back; gathered on nodes that hold nothing else, one reclaim frees whole GPUs (and
whole nodes) instead of a stray GPU next to pods that may not be evicted.  Every
other pod is neutral (0.5 everywhere), as is a node without GPUs.
"""

from __future__ import annotations

import numpy as np

from scoring.candidates import Candidates
from scoring.fragmentation import FloatArray
from scoring.state import MILLI_PER_GPU, is_reclaimable


def reclaim_cost(candidates: Candidates) -> FloatArray:
    state, request, rows = candidates.state, candidates.request, candidates.rows
    if (
        request.gpu_count == 0
        or not is_reclaimable(request)
        or request.team not in state.over_share_teams
    ):
        return np.full(len(rows), 0.5)
    capacity = state.gpu_count[rows] * MILLI_PER_GPU
    after = state.preemptible_milli[rows] + request.gpu_milli
    share = np.divide(after, capacity, out=np.full(len(rows), 0.5), where=capacity > 0)
    return np.minimum(share, 1.0)  # type: ignore[no-any-return]
