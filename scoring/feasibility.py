"""Which candidate nodes can take a pod, and why the others cannot.

Each check is a vectorised mask over the candidate rows with one short, stable
reason.  kube-scheduler aggregates identical reasons into its FailedScheduling
event ("0/40 nodes are available: 32 node(s) lack 4 free GPUs"), so a reason
depends only on the request, never on the node.  A node takes the reason of the
first check it fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoring.gpus import gpus_that_fit
from scoring.request import PodRequest
from scoring.state import BoolArray, ClusterState, IntArray

MIB_PER_GIB = 1024


@dataclass(frozen=True)
class Check:
    reason: str
    unresolvable: bool
    """True when evicting pods cannot make the node fit (wrong model, too small)."""


@dataclass(frozen=True)
class Feasibility:
    """The outcome of all checks over ``rows``.

    rows : ndarray of shape (n_candidates,)
    failed_check : ndarray of shape (n_candidates,)
        Index into ``checks`` of the first failed check, -1 where the node fits.
    """

    rows: IntArray
    failed_check: IntArray
    checks: tuple[Check, ...]

    @property
    def mask(self) -> BoolArray:
        return self.failed_check < 0

    @property
    def feasible_rows(self) -> IntArray:
        return self.rows[self.mask]

    def reasons_by_row(self) -> dict[int, Check]:
        return {
            int(row): self.checks[check]
            for row, check in zip(self.rows, self.failed_check, strict=True)
            if check >= 0
        }

    def reason_counts(self) -> dict[str, int]:
        failed = self.failed_check[self.failed_check >= 0]
        counts = np.bincount(failed, minlength=len(self.checks))
        return {self.checks[i].reason: int(n) for i, n in enumerate(counts) if n}


def _gib(mib: int) -> str:
    return f"{mib / MIB_PER_GIB:g} GiB"


def check_feasibility(state: ClusterState, request: PodRequest, rows: IntArray) -> Feasibility:
    """Run every check over ``rows`` (node rows of ``state``)."""
    checks: list[tuple[BoolArray, Check]] = []
    if request.gpu_count:
        if request.allowed_models:
            models = "|".join(sorted(request.allowed_models))
            checks.append(
                (
                    state.model_mask(request.allowed_models)[rows],
                    Check(f"node(s) have no GPU of model {models}", unresolvable=True),
                )
            )
        if request.min_gpu_memory_mib:
            checks.append(
                (
                    state.gpu_memory_mib[rows] >= request.min_gpu_memory_mib,
                    Check(
                        f"node(s) have GPUs with less than {_gib(request.min_gpu_memory_mib)}"
                        " memory",
                        unresolvable=True,
                    ),
                )
            )
        checks.append(
            (
                state.gpu_count[rows] >= request.gpu_count,
                Check(f"node(s) have fewer than {request.gpu_count} GPUs", unresolvable=True),
            )
        )
        if request.is_sharing:
            lack = f"node(s) lack a GPU with {request.milli_per_gpu} free milli-GPU"
        else:
            plural = "GPU" if request.gpu_count == 1 else "GPUs"
            lack = f"node(s) lack {request.gpu_count} free {plural}"
            if request.min_gpu_memory_mib:
                lack += f" with >= {_gib(request.min_gpu_memory_mib)} memory"
        checks.append(
            (
                gpus_that_fit(state.free_milli[rows], request) >= request.gpu_count,
                Check(lack, unresolvable=False),
            )
        )
    if request.cpu_milli:
        checks.append(
            (
                state.cpu_capacity_milli[rows] >= request.cpu_milli,
                Check("node(s) have too little cpu in total", unresolvable=True),
            )
        )
        checks.append(
            (
                state.cpu_free_milli[rows] >= request.cpu_milli,
                Check("node(s) lack free cpu", unresolvable=False),
            )
        )
    if request.memory_mib:
        checks.append(
            (
                state.memory_capacity_mib[rows] >= request.memory_mib,
                Check("node(s) have too little memory in total", unresolvable=True),
            )
        )
        checks.append(
            (
                state.memory_free_mib[rows] >= request.memory_mib,
                Check("node(s) lack free memory", unresolvable=False),
            )
        )
    failed_check = np.full(len(rows), -1, dtype=np.int64)
    # Walk the checks last to first so that the first failed check is the one kept.
    for index in range(len(checks) - 1, -1, -1):
        failed_check[~checks[index][0]] = index
    return Feasibility(rows, failed_check, tuple(check for _, check in checks))
