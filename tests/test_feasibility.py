"""check_feasibility: every check, its stable reason, and the vectorised mask vs a scalar one."""

from __future__ import annotations

import numpy as np
import pytest
from builders import (
    PROPERTY,
    clusters,
    cpu_only,
    node,
    requests,
    set_free,
    sharing,
    state_of,
    whole,
)
from hypothesis import given
from hypothesis import strategies as st

from scoring import ClusterState, NodeSpec, PodRequest, check_feasibility, fits_when_empty
from scoring.feasibility import CheckKind, reason

FITS = -1

# --- reasons --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "request_", "expected"),
    [
        # models sorted and joined by "|", whatever order the pod gave them in
        (CheckKind.GPU_MODEL, sharing(500, models=["B", "A"]), "node(s) have no GPU of model A|B"),
        # 16384 MiB / 1024 = 16
        (
            CheckKind.GPU_MEMORY,
            whole(1, min_gpu_memory_mib=16_384),
            "node(s) have GPUs with less than 16 GiB memory",
        ),
        # 1536 / 1024 = 1.5
        (
            CheckKind.GPU_MEMORY,
            sharing(100, min_gpu_memory_mib=1_536),
            "node(s) have GPUs with less than 1.5 GiB memory",
        ),
        (CheckKind.GPU_COUNT, whole(4), "node(s) have fewer than 4 GPUs"),
        (CheckKind.GPU_COUNT, whole(1), "node(s) have no GPU"),
        (CheckKind.GPU_FREE, sharing(250), "node(s) lack a GPU with 250 free milli-GPU"),
        (CheckKind.GPU_FREE, whole(1), "node(s) lack 1 free GPU"),  # singular
        (CheckKind.GPU_FREE, whole(8), "node(s) lack 8 free GPUs"),
        # 32768 / 1024 = 32
        (
            CheckKind.GPU_FREE,
            whole(2, min_gpu_memory_mib=32_768),
            "node(s) lack 2 free GPUs with >= 32 GiB memory",
        ),
        (CheckKind.CPU_CAPACITY, cpu_only(1_000), "node(s) have too little cpu in total"),
        (CheckKind.CPU_FREE, cpu_only(1_000), "node(s) lack free cpu"),
        (CheckKind.MEMORY_CAPACITY, cpu_only(0, 1), "node(s) have too little memory in total"),
        (CheckKind.MEMORY_FREE, cpu_only(0, 1), "node(s) lack free memory"),
    ],
    ids=[
        "gpu-model",
        "gpu-memory",
        "gpu-memory-fraction",
        "gpu-count",
        "gpu-count-one",
        "gpu-free-sharing",
        "gpu-free-one",
        "gpu-free-many",
        "gpu-free-with-memory",
        "cpu-capacity",
        "cpu-free",
        "memory-capacity",
        "memory-free",
    ],
)
def test_reason(kind: CheckKind, request_: PodRequest, expected: str) -> None:
    assert reason(kind, request_) == expected


@pytest.mark.parametrize(
    ("kind", "unresolvable"),
    [
        (CheckKind.GPU_MODEL, True),
        (CheckKind.GPU_MEMORY, True),
        (CheckKind.GPU_COUNT, True),
        (CheckKind.GPU_FREE, False),  # evicting pods frees GPUs
        (CheckKind.CPU_CAPACITY, True),
        (CheckKind.CPU_FREE, False),
        (CheckKind.MEMORY_CAPACITY, True),
        (CheckKind.MEMORY_FREE, False),
    ],
    ids=lambda value: value.name if isinstance(value, CheckKind) else str(value),
)
def test_only_free_capacity_checks_are_resolvable(kind: CheckKind, unresolvable: bool) -> None:
    assert check_feasibility(state_of(node()), whole(1)).check(kind).unresolvable is unresolvable


