"""Which candidate nodes can take a pod, and why the others cannot.

Each check is a vectorised mask over the candidate rows with one short, stable
reason.  kube-scheduler aggregates identical reasons into its FailedScheduling
event ("0/40 nodes are available: 32 node(s) lack 4 free GPUs"), so a reason
depends only on the request, never on the node.  A node takes the reason of the
first check it fails.  Reasons are formatted only when asked for: the simulator
never asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scoring.request import PodRequest
from scoring.state import BoolArray, ClusterState, IntArray

MIB_PER_GIB = 1024


class CheckKind(IntEnum):
    GPU_MODEL = 0
    GPU_MEMORY = 1
    GPU_COUNT = 2
    GPU_FREE = 3
    CPU_CAPACITY = 4
    CPU_FREE = 5
    MEMORY_CAPACITY = 6
    MEMORY_FREE = 7


RESOLVABLE = frozenset({CheckKind.GPU_FREE, CheckKind.CPU_FREE, CheckKind.MEMORY_FREE})
"""Checks that evicting pods can fix; the others are FailedAndUnresolvable."""


@dataclass(frozen=True)
class Check:
    kind: CheckKind
    reason: str

    @classmethod
    def of(cls, kind: int, request: PodRequest) -> Check:
        """Check ``kind`` failed by ``request``, with its reason."""
        return cls(CheckKind(kind), reason(CheckKind(kind), request))

    @property
    def unresolvable(self) -> bool:
        return self.kind not in RESOLVABLE


def _gib(mib: int) -> str:
    return f"{mib / MIB_PER_GIB:g} GiB"


def reason(kind: CheckKind, request: PodRequest) -> str:
    """The one-line reason shared by every node that fails ``kind`` for ``request``."""
    if kind is CheckKind.GPU_MODEL:
        return f"node(s) have no GPU of model {'|'.join(sorted(request.allowed_models))}"
    if kind is CheckKind.GPU_MEMORY:
        return f"node(s) have GPUs with less than {_gib(request.min_gpu_memory_mib)} memory"
    if kind is CheckKind.GPU_COUNT:
        if request.gpu_count == 1:
            return "node(s) have no GPU"
        return f"node(s) have fewer than {request.gpu_count} GPUs"
    if kind is CheckKind.GPU_FREE:
        if request.is_sharing:
            return f"node(s) lack a GPU with {request.milli_per_gpu} free milli-GPU"
        plural = "GPU" if request.gpu_count == 1 else "GPUs"
        lack = f"node(s) lack {request.gpu_count} free {plural}"
        if request.min_gpu_memory_mib:
            lack += f" with >= {_gib(request.min_gpu_memory_mib)} memory"
        return lack
    if kind is CheckKind.CPU_CAPACITY:
        return "node(s) have too little cpu in total"
    if kind is CheckKind.CPU_FREE:
        return "node(s) lack free cpu"
    if kind is CheckKind.MEMORY_CAPACITY:
        return "node(s) have too little memory in total"
    return "node(s) lack free memory"


@dataclass(frozen=True)
class Feasibility:
    """The outcome of all checks over ``rows``.

    rows : ndarray of shape (n_candidates,)
    mask : ndarray of shape (n_candidates,), true where the node fits
    checks : each check's kind and its pass mask over ``rows``, in order
    """

    request: PodRequest
    rows: IntArray
    mask: BoolArray
    checks: tuple[tuple[CheckKind, BoolArray], ...]

    @cached_property
    def feasible_rows(self) -> IntArray:
        return self.rows[self.mask]

    @cached_property
    def feasible_index(self) -> IntArray:
        """Indexes into ``rows`` of the nodes that fit."""
        return np.flatnonzero(self.mask)

    @cached_property
    def failed_check(self) -> IntArray:
        """The ``CheckKind`` of each row's first failed check, -1 where it fits."""
        failed = np.full(len(self.rows), -1, dtype=np.int64)
        # Last to first, so that the first failed check is the one that stays.
        for kind, passed in reversed(self.checks):
            failed[~passed] = kind
        return failed

    def check(self, kind: int) -> Check:
        return Check.of(kind, self.request)

    def reasons_by_row(self) -> dict[int, Check]:
        failed_check = self.failed_check
        checks = {int(kind): self.check(kind) for kind in np.unique(failed_check) if kind >= 0}
        return {
            int(row): checks[int(kind)]
            for row, kind in zip(self.rows, failed_check, strict=True)
            if kind >= 0
        }

    def reason_counts(self) -> dict[str, int]:
        failed_check = self.failed_check
        kinds, counts = np.unique(failed_check[failed_check >= 0], return_counts=True)
        return {self.check(kind).reason: int(n) for kind, n in zip(kinds, counts, strict=True)}


