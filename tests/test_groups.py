"""NodeGroups (scoring/groups.py), and that grouping never changes a policy's choice."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from builders import PROPERTY, node, random_nodes, requests, set_free, sharing, state_of, whole
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.policies import Choice, PolicyContext
from benchmarks.policies.fairpack import FairpackPolicy
from benchmarks.policies.fgd import FGDPolicy, gpu_memory_by_model, typical_shapes
from scoring import (
    SPOT,
    ClusterState,
    FragmentAggregates,
    OnlineFragments,
    PodRequest,
    PolicyConfig,
    check_feasibility,
    evaluate,
)
from scoring.gpus import lowest_free_gpus
from scoring.groups import NodeGroups


def groups_of(state: ClusterState) -> list[int]:
    groups = NodeGroups()
    groups.refresh(state)
    return groups.group.tolist()


def same_partition(groups: list[int], expected: list[int]) -> bool:
    """Whether two labelings split the rows the same way (labels themselves are arbitrary)."""
    return all(
        (groups[i] == groups[j]) == (expected[i] == expected[j])
        for i in range(len(groups))
        for j in range(len(groups))
    )


@pytest.mark.parametrize(
    ("specs", "used", "expected"),
    [
        # a and b are copies; c differs by model, d by CPU capacity, e by memory capacity
        (
            [
                node("a"),
                node("b"),
                node("c", model="B"),
                node("d", cpu_milli=32_000),
                node("e", memory_mib=1_024),
            ],
            {},
            [0, 0, 1, 2, 3],
        ),
        # same multiset of free milli in another slot order: same group
        (
            [node("a", 2), node("b", 2)],
            {0: {"gpu_free_milli": [500, 1000]}, 1: {"gpu_free_milli": [1000, 500]}},
            [0, 0],
        ),
        # names and pools play no part in any score
        ([node("a", pool="x"), node("b", pool="y")], {}, [0, 0]),
        # capacity type is part of the row
        ([node("a"), node("b", capacity_type=SPOT)], {}, [0, 1]),
        # GPU memory is part of the row (memory_fit reads it)
        ([node("a", gpu_memory_mib=16_384), node("b", gpu_memory_mib=32_768)], {}, [0, 1]),
        # 2 GPUs idle vs 2 GPUs one busy
        ([node("a", 2), node("b", 2)], {1: {"gpu_free_milli": [0, 1000]}}, [0, 1]),
        # same GPUs, less free CPU (a CPU-only pod runs there)
        ([node("a", 2), node("b", 2)], {1: {"cpu_free_milli": 1_000}}, [0, 1]),
        # same GPUs and CPU, less free memory
        ([node("a", 2), node("b", 2)], {1: {"memory_free_mib": 1_024}}, [0, 1]),
        # same free CPU, different capacity (best_fit divides by it)
        ([node("a"), node("b", cpu_milli=128_000)], {1: {"cpu_free_milli": 64_000}}, [0, 1]),
        # same free memory, different capacity (the reasons tell capacity from free)
        ([node("a"), node("b", memory_mib=524_288)], {1: {"memory_free_mib": 262_144}}, [0, 1]),
        # zero-capacity nodes are all alike
        (
            [node("z1", 0, cpu_milli=0, memory_mib=0), node("z2", 0, cpu_milli=0, memory_mib=0)],
            {},
            [0, 0],
        ),
    ],
    ids=[
        "copies",
        "slot-order",
        "names-pools",
        "capacity-type",
        "gpu-memory",
        "gpu-usage",
        "cpu-usage",
        "memory-usage",
        "cpu-capacity",
        "memory-capacity",
        "zero-capacity",
    ],
)
def test_equal_rows_share_a_group(
    specs: list, used: dict[int, dict[str, object]], expected: list[int]
) -> None:
    state = state_of(*specs)
    for row, free in used.items():
        set_free(state, row, **free)
    groups = groups_of(state)
    assert same_partition(groups, expected), groups


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # groups: {0, 1} and {2, 3}; the first of each in the order given
        ([3, 1, 0, 2], [3, 1]),
        ([0, 1, 2, 3], [0, 2]),
        ([2, 0], [2, 0]),  # order kept, not sorted
        ([1], [1]),
        ([], []),  # empty candidate list
    ],
    ids=["by-preference", "row-order", "order-kept", "single", "empty"],
)
def test_representatives_keep_the_order_and_pick_the_first_of_each_group(
    rows: list[int], expected: list[int]
) -> None:
    state = state_of(node("a"), node("b"), node("c", 2), node("d", 2))
    groups = NodeGroups()
    groups.refresh(state)
    assert groups.representatives(np.array(rows, dtype=np.int64)).tolist() == expected


def test_a_changed_row_moves_to_another_group_after_refresh() -> None:
    state = state_of(node("a", 2), node("b", 2), node("c", 2))
    groups = NodeGroups()
    groups.refresh(state)
    idle = int(groups.group[0])
    assert groups.group.tolist() == [idle, idle, idle]

    state.place(1, sharing(300), [0])
    assert groups.group[1] == idle  # not refreshed yet
    groups.refresh(state)
    assert groups.group[1] != idle
    assert groups.group[0] == groups.group[2] == idle
    assert groups.representatives(np.array([0, 1, 2])).tolist() == [0, 1]

    # the same change elsewhere joins row 1's group; undoing it rejoins the idle group
    state.place(2, sharing(300), [1])
    groups.refresh(state)
    assert groups.group[2] == groups.group[1]
    state.release(1, sharing(300), [0])
    groups.refresh(state)
    assert groups.group[1] == idle


def test_groups_rebuild_for_another_state_object() -> None:
    state = state_of(node("a", 2), node("b", 2))
    groups = NodeGroups()
    groups.refresh(state)
    clone = state.copy()
    clone.free_milli[1] = [0, 0]  # same row_version, different content
    groups.refresh(clone)
    assert groups.group[0] != groups.group[1]


# --- grouping never changes the choice ------------------------------------------------------


@st.composite
def fleets(draw: st.DrawFn) -> ClusterState:
    """Idle clusters made of a few node types, several copies each, rows shuffled."""
    types = draw(st.lists(random_nodes(used=False), min_size=1, max_size=3))
    copies = [draw(st.integers(1, 4)) for _ in types]
    specs = [t.spec for t, n in zip(types, copies, strict=True) for _ in range(n)]
    order = draw(st.permutations(range(len(specs))))
    return ClusterState.from_nodes([replace(specs[i], name=f"n{k}") for k, i in enumerate(order)])


def _fgd_int_score(before: float, after: float) -> int:
    return int(1.0 / (1.0 + math.exp(-(before - after) / 1000.0)) * 100)


def ungrouped_fgd(
    state: ClusterState, request: PodRequest, aggregates: FragmentAggregates, rank: np.ndarray
) -> Choice | None:
    """FGD scoring every feasible node (and, for a sharing pod, every GPU that holds it)."""
    feasible = check_feasibility(state, request).feasible_rows
    if len(feasible) == 0:
        return None
    aggregates.refresh(state)
    best: tuple[int, int, int, tuple[int, ...]] | None = None  # (score, -rank, row, gpus)
    if request.is_sharing:
        rows, slots = [], []
        for row in feasible.tolist():
            for slot in range(int(state.gpu_count[row])):
                if state.free_milli[row, slot] >= request.milli_per_gpu:
                    rows.append(row)
                    slots.append(slot)
        rows_array = np.array(rows, dtype=np.int64)
        free_before = state.free_milli[rows_array, slots]
        after = aggregates.fragment_after(
            state,
            rows_array,
            free_before,
            free_before - request.milli_per_gpu,
            1,
            request.cpu_milli,
        )
        options = [
            (_fgd_int_score(aggregates.fragment[row], value), row, (slot,))
            for row, slot, value in zip(rows, slots, after.tolist(), strict=True)
        ]
    else:
        after = aggregates.fragment_after(
            state, feasible, 1000, 0, request.gpu_count, request.cpu_milli
        )
        options = [
            (
                _fgd_int_score(aggregates.fragment[row], value),
                row,
                tuple(lowest_free_gpus(state.free_milli[[row]], request.gpu_count)[0].tolist()),
            )
            for row, value in zip(feasible.tolist(), after.tolist(), strict=True)
        ]
    for score, row, gpus in options:
        # highest score; then lowest rank; then (same node) the lowest GPU index, listed first
        key = (score, -int(rank[row]), row, gpus)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    return Choice(best[2], best[3])


@PROPERTY
@given(state=fleets(), data=st.data())
def test_fgd_with_grouping_chooses_what_scoring_every_node_chooses(
    state: ClusterState, data: st.DataObject
) -> None:
    trace = data.draw(st.lists(requests(), min_size=1, max_size=12), label="trace")
    rank = np.array(data.draw(st.permutations(range(state.n_nodes)), label="rank"))
    policy = FGDPolicy(PolicyContext(rank=rank, rng=np.random.default_rng(0), trace=trace))
    # FGD narrows a shape's models to those with its minimum GPU memory on this fleet.
    reference = FragmentAggregates(
        typical_shapes(trace, memory_by_model=gpu_memory_by_model(state))
    )
    arrivals = data.draw(
        st.lists(st.sampled_from(trace), min_size=1, max_size=25), label="arrivals"
    )
    for request in arrivals:
        expected = ungrouped_fgd(state, request, reference, rank)
        assert policy.select(state, request) == expected
        if expected is not None:
            state.place(expected.row, request, expected.gpus)


@PROPERTY
@given(state=fleets(), data=st.data())
def test_fairpack_with_grouping_chooses_what_evaluating_every_node_chooses(
    state: ClusterState, data: st.DataObject
) -> None:
    rank = np.array(data.draw(st.permutations(range(state.n_nodes)), label="rank"))
    context = PolicyContext(rank=rank, rng=np.random.default_rng(0), trace=[])
    config = PolicyConfig()
    policy = FairpackPolicy(context, config)
    fragments = OnlineFragments(config.shapes)
    every_node = np.arange(state.n_nodes)
    for request in data.draw(st.lists(requests(), min_size=1, max_size=25), label="arrivals"):
        fragments.observe(request)
        evaluation = evaluate(state, request, every_node, config, fragments.aggregates)
        best = evaluation.best(rank)
        expected = (
            None if best is None else Choice(int(evaluation.rows[best]), evaluation.gpus_of(best))
        )
        assert policy.select(state, request) == expected
        if expected is not None:
            state.place(expected.row, request, expected.gpus)


def test_fgd_grouping_on_a_hand_made_fleet() -> None:
    # Four identical idle 2-GPU nodes; rank puts row 2 first. Shapes: sharing-500 (2/3) and
    # whole-1 (1/3). First pod: every node scores alike (one group), so row 2 takes it, slot 0.
    # Second pod: row 2 [500, 1000], F = 1/3*500 (whole-1 strands the 500); filling slot 0
    # -> [0, 1000], F 0 -> int(sigmoid(166.7/1000)*100) = 54, beats a fresh node
    # ([1000, 1000] -> [500, 1000]: F 0 -> 166.7 -> 45).
    state = state_of(*(node(f"n{i}", 2) for i in range(4)))
    trace = [sharing(500), sharing(500), whole(1)]
    policy = FGDPolicy(
        PolicyContext(rank=np.array([3, 1, 0, 2]), rng=np.random.default_rng(0), trace=trace)
    )
    first = policy.select(state, sharing(500))
    assert first == Choice(2, (0,))
    state.place(first.row, sharing(500), first.gpus)
    assert policy.select(state, sharing(500)) == Choice(2, (0,))


def test_fgd_sharing_tie_goes_to_the_lowest_gpu() -> None:
    # One shape (sharing-100). Node [1000, 500]: F = 0 (both hold 100). Slot 0 -> [900, 500],
    # slot 1 -> [1000, 400]: F stays 0 either way, both score int(sigmoid(0)*100) = 50: slot 0.
    state = set_free(state_of(node("a", 2)), 0, [1000, 500])
    policy = FGDPolicy(
        PolicyContext(rank=np.array([0]), rng=np.random.default_rng(0), trace=[sharing(100)])
    )
    assert policy.select(state, sharing(100)) == Choice(0, (0,))
