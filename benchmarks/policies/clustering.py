"""GpuClustering, as the FGD paper's simulator scores it (``gpu_clustering_score.go``).

Pods fall in classes by their GPU request (``GetGpuAffinityFromPodAnnotation``):
``share-gpu`` (one GPU, less than 1000 milli), ``1-gpu``, ``2-gpu``, ... (whole
GPUs); a CPU-only pod has no class and scores 0 everywhere.  In int64:

    fill  = 25 * (8000 - node free GPU milli) / 8000
    score = fill + 75   the node hosts pods of this class and no other class
            fill + 50   it hosts this class and others
            fill + 25   it hosts no GPU pod
            fill        it hosts only other classes

The highest score wins, ties to the lowest rank.  GPUs: ``gpuSelMethod: best``
(tightest GPU for a sharing pod, lowest-index free GPUs otherwise).

Where the Go code differs from the usual description (the Go code is followed):

* "Empty" means "hosts no GPU pod": the classes are counted over the node's
  GPU pods only (``GpuAffinity``), so a node running only CPU-only pods scores
  like an empty one.
* ``fill`` is int64 arithmetic left to right, ``25 * (8000 - free) / 8000``,
  truncated toward zero (it would go negative on a node with more than 8 GPUs).

Bookkeeping.  The classes a node hosts cannot be read off ``ClusterState``, so
the policy counts them itself: the simulator calls ``placed(state, request,
choice)`` after applying a choice, on any policy that has that method, and a
simulator that removes pods must call ``released(state, request, choice)``.
The counts start empty (the policy must see every pod the cluster hosts) and
restart when a state of another shape comes in.
"""

from __future__ import annotations

import numpy as np

from benchmarks.policies.base import Choice, PolicyContext
from benchmarks.policies.common import (
    MAX_NODE_SCORE,
    MAX_SPEC_GPU_MILLI,
    NodeAggregates,
    best_fit_gpus,
    dense_rank,
    feasible_mask,
    pick_best,
    trunc_div,
)
from scoring import ClusterState, PodRequest
from scoring.state import BoolArray, IntArray

SHARE_CLASS = 0
"""Column of the ``share-gpu`` class; whole-GPU pods asking for k GPUs are column k."""

ONLY_THIS_CLASS = MAX_NODE_SCORE * 3 // 4  # 75
THIS_AND_OTHER_CLASSES = MAX_NODE_SCORE * 2 // 4  # 50
NO_CLASS = MAX_NODE_SCORE // 4  # 25
ONLY_OTHER_CLASSES = 0
FILL_RANGE = MAX_NODE_SCORE // 4  # 25


def pod_class(request: PodRequest) -> int | None:
    """The request's class column, None for a CPU-only pod."""
    if request.gpu_count == 0:
        return None
    return SHARE_CLASS if request.is_sharing else request.gpu_count


def class_bases(classes_hosted: IntArray) -> IntArray:
    """Base scores, shape (2, n_nodes): row 0 if the node hosts the pod's class, row 1 if not.

    classes_hosted : ndarray of shape (n_nodes,), how many classes each node hosts
    """
    return np.stack(
        [
            np.where(classes_hosted == 1, ONLY_THIS_CLASS, THIS_AND_OTHER_CLASSES),
            np.where(classes_hosted == 0, NO_CLASS, ONLY_OTHER_CLASSES),
        ]
    )


def clustering_scores(
    gpu_free_milli: IntArray, hosts_pod_class: BoolArray, bases: IntArray
) -> IntArray:
    """GpuClustering score of each node for a GPU pod.

    gpu_free_milli : ndarray of shape (n_nodes,), free milli summed over the node's GPUs
    hosts_pod_class : ndarray of shape (n_nodes,), whether the node hosts the pod's class
    bases : ndarray of shape (2, n_nodes), from :func:`class_bases`
    """
    fill = trunc_div(FILL_RANGE * (MAX_SPEC_GPU_MILLI - gpu_free_milli), MAX_SPEC_GPU_MILLI)
    return fill + np.where(hosts_pod_class, bases[0], bases[1])  # type: ignore[no-any-return]


class ClusteringPolicy:
    def __init__(self, context: PolicyContext) -> None:
        self.rank = dense_rank(context.rank)
        self.nodes = NodeAggregates()
        # Per node and class column, the GPU pods placed there; sized on first use.
        self.pods_by_class = np.zeros((0, 0), dtype=np.int64)
        self.classes_hosted = np.zeros(0, dtype=np.int64)
        self.bases = class_bases(self.classes_hosted)

    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        self.nodes.refresh(state)
        self._size_for(state)
        mask = feasible_mask(state, request, self.nodes)
        column = pod_class(request)
        if column is None:
            scores = np.zeros(state.n_nodes, dtype=np.int64)
        else:
            # A class wider than every node is hosted nowhere (and fits nowhere).
            hosts = (
                self.pods_by_class[:, column] > 0
                if column < self.pods_by_class.shape[1]
                else np.zeros(state.n_nodes, dtype=bool)
            )
            scores = clustering_scores(self.nodes.total_free_milli, hosts, self.bases)
        row = pick_best(mask, scores, self.rank)
        if row is None:
            return None
        return Choice(row, best_fit_gpus(state.free_milli[row], request))

    def placed(self, state: ClusterState, request: PodRequest, choice: Choice) -> None:
        """Count the pod's class on its node; the simulator calls this after placing."""
        self._count(state, request, choice.row, +1)

    def released(self, state: ClusterState, request: PodRequest, choice: Choice) -> None:
        """Forget the pod's class on its node; call this after removing a placed pod."""
        self._count(state, request, choice.row, -1)

    def _count(self, state: ClusterState, request: PodRequest, row: int, step: int) -> None:
        column = pod_class(request)
        if column is None:
            return
        self._size_for(state)
        before = int(self.pods_by_class[row, column])
        self.pods_by_class[row, column] = before + step
        if before == 0 and step > 0:
            self.classes_hosted[row] += 1
        elif before + step == 0:
            self.classes_hosted[row] -= 1
        self.bases[:, row] = class_bases(self.classes_hosted[row : row + 1])[:, 0]

    def _size_for(self, state: ClusterState) -> None:
        """Start the counts empty for a state of another shape (none of its pods seen yet)."""
        if self.pods_by_class.shape != (state.n_nodes, state.max_gpus + 1):
            self.pods_by_class = np.zeros((state.n_nodes, state.max_gpus + 1), dtype=np.int64)
            self.classes_hosted = np.zeros(state.n_nodes, dtype=np.int64)
            self.bases = class_bases(self.classes_hosted)
