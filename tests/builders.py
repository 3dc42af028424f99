"""Builders for the scoring and simulator tests: nodes, pods, cluster states, random clusters.

Plain builders (``node``, ``request``, ``sharing``, ``whole``, ``cpu_only``, ``state_of``,
``set_free``) keep the tables readable (the extender's tests use ``node`` and ``request``
too, through ``extender_builders``); the hypothesis strategies
(``clusters``, ``requests``, ``shape_tables``) draw valid random inputs for the
property tests: free never above capacity, padded GPU slots at 0 free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from scoring import (
    MILLI_PER_GPU,
    ON_DEMAND,
    ClusterState,
    NodeSpec,
    PodClass,
    PodRequest,
    ShapeTable,
)
from scoring.gpus import tightest_gpu

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
"""Hypothesis settings of every property test: moderate, no deadline, no example database."""

MODELS = ("A", "B", "C")


def node(
    name: str = "n0",
    gpus: int = 8,
    *,
    model: str = "A",
    cpu_milli: int = 64_000,
    memory_mib: int = 262_144,
    gpu_memory_mib: int = 0,
    capacity_type: int = ON_DEMAND,
    pool: str = "",
) -> NodeSpec:
    """A node; a node without GPUs gets no model."""
    return NodeSpec(
        name=name,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_count=gpus,
        gpu_model=model if gpus else "",
        gpu_memory_mib=gpu_memory_mib if gpus else 0,
        capacity_type=capacity_type,
        pool=pool,
    )


def nodes(count: int, prefix: str = "n", **kwargs: Any) -> list[NodeSpec]:
    return [node(f"{prefix}{i}", **kwargs) for i in range(count)]


def request(
    gpus: int = 1,
    milli: int | None = None,
    cpu_milli: int = 4000,
    memory_mib: int = 16384,
    *,
    pod_class: PodClass = PodClass.BATCH,
    priority: int = 0,
    preemptible: bool = True,
    models: Iterable[str] = (),
    min_gpu_memory_mib: int = 0,
) -> PodRequest:
    """A pod's request: ``gpus`` GPUs of ``milli`` each (whole GPUs unless given), none
    without GPUs. The defaults (a 1-GPU batch pod, 4 CPUs, 16 GiB) are the extender tests'."""
    return PodRequest(
        gpu_count=gpus,
        milli_per_gpu=(milli if milli is not None else MILLI_PER_GPU) if gpus else 0,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        pod_class=pod_class,
        priority=priority,
        preemptible=preemptible,
        allowed_models=frozenset(models),
        min_gpu_memory_mib=min_gpu_memory_mib,
    )


def sharing(
    milli: int,
    cpu_milli: int = 0,
    memory_mib: int = 0,
    *,
    models: Iterable[str] = (),
    min_gpu_memory_mib: int = 0,
) -> PodRequest:
    """A GPU-sharing pod: ``milli`` (< 1000) of one GPU."""
    return request(
        1, milli, cpu_milli, memory_mib, models=models, min_gpu_memory_mib=min_gpu_memory_mib
    )


def whole(
    count: int,
    cpu_milli: int = 0,
    memory_mib: int = 0,
    *,
    models: Iterable[str] = (),
    min_gpu_memory_mib: int = 0,
) -> PodRequest:
    """A pod taking ``count`` whole GPUs."""
    return request(
        count,
        MILLI_PER_GPU,
        cpu_milli,
        memory_mib,
        models=models,
        min_gpu_memory_mib=min_gpu_memory_mib,
    )


def cpu_only(cpu_milli: int, memory_mib: int = 0) -> PodRequest:
    return request(0, None, cpu_milli, memory_mib)


def state_of(*specs: NodeSpec, max_gpus: int | None = None) -> ClusterState:
    return ClusterState.from_nodes(list(specs), max_gpus=max_gpus)


def set_free(
    state: ClusterState,
    row: int,
    gpu_free_milli: Sequence[int] | None = None,
    cpu_free_milli: int | None = None,
    memory_free_mib: int | None = None,
) -> ClusterState:
    """Overwrite a node's free capacity, as if pods ran there, and bump its row_version.

    ``gpu_free_milli`` lists the free milli of the node's real GPUs, in slot order.
    """
    if gpu_free_milli is not None:
        assert len(gpu_free_milli) == state.gpu_count[row], "one value per real GPU"
        state.free_milli[row, : len(gpu_free_milli)] = gpu_free_milli
    if cpu_free_milli is not None:
        state.cpu_free_milli[row] = cpu_free_milli
    if memory_free_mib is not None:
        state.memory_free_mib[row] = memory_free_mib
    state.row_version[row] += 1
    return state


def shape_table(
    *shapes: tuple[int, int, int, Iterable[str], float]
    | tuple[int, int, int, Iterable[str], float, int],
) -> ShapeTable:
    """From ``(cpu_milli, milli_per_gpu, gpu_count, models, weight[, min_gpu_memory_mib])`` rows."""
    return ShapeTable.from_rows(
        [
            (row[0], row[1], row[2], frozenset(row[3]), row[5] if len(row) > 5 else 0)
            for row in shapes
        ],
        [row[4] for row in shapes],
    )


