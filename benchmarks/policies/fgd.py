"""FGD: Fragmentation Gradient Descent (Weng et al., ATC'23), as the authors simulate it.

    F(node)  = sum over typical shapes of popularity x fragment(node, shape)
    score    = int(sigmoid((F_before - F_after) / 1000) * 100)

Typical shapes are counted over the *whole original trace*, future pods included
(CPU-only pods too), most frequent first, kept until they cover 95% of pods and
renormalised: an offline advantage no production scheduler has.  A GPU-sharing
pod tries every GPU that fits and the node scores its best GPU's score (lowest
index on ties); a whole-GPU pod takes the lowest-index free GPUs.  The integer
score makes ties common; the run's fixed node order breaks them, which is what
turns FGD's ties into consolidation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from benchmarks.policies.base import Choice, PolicyContext, best_by_rank
from scoring import ClusterState, FragmentAggregates, PodRequest, ShapeTable, check_feasibility
from scoring.fragmentation import FloatArray
from scoring.gpus import lowest_free_gpus
from scoring.groups import NodeGroups
from scoring.shapes import Shape, shape_of
from scoring.state import IntArray

POPULARITY_COVERAGE = 0.95
MAX_NODE_SCORE = 100


def typical_shapes(
    trace: Sequence[PodRequest], coverage: float = POPULARITY_COVERAGE
) -> ShapeTable:
    """The authors' ``GetTypicalPods``: the most frequent shapes covering ``coverage`` of pods."""
    counts = Counter(shape_of(request) for request in trace)

    def order(item: tuple[Shape, int]) -> tuple[int, int, int, int, str]:
        (cpu, milli, gpus, models), count = item
        return (count, cpu, milli, gpus, "|".join(sorted(models)))

    ranked = sorted(counts.items(), key=order, reverse=True)
    kept: list[tuple[Shape, int]] = []
    covered = 0
    for shape, count in ranked:
        if covered >= coverage * len(trace):
            break
        kept.append((shape, count))
        covered += count
    return ShapeTable.from_rows([shape for shape, _ in kept], [count for _, count in kept])


def _fgd_score(fragment_before: FloatArray, fragment_after: FloatArray) -> IntArray:
    sigmoid = 1.0 / (1.0 + np.exp(-(fragment_before - fragment_after) / 1000.0))
    score: IntArray = (sigmoid * MAX_NODE_SCORE).astype(np.int64)
    return score


class FGDPolicy:
    def __init__(self, context: PolicyContext) -> None:
        self.rank = context.rank
        self.by_rank = np.argsort(context.rank)
        self.aggregates = FragmentAggregates(typical_shapes(context.trace))
        self.groups = NodeGroups()

    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        feasible = check_feasibility(state, request).mask
        # Identical nodes score identically: score the best-ranked of each kind.
        self.groups.refresh(state)
        rows = self.groups.representatives(self.by_rank[feasible[self.by_rank]])
        if len(rows) == 0:
            return None
        aggregates = self.aggregates
        aggregates.refresh(state)
        if request.is_sharing:
            return self._select_sharing(state, request, rows)
        # A whole-GPU pod takes fully free GPUs: each goes from 1000 free to 0.
        fragment_after = aggregates.fragment_after(
            state, rows, 1000, 0, request.gpu_count, request.cpu_milli
        )
        scores = _fgd_score(aggregates.fragment[rows], fragment_after)
        best = best_by_rank(rows, scores, self.rank)
        row = int(rows[best])
        gpus = lowest_free_gpus(state.free_milli[row : row + 1], request.gpu_count)[0]
        return Choice(row, tuple(int(g) for g in gpus))

    def _select_sharing(self, state: ClusterState, request: PodRequest, rows: np.ndarray) -> Choice:
        free = state.free_milli[rows]
        # GPUs of one node with the same free milli score the same; score the first
        # of each (the lowest index, which also wins the tie).
        earlier_same = np.tril(free[:, :, None] == free[:, None, :], k=-1).any(axis=2)
        candidate_row, candidate_slot = np.nonzero((free >= request.milli_per_gpu) & ~earlier_same)
        free_before = free[candidate_row, candidate_slot]
        fragment_after = self.aggregates.fragment_after(
            state,
            rows[candidate_row],
            free_before,
            free_before - request.milli_per_gpu,
            1,
            request.cpu_milli,
        )
        candidate_score = _fgd_score(self.aggregates.fragment[rows[candidate_row]], fragment_after)
        by_slot = np.full(free.shape, -1, dtype=np.int64)
        by_slot[candidate_row, candidate_slot] = candidate_score
        node_score = by_slot.max(axis=1)
        best = best_by_rank(rows, node_score, self.rank)
        return Choice(int(rows[best]), (int(by_slot[best].argmax()),))
