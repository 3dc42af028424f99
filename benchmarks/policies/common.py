"""What the FGD baselines share: the authors' constants, lean feasibility, GPU selection.

The baselines reproduce the score plugins of the FGD paper's simulator
(hkust-adsl/kubernetes-scheduler-simulator, read at the file versions of commits
29a1e4c, 5b6b304, b6567da and 97f5c2c); the constants below are theirs
(``pkg/type/open-gpu-share/utils/const.go``, kube-scheduler's ``MaxNodeScore``).
On nodes beyond that spec (more than 128 cores or 8 GPUs) some raw scores leave
0..100, which kube-scheduler would reject as an error for the plugins without a
normalisation step; the baselines keep scoring them as the formulas say.

Speed.  A baseline is asked about ~10,600 pods per seed over 1,213 nodes, and a
reduction along the short GPU axis of ``free_milli`` (``sum(axis=1)``) costs more
than the rest of a decision.  :class:`NodeAggregates` therefore keeps the per-node
GPU aggregates and refreshes only the rows whose ``ClusterState.row_version``
moved since the last call (``place`` and ``release`` bump it), so a decision
costs a few passes over flat per-node arrays.  :func:`feasible_mask` gives the
same answers as ``scoring.feasibility.check_feasibility`` from those aggregates.
The policies that score one node per group of identical nodes (FGD, fairpack)
keep each group's best-ranked node up to date with :class:`GroupLeaders` rather
than sorting every node per decision.

GPU selection.  The authors' ``Open-Gpu-Share`` Reserve step picks the GPUs with
its ``gpuSelMethod``; every baseline except Random runs with ``best``
(``allocateGpuIdBasedOnBestFit`` in ``open_gpu_share.go``): a GPU-sharing pod
takes the GPU with the least free milli that still holds it, lowest index on
ties; a whole-GPU pod takes the lowest-index fully free GPUs
(``AllocateExclusiveGpuId`` in ``pkg/type/resource.go``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks.policies.base import Choice, PolicyContext
from scoring import ClusterState, PodRequest
from scoring.state import MILLI_PER_GPU, BoolArray, IntArray

MAX_NODE_SCORE = 100
"""kube-scheduler's ``framework.MaxNodeScore``."""

MAX_SPEC_CPU_MILLI = 128_000
"""``MaxSpecCpu``: the authors' normaliser for CPU, the largest node in their traces."""

MAX_SPEC_GPU_MILLI = 8_000
"""``MaxSpecGpu``: the authors' normaliser for GPU milli (an 8-GPU node)."""

NO_SLOT = -1
_SCALAR_REFRESH_ROWS = 8
_NO_KEY = np.iinfo(np.int64).min


class NodeAggregates:
    """Per-node GPU aggregates of one ``ClusterState``, kept fresh by ``row_version``.

    total_free_milli : ndarray of shape (n_nodes,)
        Free milli summed over the node's GPUs.
    full_gpus : ndarray of shape (n_nodes,)
        GPUs with all 1000 milli free.
    max_free_milli : ndarray of shape (n_nodes,)
        Free milli of the emptiest GPU (0 on a node without GPUs).
    max_partial_free_milli : ndarray of shape (n_nodes,)
        Free milli of the emptiest GPU that is not fully free (padded slots count
        as 0 free), -1 when every slot is fully free.

    Call :meth:`refresh` with the state before reading.  A different state object
    (a copy) is rebuilt from scratch; the same object is patched row by row, so
    every change to it must bump ``row_version`` (``place`` and ``release`` do).
    """

    def __init__(self) -> None:
        self._state: ClusterState | None = None
        self._seen_version = np.zeros(0, dtype=np.int64)
        self.total_free_milli = np.zeros(0, dtype=np.int64)
        self.full_gpus = np.zeros(0, dtype=np.int64)
        self.max_free_milli = np.zeros(0, dtype=np.int64)
        self.max_partial_free_milli = np.zeros(0, dtype=np.int64)

    def refresh(self, state: ClusterState) -> None:
        if state is not self._state or len(self._seen_version) != state.n_nodes:
            self._state = state
            self._seen_version = state.row_version.copy()
            (
                self.total_free_milli,
                self.full_gpus,
                self.max_free_milli,
                self.max_partial_free_milli,
            ) = _aggregate(state.free_milli)
            return
        stale = (state.row_version != self._seen_version).nonzero()[0]
        if len(stale) == 0:
            return
        if len(stale) <= _SCALAR_REFRESH_ROWS:
            # A decision usually changes one row: plain Python over its few GPUs
            # beats a handful of numpy calls on a (1, max_gpus) array.
            for row in stale.tolist():
                free_row = state.free_milli[row].tolist()
                partial = [free for free in free_row if free < MILLI_PER_GPU]
                self.total_free_milli[row] = sum(free_row)
                self.full_gpus[row] = len(free_row) - len(partial)
                self.max_free_milli[row] = max(free_row)
                self.max_partial_free_milli[row] = max(partial, default=NO_SLOT)
        else:
            total, full, emptiest, emptiest_partial = _aggregate(state.free_milli[stale])
            self.total_free_milli[stale] = total
            self.full_gpus[stale] = full
            self.max_free_milli[stale] = emptiest
            self.max_partial_free_milli[stale] = emptiest_partial
        self._seen_version[stale] = state.row_version[stale]


