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

Minimum GPU memory (synthetic fleets; the openb traces have none).  The authors'
shapes know GPU models but not GPU memory, so a shape needing 40 GiB would count
as fitting on a 24 GiB GPU and FGD would measure fragments against pods that can
never land there.  A shape's memory minimum is therefore turned into the GPU
models that have enough memory (per model, the smallest per-GPU memory of the
nodes that have it), intersected with the shape's own models.  On a fleet where
each model has one memory size (GPU Feature Discovery's product names tell the
40 GB and 80 GB A100 apart) this is exact; traces without memory minimums get
exactly the authors' shapes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from benchmarks.policies.base import Choice, PolicyContext, best_by_rank
from benchmarks.policies.common import GroupLeaders
from scoring import ClusterState, FragmentAggregates, PodRequest, ShapeTable, check_feasibility
from scoring.fragmentation import FloatArray
from scoring.gpus import lowest_free_gpus
from scoring.groups import NodeGroups
from scoring.shapes import Shape, shape_of
from scoring.state import IntArray

POPULARITY_COVERAGE = 0.95
MAX_NODE_SCORE = 100
NO_MODEL = "(no GPU model with enough memory)"
"""The model set of a shape that no GPU of the fleet has memory enough for."""


def gpu_memory_by_model(state: ClusterState) -> dict[str, int]:
    """Per GPU model, the smallest per-GPU memory (MiB) among the nodes that have it."""
    memory: dict[str, int] = {}
    for model_id, node_memory in zip(
        state.gpu_model.tolist(), state.gpu_memory_mib.tolist(), strict=True
    ):
        if model_id >= 0:
            model = state.models[model_id]
            memory[model] = min(memory.get(model, node_memory), node_memory)
    return memory


def _models_with_memory(
    models: frozenset[str], min_gpu_memory_mib: int, memory_by_model: Mapping[str, int]
) -> frozenset[str]:
    enough = {model for model, mib in memory_by_model.items() if mib >= min_gpu_memory_mib}
    allowed = enough & models if models else enough
    return frozenset(allowed) if allowed else frozenset({NO_MODEL})


def typical_shapes(
    trace: Sequence[PodRequest],
    coverage: float = POPULARITY_COVERAGE,
    memory_by_model: Mapping[str, int] | None = None,
) -> ShapeTable:
    """The authors' ``GetTypicalPods``: the most frequent shapes covering ``coverage`` of pods.

    With ``memory_by_model`` (:func:`gpu_memory_by_model`), a shape's minimum GPU
    memory narrows its models (see the module docstring); without it, it is ignored.
    """
    counts = Counter(shape_of(r) for r in trace)

    def order(item: tuple[Shape, int]) -> tuple[int, int, int, int, str, int]:
        (cpu, milli, gpus, models, min_memory), count = item
        return (count, cpu, milli, gpus, "|".join(sorted(models)), min_memory)

    ranked = sorted(counts.items(), key=order, reverse=True)
    kept: list[tuple[Shape, int]] = []
    covered = 0
    for shape, count in ranked:
        if covered >= coverage * len(trace):
            break
        kept.append((shape, count))
        covered += count
    rows = []
    for cpu, milli, gpus, models, min_memory in (shape for shape, _ in kept):
        if min_memory and gpus and memory_by_model is not None:
            models = _models_with_memory(models, min_memory, memory_by_model)
        rows.append((cpu, milli, gpus, models))
    return ShapeTable.from_rows(rows, [count for _, count in kept])


def _fgd_score(fragment_before: FloatArray, fragment_after: FloatArray) -> IntArray:
    sigmoid = 1.0 / (1.0 + np.exp(-(fragment_before - fragment_after) / 1000.0))
    score: IntArray = (sigmoid * MAX_NODE_SCORE).astype(np.int64)
    return score


class FGDPolicy:
    def __init__(self, context: PolicyContext) -> None:
        self.rank = context.rank
        self.leaders = GroupLeaders(context.rank)
        self.trace = context.trace
        self.needs_memory = any(r.min_gpu_memory_mib and r.gpu_count for r in context.trace)
        # With memory minimums the shapes depend on the fleet: built on the first decision.
        self.aggregates = FragmentAggregates(typical_shapes(context.trace))
        self._memory_by_model: dict[str, int] | None = None
        self.groups = NodeGroups()

    def _shapes_for(self, state: ClusterState) -> None:
        memory_by_model = gpu_memory_by_model(state)
        if memory_by_model != self._memory_by_model:
            self._memory_by_model = memory_by_model
            shapes = typical_shapes(self.trace, memory_by_model=memory_by_model)
            self.aggregates = FragmentAggregates(shapes)

    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        if self.needs_memory and self._memory_by_model is None:
            self._shapes_for(state)
        # Identical nodes score identically: score the best-ranked of each kind.  A group's
        # nodes are all feasible or none is, so its leader is its best feasible node.
        self.groups.refresh(state)
        leaders = self.leaders.leaders(self.groups.group)
        rows = leaders[check_feasibility(state, request, leaders).mask]
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
