"""Placement quality beyond the allocation curve, measured at arrived = 100%.

The simulator snapshots the cluster when the arrived GPU request first reaches
capacity (or at the end of a run that never gets there) and measures:

stranded_gpus
    GPUs with free capacity (whole or partial) on nodes where none of the
    workload's distinct GPU shapes fits any more, whether for lack of free GPUs,
    GPU memory, GPU model, CPU or memory.  No pending pod can use them.
gpu_memory_waste_gib
    GPU memory allocated beyond need: for every placed pod that declares a
    minimum per-GPU memory, ``(node per-GPU memory - minimum) x GPUs``.  Pods
    without a minimum count 0 (openb traces have no memory information).
gpu_memory_waste_pct
    The same waste as a share of the GPU memory those pods were given.  The GiB
    alone reward a policy that fails large pods (what is not placed wastes
    nothing); the share compares policies that placed different amounts.  A pod
    counts as given its GPUs' whole memory, a GPU-sharing pod too (the synthetic
    workloads have none; the openb traces declare no minimum).  0 when no placed
    pod declares a minimum.
gpu_memory_waste_half_load_gib
    The same waste over the pods placed by the time the arrived GPU request
    reached half the capacity.  At arrived = 100% the cluster is full and the
    waste is mostly fixed by which pods were placed; at half load every node is
    still open to choice, and the GiB compare where each policy put the same
    pods (``failed_pods_at_half_load`` says whether any had failed by then).
failed_pods_by_gpus
    Failed pods among those arrived by the snapshot, by size: ``"0"`` (CPU-only),
    ``"share"`` (a fraction of one GPU), and the whole-GPU count (``"1"``, ``"2"``,
    ``"4"``, ``"8"``, and any other count that occurs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.policies.common import NodeAggregates, feasible_mask
from scoring import ClusterState, PodRequest
from scoring.state import BoolArray

MIB_PER_GIB = 1024
SIZE_KEYS = ("0", "1", "2", "4", "8", "share")
"""Keys of ``failed_pods_by_gpus`` that are always present."""


@dataclass(frozen=True)
class RunMetrics:
    """The snapshot's measures; ``arrived_pct`` says where the snapshot was taken."""

    arrived_pct: float
    stranded_gpus: int
    gpu_memory_waste_gib: float
    gpu_memory_waste_pct: float
    failed_pods_by_gpus: dict[str, int]
    gpu_memory_waste_half_load_gib: float = 0.0
    failed_pods_at_half_load: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "snapshot_arrived_pct": self.arrived_pct,
            "stranded_gpus": self.stranded_gpus,
            "gpu_memory_waste_gib": self.gpu_memory_waste_gib,
            "gpu_memory_waste_pct": self.gpu_memory_waste_pct,
            "gpu_memory_waste_half_load_gib": self.gpu_memory_waste_half_load_gib,
            "failed_pods_at_half_load": self.failed_pods_at_half_load,
            "failed_pods_by_gpus": dict(self.failed_pods_by_gpus),
        }


def resource_shape(request: PodRequest) -> PodRequest:
    """The request with only what decides where it fits (no team, class or priority)."""
    return PodRequest(
        gpu_count=request.gpu_count,
        milli_per_gpu=request.milli_per_gpu,
        cpu_milli=request.cpu_milli,
        memory_mib=request.memory_mib,
        min_gpu_memory_mib=request.min_gpu_memory_mib,
        allowed_models=request.allowed_models,
    )


def distinct_gpu_shapes(requests: Iterable[PodRequest]) -> list[PodRequest]:
    """The distinct shapes of the GPU requests, smallest GPU request first."""
    shapes = {resource_shape(r) for r in requests if r.gpu_count}
    return sorted(
        shapes,
        key=lambda r: (
            r.gpu_milli,
            r.cpu_milli,
            r.memory_mib,
            r.min_gpu_memory_mib,
            sorted(r.allowed_models),
        ),
    )


def stranded_nodes(state: ClusterState, shapes: Sequence[PodRequest]) -> BoolArray:
    """Nodes with free GPU milli where none of ``shapes`` fits, shape (n_nodes,)."""
    nodes = NodeAggregates()
    nodes.refresh(state)
    open_rows = nodes.total_free_milli > 0
    stranded = open_rows.copy()
    for shape in shapes:
        if not stranded.any():
            break
        stranded &= ~feasible_mask(state, shape, nodes)
    return stranded


