"""The FGD paper's simulation protocol (Weng et al., ATC'23), reimplemented.

Workload: shuffle the trace's pods with the run's seed, then "tune up" by drawing
pods with replacement and appending them until the GPU request would pass
``tune`` x cluster capacity.  Nothing departs; a pod that fits nowhere fails and
the run goes on.  After every pod, the arrived GPU milli (failed pods included)
and the allocated GPU milli are recorded; the curve "allocated % by arrived %"
is what the paper plots, and its value at arrived = 100% is the headline.

A workload is either a trace (a list of requests, replayed as above) or any
:class:`WorkloadSource`, such as ``benchmarks.synthetic.SyntheticWorkload``.
Beyond the curve, a run measures the cluster when the arrived request first
reaches capacity (``benchmarks.metrics``) and times every decision
(``time.perf_counter`` around ``policy.select``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from benchmarks.metrics import RunMetrics, distinct_gpu_shapes, measure
from benchmarks.policies import PolicyContext, make_policy
from scoring import MILLI_PER_GPU, ClusterState, NodeSpec, PodRequest

ARRIVED_COLUMNS = range(0, 131)


@dataclass(frozen=True)
class RunResult:
    policy: str
    seed: int
    allocated_pct_by_arrived: dict[int, float]
    pods: int
    failed_pods: int
    failed_gpu_milli: int
    elapsed_s: float
    metrics: RunMetrics | None = None
    decision_s: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)
    """Seconds each ``policy.select`` took, in arrival order."""

    @property
    def unallocated_pct_at_100(self) -> float:
        return round(100.0 - self.allocated_pct_by_arrived[100], 2)


def workload_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0])


def build_workload(
    trace: Sequence[PodRequest], capacity_milli: int, tune: float, rng: np.random.Generator
) -> list[PodRequest]:
    """The shuffled trace, then draws with replacement until ``tune`` x capacity.

    Like the authors' ``tuneUpPods``, the stopping check adds the drawn pod's
    per-GPU milli, not its total (a quirk kept for fidelity), and the appended
    pods are not shuffled.  A trace that already requests more is thinned by
    removing random pods (their ``tuneDownPods``).
    """
    order = rng.permutation(len(trace))
    workload = [trace[i] for i in order]
    requested = sum(request.gpu_milli for request in trace)
    target = tune * capacity_milli
    if requested > target:
        while requested > target and workload:
            requested -= workload.pop(int(rng.integers(len(workload)))).gpu_milli
        return workload
    while True:
        drawn = trace[int(rng.integers(len(trace)))]
        if requested + drawn.milli_per_gpu > target:
            return workload
        requested += drawn.gpu_milli
        workload.append(drawn)


class WorkloadSource(Protocol):
    """Where a run's arrivals, and FGD's view of the future, come from."""

    def arrivals(
        self, capacity_milli: int, tune: float, rng: np.random.Generator
    ) -> list[PodRequest]:
        """The run's pods, in arrival order."""
        ...

    def popularity_sample(self, seed: int) -> Sequence[PodRequest]:
        """What the FGD baseline counts its typical shapes over (``PolicyContext.trace``)."""
        ...

    def shapes(self) -> Sequence[PodRequest]:
        """Requests covering every shape the workload can produce (duplicates allowed)."""
        ...


@dataclass(frozen=True)
class TraceWorkload:
    """A trace replayed by the FGD protocol (:func:`build_workload`)."""

    trace: Sequence[PodRequest]

    def arrivals(
        self, capacity_milli: int, tune: float, rng: np.random.Generator
    ) -> list[PodRequest]:
        return build_workload(self.trace, capacity_milli, tune, rng)

    def popularity_sample(self, seed: int) -> Sequence[PodRequest]:
        return self.trace

    def shapes(self) -> Sequence[PodRequest]:
        return self.trace


def as_workload(trace: Sequence[PodRequest] | WorkloadSource) -> WorkloadSource:
    if isinstance(trace, Sequence):
        return TraceWorkload(trace)
    return trace


def whole_gpus(trace: Sequence[PodRequest]) -> list[PodRequest]:
    """The trace with every GPU request rounded up to whole GPUs (a sharing pod takes one)."""
    return [
        replace(request, milli_per_gpu=MILLI_PER_GPU) if request.is_sharing else request
        for request in trace
    ]


def snapshot_index(arrived_milli: np.ndarray, capacity_milli: int) -> int:
    """The first arrival at which the arrived request reaches capacity; the last if none does.

    -1 for an empty workload.
    """
    reached = int(np.searchsorted(arrived_milli, capacity_milli, side="left"))
    return min(reached, len(arrived_milli) - 1)


