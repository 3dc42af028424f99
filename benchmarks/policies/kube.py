"""kube-scheduler's NodeResourcesFit scoring: LeastAllocated (the default) and MostAllocated.

Per resource r of cpu, memory and nvidia.com/gpu (weight 1 each), in int64
(``least_allocated.go``, ``most_allocated.go``, ``resource_allocation.go`` of
kubernetes/kubernetes, NodeResourcesFit's scoring strategies since v1.23):

    requested_r = what the node's pods request + what this pod requests
    least_r     = (allocatable_r - requested_r) * 100 / allocatable_r, 0 if requested_r > allocatable_r
    most_r      = min(requested_r, allocatable_r) * 100 / allocatable_r
    score       = sum(score_r * weight_r) / sum(weight_r)

over the resources that take part: a resource the node has none of
(allocatable 0) is skipped, weight included; an extended resource (the GPU) the
pod does not request is skipped too.  No resource left: score 0.  The highest
score wins.

What this models: the GPU resource is counted in milli-GPU, requested = the
node's used milli + the pod's milli, allocatable = gpu_count * 1000 (the real
``nvidia.com/gpu`` counts whole devices and cannot be shared); CPU in milli and
memory in MiB (the ratios equal kube's in bytes).  GPUs: the tightest GPU for a
sharing pod, the lowest-index free GPUs otherwise.  Requests are taken as given.

What it leaves out: the other default score plugins (NodeResourcesBalancedAllocation,
ImageLocality, TaintToleration, NodeAffinity, PodTopologySpread, InterPodAffinity)
and their weights; the non-zero defaults (100m CPU, 200 MiB) for containers that
set no request; and kube-scheduler's tie-break, which picks uniformly at random
among the best nodes, where this one takes the lowest rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.policies.base import Choice, PolicyContext
from benchmarks.policies.common import (
    MAX_NODE_SCORE,
    NodeAggregates,
    best_fit_gpus,
    dense_rank,
    feasible_mask,
    pick_best,
)
from scoring import ClusterState, PodRequest
from scoring.state import MILLI_PER_GPU, BoolArray, IntArray

WEIGHT = 1
"""Every resource weighs 1 (cpu, memory and nvidia.com/gpu): the weighted sum is the plain sum."""

ResourceScorer = Callable[[IntArray, IntArray, IntArray], IntArray]


def least_requested_scores(
    requested: IntArray, allocatable: IntArray, safe_allocatable: IntArray
) -> IntArray:
    """``leastRequestedScore`` per node; ``safe_allocatable`` is allocatable with 0 as 1.

    Requests beyond allocatable score 0 (Go's early return), here through max(., 0).
    """
    return np.maximum(allocatable - requested, 0) * MAX_NODE_SCORE // safe_allocatable  # type: ignore[no-any-return]


def most_requested_scores(
    requested: IntArray, allocatable: IntArray, safe_allocatable: IntArray
) -> IntArray:
    """``mostRequestedScore`` per node (requests beyond allocatable count as allocatable)."""
    return np.minimum(requested, allocatable) * MAX_NODE_SCORE // safe_allocatable


@dataclass(frozen=True)
class Allocatable:
    """What the nodes offer of each resource taking part, with the guards worked out once.

    amounts : one ndarray of shape (n_nodes,) per resource
    safe_amounts : the same with 0 replaced by 1
    safe_weight_sum : ndarray of shape (n_nodes,), the weight of the resources the
        node has (allocatable > 0), at least 1
    """

    amounts: tuple[IntArray, ...]
    safe_amounts: tuple[IntArray, ...]
    safe_weight_sum: IntArray

    @classmethod
    def of(cls, amounts: Sequence[IntArray]) -> Allocatable:
        # Zero allocatable: kube skips the resource.  Dividing by 1 instead scores it 0
        # (what is requested exceeds 0, or both are 0) and its weight is left out.
        weight_sum = sum(((amount > 0) * WEIGHT for amount in amounts), np.int64(0))
        return cls(
            amounts=tuple(amounts),
            safe_amounts=tuple(np.maximum(amount, 1) for amount in amounts),
            # No resource at all (weightSum 0): every score is 0, and 0 // 1 is kube's 0.
            safe_weight_sum=np.maximum(weight_sum, 1),
        )


def node_resources_fit_scores(
    requested: Sequence[IntArray], allocatable: Allocatable, scorer: ResourceScorer
) -> IntArray:
    """The weighted mean of ``scorer`` over the resources, per node, in int64.

    requested : one ndarray of shape (n_nodes,) per resource, in the order of ``allocatable``
    """
    resources = zip(requested, allocatable.amounts, allocatable.safe_amounts, strict=True)
    total = np.zeros(len(allocatable.safe_weight_sum), dtype=np.int64)
    for resource_requested, amount, safe_amount in resources:
        total += scorer(resource_requested, amount, safe_amount)
    return total // allocatable.safe_weight_sum


class _KubePolicy:
    scorer: ResourceScorer

    def __init__(self, context: PolicyContext) -> None:
        self.rank = dense_rank(context.rank)
        self.nodes = NodeAggregates()
        self._allocatable_of: ClusterState | None = None
        self._cpu_memory = self._cpu_memory_gpu = Allocatable((), (), np.ones(0, dtype=np.int64))

    def select(
        self, state: ClusterState, request: PodRequest, allowed: BoolArray | None = None
    ) -> Choice | None:
        """The best node for ``request``; ``allowed`` (optional) narrows the nodes."""
        self.nodes.refresh(state)
        if state is not self._allocatable_of:
            cpu_memory = (state.cpu_capacity_milli, state.memory_capacity_mib)
            self._cpu_memory = Allocatable.of(cpu_memory)
            self._cpu_memory_gpu = Allocatable.of((*cpu_memory, state.gpu_count * MILLI_PER_GPU))
            self._allocatable_of = state
        mask = feasible_mask(state, request, self.nodes)
        if allowed is not None:
            mask = mask & allowed
        requested = [
            state.cpu_capacity_milli - state.cpu_free_milli + request.cpu_milli,
            state.memory_capacity_mib - state.memory_free_mib + request.memory_mib,
        ]
        allocatable = self._cpu_memory
        if request.gpu_milli:  # an extended resource the pod does not request is skipped
            allocatable = self._cpu_memory_gpu
            gpu_used_milli = allocatable.amounts[2] - self.nodes.total_free_milli
            requested.append(gpu_used_milli + request.gpu_milli)
        scores = node_resources_fit_scores(requested, allocatable, type(self).scorer)
        row = pick_best(mask, scores, self.rank)
        if row is None:
            return None
        return Choice(row, best_fit_gpus(state.free_milli[row], request))


class KubeLeastPolicy(_KubePolicy):
    scorer = staticmethod(least_requested_scores)


class KubeMostPolicy(_KubePolicy):
    scorer = staticmethod(most_requested_scores)