def stranded_gpus(state: ClusterState, shapes: Sequence[PodRequest]) -> int:
    """GPUs with any free milli on the :func:`stranded_nodes`."""
    rows = stranded_nodes(state, shapes)
    return int((state.free_milli[rows] > 0).sum())


def gpu_memory_by_pod(
    state: ClusterState, placed: Iterable[tuple[int, PodRequest]]
) -> list[tuple[int, int] | None]:
    """Per placed pod, the GPU memory it was given and the part beyond its minimum.

    placed : (row, request) of every placed pod.
    Returns, in that order, ``(given, waste)`` in MiB (its node's per-GPU memory
    times its GPUs, and that less its minimum times its GPUs), or None for a pod
    without a minimum or on a node whose GPU memory is unknown (0).
    """
    memory = state.gpu_memory_mib
    out: list[tuple[int, int] | None] = []
    for row, request in placed:
        node_memory = int(memory[row])
        if request.min_gpu_memory_mib and node_memory:
            given = node_memory * request.gpu_count
            out.append((given, given - request.min_gpu_memory_mib * request.gpu_count))
        else:
            out.append(None)
    return out


def gpu_memory_given_mib(
    state: ClusterState, placed: Iterable[tuple[int, PodRequest]]
) -> tuple[int, int]:
    """GPU memory given to placed pods that declare a minimum, and the part beyond it
    (:func:`gpu_memory_by_pod`, summed)."""
    counted = [pair for pair in gpu_memory_by_pod(state, placed) if pair is not None]
    return sum(given for given, _ in counted), sum(waste for _, waste in counted)


def gpu_memory_waste_mib(state: ClusterState, placed: Iterable[tuple[int, PodRequest]]) -> int:
    """Per-GPU memory beyond each placed pod's declared minimum, times its GPUs."""
    return gpu_memory_given_mib(state, placed)[1]


def size_key(request: PodRequest) -> str:
    """The ``failed_pods_by_gpus`` key of a request."""
    return "share" if request.is_sharing else str(request.gpu_count)


def pods_by_gpus(requests: Iterable[PodRequest]) -> dict[str, int]:
    counts = dict.fromkeys(SIZE_KEYS, 0)
    for request in requests:
        key = size_key(request)
        counts[key] = counts.get(key, 0) + 1
    return counts


def measure(
    state: ClusterState,
    placed: Sequence[tuple[int, PodRequest]],
    failed: Sequence[PodRequest],
    shapes: Sequence[PodRequest],
    arrived_pct: float,
    placed_at_half_load: int | None = None,
    failed_at_half_load: int = 0,
) -> RunMetrics:
    """Every measure of one snapshot (``shapes`` from :func:`distinct_gpu_shapes`).

    The first ``placed_at_half_load`` of ``placed`` (in arrival order; default all)
    had been placed at half load, when ``failed_at_half_load`` pods had failed.
    """
    by_pod = gpu_memory_by_pod(state, placed)
    half = len(placed) if placed_at_half_load is None else placed_at_half_load
    given = sum(pair[0] for pair in by_pod if pair is not None)
    waste = sum(pair[1] for pair in by_pod if pair is not None)
    waste_half = sum(pair[1] for pair in by_pod[:half] if pair is not None)
    return RunMetrics(
        arrived_pct=round(arrived_pct, 2),
        stranded_gpus=stranded_gpus(state, shapes),
        gpu_memory_waste_gib=round(waste / MIB_PER_GIB, 1),
        gpu_memory_waste_pct=round(100.0 * waste / given, 2) if given else 0.0,
        failed_pods_by_gpus=pods_by_gpus(failed),
        gpu_memory_waste_half_load_gib=round(waste_half / MIB_PER_GIB, 1),
        failed_pods_at_half_load=failed_at_half_load,
    )


def percentiles_ms(seconds: np.ndarray, quantiles: Sequence[float] = (50, 99)) -> list[float]:
    """Percentiles of decision times given in seconds, in milliseconds (3 decimals)."""
    if len(seconds) == 0:
        return [float("nan")] * len(quantiles)
    values = np.percentile(seconds, quantiles) * 1000.0
    return [round(float(v), 3) for v in values]