def node_rank(n_nodes: int, seed: int) -> np.ndarray:
    """The run's fixed node order: the authors prefix node names with a random per-seed
    string and break score ties by name, which amounts to a random permutation."""
    return np.random.default_rng([seed, 1]).permutation(n_nodes)


def allocation_by_arrived(
    arrived_milli: np.ndarray, used_milli: np.ndarray, capacity_milli: int
) -> dict[int, float]:
    """The authors' discretisation (``merge_alloc_discrete.py``).

    Each record's arrived % is rounded to an integer; column k is the mean
    allocated % (rounded to 2 decimals) of the records at k or, when there are
    none, of all the records from k-1 to k+1.
    """
    # Python's round per record, numpy's for the column means, as the authors'
    # pandas code does (they differ at exact halves).
    arrived_pct = np.array([round(a * 100.0 / capacity_milli) for a in arrived_milli.tolist()])
    allocated_pct = np.array([round(u * 100.0 / capacity_milli, 2) for u in used_milli.tolist()])
    size = max(len(ARRIVED_COLUMNS) + 2, int(arrived_pct.max(initial=0)) + 2)
    sums = np.bincount(arrived_pct, weights=allocated_pct, minlength=size)
    counts = np.bincount(arrived_pct, minlength=size)
    columns: dict[int, float] = {}
    for k in ARRIVED_COLUMNS:
        # No record at k: the mean of every record within k-1..k+1.
        window = slice(k, k + 1) if counts[k] else slice(max(k - 1, 0), k + 2)
        n = counts[window].sum()
        columns[k] = float(np.round(sums[window].sum() / n, 2)) if n else float("nan")
    return columns


def simulate(
    policy_name: str,
    nodes: Sequence[NodeSpec],
    trace: Sequence[PodRequest] | WorkloadSource,
    seed: int,
    tune: float = 1.3,
) -> RunResult:
    """One run of one policy on one seed."""
    source = as_workload(trace)
    state = ClusterState.from_nodes(nodes)
    capacity = state.total_gpu_milli
    workload = source.arrivals(capacity, tune, workload_rng(seed))
    context = PolicyContext(
        rank=node_rank(state.n_nodes, seed),
        rng=np.random.default_rng([seed, 2]),
        trace=source.popularity_sample(seed),
    )
    policy = make_policy(policy_name, context)
    placed = getattr(policy, "placed", None)
    arrived = np.cumsum([request.gpu_milli for request in workload], dtype=np.int64)
    used = np.empty(len(workload), dtype=np.int64)
    decision_s = np.empty(len(workload))
    snapshot_at = snapshot_index(arrived, capacity)
    snapshot = state
    placed_by_snapshot: list[tuple[int, PodRequest]] = []
    half_load_at = snapshot_index(arrived, capacity // 2)
    placed_at_half_load = failed_at_half_load = 0
    failed_by_snapshot: list[PodRequest] = []
    used_milli = 0
    failed_pods = failed_milli = 0
    clock = time.perf_counter
    started = clock()
    for i, request in enumerate(workload):
        decision_started = clock()
        choice = policy.select(state, request)
        decision_s[i] = clock() - decision_started
        if choice is None:
            failed_pods += 1
            failed_milli += request.gpu_milli
            if i <= snapshot_at:
                failed_by_snapshot.append(request)
            failed_at_half_load += i <= half_load_at
        else:
            state.place(choice.row, request, choice.gpus)
            used_milli += request.gpu_milli
            if placed is not None:
                placed(state, request, choice)
            if i <= snapshot_at:
                placed_by_snapshot.append((choice.row, request))
                placed_at_half_load += i <= half_load_at
        used[i] = used_milli
        if i == snapshot_at:
            snapshot = state.copy()
    elapsed = clock() - started
    arrived_pct = (
        100.0 * int(arrived[snapshot_at]) / capacity if snapshot_at >= 0 and capacity else 0.0
    )
    return RunResult(
        policy=policy_name,
        seed=seed,
        allocated_pct_by_arrived=allocation_by_arrived(arrived, used, capacity),
        pods=len(workload),
        failed_pods=failed_pods,
        failed_gpu_milli=failed_milli,
        elapsed_s=elapsed,
        metrics=measure(
            snapshot,
            placed_by_snapshot,
            failed_by_snapshot,
            distinct_gpu_shapes(source.shapes()),
            arrived_pct,
            placed_at_half_load,
            failed_at_half_load,
        ),
        decision_s=decision_s,
    )
