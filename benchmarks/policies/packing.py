"""GpuPacking, as the FGD paper's simulator scores it (``gpu_packing_score.go``).

The pod's GPUs are taken least-free first (``SortedMilliGpuLeftIndexList(true)``,
a stable sort, so equal GPUs in index order), skipping GPUs that cannot hold one
share; the node scores, from best to worst (integer arithmetic throughout):

    1. every GPU taken was already in use (a sharing pod on a shared GPU):
           max(100 - sum(free_milli * 100 / 1000 over the GPUs taken) / 10, 50)
    2. some GPU taken is fully free, on a node with a GPU in use:
           max(50 - number of fully free GPUs taken, 33)
    3. every GPU of the node is fully free:
           max(33 - gpu_count, gpu_count)

A CPU-only pod scores 0 everywhere.  The highest score wins, ties to the lowest
rank.  GPUs: ``gpuSelMethod: best``, which takes the very GPUs the score walks
(the tightest GPU for a sharing pod, the lowest-index free GPUs otherwise).

Where the Go code differs from the usual description (the Go code is followed):

* Case 3 looks at the GPUs only: a node whose GPUs are all fully free counts as
  idle even when CPU-only pods run on it.
* Case 3 is capped below by the node's GPU count, not by 0 (the comment says
  "capped in the range [minNodeScore, maxNodeScore/3]"): ``max(33 - n, n)``,
  which only differs from ``33 - n`` on nodes with more than 16 GPUs.
* Case 1 truncates twice: each GPU's free percentage (``free * 100 / 1000``),
  then the sum ``/ 10``.  A sharing pod takes one GPU, so case 1 is
  ``100 - free_milli // 100`` in 91..100 and the floor of 50 never binds.
* A whole-GPU pod only ever takes fully free GPUs, so it scores case 2 or 3.
"""

from __future__ import annotations

import numpy as np

from benchmarks.policies.base import Choice, PolicyContext
from benchmarks.policies.common import (
    MAX_NODE_SCORE,
    NodeAggregates,
    best_fit_gpus,
    dense_rank,
    feasible_mask,
    pick_best,
    tightest_free_milli,
)
from scoring import ClusterState, PodRequest
from scoring.state import MILLI_PER_GPU, BoolArray, IntArray

SHARED_FLOOR = MAX_NODE_SCORE // 2  # 50
FRESH_CEILING = MAX_NODE_SCORE // 2  # 50
FRESH_FLOOR = MAX_NODE_SCORE // 3  # 33
IDLE_CEILING = MAX_NODE_SCORE // 3  # 33


def idle_node_scores(gpu_count: IntArray) -> IntArray:
    """Case 3 for each node, as if all its GPUs were free: ``max(33 - n, n)``."""
    return np.maximum(IDLE_CEILING - gpu_count, gpu_count)


def packing_scores(
    gpu_count: IntArray,
    full_gpus: IntArray,
    tightest_free_milli: IntArray,
    request_gpu_count: int,
    request_is_sharing: bool,
) -> IntArray:
    """GpuPacking score of each node.

    gpu_count, full_gpus : ndarray of shape (n_nodes,)
        GPUs on the node, and how many of them are fully free.
    tightest_free_milli : ndarray of shape (n_nodes,)
        For a sharing pod, the free milli of the least-free GPU that holds it
        (read only where it is in 1..1000); ignored for other pods.
    """
    if request_gpu_count == 0:
        return np.zeros(len(gpu_count), dtype=np.int64)
    if request_is_sharing:
        shared = MAX_NODE_SCORE - (tightest_free_milli * 100 // MILLI_PER_GPU) // 10
        in_use = np.where(
            tightest_free_milli >= MILLI_PER_GPU,
            max(FRESH_CEILING - 1, FRESH_FLOOR),
            np.maximum(shared, SHARED_FLOOR),
        )
    else:
        in_use = np.full(len(gpu_count), max(FRESH_CEILING - request_gpu_count, FRESH_FLOOR))
    return np.where(full_gpus == gpu_count, idle_node_scores(gpu_count), in_use)


class PackingPolicy:
    def __init__(self, context: PolicyContext) -> None:
        self.rank = dense_rank(context.rank)
        self.nodes = NodeAggregates()

    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        self.nodes.refresh(state)
        mask = feasible_mask(state, request, self.nodes)
        tightest = self._tightest_free_milli(state, request, mask)
        scores = packing_scores(
            state.gpu_count,
            self.nodes.full_gpus,
            tightest,
            request.gpu_count,
            request.is_sharing,
        )
        row = pick_best(mask, scores, self.rank)
        if row is None:
            return None
        return Choice(row, best_fit_gpus(state.free_milli[row], request))

    def _tightest_free_milli(
        self, state: ClusterState, request: PodRequest, mask: BoolArray
    ) -> IntArray:
        """Free milli of the tightest GPU that holds a sharing pod, on the feasible nodes.

        A feasible node whose in-use GPUs are all too full takes a fully free
        GPU (1000); only nodes with an in-use GPU that fits need the GPU scan.
        """
        tightest = np.full(state.n_nodes, MILLI_PER_GPU, dtype=np.int64)
        if request.is_sharing:
            milli = request.milli_per_gpu
            shared = (mask & (self.nodes.max_partial_free_milli >= milli)).nonzero()[0]
            tightest[shared] = tightest_free_milli(state.free_milli[shared], milli)
        return tightest