# --- Random inputs --------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomNode:
    """A node and how much of it is in use: what ``clusters`` draws."""

    spec: NodeSpec
    gpu_free_milli: tuple[int, ...]
    cpu_free_milli: int
    memory_free_mib: int


# Idle GPUs are common in real clusters (and whole-GPU pods need them): about 40% here.
_FREE_MILLI = st.one_of(
    st.just(MILLI_PER_GPU),
    st.sampled_from([0, 100, 250, 300, 500, 700, 999, 1000]),
    st.integers(0, MILLI_PER_GPU),
)


@st.composite
def random_nodes(draw: st.DrawFn, index: int = 0, used: bool = True) -> RandomNode:
    gpus = draw(st.sampled_from([0, 1, 2, 4, 8]))
    cpu = draw(st.sampled_from([0, 8_000, 32_000, 64_000, 96_000]))
    memory = draw(st.sampled_from([0, 16_384, 65_536]))
    spec = node(
        f"n{index}",
        gpus,
        model=draw(st.sampled_from(MODELS)),
        cpu_milli=cpu,
        memory_mib=memory,
        gpu_memory_mib=draw(st.sampled_from([0, 16_384, 32_768])),
        capacity_type=draw(st.sampled_from([0, 1])),
    )
    if not used:
        return RandomNode(spec, (MILLI_PER_GPU,) * gpus, cpu, memory)
    return RandomNode(
        spec,
        tuple(draw(st.lists(_FREE_MILLI, min_size=gpus, max_size=gpus))),
        draw(st.integers(0, cpu)),
        draw(st.integers(0, memory)),
    )


@st.composite
def clusters(
    draw: st.DrawFn, min_nodes: int = 1, max_nodes: int = 8, used: bool = True
) -> ClusterState:
    """A random cluster, its nodes partly used unless ``used`` is false."""
    count = draw(st.integers(min_nodes, max_nodes))
    drawn = [draw(random_nodes(i, used)) for i in range(count)]
    state = ClusterState.from_nodes([n.spec for n in drawn])
    for row, n in enumerate(drawn):
        state.free_milli[row, : len(n.gpu_free_milli)] = n.gpu_free_milli
        state.cpu_free_milli[row] = n.cpu_free_milli
        state.memory_free_mib[row] = n.memory_free_mib
    return state


_MODEL_SETS = st.sampled_from(
    [frozenset(), frozenset(), frozenset({"A"}), frozenset({"B", "C"}), frozenset({"Z"})]
)


@st.composite
def requests(draw: st.DrawFn) -> PodRequest:
    kind = draw(st.sampled_from(["cpu", "sharing", "whole"]))
    cpu = draw(st.sampled_from([0, 1_000, 4_000, 16_000, 40_000]))
    memory = draw(st.sampled_from([0, 1_024, 16_384, 40_000]))
    if kind == "cpu":
        return cpu_only(cpu, memory)
    models = draw(_MODEL_SETS)
    gpu_memory = draw(st.sampled_from([0, 0, 16_384, 20_000]))
    if kind == "sharing":
        milli = draw(st.one_of(st.sampled_from([100, 250, 500, 700]), st.integers(1, 999)))
        return sharing(milli, cpu, memory, models=models, min_gpu_memory_mib=gpu_memory)
    count = draw(st.sampled_from([1, 1, 2, 4, 8]))
    return whole(count, cpu, memory, models=models, min_gpu_memory_mib=gpu_memory)


@st.composite
def shape_tables(draw: st.DrawFn) -> ShapeTable:
    n_shapes = draw(st.integers(1, 6))
    rows = []
    for _ in range(n_shapes):
        cpu = draw(st.sampled_from([0, 2_000, 8_000, 40_000]))
        kind = draw(st.sampled_from(["cpu", "sharing", "whole"]))
        if kind == "cpu":
            milli, count = 0, 0
        elif kind == "sharing":
            milli, count = draw(st.integers(1, 999)), 1
        else:
            milli, count = MILLI_PER_GPU, draw(st.sampled_from([1, 2, 4, 8]))
        models = draw(_MODEL_SETS) if count else frozenset()
        gpu_memory = draw(st.sampled_from([0, 0, 16_384, 20_000])) if count else 0
        rows.append((cpu, milli, count, models, draw(st.floats(0.01, 10.0)), gpu_memory))
    return shape_table(*rows)


def arrays_of(state: ClusterState) -> dict[str, np.ndarray]:
    """Copies of the state's mutable arrays, to compare before and after."""
    return {
        "free_milli": state.free_milli.copy(),
        "cpu_free_milli": state.cpu_free_milli.copy(),
        "memory_free_mib": state.memory_free_mib.copy(),
    }


def assert_same_arrays(state: ClusterState, before: dict[str, np.ndarray]) -> None:
    for name, values in before.items():
        np.testing.assert_array_equal(getattr(state, name), values, err_msg=name)


def shared_gpu_of(state: ClusterState, request: PodRequest, rows: np.ndarray) -> np.ndarray:
    """The slot a sharing request takes on each row, as ``evaluate`` hands it to the terms."""
    if not request.is_sharing:
        return np.zeros(0, dtype=np.int64)
    return tightest_gpu(state.free_milli[rows], request.milli_per_gpu)