class GroupLeaders:
    """The best-ranked node of each group of identical nodes, kept up to date per change.

    What ``scoring.groups.NodeGroups.representatives(rows_by_rank)`` returns for all
    the nodes, without its sort over every node per decision: a decision moves a
    row or two between groups, and only the groups they leave or join can get
    another leader.

    rank : ndarray of shape (n_nodes,), the run's node order (lower first)
    """

    _REBUILD_ABOVE_ROWS = 64

    def __init__(self, rank: IntArray) -> None:
        self.rank = dense_rank(rank)
        self.by_rank = np.argsort(self.rank, kind="stable")
        self._group = np.zeros(0, dtype=np.int64)
        self._leader: dict[int, int] = {}
        self._members: dict[int, int] = {}
        self._leaders = np.zeros(0, dtype=np.int64)

    def leaders(self, group: IntArray) -> IntArray:
        """Leader rows, best-ranked first; ``group`` is ``NodeGroups.group`` after ``refresh``."""
        if len(group) != len(self._group):
            self._rebuild(group)
            return self._leaders
        changed = (group != self._group).nonzero()[0]
        if len(changed) == 0:
            return self._leaders
        if len(changed) > self._REBUILD_ABOVE_ROWS:
            self._rebuild(group)
            return self._leaders
        rank, leader, members = self.rank, self._leader, self._members
        for row in changed.tolist():
            left, joined = int(self._group[row]), int(group[row])
            members[left] -= 1
            if members[left] == 0:
                del members[left], leader[left]
            elif leader[left] == row:
                rows = (group == left).nonzero()[0]
                leader[left] = int(rows[rank[rows].argmin()])
            members[joined] = members.get(joined, 0) + 1
            current = leader.get(joined)
            if current is None or rank[row] < rank[current]:
                leader[joined] = row
        self._group = group.copy()
        rows = np.fromiter(leader.values(), dtype=np.int64, count=len(leader))
        self._leaders = rows[np.argsort(rank[rows])]
        return self._leaders

    def _rebuild(self, group: IntArray) -> None:
        ids, first, counts = np.unique(group[self.by_rank], return_index=True, return_counts=True)
        rows = self.by_rank[first]
        self._leader = dict(zip(ids.tolist(), rows.tolist(), strict=True))
        self._members = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        self._group = group.copy()
        self._leaders = rows[np.argsort(self.rank[rows])]


def _aggregate(free_milli: IntArray) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    full = free_milli >= MILLI_PER_GPU
    return (
        free_milli.sum(axis=1),
        np.count_nonzero(full, axis=1).astype(np.int64),
        free_milli.max(axis=1),
        np.where(full, NO_SLOT, free_milli).max(axis=1),
    )


def feasible_mask(state: ClusterState, request: PodRequest, nodes: NodeAggregates) -> BoolArray:
    """Nodes that can take ``request``: what ``check_feasibility(...).mask`` says, faster.

    ``nodes`` must have been refreshed with ``state``.  The capacity checks of
    ``check_feasibility`` are implied here (free never exceeds capacity, and
    padded GPU slots have 0 free milli, so "enough GPUs that fit" covers "enough
    GPUs").
    """
    if request.gpu_count:
        if request.is_sharing:
            mask = nodes.max_free_milli >= request.milli_per_gpu
        else:
            mask = nodes.full_gpus >= request.gpu_count
        if request.allowed_models:
            mask &= state.model_mask(request.allowed_models)
        if request.min_gpu_memory_mib:
            mask &= state.gpu_memory_mib >= request.min_gpu_memory_mib
        if request.cpu_milli:
            mask &= state.cpu_free_milli >= request.cpu_milli
    else:
        mask = state.cpu_free_milli >= request.cpu_milli
    if request.memory_mib:
        mask &= state.memory_free_mib >= request.memory_mib
    return mask