# --- each check on a hand-made node ---------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "gpu_free", "cpu_free", "memory_free", "request_", "failed"),
    [
        # model A not in {B}
        (node(model="A"), None, None, None, sharing(100, models=["B"]), CheckKind.GPU_MODEL),
        # 16384 MiB per GPU < 32768 asked
        (
            node(gpu_memory_mib=16_384),
            None,
            None,
            None,
            whole(1, min_gpu_memory_mib=32_768),
            CheckKind.GPU_MEMORY,
        ),
        # 2 GPUs < 4
        (node(gpus=2), None, None, None, whole(4), CheckKind.GPU_COUNT),
        # whole(2): GPUs with 1000 free: only slot 1 -> 1 < 2
        (node(gpus=2), [500, 1000], None, None, whole(2), CheckKind.GPU_FREE),
        # sharing(500): free 400, 300 both < 500
        (node(gpus=2), [400, 300], None, None, sharing(500), CheckKind.GPU_FREE),
        # cpu capacity 8000 < 16000
        (node(cpu_milli=8_000), None, None, None, cpu_only(16_000), CheckKind.CPU_CAPACITY),
        # capacity 64000 is enough, free 8000 < 16000
        (node(), None, 8_000, None, cpu_only(16_000), CheckKind.CPU_FREE),
        # memory capacity 1024 < 2048
        (node(memory_mib=1_024), None, None, None, cpu_only(0, 2_048), CheckKind.MEMORY_CAPACITY),
        # free 1024 < 2048
        (node(), None, None, 1_024, cpu_only(0, 2_048), CheckKind.MEMORY_FREE),
        # several failures: model (first) and cpu; the first one is reported
        (
            node(model="A", cpu_milli=1_000),
            None,
            None,
            None,
            sharing(100, 4_000, models=["B"]),
            CheckKind.GPU_MODEL,
        ),
        # zero capacity: 0 GPUs -> count 0 < 1 (the model check does not apply: no model asked)
        (
            node(gpus=0, cpu_milli=0, memory_mib=0),
            None,
            None,
            None,
            sharing(100),
            CheckKind.GPU_COUNT,
        ),
        # zero capacity: cpu 0 < 1
        (
            node(gpus=0, cpu_milli=0, memory_mib=0),
            None,
            None,
            None,
            cpu_only(1),
            CheckKind.CPU_CAPACITY,
        ),
        # zero capacity: a request for nothing fits anywhere
        (node(gpus=0, cpu_milli=0, memory_mib=0), None, None, None, cpu_only(0), FITS),
        # exactly enough everywhere: 500 free >= 500, 4000 >= 4000, 1024 >= 1024
        (node(gpus=2), [500, 0], 4_000, 1_024, sharing(500, 4_000, 1_024), FITS),
        # whole(2) exactly: slots 0 and 2 are fully free, 2 >= 2
        (node(gpus=4), [1000, 999, 1000, 0], None, None, whole(2), FITS),
        # a CPU-only pod ignores GPUs entirely, even all busy ones
        (node(gpus=2), [0, 0], None, None, cpu_only(1_000), FITS),
        # gpu memory exactly 16384 >= 16384 and model in {A, B}
        (
            node(model="A", gpu_memory_mib=16_384),
            None,
            None,
            None,
            whole(1, models=["A", "B"], min_gpu_memory_mib=16_384),
            FITS,
        ),
    ],
    ids=[
        "gpu-model",
        "gpu-memory",
        "gpu-count",
        "gpu-free-whole",
        "gpu-free-sharing",
        "cpu-capacity",
        "cpu-free",
        "memory-capacity",
        "memory-free",
        "first-failure-wins",
        "zero-capacity-gpu-pod",
        "zero-capacity-cpu-pod",
        "zero-capacity-empty-pod",
        "exact-fit",
        "whole-skips-partial-gpu",
        "cpu-only-ignores-gpus",
        "model-and-memory-ok",
    ],
)
def test_each_check(
    spec: NodeSpec,
    gpu_free: list[int] | None,
    cpu_free: int | None,
    memory_free: int | None,
    request_: PodRequest,
    failed: int,
) -> None:
    state = set_free(state_of(spec), 0, gpu_free, cpu_free, memory_free)
    feasibility = check_feasibility(state, request_)
    assert feasibility.failed_check.tolist() == [failed]
    assert feasibility.mask.tolist() == [failed == FITS]
    if failed == FITS:
        assert feasibility.reasons_by_row() == {}
    else:
        check = feasibility.reasons_by_row()[0]
        assert check.kind == failed
        assert check.reason == reason(CheckKind(failed), request_)


