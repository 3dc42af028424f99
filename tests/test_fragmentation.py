"""The FGD fragment F (scoring/fragmentation.py): hand-computed nodes and a scalar reference.

The reference follows FGD-PROTOCOL.md word for word: for one shape, if the shape
fits (model allowed, enough GPUs with at least its milli free, enough free CPU)
the fragment is the free milli on GPUs below the shape's milli; otherwise (and
always for a CPU-only shape) all of the node's free GPU milli. F is the
popularity-weighted sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from builders import (
    PROPERTY,
    clusters,
    node,
    requests,
    set_free,
    shape_table,
    shape_tables,
    shared_gpu_of,
    sharing,
    state_of,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from scoring import (
    Candidates,
    ClusterState,
    FragmentAggregates,
    PodRequest,
    ShapeTable,
    check_feasibility,
    choose_gpus,
    node_fragment,
)
from scoring.fragmentation import (
    _COLUMNS_PAY_PER_SHAPE,
    _FLOAT_DIVISION_FROM,
    _aggregate,
    _floor_div,
    _fragment,
    _weighted_row_sum,
)
from scoring.terms import fragmentation


def reference_fragment(
    gpu_free_milli: Sequence[int],
    cpu_free_milli: int,
    model: str,
    shapes: ShapeTable,
    gpu_memory_mib: int = 0,
    cpu_stranding: bool = False,
) -> float:
    """F of one node, one shape at a time. ``gpu_free_milli`` lists the node's real GPUs."""
    total_free = sum(gpu_free_milli)
    weights = shapes.weight.tolist()
    fragment = 0.0
    for i, weight in enumerate(weights):
        count, milli = int(shapes.gpu_count[i]), int(shapes.milli_per_gpu[i])
        cpu = int(shapes.cpu_milli[i])
        models = shapes.allowed_models[i]
        if count == 0:
            shape_fragment = total_free  # a CPU-only shape can use no GPU milli
        else:
            fits = (
                (not models or model in models)
                and gpu_memory_mib >= int(shapes.min_gpu_memory_mib[i])
                and sum(free >= milli for free in gpu_free_milli) >= count
                and cpu_free_milli >= cpu
            )
            below = sum(free for free in gpu_free_milli if free < milli)
            shape_fragment = below if fits else total_free
            if fits and cpu_stranding and cpu and milli < 1000:
                # A sharing shape: place copies one by one until GPU shares or CPU run out.
                # (Whole-GPU shapes keep FGD's measure.)
                gpu_copies = sum(free // milli for free in gpu_free_milli)
                fed = min(gpu_copies, cpu_free_milli // cpu)
                shape_fragment = below + (gpu_copies - fed) * milli * count
        fragment += weight * shape_fragment
    return fragment


def node_view(state: ClusterState, row: int) -> tuple[list[int], int, str]:
    """A node's real GPUs' free milli, its free CPU and its model name."""
    gpus = state.free_milli[row, : state.gpu_count[row]].tolist()
    model_id = int(state.gpu_model[row])
    return gpus, int(state.cpu_free_milli[row]), state.models[model_id] if model_id >= 0 else ""


def reference_of(
    state: ClusterState, row: int, shapes: ShapeTable, cpu_stranding: bool = False
) -> float:
    return reference_fragment(
        *node_view(state, row),
        shapes,
        int(state.gpu_memory_mib[row]),
        cpu_stranding,
    )


# --- hand-computed nodes --------------------------------------------------------------------

# The node of most rows: 2 GPUs of model A with [300, 1000] free, 4000 CPU free.
USED = ([300, 1000], 4_000)


@pytest.mark.parametrize(
    ("gpus", "used", "shapes", "expected"),
    [
        # CPU-only shape: always all free GPU milli, 300+1000 = 1300
        (2, USED, [(1_000, 0, 0, (), 1.0)], 1300.0),
        # sharing 500 fits (slot 1 has 1000 >= 500); below 500: 300
        (2, USED, [(0, 500, 1, (), 1.0)], 300.0),
        # sharing 200 fits; nothing below 200 (300 >= 200)
        (2, USED, [(0, 200, 1, (), 1.0)], 0.0),
        # boundary: 300 free holds a 300 shape, so it is not fragment
        (2, USED, [(0, 300, 1, (), 1.0)], 0.0),
        # model B not allowed on an A node: does not fit -> all 1300
        (2, USED, [(0, 500, 1, ("B",), 1.0)], 1300.0),
        # model A allowed -> fits -> 300
        (2, USED, [(0, 500, 1, ("A", "B"), 1.0)], 300.0),
        # 8000 CPU > 4000 free: does not fit -> all 1300
        (2, USED, [(8_000, 500, 1, (), 1.0)], 1300.0),
        # 4000 CPU exactly: fits -> 300
        (2, USED, [(4_000, 500, 1, (), 1.0)], 300.0),
        # whole 1 GPU fits (slot 1); below 1000: 300
        (2, USED, [(0, 1000, 1, (), 1.0)], 300.0),
        # whole 2 GPUs: only 1 fully free -> does not fit -> all 1300
        (2, USED, [(0, 1000, 2, (), 1.0)], 1300.0),
        # mix 3:1 of sharing-500 and CPU-only: 0.75*300 + 0.25*1300 = 225+325 = 550
        (2, USED, [(0, 500, 1, (), 3.0), (0, 0, 0, (), 1.0)], 550.0),
        # idle node, sharing 500: fits, nothing below -> 0; CPU-only: 2000 -> 0.5*0+0.5*2000
        (2, ([1000, 1000], 64_000), [(0, 500, 1, (), 1.0), (0, 0, 0, (), 1.0)], 1000.0),
        # fully busy node: nothing free, nothing to fragment
        (2, ([0, 0], 64_000), [(0, 500, 1, (), 1.0), (0, 0, 0, (), 1.0)], 0.0),
        # zero capacity (no GPUs, no CPU): 0 for any shape
        (0, ([], 0), [(0, 500, 1, (), 1.0), (0, 0, 0, (), 1.0)], 0.0),
    ],
    ids=[
        "cpu-only-shape-counts-all",
        "fits-counts-below",
        "fits-nothing-below",
        "fits-at-boundary",
        "wrong-model-counts-all",
        "allowed-model",
        "too-little-cpu-counts-all",
        "cpu-exactly",
        "whole-1-fits",
        "whole-2-too-few-gpus-counts-all",
        "weighted-mix",
        "idle-node",
        "busy-node",
        "zero-capacity",
    ],
)
@pytest.mark.parametrize("max_gpus", [None, 8], ids=["tight", "padded"])
def test_fragment_on_hand_computed_nodes(
    gpus: int,
    used: tuple[list[int], int],
    shapes: list,
    expected: float,
    max_gpus: int | None,
) -> None:
    state = state_of(node("x", gpus, model="A"), max_gpus=max_gpus)
    set_free(state, 0, used[0] if gpus else None, used[1])
    table = shape_table(*shapes)
    rows = np.array([0])
    assert node_fragment(state, rows, table).tolist() == pytest.approx([expected])
    aggregates = FragmentAggregates(table)
    aggregates.refresh(state)
    assert aggregates.fragment.tolist() == pytest.approx([expected])
    assert reference_of(state, 0, table) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("free", "cpu_free", "shape", "fgd", "stranding"),
    [
        # 4 idle GPUs, CPU for one 1-GPU pod of 8000: FGD sees it fit, nothing below -> 0;
        #   a whole-GPU shape keeps FGD's measure (sharing pods may still use those GPUs)
        ([1000] * 4, 12_000, (8_000, 1000, 1, (), 1.0), 0.0, 0.0),
        # the same node with CPU for all four: 32000 // 8000 = 4 -> nothing stranded
        ([1000] * 4, 32_000, (8_000, 1000, 1, (), 1.0), 0.0, 0.0),
        # pairs: 4 idle GPUs hold 2 pairs, CPU feeds 1 -> still FGD's 0 (whole GPUs)
        ([1000] * 4, 20_000, (16_000, 1000, 2, (), 1.0), 0.0, 0.0),
        # sharing 300: [1000, 700, 200] holds 3 + 2 = 5 copies, CPU feeds 2 -> 3 x 300 = 900,
        #   plus 200 below 300 (FGD's part) = 1100
        ([1000, 700, 200], 4_000, (2_000, 300, 1, (), 1.0), 200.0, 1100.0),
        # two shares per GPU: [300, 300] holds 2 + 2 copies of 150, CPU feeds 1 -> 3 x 150
        ([300, 300], 1_000, (1_000, 150, 1, (), 1.0), 0.0, 450.0),
        # a shape without CPU is never short of it
        ([1000] * 4, 0, (0, 1000, 1, (), 1.0), 0.0, 0.0),
        # no copy fits at all (CPU short of one): FGD's "all free" either way
        ([1000] * 4, 4_000, (8_000, 1000, 1, (), 1.0), 4000.0, 4000.0),
    ],
    ids=["one-of-four", "all-fed", "pairs", "sharing", "two-per-gpu", "no-cpu-shape", "none-fits"],
)
def test_cpu_stranding_on_hand_computed_nodes(
    free: list[int], cpu_free: int, shape: tuple, fgd: float, stranding: float
) -> None:
    state = set_free(state_of(node("x", len(free), cpu_milli=64_000)), 0, free, cpu_free)
    table = shape_table(shape)
    rows = np.array([0])
    assert node_fragment(state, rows, table).tolist() == pytest.approx([fgd])
    assert node_fragment(state, rows, table, cpu_stranding=True).tolist() == pytest.approx(
        [stranding]
    )
    aggregates = FragmentAggregates(table, cpu_stranding=True)
    aggregates.refresh(state)
    assert aggregates.fragment.tolist() == pytest.approx([stranding])
    assert reference_of(state, 0, table, cpu_stranding=True) == pytest.approx(stranding)


def test_a_shape_needing_more_gpu_memory_than_the_node_has_counts_all_free() -> None:
    # 24 GiB GPUs [1000, 500]: a 1-GPU shape needing 40 GiB never fits -> all 1500;
    #   the same shape needing 16 GiB fits -> 500 below 1000
    state = set_free(state_of(node("x", 2, gpu_memory_mib=24_576)), 0, [1000, 500], 8_000)
    rows = np.array([0])
    needs_40 = shape_table((0, 1000, 1, (), 1.0, 40_960))
    needs_16 = shape_table((0, 1000, 1, (), 1.0, 16_384))
    assert node_fragment(state, rows, needs_40).tolist() == [1500.0]
    assert node_fragment(state, rows, needs_16).tolist() == [500.0]


def test_shape_table_normalises_weights_and_refuses_empty() -> None:
    table = shape_table((0, 500, 1, (), 3.0), (0, 0, 0, (), 1.0))
    assert table.weight.tolist() == [0.75, 0.25]
    with pytest.raises(ValueError, match="at least one shape"):
        ShapeTable.from_rows([], [])
    with pytest.raises(ValueError, match="positive weight"):
        ShapeTable.from_rows([(0, 0, 0, frozenset())], [0.0])


# --- fragment_after on hand-computed nodes --------------------------------------------------


@pytest.mark.parametrize(
    ("free_before", "free_after", "gpus_changed", "cpu_milli", "expected"),
    [
        # sharing 600 on slot 1: [300, 400]; shape (500): no GPU >= 500 -> all 700;
        #   CPU-only 700 -> 0.5*700 + 0.5*700 = 700
        (1000, 400, 1, 0, 700.0),
        # sharing 200 on slot 0: [100, 1000]; below 500: 100; CPU-only 1100 -> 0.5*100+0.5*1100
        (300, 100, 1, 0, 600.0),
        # whole 1 (slot 1 -> 0): [300, 0]; shape does not fit -> 300; CPU-only 300 -> 300
        (1000, 0, 1, 0, 300.0),
        # CPU-only pod taking 1000 of 4000 CPU: shape still fits (3000 >= 0): 0.5*300+0.5*1300
        (0, 0, 0, 1_000, 800.0),
    ],
    ids=["sharing-on-free-gpu", "sharing-on-used-gpu", "whole-1", "cpu-only"],
)
def test_fragment_after_on_a_hand_computed_node(
    free_before: int, free_after: int, gpus_changed: int, cpu_milli: int, expected: float
) -> None:
    state = set_free(state_of(node("x", 2)), 0, *USED)
    aggregates = FragmentAggregates(shape_table((0, 500, 1, (), 1.0), (0, 0, 0, (), 1.0)))
    aggregates.refresh(state)
    # before: 0.5*300 + 0.5*1300 = 800
    assert aggregates.fragment.tolist() == pytest.approx([800.0])
    after = aggregates.fragment_after(
        state, np.array([0]), free_before, free_after, gpus_changed, cpu_milli
    )
    assert after.tolist() == pytest.approx([expected])


def test_fragment_after_a_multi_gpu_pod() -> None:
    # 4 GPUs [1000, 1000, 1000, 300]; shapes sharing-500 and CPU-only, half each.
    # before: 500 fits, 300 below -> 300; CPU-only 3300 -> F = 0.5*300 + 0.5*3300 = 1800
    # whole(2) takes slots 0, 1 -> [0, 0, 1000, 300]: 500 still fits, 0+0+300 below -> 300;
    #   CPU-only 1300 -> F_after = 0.5*300 + 0.5*1300 = 800
    state = set_free(state_of(node("x", 4)), 0, [1000, 1000, 1000, 300])
    aggregates = FragmentAggregates(shape_table((0, 500, 1, (), 1.0), (0, 0, 0, (), 1.0)))
    aggregates.refresh(state)
    assert aggregates.fragment.tolist() == pytest.approx([1800.0])
    after = aggregates.fragment_after(state, np.array([0]), 1000, 0, 2, 0)
    assert after.tolist() == pytest.approx([800.0])


@pytest.mark.parametrize(
    ("gpus", "shape_count", "free_before", "free_after", "gpus_changed", "expected"),
    [
        # [1000, 1000] fits whole-2 (F 0); sharing 500 on slot 0 -> [500, 1000]: one full GPU
        #   left, whole-2 no longer fits -> all 500+1000 = 1500
        (2, 2, 1000, 500, 1, 1500.0),
        # [1000 x 4] fits whole-4; whole-2 pod -> [0, 0, 1000, 1000]: does not fit -> 2000
        (4, 4, 1000, 0, 2, 2000.0),
        # [1000 x 4], whole-2 pod; whole-2 still fits on the other two, nothing below -> 0
        (4, 2, 1000, 0, 2, 0.0),
    ],
    ids=["sharing-breaks-a-pair", "pair-breaks-a-quad", "pair-leaves-a-pair"],
)
def test_fragment_after_when_a_shape_stops_fitting(
    gpus: int,
    shape_count: int,
    free_before: int,
    free_after: int,
    gpus_changed: int,
    expected: float,
) -> None:
    state = state_of(node("x", gpus))
    aggregates = FragmentAggregates(shape_table((0, 1000, shape_count, (), 1.0)))
    aggregates.refresh(state)
    assert aggregates.fragment.tolist() == [0.0]  # idle: the shape fits, no GPU below 1000
    after = aggregates.fragment_after(
        state, np.array([0]), free_before, free_after, gpus_changed, 0
    )
    assert after.tolist() == pytest.approx([expected])


# --- lazy refresh ---------------------------------------------------------------------------


def test_refresh_recomputes_exactly_the_rows_whose_version_moved() -> None:
    table = shape_table((0, 500, 1, (), 1.0), (0, 0, 0, (), 1.0))
    state = state_of(node("a", 2), node("b", 2))
    aggregates = FragmentAggregates(table)
    aggregates.refresh(state)
    # idle [1000, 1000]: 0.5*0 + 0.5*2000 = 1000 each
    assert aggregates.fragment.tolist() == pytest.approx([1000.0, 1000.0])

    state.place(0, PodRequest(gpu_count=1, milli_per_gpu=700), [0])
    aggregates.refresh(state)
    # row 0 [300, 1000]: 0.5*300 + 0.5*1300 = 800; row 1 untouched
    assert aggregates.fragment.tolist() == pytest.approx([800.0, 1000.0])

    # An edit that bypasses place() (no version bump) is not seen: the cache trusts row_version.
    state.free_milli[1, 0] = 0
    aggregates.refresh(state)
    assert aggregates.fragment[1] == pytest.approx(1000.0)
    state.row_version[1] += 1
    aggregates.refresh(state)
    # row 1 [0, 1000]: 0.5*0 + 0.5*1000 = 500
    assert aggregates.fragment[1] == pytest.approx(500.0)


def test_refresh_rebuilds_for_another_state_object() -> None:
    table = shape_table((0, 0, 0, (), 1.0))
    state = state_of(node("a", 2))
    aggregates = FragmentAggregates(table)
    aggregates.refresh(state)
    clone = state.copy()
    clone.free_milli[0] = [0, 0]  # same row_version as the original, different content
    aggregates.refresh(clone)
    assert aggregates.fragment.tolist() == [0.0]
    aggregates.refresh(state)
    assert aggregates.fragment.tolist() == [2000.0]


# --- vectorised vs scalar reference on random clusters --------------------------------------


STRANDING = pytest.mark.parametrize("cpu_stranding", [False, True], ids=["fgd", "cpu-stranding"])


@STRANDING
@PROPERTY
@given(state=clusters(max_nodes=10), shapes=shape_tables())
def test_node_fragment_and_aggregates_match_the_reference(
    state: ClusterState, shapes: ShapeTable, cpu_stranding: bool
) -> None:
    expected = [reference_of(state, row, shapes, cpu_stranding) for row in range(state.n_nodes)]
    rows = np.arange(state.n_nodes)
    assert node_fragment(state, rows, shapes, cpu_stranding).tolist() == pytest.approx(expected)
    aggregates = FragmentAggregates(shapes, cpu_stranding)
    aggregates.refresh(state)
    assert aggregates.fragment.tolist() == pytest.approx(expected)
    # and a reordered subset through node_fragment
    subset = rows[::-2]
    assert node_fragment(state, subset, shapes, cpu_stranding).tolist() == pytest.approx(
        [expected[row] for row in subset]
    )


@STRANDING
@PROPERTY
@given(state=clusters(max_nodes=8), shapes=shape_tables(), data=st.data())
def test_fragment_after_matches_the_reference(
    state: ClusterState, shapes: ShapeTable, data: st.DataObject, cpu_stranding: bool
) -> None:
    aggregates = FragmentAggregates(shapes, cpu_stranding)
    aggregates.refresh(state)

    def reference(row: int, gpus: list[int], cpu_free: int) -> float:
        model = node_view(state, row)[2]
        memory = int(state.gpu_memory_mib[row])
        return reference_fragment(gpus, cpu_free, model, shapes, memory, cpu_stranding)

    def cpu_taken(row: int) -> int:
        return data.draw(st.integers(0, int(state.cpu_free_milli[row])), label="cpu")

    # A sharing pod on every GPU that holds it: one candidate per (node, GPU).
    milli = data.draw(st.integers(1, 999), label="milli")
    rows, before, expected_no_cpu = [], [], []
    for row in range(state.n_nodes):
        gpus, cpu_free, _ = node_view(state, row)
        for slot, free in enumerate(gpus):
            if free < milli:
                continue
            after = list(gpus)
            after[slot] -= milli
            cpu = cpu_taken(row)
            got = aggregates.fragment_after(
                state, np.array([row]), np.array([free]), np.array([free - milli]), 1, cpu
            )
            assert got.tolist() == pytest.approx([reference(row, after, cpu_free - cpu)])
            rows.append(row)
            before.append(free)
            expected_no_cpu.append(reference(row, after, cpu_free))
    # All candidates at once, with per-candidate free values (as FGD scores them).
    before_array = np.array(before, dtype=np.int64)
    got = aggregates.fragment_after(
        state, np.array(rows, dtype=np.int64), before_array, before_array - milli, 1, 0
    )
    assert got.tolist() == pytest.approx(expected_no_cpu)

    # A whole-GPU pod: the lowest-index fully free GPUs go from 1000 to 0.
    count = data.draw(st.sampled_from([1, 2, 4]), label="count")
    for row in range(state.n_nodes):
        gpus, cpu_free, _ = node_view(state, row)
        full = [slot for slot, free in enumerate(gpus) if free == 1000][:count]
        if len(full) < count:
            continue
        cpu = cpu_taken(row)
        after = [0 if slot in full else free for slot, free in enumerate(gpus)]
        got = aggregates.fragment_after(state, np.array([row]), 1000, 0, count, cpu)
        assert got.tolist() == pytest.approx([reference(row, after, cpu_free - cpu)])

    # A CPU-only pod: GPUs unchanged, CPU taken.
    for row in range(state.n_nodes):
        gpus, cpu_free, _ = node_view(state, row)
        cpu = cpu_taken(row)
        got = aggregates.fragment_after(state, np.array([row]), 0, 0, 0, cpu)
        assert got.tolist() == pytest.approx([reference(row, gpus, cpu_free - cpu)])


def test_fragment_after_a_multi_gpu_pod_with_cpu_stranding() -> None:
    # 4 idle GPUs, 6000 CPU free; shape: sharing 300 with 2000 CPU.
    # before: copies by GPUs 4 x 3 = 12, by CPU 3 -> 9 x 300 = 2700 stranded, nothing below
    # whole(2) takes slots 0, 1 with no CPU -> [0, 0, 1000, 1000]: copies 6, CPU 3
    #   -> 3 x 300 = 900; nothing below 300 -> F_after = 900
    state = set_free(state_of(node("x", 4)), 0, [1000] * 4, 6_000)
    aggregates = FragmentAggregates(shape_table((2_000, 300, 1, (), 1.0)), cpu_stranding=True)
    aggregates.refresh(state)
    assert aggregates.fragment.tolist() == pytest.approx([2700.0])
    after = aggregates.fragment_after(state, np.array([0]), 1000, 0, 2, 0)
    assert after.tolist() == pytest.approx([900.0])
    assert reference_fragment([0, 0, 1000, 1000], 6_000, "A", aggregates.shapes, 0, True) == 900


@STRANDING
@PROPERTY
@given(state=clusters(max_nodes=8), shapes=shape_tables(), request_=requests())
def test_fragmentation_term_matches_the_reference(
    state: ClusterState, shapes: ShapeTable, request_: PodRequest, cpu_stranding: bool
) -> None:
    rows = check_feasibility(state, request_).feasible_rows
    gpus = choose_gpus(state.free_milli[rows], request_)
    shared = shared_gpu_of(state, request_, rows)
    aggregates = FragmentAggregates(shapes, cpu_stranding)
    scores = fragmentation(Candidates(state, request_, rows, shared, aggregates))
    expected = []
    for row, slots in zip(rows.tolist(), gpus.tolist(), strict=True):
        free, cpu_free, model = node_view(state, row)
        memory = int(state.gpu_memory_mib[row])
        after = list(free)
        for slot in slots:
            after[slot] -= request_.milli_per_gpu
        growth = reference_fragment(
            after, cpu_free - request_.cpu_milli, model, shapes, memory, cpu_stranding
        ) - reference_fragment(free, cpu_free, model, shapes, memory, cpu_stranding)
        expected.append(1.0 / (1.0 + math.exp(growth / 1000.0)))
    assert scores.tolist() == pytest.approx(expected)


@STRANDING
@pytest.mark.parametrize("by_shape", [False, True], ids=["growth", "growth-by-shape"])
@PROPERTY
@given(
    state=clusters(max_nodes=8),
    shapes=shape_tables(),
    stream=st.lists(requests(), min_size=1, max_size=4),
)
def test_memoised_growth_equals_a_fresh_one_as_the_cluster_changes(
    state: ClusterState,
    shapes: ShapeTable,
    stream: list[PodRequest],
    cpu_stranding: bool,
    by_shape: bool,
) -> None:
    # Every pod twice, each placed on its first candidate: the memo sees repeated
    # shapes over rows that changed since, and must answer as fresh aggregates do.
    # Halfway, the learner's weights move (reweighted aggregates: F changes); kept per
    # shape, the growths from before are summed again instead of computed again.
    keys = shapes.keys()
    assume(len(set(keys)) == len(keys))  # a learned table never repeats a shape
    table = shapes
    memo: FragmentAggregates | None = FragmentAggregates(shapes, cpu_stranding, by_shape)
    for i, request_ in enumerate(stream + stream):
        if i == len(stream):
            table = ShapeTable.from_rows(keys, (shapes.weight[::-1] + 0.1).tolist())
            memo = memo.reweighted(table) if memo is not None else None
        assert memo is not None
        rows = check_feasibility(state, request_).feasible_rows
        if not len(rows):
            continue
        shared = shared_gpu_of(state, request_, rows)
        fresh = FragmentAggregates(table, cpu_stranding)
        expected = fragmentation(Candidates(state, request_, rows, shared, fresh))
        got = fragmentation(Candidates(state, request_, rows, shared, memo))
        assert got.tolist() == expected.tolist()  # bit for bit
        state.place(int(rows[0]), request_, choose_gpus(state.free_milli[rows[:1]], request_)[0])


def test_the_table_in_force_keeps_its_own_f_while_its_successor_is_refreshed() -> None:
    # The order that found the successor sharing F and row versions with the table in
    # force: both refreshed, a pod placed, the old one refreshed first, then the new.
    state = state_of(node("a", 2, cpu_milli=16_000), node("b", 2, cpu_milli=16_000))
    table = shape_table((1_000, 500, 1, (), 0.7), (4_000, 1_000, 2, (), 0.3))
    successor = shape_table((1_000, 500, 1, (), 0.2), (4_000, 1_000, 2, (), 0.8))
    old = FragmentAggregates(table)
    old.refresh(state)
    new = old.reweighted(successor)
    assert new is not None
    new.refresh(state)
    state.place(0, sharing(500, 4_000), (0,))
    old.refresh(state)
    new.refresh(state)
    for aggregates, of in ((old, table), (new, successor)):
        fresh = FragmentAggregates(of)
        fresh.refresh(state)
        assert aggregates.fragment.tolist() == fresh.fragment.tolist()


def test_floor_division_by_reciprocal_is_exact() -> None:
    # Exact multiples are where a bare n * (1 / d) lands just below the integer
    # (49 * (1 / 49) is 0.9999999999999999), and the largest CPU values the
    # int32-sized view can hold.
    divisors = np.arange(1, 5_001)
    multiples = divisors[:, None] * np.array([1, 2, 3, 7, 49, 1_000])
    numerators = np.concatenate([multiples.ravel(), multiples.ravel() - 1, [2**31 - 1, -1, -49]])
    for divisor in [*range(1, 60), 49_000, 96_000, 2**31 - 1]:
        expected = numerators // divisor
        got = _floor_div(numerators[:, None], np.array([1.0 / divisor]))[:, 0]
        assert np.array_equal(got, expected), divisor
    got = _floor_div(multiples, 1.0 / divisors[:, None].astype(np.float64))
    assert np.array_equal(got, multiples // divisors[:, None])


@pytest.mark.parametrize("n_shapes", [3, 12, 40])
def test_a_nodes_fragment_is_the_same_in_a_large_batch_and_alone(n_shapes: int) -> None:
    # Large batches take the float division and the column sum, a single row the
    # integer path and numpy's sum: F (and so FGD's integer score) must not care.
    rng = np.random.default_rng(n_shapes)
    n_rows = max(_COLUMNS_PAY_PER_SHAPE * n_shapes, _FLOAT_DIVISION_FROM)
    rows = [
        (
            int(rng.choice([0, 2_000, 8_000, 33_000])),
            int(milli),
            int(rng.choice([1, 2, 4, 8])) if milli else 0,
            frozenset(),
            float(rng.uniform(0.01, 1.0)),
        )
        for milli in rng.choice([0, 150, 500, 1_000, 1_000], n_shapes)
    ]
    shapes = shape_table(*rows)
    free = rng.choice([0, 100, 450, 1_000], (n_rows, 8))
    cpu = rng.integers(-1_000, 200_000, n_rows)
    count, below, copies = _aggregate(free, shapes.milli_per_gpu)
    ok = rng.random((n_rows, n_shapes)) < 0.9
    together = _fragment(shapes, ok, cpu, count, below, copies, free.sum(axis=1))
    for row in rng.choice(n_rows, 40, replace=False).tolist():
        alone = _fragment(
            shapes,
            ok[row : row + 1],
            cpu[row : row + 1],
            count[row : row + 1],
            below[row : row + 1],
            copies[row : row + 1],
            free[row : row + 1].sum(axis=1),
        )
        assert alone[0] == together[row]


@pytest.mark.parametrize("n_shapes", [1, 5, 7, 8, 9, 16, 23, 64, 127, 128])
def test_weighted_row_sum_is_numpys_sum_bit_for_bit(n_shapes: int) -> None:
    # numpy sums rows of 8 or more in eight interleaved partial sums; the column
    # loop must add in that order, or F_after - F_before of an unchanged node is
    # not exactly 0 and FGD's integer score flips.
    rng = np.random.default_rng(n_shapes)
    rows = _COLUMNS_PAY_PER_SHAPE * n_shapes  # enough rows for the column path
    values = rng.integers(0, 800_000, (rows, n_shapes)).astype(np.float64)
    weight = rng.random(n_shapes)
    weight /= weight.sum()
    expected = (values * weight).sum(axis=1)
    assert np.array_equal(_weighted_row_sum(values, weight), expected)


# --- reweighting and batch-size independence ---------------------------------------------------


@PROPERTY
@given(state=clusters(max_nodes=8), shapes=shape_tables(), data=st.data())
def test_reweighted_aggregates_equal_fresh_ones(
    state: ClusterState, shapes: ShapeTable, data: st.DataObject
) -> None:
    # The same shapes in another order with other weights: counts are reused, F is new.
    order = np.array(data.draw(st.permutations(range(shapes.n_shapes)), label="order"))
    weights = np.array(
        data.draw(
            st.lists(st.floats(0.01, 1.0), min_size=shapes.n_shapes, max_size=shapes.n_shapes),
            label="weights",
        )
    )
    keys = shapes.keys()
    assume(len(set(keys)) == len(keys))  # a learned table never repeats a shape
    table = ShapeTable.from_rows([keys[i] for i in order], weights[order].tolist())
    old = FragmentAggregates(shapes)
    old.refresh(state)
    reweighted = old.reweighted(table)
    assert reweighted is not None
    reweighted.refresh(state)
    fresh = FragmentAggregates(table)
    fresh.refresh(state)
    assert reweighted.fragment.tolist() == pytest.approx(fresh.fragment.tolist())


def test_reweighted_refuses_another_set_of_shapes() -> None:
    table = shape_table((4_000, 500, 1, (), 0.5), (4_000, 0, 0, (), 0.5))
    other = shape_table((4_000, 500, 1, (), 0.5), (8_000, 1_000, 2, (), 0.5))
    assert FragmentAggregates(table).reweighted(other) is None
    # the same numbers, but one shape needs 40 GiB GPUs: another shape, fits elsewhere
    needs_memory = shape_table((4_000, 500, 1, (), 0.5, 40_960), (4_000, 0, 0, (), 0.5))
    assert FragmentAggregates(table).reweighted(needs_memory) is None


@PROPERTY
@given(state=clusters(max_nodes=8), shapes=shape_tables())
def test_fragment_of_a_node_does_not_depend_on_the_batch(
    state: ClusterState, shapes: ShapeTable
) -> None:
    # Bit for bit: FGD's integer score flips on the last bit of a zero change.
    rows = np.arange(state.n_nodes)
    together = node_fragment(state, rows, shapes)
    for row in rows.tolist():
        assert node_fragment(state, np.array([row]), shapes)[0] == together[row]