def tightest_free_milli(free_milli: IntArray, milli: int) -> IntArray:
    """Per row, the free milli of the least-free GPU holding ``milli``; MILLI_PER_GPU + 1 if none.

    free_milli : ndarray of shape (n_rows, max_gpus)
    """
    return np.where(free_milli >= milli, free_milli, MILLI_PER_GPU + 1).min(axis=1)  # type: ignore[no-any-return]


def tightest_slot(free_row: IntArray, milli: int) -> int:
    """The GPU of one node with the least free milli that holds ``milli``, lowest index on ties.

    NO_SLOT if none holds it.  Plain Python: one row of a few GPUs.
    """
    best_slot, best_free = NO_SLOT, MILLI_PER_GPU + 1
    for slot, free in enumerate(free_row.tolist()):
        if milli <= free < best_free:
            best_slot, best_free = slot, free
    return best_slot


def lowest_free_slots(free_row: IntArray, count: int) -> tuple[int, ...]:
    """The ``count`` lowest-index fully free GPUs of one node (fewer if it has fewer)."""
    free_slots = [slot for slot, free in enumerate(free_row.tolist()) if free >= MILLI_PER_GPU]
    return tuple(free_slots[:count])


def best_fit_gpus(free_row: IntArray, request: PodRequest) -> tuple[int, ...]:
    """The authors' ``gpuSelMethod: best`` on one node (see the module docstring)."""
    if request.gpu_count == 0:
        return ()
    if request.is_sharing:
        return (tightest_slot(free_row, request.milli_per_gpu),)
    return lowest_free_slots(free_row, request.gpu_count)


def dense_rank(rank: IntArray) -> IntArray:
    """``rank`` as 0..n-1 in the same order (equal ranks by row), for :func:`pick_best`."""
    dense = np.empty(len(rank), dtype=np.int64)
    dense[np.argsort(rank, kind="stable")] = np.arange(len(rank))
    return dense


def pick_best(mask: BoolArray, scores: IntArray, dense_rank: IntArray) -> int | None:
    """Row of the highest integer score among ``mask``, ties to the lowest rank; None if empty.

    What ``best_by_rank`` decides, in one pass: score and rank folded into one key
    (``dense_rank`` from :func:`dense_rank`, so every rank is below ``n``).
    """
    key = np.where(mask, scores * len(dense_rank) - dense_rank, _NO_KEY)
    row = int(key.argmax())
    return row if mask[row] else None


def trunc_div(numerator: IntArray, denominator: int) -> IntArray:
    """Go's int64 division, which truncates toward zero (numpy's ``//`` floors).

    Through float64, exact for |numerator| < 2**53: a quotient that is not a whole
    number lies at least 1/denominator from one, beyond the division's rounding.
    """
    return (numerator / denominator).astype(np.int64)


class FreeTotalsPolicy:
    """A policy that scores each node from its free CPU and free GPU milli alone.

    BestFit and DotProd differ only in ``score_nodes(cpu_free_milli, gpu_free_milli,
    cpu_request_milli, gpu_request_milli)``; both take the tightest GPU(s) on the
    winner.  Subclasses set ``score_nodes`` to their scorer.
    """

    score_nodes: Callable[[IntArray, IntArray, int, int], IntArray]

    def __init__(self, context: PolicyContext) -> None:
        self.rank = dense_rank(context.rank)
        self.nodes = NodeAggregates()

    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        self.nodes.refresh(state)
        mask = feasible_mask(state, request, self.nodes)
        scores = type(self).score_nodes(
            state.cpu_free_milli, self.nodes.total_free_milli, request.cpu_milli, request.gpu_milli
        )
        row = pick_best(mask, scores, self.rank)
        if row is None:
            return None
        return Choice(row, best_fit_gpus(state.free_milli[row], request))