def test_reasons_depend_only_on_the_request() -> None:
    # Two unrelated clusters, same request: each failing kind gives the same text.
    request_ = whole(2, 16_000, 4_096, models=["A"], min_gpu_memory_mib=16_384)
    first = state_of(
        node("a", 1, model="A", gpu_memory_mib=32_768),  # 1 GPU < 2 -> GPU_COUNT
        node("b", 8, model="B", gpu_memory_mib=32_768),  # GPU_MODEL
        node("c", 8, model="A", gpu_memory_mib=8_192, cpu_milli=1_000),  # GPU_MEMORY
    )
    second = set_free(
        state_of(
            node("x", 2, model="A", gpu_memory_mib=80_000, cpu_milli=96_000),
            node("y", 4, model="A", gpu_memory_mib=16_384, cpu_milli=8_000),  # CPU_CAPACITY
            node("z", 2, model="C", gpu_memory_mib=1_024),  # GPU_MODEL
        ),
        0,
        [1000, 10],  # 1 free GPU < 2 -> GPU_FREE
    )
    by_kind: dict[CheckKind, set[str]] = {}
    for state in (first, second):
        for check in check_feasibility(state, request_).reasons_by_row().values():
            by_kind.setdefault(check.kind, set()).add(check.reason)
    assert set(by_kind) == {
        CheckKind.GPU_COUNT,
        CheckKind.GPU_MODEL,
        CheckKind.GPU_MEMORY,
        CheckKind.GPU_FREE,
        CheckKind.CPU_CAPACITY,
    }
    assert all(len(texts) == 1 for texts in by_kind.values()), by_kind


def test_reason_counts_aggregate_like_failed_scheduling() -> None:
    # 4 nodes lack free GPUs, 1 has too few GPUs, 1 fits: "0/6 ... 4 node(s) lack 2 free GPUs"
    state = state_of(*(node(f"n{i}", 4) for i in range(5)), node("small", 1))
    for row in range(4):
        set_free(state, row, [1000, 0, 0, 0])  # 1 free GPU < 2
    feasibility = check_feasibility(state, whole(2))
    assert feasibility.reason_counts() == {
        "node(s) lack 2 free GPUs": 4,
        "node(s) have fewer than 2 GPUs": 1,
    }
    assert feasibility.feasible_rows.tolist() == [4]


@pytest.mark.parametrize(
    ("rows", "expected_rows", "expected_mask"),
    [
        (None, [0, 1, 2], [True, False, True]),  # None = every node, in row order
        (np.array([2, 0]), [2, 0], [True, True]),  # given order kept
        (np.array([1]), [1], [False]),
        (np.zeros(0, dtype=np.int64), [], []),  # empty candidate list
    ],
    ids=["all", "subset-reordered", "one", "empty"],
)
def test_rows_select_the_candidates(
    rows: np.ndarray | None, expected_rows: list[int], expected_mask: list[bool]
) -> None:
    # row 1 has 2 GPUs < 4
    state = state_of(node("a", 8), node("b", 2), node("c", 4))
    feasibility = check_feasibility(state, whole(4), rows)
    assert feasibility.rows.tolist() == expected_rows
    assert feasibility.mask.tolist() == expected_mask
    assert len(feasibility.failed_check) == len(expected_rows)


def test_empty_cluster_has_no_candidates() -> None:
    feasibility = check_feasibility(ClusterState.from_nodes([]), whole(1, 1_000))
    assert feasibility.mask.shape == (0,)
    assert feasibility.feasible_rows.tolist() == []
    assert feasibility.reason_counts() == {}
    assert feasibility.reasons_by_row() == {}


