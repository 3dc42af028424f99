"""Snapshot metrics (benchmarks/metrics.py) on hand-built states."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from builders import cpu_only, node, set_free, sharing, state_of, whole

from benchmarks.metrics import (
    distinct_gpu_shapes,
    gpu_memory_waste_mib,
    measure,
    percentiles_ms,
    pods_by_gpus,
    stranded_gpus,
)
from scoring import ClusterState, NodeSpec, PodClass, PodRequest

GIB = 1024


def _state(
    spec: NodeSpec, gpus: list[int] | None = None, cpu: int | None = None, memory: int | None = None
) -> ClusterState:
    return set_free(state_of(spec), 0, gpus, cpu, memory)


# Each row: one node in some state of use, the workload's shapes, and the stranded GPUs.
STRANDED = [
    # 3 of 8 GPUs free, only 4-GPU pods: nothing fits -> the 3 free GPUs are stranded
    (_state(node(gpus=8), [1000] * 3 + [0] * 5), [whole(4)], 3),
    # a 1-GPU shape fits there: nothing stranded
    (_state(node(gpus=8), [1000] * 3 + [0] * 5), [whole(4), whole(1)], 0),
    # one free 24 GiB GPU, pods need 40 GiB: stranded by GPU memory
    (_state(node(gpus=1, gpu_memory_mib=24 * GIB)), [whole(1, min_gpu_memory_mib=40 * GIB)], 1),
    # ... a 20 GiB pod fits it
    (_state(node(gpus=1, gpu_memory_mib=24 * GIB)), [whole(1, min_gpu_memory_mib=20 * GIB)], 0),
    # model A, pods want B: stranded by model (2 free GPUs)
    (_state(node(gpus=2, model="A")), [whole(1, models=["B"])], 2),
    # free GPUs but 1 core left, pods need 4: stranded by CPU
    (_state(node(gpus=4), cpu=1_000), [whole(1, 4_000)], 4),
    # free GPUs but 1 GiB left, pods need 8 GiB: stranded by memory
    (_state(node(gpus=4), memory=GIB), [whole(1, 0, 8 * GIB)], 4),
    # partly free GPUs: 300 and 200 free, a 500 share fits neither -> 2 stranded GPUs
    (_state(node(gpus=3), [300, 200, 0]), [sharing(500)], 2),
    # a 250 share fits the 300 GPU: the node is usable, nothing stranded
    (_state(node(gpus=3), [300, 200, 0]), [sharing(500), sharing(250)], 0),
    # a fully used node has nothing to strand
    (_state(node(gpus=2), [0, 0]), [whole(4)], 0),
    # a node without GPUs has nothing to strand
    (_state(node(gpus=0)), [whole(1)], 0),
    # no GPU shape at all: every free GPU is stranded
    (_state(node(gpus=2)), [], 2),
]


@pytest.mark.parametrize(
    ("state", "shapes", "expected"),
    STRANDED,
    ids=[
        "gpu-count",
        "small-shape-fits",
        "gpu-memory",
        "gpu-memory-fits",
        "model",
        "cpu",
        "memory",
        "partial-gpus",
        "partial-fits",
        "full-node",
        "cpu-node",
        "no-shapes",
    ],
)
def test_stranded_gpus(state: ClusterState, shapes: list[PodRequest], expected: int) -> None:
    assert stranded_gpus(state, shapes) == expected


def test_stranded_gpus_add_up_over_nodes() -> None:
    # node a: 3 free of 8 (a 4-GPU pod does not fit) -> 3; node b: 8 free (fits) -> 0;
    # node c: 1 free 24 GiB GPU, pod needs 40 GiB -> 1.  Total 4.
    state = state_of(
        node("a", 8, gpu_memory_mib=80 * GIB),
        node("b", 8, gpu_memory_mib=80 * GIB),
        node("c", 1, gpu_memory_mib=24 * GIB),
    )
    set_free(state, 0, [1000] * 3 + [0] * 5)
    assert stranded_gpus(state, [whole(4, min_gpu_memory_mib=40 * GIB)]) == 4


@pytest.mark.parametrize(
    ("gpu_memory_mib", "placed", "waste_mib"),
    [
        # 80 GiB GPU, pod needs 20 GiB: (80 - 20) x 1 = 60 GiB
        (80 * GIB, [whole(1, min_gpu_memory_mib=20 * GIB)], 60 * GIB),
        # 70B on 2 x 80 GiB needing 70 each: (80 - 70) x 2 = 20 GiB
        (80 * GIB, [whole(2, min_gpu_memory_mib=70 * GIB)], 20 * GIB),
        # both on one node: 60 + 20 = 80 GiB
        (
            80 * GIB,
            [whole(1, min_gpu_memory_mib=20 * GIB), whole(2, min_gpu_memory_mib=70 * GIB)],
            80 * GIB,
        ),
        # the smallest sufficient GPU wastes little: 23034 - 20480 = 2554 MiB
        (23034, [whole(1, min_gpu_memory_mib=20 * GIB)], 23034 - 20 * GIB),
        # no declared minimum: nothing counted
        (80 * GIB, [whole(4)], 0),
        # node memory unknown (openb): nothing counted
        (0, [whole(1, min_gpu_memory_mib=20 * GIB)], 0),
        # CPU-only pods take no GPU memory
        (80 * GIB, [cpu_only(1_000)], 0),
    ],
    ids=["one-gpu", "two-gpus", "sum", "tight", "no-minimum", "unknown-memory", "cpu-only"],
)
def test_gpu_memory_waste(gpu_memory_mib: int, placed: list[PodRequest], waste_mib: int) -> None:
    state = state_of(node(gpus=8, gpu_memory_mib=gpu_memory_mib))
    assert gpu_memory_waste_mib(state, [(0, request) for request in placed]) == waste_mib


def test_half_load_waste_counts_the_pods_placed_by_then() -> None:
    state = state_of(node(gpus=8, gpu_memory_mib=80 * GIB))
    placed = [
        (0, whole(1, min_gpu_memory_mib=20 * GIB)),  # 60 GiB
        (0, whole(4)),  # no minimum: 0
        (0, whole(2, min_gpu_memory_mib=70 * GIB)),  # 20 GiB, after half load
    ]
    metrics = measure(state, placed, [whole(8)], [], 100.0, placed_at_half_load=2)
    assert metrics.gpu_memory_waste_gib == 80.0
    assert metrics.gpu_memory_waste_half_load_gib == 60.0
    assert measure(state, placed, [], [], 100.0).gpu_memory_waste_half_load_gib == 80.0


def test_pods_by_gpus_always_has_the_standard_sizes() -> None:
    failed = [sharing(500), sharing(100), whole(1), whole(8), cpu_only(1_000), whole(3)]
    assert pods_by_gpus(failed) == {"0": 1, "1": 1, "2": 0, "4": 0, "8": 1, "share": 2, "3": 1}
    assert pods_by_gpus([]) == {"0": 0, "1": 0, "2": 0, "4": 0, "8": 0, "share": 0}


def test_distinct_gpu_shapes_ignore_class_and_cpu_only_pods() -> None:
    interactive = replace(whole(1, 4_000), pod_class=PodClass.INTERACTIVE, team="a")
    shapes = distinct_gpu_shapes(
        [whole(2), whole(1, 4_000), interactive, cpu_only(1_000), sharing(300)]
    )
    # smallest GPU request first: 300 milli, 1000 milli, 2000 milli
    assert shapes == [sharing(300), whole(1, 4_000), whole(2)]


def test_measure_combines_the_parts() -> None:
    # one 80 GiB node with 1 free GPU; shapes need 2 GPUs -> 1 stranded.  Placed: 7 GPUs of a
    # 20 GiB pod -> 7 x 60 = 420 GiB.  Failed: one 2-GPU pod.
    state = set_free(state_of(node(gpus=8, gpu_memory_mib=80 * GIB)), 0, [1000] + [0] * 7)
    placed = [(0, whole(7, min_gpu_memory_mib=20 * GIB))]
    metrics = measure(state, placed, [whole(2)], [whole(2)], arrived_pct=100.004)
    assert metrics.stranded_gpus == 1
    assert metrics.gpu_memory_waste_gib == 420.0
    # given: 7 x 80 = 560 GiB, so 420 / 560 = 75%
    assert metrics.gpu_memory_waste_pct == 75.0
    assert metrics.failed_pods_by_gpus["2"] == 1
    assert metrics.arrived_pct == 100.0
    assert set(metrics.as_json()) == {
        "snapshot_arrived_pct",
        "stranded_gpus",
        "gpu_memory_waste_gib",
        "gpu_memory_waste_pct",
        "gpu_memory_waste_half_load_gib",
        "failed_pods_at_half_load",
        "failed_pods_by_gpus",
    }


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        # 1..100 ms: numpy's linear percentile: p50 = 50.5, p99 = 99.01
        (np.arange(1, 101) / 1000, [50.5, 99.01]),
        (np.array([0.002]), [2.0, 2.0]),
    ],
    ids=["ramp", "one"],
)
def test_percentiles_ms(seconds: np.ndarray, expected: list[float]) -> None:
    assert percentiles_ms(seconds) == pytest.approx(expected)


def test_percentiles_of_nothing_are_nan() -> None:
    assert all(np.isnan(percentiles_ms(np.zeros(0))))