def failed_counts(failed_check: IntArray) -> IntArray:
    """How many candidates fail each check, indexed by ``CheckKind`` (``failed_check``
    as :attr:`Feasibility.failed_check` gives it, -1 where none fails)."""
    return np.bincount(failed_check[failed_check >= 0], minlength=len(CheckKind))


def check_feasibility(
    state: ClusterState, request: PodRequest, rows: IntArray | None = None
) -> Feasibility:
    """Run every check over ``rows`` (node rows of ``state``; None = every node).

    The mask is the AND of the free-capacity checks alone: each capacity check is
    implied by its free twin (free <= capacity), and is kept only so that the
    reason names the real cause.
    """

    def column(values: NDArray[Any]) -> NDArray[Any]:
        # np.take: several times faster than fancy indexing on the 2-d free_milli.
        return values if rows is None else np.take(values, rows, axis=0)

    checks: list[tuple[CheckKind, BoolArray]] = []
    deciding: list[BoolArray] = []
    if request.gpu_count:
        if request.allowed_models:
            passed = column(state.model_mask(request.allowed_models))
            checks.append((CheckKind.GPU_MODEL, passed))
            deciding.append(passed)
        if request.min_gpu_memory_mib:
            passed = column(state.gpu_memory_mib) >= request.min_gpu_memory_mib
            checks.append((CheckKind.GPU_MEMORY, passed))
            deciding.append(passed)
        checks.append((CheckKind.GPU_COUNT, column(state.gpu_count) >= request.gpu_count))
        free_gpus = (column(state.free_milli) >= request.milli_per_gpu).sum(axis=1)
        passed = free_gpus >= request.gpu_count
        checks.append((CheckKind.GPU_FREE, passed))
        deciding.append(passed)
    if request.cpu_milli:
        checks.append(
            (CheckKind.CPU_CAPACITY, column(state.cpu_capacity_milli) >= request.cpu_milli)
        )
        passed = column(state.cpu_free_milli) >= request.cpu_milli
        checks.append((CheckKind.CPU_FREE, passed))
        deciding.append(passed)
    if request.memory_mib:
        checks.append(
            (CheckKind.MEMORY_CAPACITY, column(state.memory_capacity_mib) >= request.memory_mib)
        )
        passed = column(state.memory_free_mib) >= request.memory_mib
        checks.append((CheckKind.MEMORY_FREE, passed))
        deciding.append(passed)
    all_rows = np.arange(state.n_nodes) if rows is None else rows
    mask = np.ones(len(all_rows), dtype=bool)
    for passed in deciding:
        mask &= passed
    return Feasibility(request, all_rows, mask, tuple(checks))


def fits_when_empty(state: ClusterState, request: PodRequest) -> bool:
    """Whether some node could take the pod once nothing else ran there: every check but
    the free-capacity ones (those evicting pods can fix) passes on some node.  A pod for
    which none does waits for a node that does not exist (16 GPUs on 8-GPU nodes, a GPU
    model the cluster lacks)."""
    outcome = check_feasibility(state, request)
    fits = np.ones(state.n_nodes, dtype=bool)
    for kind, passed in outcome.checks:
        if kind not in RESOLVABLE:
            fits &= passed
    return bool(fits.any())
