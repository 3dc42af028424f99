"""Random, as the FGD paper's simulator runs it (``random_score.go``, ``-gpusel random``).

    node : uniform over the feasible nodes
    GPUs : a sharing pod: uniform over the node's GPUs with enough free milli
           (fully free ones included); a whole-GPU pod: the lowest-index free GPUs

In Go, ``PreScore`` draws ``rand.Intn(len(nodes))`` over the nodes that passed
the filters and ``Score`` gives that node 100 and the others 0; the GPU draw is
``allocateGpuIdBasedOnRandomFit`` (reservoir sampling, uniform) and whole-GPU
pods go through ``AllocateExclusiveGpuId``.  Here the feasible nodes are listed
in rank order before the draw, so a run is a function of (rank, rng) alone; the
draws come from the run's numpy generator, not Go's ``math/rand`` stream.
"""

from __future__ import annotations

import numpy as np

from benchmarks.policies.base import Choice, PolicyContext
from benchmarks.policies.common import NodeAggregates, feasible_mask, lowest_free_slots
from scoring import ClusterState, PodRequest
from scoring.state import IntArray


def fitting_slots(free_row: IntArray, milli: int) -> list[int]:
    """GPU slots of one node that can hold ``milli``."""
    return [slot for slot, free in enumerate(free_row.tolist()) if free >= milli]


class RandomPolicy:
    def __init__(self, context: PolicyContext) -> None:
        self.rng = context.rng
        self.rows_by_rank = np.argsort(context.rank, kind="stable")
        self.nodes = NodeAggregates()

    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        self.nodes.refresh(state)
        mask = feasible_mask(state, request, self.nodes)
        candidates = self.rows_by_rank[mask[self.rows_by_rank]]
        if len(candidates) == 0:
            return None
        row = int(candidates[self.rng.integers(len(candidates))])
        free_row = state.free_milli[row]
        if request.is_sharing:
            slots = fitting_slots(free_row, request.milli_per_gpu)
            return Choice(row, (slots[int(self.rng.integers(len(slots)))],))
        return Choice(row, lowest_free_slots(free_row, request.gpu_count))