# --- vectorised vs scalar -------------------------------------------------------------------


def reference_first_failure(state: ClusterState, row: int, request: PodRequest) -> int:
    """The checks one node at a time, in the documented order; -1 when the node fits."""
    if request.gpu_count:
        model_id = int(state.gpu_model[row])
        model = state.models[model_id] if model_id >= 0 else None
        if request.allowed_models and model not in request.allowed_models:
            return CheckKind.GPU_MODEL
        if request.min_gpu_memory_mib and state.gpu_memory_mib[row] < request.min_gpu_memory_mib:
            return CheckKind.GPU_MEMORY
        if state.gpu_count[row] < request.gpu_count:
            return CheckKind.GPU_COUNT
        real_gpus = state.free_milli[row, : state.gpu_count[row]].tolist()
        if sum(free >= request.milli_per_gpu for free in real_gpus) < request.gpu_count:
            return CheckKind.GPU_FREE
    if request.cpu_milli:
        if state.cpu_capacity_milli[row] < request.cpu_milli:
            return CheckKind.CPU_CAPACITY
        if state.cpu_free_milli[row] < request.cpu_milli:
            return CheckKind.CPU_FREE
    if request.memory_mib:
        if state.memory_capacity_mib[row] < request.memory_mib:
            return CheckKind.MEMORY_CAPACITY
        if state.memory_free_mib[row] < request.memory_mib:
            return CheckKind.MEMORY_FREE
    return FITS


@PROPERTY
@given(state=clusters(max_nodes=10), request_=requests(), data=st.data())
def test_masks_match_a_scalar_reference(
    state: ClusterState, request_: PodRequest, data: st.DataObject
) -> None:
    rows = np.array(
        data.draw(st.permutations(range(state.n_nodes)), label="order")[
            : data.draw(st.integers(0, state.n_nodes), label="how many")
        ],
        dtype=np.int64,
    )
    feasibility = check_feasibility(state, request_, rows)
    expected = [reference_first_failure(state, int(row), request_) for row in rows]
    assert feasibility.failed_check.tolist() == expected
    assert feasibility.mask.tolist() == [kind == FITS for kind in expected]
    assert check_feasibility(state, request_).failed_check.tolist() == [
        reference_first_failure(state, row, request_) for row in range(state.n_nodes)
    ]


# --- what no node could ever take -------------------------------------------------------------


def full_fleet() -> ClusterState:
    """An 8-GPU node of model A (80 GiB GPUs) and a 4-GPU node of model B, both full."""
    state = state_of(
        node("a", 8, model="A", gpu_memory_mib=81_920),
        node("b", 4, model="B", cpu_milli=16_000, gpu_memory_mib=24_576),
    )
    set_free(state, 0, [0] * 8, cpu_free_milli=0, memory_free_mib=0)
    return set_free(state, 1, [0] * 4, cpu_free_milli=0, memory_free_mib=0)


@pytest.mark.parametrize(
    ("request_", "fits"),
    [
        (whole(8), True),  # nothing free now, but node a once empty
        (whole(16), False),  # no node has 16 GPUs
        (whole(4, models=["B"]), True),
        (whole(8, models=["B"]), False),  # B nodes have 4
        (whole(1, models=["C"]), False),  # no model C here
        (whole(1, min_gpu_memory_mib=40_960), True),  # A's 80 GiB
        (whole(2, models=["B"], min_gpu_memory_mib=40_960), False),  # B's are 24 GiB
        (whole(4, models=["B"], cpu_milli=32_000), False),  # B has 16 cores
        (cpu_only(64_000), True),
        (cpu_only(65_000), False),
    ],
)
def test_fits_when_empty_ignores_what_is_free(request_: PodRequest, fits: bool) -> None:
    state = full_fleet()
    assert not check_feasibility(state, request_).mask.any()  # nothing fits now
    assert fits_when_empty(state, request_) is fits
