"""Score terms (scoring/terms/): best_fit, fragmentation, memory_fit, on hand-computed nodes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import (
    PROPERTY,
    clusters,
    cpu_only,
    node,
    requests,
    set_free,
    shape_table,
    shared_gpu_of,
    sharing,
    state_of,
    whole,
)
from hypothesis import given

from scoring import (
    TERMS,
    Candidates,
    ClusterState,
    FragmentAggregates,
    PodRequest,
    ShapeTable,
    check_feasibility,
)
from scoring.terms import best_fit, class_placement, fragmentation, memory_fit, reclaim_cost


def candidates_of(
    state: ClusterState, request: PodRequest, fragments: FragmentAggregates | None = None
) -> Candidates:
    """The feasible nodes and their slots, as ``evaluate`` hands them to the terms."""
    rows = check_feasibility(state, request).feasible_rows
    return Candidates(state, request, rows, shared_gpu_of(state, request, rows), fragments)


def test_registry_names_each_term_by_its_module() -> None:
    assert {
        "best_fit": best_fit,
        "class_placement": class_placement,
        "fragmentation": fragmentation,
        "memory_fit": memory_fit,
        "reclaim_cost": reclaim_cost,
    } == TERMS


@pytest.mark.parametrize("name", sorted(TERMS))
@pytest.mark.parametrize(
    "request_", [whole(2), sharing(300), cpu_only(1_000)], ids=["whole", "sharing", "cpu-only"]
)
def test_every_term_on_no_candidates(name: str, request_: PodRequest) -> None:
    # nothing fits a 1-GPU, 0-CPU node: the term sees an empty candidate list
    state = set_free(state_of(node(gpus=1, cpu_milli=0)), 0, [0])
    fragments = FragmentAggregates(shape_table(*MIX))
    candidates = candidates_of(state, request_, fragments)
    assert len(candidates) == 0
    assert TERMS[name](candidates).shape == (0,)


# --- best_fit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "gpu_free", "cpu_free", "request_", "expected"),
    [
        # gpu free after 8000-2000=6000 of 8000, cpu 64000-8000=56000 of 64000
        #   -> 1-(0.75+0.875)/2 = 0.1875
        (node(gpus=8), None, None, whole(2, 8_000), 0.1875),
        # gpu (500+1000)-500=1000 of 2000, cpu 16000-8000=8000 of 64000 -> 1-(0.5+0.125)/2 = 0.6875
        (node(gpus=2), [500, 1000], 16_000, sharing(500, 8_000), 0.6875),
        # CPU-only pod on a GPU node: gpu 8000 of 8000 stays free, cpu 32000 of 64000
        #   -> 1-(1+0.5)/2 = 0.25
        (node(gpus=8), None, None, cpu_only(32_000), 0.25),
        # node without GPUs: its GPU part counts as full (0), cpu 48000 of 64000 -> 1-(0+0.75)/2
        (node(gpus=0), None, None, cpu_only(16_000), 0.625),
        # zero capacity (0 GPUs, 0 CPU): both parts count as full -> 1-(0+0)/2 = 1
        (node(gpus=0, cpu_milli=0, memory_mib=0), None, None, cpu_only(0), 1.0),
        # the pod fills the node: 0 of 8000 and 0 of 64000 left -> 1
        (node(gpus=8), None, None, whole(8, 64_000), 1.0),
        # an idle node, empty pod: all free -> 1-(1+1)/2 = 0
        (node(gpus=4), None, None, cpu_only(0), 0.0),
    ],
    ids=[
        "whole-2",
        "sharing-on-used-node",
        "cpu-only-pod",
        "no-gpus",
        "zero-capacity",
        "fills-node",
        "idle-node-empty-pod",
    ],
)
def test_best_fit(
    spec, gpu_free: list[int] | None, cpu_free: int | None, request_: PodRequest, expected: float
) -> None:
    state = set_free(state_of(spec), 0, gpu_free, cpu_free)
    assert best_fit(candidates_of(state, request_)).tolist() == pytest.approx([expected])


def test_best_fit_prefers_the_fuller_node() -> None:
    # row 0 idle: 1-(7000/8000+56000/64000)/2 = 0.125
    # row 1 half used: gpu 4000-1000=3000 of 8000, cpu 32000-8000=24000 of 64000
    #   -> 1-(0.375+0.375)/2 = 0.625
    state = set_free(state_of(node("idle"), node("half")), 1, [1000] * 4 + [0] * 4, 32_000)
    assert best_fit(candidates_of(state, whole(1, 8_000))).tolist() == pytest.approx([0.125, 0.625])


def reference_best_fit(state: ClusterState, row: int, request: PodRequest) -> float:
    gpu_capacity = int(state.gpu_count[row]) * 1000
    gpu_free = sum(state.free_milli[row, : state.gpu_count[row]].tolist())
    gpu_left = (gpu_free - request.gpu_milli) / gpu_capacity if gpu_capacity else 0.0
    cpu_capacity = int(state.cpu_capacity_milli[row])
    cpu_free = int(state.cpu_free_milli[row])
    cpu_left = (cpu_free - request.cpu_milli) / cpu_capacity if cpu_capacity else 0.0
    return 1.0 - (gpu_left + cpu_left) / 2.0


@PROPERTY
@given(state=clusters(max_nodes=10), request_=requests())
def test_best_fit_matches_a_scalar_reference(state: ClusterState, request_: PodRequest) -> None:
    candidates = candidates_of(state, request_)
    expected = [reference_best_fit(state, int(row), request_) for row in candidates.rows]
    scores = best_fit(candidates)
    assert scores.tolist() == pytest.approx(expected)
    assert ((scores >= 0) & (scores <= 1)).all()  # feasible rows: nothing left below 0


# --- memory_fit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu_memory_mib", "request_", "expected"),
    [
        # smallest 16384: 16384/16384=1, 16384/32768=0.5, 16384/81920=0.2
        ([16_384, 32_768, 81_920], whole(1), [1.0, 0.5, 0.2]),
        # unknown memory (0) scores 1; smallest known 16384: 16384/32768=0.5
        ([0, 16_384, 32_768], sharing(500), [1.0, 1.0, 0.5]),
        ([0, 0], whole(1), [1.0, 1.0]),  # nothing known: neutral
        ([16_384, 81_920], cpu_only(1_000), [1.0, 1.0]),  # CPU-only pods: neutral
        ([81_920], whole(1), [1.0]),  # single node: it is the smallest
    ],
    ids=["ratios", "unknown-memory", "all-unknown", "cpu-only-pod", "single-node"],
)
def test_memory_fit(gpu_memory_mib: list[int], request_: PodRequest, expected: list[float]) -> None:
    state = state_of(*(node(f"n{i}", 2, gpu_memory_mib=m) for i, m in enumerate(gpu_memory_mib)))
    assert memory_fit(candidates_of(state, request_)).tolist() == pytest.approx(expected)


def test_memory_fit_compares_candidates_only() -> None:
    # The 16 GiB node is busy, so the smallest *candidate* is 32 GiB: 32768/32768=1, 32768/65536
    state = state_of(
        node("small", 1, gpu_memory_mib=16_384),
        node("mid", 1, gpu_memory_mib=32_768),
        node("big", 1, gpu_memory_mib=65_536),
    )
    set_free(state, 0, [0])
    assert memory_fit(candidates_of(state, whole(1))).tolist() == pytest.approx([1.0, 0.5])


# --- fragmentation --------------------------------------------------------------------------

# Two shapes, half each: a 500-milli sharing pod needing 4000 CPU, and a CPU-only pod.
# On an idle 2-GPU node [1000, 1000] with 64000 CPU: shape 1 fits and no GPU is below 500
# (0); the CPU-only shape counts all 2000 free milli. F_before = 0.5*0 + 0.5*2000 = 1000.
MIX = (4_000, 500, 1, (), 0.5), (4_000, 0, 0, (), 0.5)


def sigmoid_of_growth(growth_milli: float) -> float:
    return 1.0 / (1.0 + math.exp(growth_milli / 1000.0))


@pytest.mark.parametrize(
    ("gpu_free", "request_", "expected"),
    [
        # slot 0 -> [400, 1000]: shape 1 fits, 400 below 500; CPU-only 1400
        #   F_after = 0.5*400 + 0.5*1400 = 900, growth 900-1000 = -100
        ([1000, 1000], sharing(600), sigmoid_of_growth(-100)),
        # [500, 1000]: nothing below 500 (500 >= 500); CPU-only 1500 -> 750, growth -250
        ([1000, 1000], sharing(500), sigmoid_of_growth(-250)),
        # [0, 0]: shape 1 no longer fits -> all free (0); CPU-only 0 -> F 0, growth -1000
        ([1000, 1000], whole(2), sigmoid_of_growth(-1000)),
        # cpu 64000-62000=2000 < 4000: shape 1 stops fitting -> 2000; F_after = 0.5*2000+0.5*2000
        #   = 2000, growth +1000 -> 0.2689
        ([1000, 1000], cpu_only(62_000), sigmoid_of_growth(1000)),
        # CPU-only pod that leaves shape 1 fitting: nothing changes, growth 0 -> 0.5
        ([1000, 1000], cpu_only(1_000), 0.5),
        # used node [600, 1000]: F_before = 0.5*0 + 0.5*1600 = 800; tightest GPU (slot 0) ->
        #   [100, 1000]: 100 below 500, CPU-only 1100 -> F_after 600, growth -200
        ([600, 1000], sharing(500), sigmoid_of_growth(-200)),
    ],
    ids=[
        "sharing-600",
        "sharing-500",
        "whole-2",
        "cpu-only-starves-shape",
        "cpu-only-neutral",
        "tightest-gpu",
    ],
)
def test_fragmentation(gpu_free: list[int], request_: PodRequest, expected: float) -> None:
    state = set_free(state_of(node(gpus=2)), 0, gpu_free)
    fragments = FragmentAggregates(shape_table(*MIX))
    assert fragmentation(candidates_of(state, request_, fragments)).tolist() == pytest.approx(
        [expected]
    )


@pytest.mark.parametrize(
    ("fragments", "specs", "expected"),
    [
        (None, [node("a"), node("b")], [0.5, 0.5]),  # no shape mix yet: neutral
        (FragmentAggregates(shape_table(*MIX)), [], []),  # empty candidate list
    ],
    ids=["no-shapes", "no-candidates"],
)
def test_fragmentation_guards(
    fragments: FragmentAggregates | None, specs: list, expected: list[float]
) -> None:
    state = state_of(*specs)
    assert fragmentation(candidates_of(state, whole(1), fragments)).tolist() == expected


def test_fragmentation_score_depends_on_the_node_alone() -> None:
    # Row 1's score is the same whether row 0 is among the candidates or not.
    state = set_free(state_of(node("a", 2), node("b", 2)), 1, [600, 1000])
    table: ShapeTable = shape_table(*MIX)
    request_ = sharing(500)
    both = fragmentation(candidates_of(state, request_, FragmentAggregates(table)))
    alone = Candidates(state, request_, np.array([1]), np.array([0]), FragmentAggregates(table))
    assert both[1] == pytest.approx(fragmentation(alone)[0])
    assert both.tolist() == pytest.approx([sigmoid_of_growth(-250), sigmoid_of_growth(-200)])
