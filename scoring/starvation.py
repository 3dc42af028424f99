"""Anti-starvation: nodes held for large pods that have waited too long.

A large pod (8 GPUs on one node) starves behind a stream of small ones: every GPU
that frees up is taken by the next small pod before a whole node drains.  Once
such a pod has waited past ``StarvationConfig.wait_s``, the node closest to
freeing enough GPUs for it (the most fully free GPUs among the nodes that could
ever hold it) is held: smaller GPU pods are steered away from it, so it drains
as its pods finish.  Nothing is evicted.  Each starving pod, oldest first, holds
one node of its own, up to ``max_reserved_nodes``.  A starving pod is exempt from
the fair-share gate: its node is drained for it alone, so holding it back would
idle that node.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scoring.request import PodRequest
from scoring.state import MILLI_PER_GPU, BoolArray, ClusterState, IntArray


def is_starving(request: PodRequest, waited_s: float, min_gpus: int, wait_s: float) -> bool:
    """A large pod pending past the wait: it holds a node, and the fair-share gate lets it
    through (holding it back would leave the node drained for it idle)."""
    return request.gpu_count >= min_gpus and waited_s >= wait_s


def reserved_rows(
    state: ClusterState,
    starving: Sequence[PodRequest],
    max_nodes: int,
    *,
    exclude: BoolArray | None = None,
) -> tuple[IntArray, tuple[int, ...]]:
    """The node held for each starving pod (oldest first), at most ``max_nodes``.

    Returns the held rows and, per held row, the GPU count of the pod it is held
    for (pods asking fewer GPUs are kept off it).  A pod for which no node could
    ever be enough holds nothing.  Rows in ``exclude`` (shape (n_nodes,), e.g.
    nodes already draining for a preemptor) are never held, nor cordoned ones: no
    pod is kept off them, and the starving pod could not go there.
    """
    rows: list[int] = []
    sizes: list[int] = []
    if not starving or max_nodes <= 0 or state.n_nodes == 0:
        return np.zeros(0, dtype=np.int64), ()
    full_free = (state.free_milli >= MILLI_PER_GPU).sum(axis=1)
    taken = ~state.schedulable if exclude is None else exclude | ~state.schedulable
    for request in starving:
        if len(rows) >= max_nodes:
            break
        could_hold = (
            (state.gpu_count >= request.gpu_count)
            & state.model_mask(request.allowed_models)
            & (state.gpu_memory_mib >= request.min_gpu_memory_mib)
            & (state.cpu_capacity_milli >= request.cpu_milli)
            & (state.memory_capacity_mib >= request.memory_mib)
            & ~taken
        )
        candidates = np.flatnonzero(could_hold)
        if len(candidates) == 0:
            continue
        # Closest to freeing (most fully free GPUs), then the stable node order.
        key = np.lexsort((state.tie_break[candidates], -full_free[candidates]))
        row = int(candidates[key[0]])
        taken[row] = True
        rows.append(row)
        sizes.append(request.gpu_count)
    return np.array(rows, dtype=np.int64), tuple(sizes)


def kept_off(request: PodRequest, held_for_gpus: Sequence[int]) -> IntArray:
    """Indices into ``held_for_gpus`` of the held nodes ``request`` must keep off.

    A GPU pod smaller than the pod a node is held for keeps off it; CPU-only pods
    and pods at least as large do not.
    """
    if request.gpu_count == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.asarray(held_for_gpus, dtype=np.int64)
    return np.flatnonzero(request.gpu_count < sizes)
