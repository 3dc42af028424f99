"""ClusterState: building the arrays from nodes, place/release, and its over-commit guards."""

from __future__ import annotations

import numpy as np
import pytest
from builders import (
    PROPERTY,
    arrays_of,
    assert_same_arrays,
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

from scoring import MILLI_PER_GPU, SPOT, ClusterState, PodRequest, check_feasibility, choose_gpus

# --- from_nodes -----------------------------------------------------------------------------


def test_from_nodes_pads_narrow_nodes_with_zero_free_slots() -> None:
    state = state_of(node("wide", 4, model="B"), node("narrow", 2, model="A"), node("cpu", 0))
    # widest node has 4 GPUs -> 4 columns; the 2-GPU node's slots 2,3 are padding (0 free)
    np.testing.assert_array_equal(
        state.free_milli, [[1000, 1000, 1000, 1000], [1000, 1000, 0, 0], [0, 0, 0, 0]]
    )
    assert state.models == ["A", "B"]  # sorted model table
    np.testing.assert_array_equal(state.gpu_model, [1, 0, -1])  # -1: no GPUs
    assert state.total_gpu_milli == 6_000  # (4+2+0) x 1000
    assert state.used_gpu_milli == 0
    np.testing.assert_array_equal(state.row_version, [0, 0, 0])


@pytest.mark.parametrize(
    ("specs", "max_gpus", "expected_width"),
    [
        ([], None, 1),  # empty cluster: max(0, 0, 1) = 1 column, so arrays keep 2 dimensions
        ([node("c", 0)], None, 1),  # CPU-only cluster: still one (padding) column
        ([node("g", 2)], None, 2),
        ([node("g", 2)], 8, 8),  # room asked for wider nodes to come
        ([node("g", 8)], 4, 8),  # max_gpus below the widest node is ignored
    ],
    ids=["empty", "cpu-only", "widest", "max-gpus-wider", "max-gpus-narrower"],
)
def test_from_nodes_width(specs: list, max_gpus: int | None, expected_width: int) -> None:
    state = ClusterState.from_nodes(specs, max_gpus=max_gpus)
    assert state.max_gpus == expected_width
    assert state.free_milli.shape == (len(specs), expected_width)
    assert state.n_nodes == len(specs)


def test_rows_of_skips_unknown_names_and_keeps_order() -> None:
    state = state_of(node("a"), node("b"), node("c"))
    assert state.row_of("b") == 1
    assert state.row_of("zz") is None
    np.testing.assert_array_equal(state.rows_of(["c", "zz", "a"]), [2, 0])
    assert state.rows_of([]).dtype == np.int64  # an empty selection still indexes arrays


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (frozenset(), [True, True, True, True]),  # nothing required: every node
        (frozenset({"A"}), [True, False, False, False]),
        (frozenset({"A", "B"}), [True, True, False, False]),
        (frozenset({"Z"}), [False, False, False, False]),  # model no node has
    ],
    ids=["any", "one-model", "two-models", "unknown-model"],
)
def test_model_mask(allowed: frozenset[str], expected: list[bool]) -> None:
    # rows: A, B, C, and a CPU-only node (no model, never matches a named model)
    state = state_of(node("a", model="A"), node("b", model="B"), node("c", model="C"), node("x", 0))
    np.testing.assert_array_equal(state.model_mask(allowed), expected)


def test_copy_is_independent_of_the_original() -> None:
    state = state_of(node("a", 2))
    clone = state.copy()
    clone.place(0, whole(1, 1_000, 1_024), [0])
    np.testing.assert_array_equal(state.free_milli, [[1000, 1000]])
    assert state.cpu_free_milli[0] == 64_000
    assert state.row_version[0] == 0
    np.testing.assert_array_equal(clone.free_milli, [[0, 1000]])
    assert clone.row_version[0] == 1


# --- place / release ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "gpus", "free_after", "cpu_after", "memory_after"),
    [
        # slot 1: 1000-300=700; cpu 64000-4000=60000; memory 262144-1024=261120
        (sharing(300, 4_000, 1_024), [1], [1000, 700, 1000, 1000], 60_000, 261_120),
        # slots 0 and 2 go to 0; cpu 64000-16000=48000
        (whole(2, 16_000), [0, 2], [0, 1000, 0, 1000], 48_000, 262_144),
        # CPU-only: no GPU slot touched; memory 262144-262144=0 (exactly full is allowed)
        (cpu_only(64_000, 262_144), [], [1000, 1000, 1000, 1000], 0, 0),
    ],
    ids=["sharing", "whole-2", "cpu-only-fills-node"],
)
def test_place_takes_the_request_and_release_gives_it_back(
    request_: PodRequest,
    gpus: list[int],
    free_after: list[int],
    cpu_after: int,
    memory_after: int,
) -> None:
    state = state_of(node("a", 4))
    before = arrays_of(state)
    state.place(0, request_, gpus)
    np.testing.assert_array_equal(state.free_milli[0], free_after)
    assert state.cpu_free_milli[0] == cpu_after
    assert state.memory_free_mib[0] == memory_after
    assert state.row_version[0] == 1
    state.release(0, request_, gpus)
    assert_same_arrays(state, before)
    assert state.row_version[0] == 2  # release is a change too: caches must refresh


@pytest.mark.parametrize(
    ("spec", "used", "request_", "gpus"),
    [
        # slot 0 has 1000-600=400 free; 400-500 < 0
        (node("a", 2), sharing(600), sharing(500), [0]),
        # cpu 8000 < 16000 requested
        (node("a", 2, cpu_milli=8_000), None, whole(1, 16_000), [0]),
        # memory 1024 < 2048 requested
        (node("a", 2, memory_mib=1_024), None, whole(1, 0, 2_048), [0]),
        # slot 3 is padding on a 2-GPU node in a 4-wide cluster: not one of its GPUs
        (node("a", 2), None, whole(1), [3]),
        # zero capacity: no GPUs, no CPU, no memory; any CPU is too much
        (node("z", 0, cpu_milli=0, memory_mib=0), None, cpu_only(1), []),
        # zero capacity, GPU request: the only slot is padding
        (node("z", 0, cpu_milli=0, memory_mib=0), None, sharing(100), [0]),
    ],
    ids=["gpu", "cpu", "memory", "padding-slot", "zero-capacity-cpu", "zero-capacity-gpu"],
)
def test_place_refuses_over_commit_and_leaves_state_unchanged(
    spec, used: PodRequest | None, request_: PodRequest, gpus: list[int]
) -> None:
    state = state_of(spec, node("wide", 4))
    if used is not None:
        state.place(0, used, [0])
    before = arrays_of(state)
    versions = state.row_version.copy()
    with pytest.raises(ValueError, match=r"does not fit node|has GPU slots"):
        state.place(0, request_, gpus)
    assert_same_arrays(state, before)
    # Versions only move forward: a cache that saw the failed attempt refreshes, harmlessly.
    assert (state.row_version >= versions).all()


def test_place_refuses_a_slot_list_of_the_wrong_length_before_touching_anything() -> None:
    state = state_of(node("a", 4))
    before = arrays_of(state)
    with pytest.raises(ValueError, match="needs 2 distinct GPUs"):
        state.place(0, whole(2, 1_000), [0])
    assert_same_arrays(state, before)
    assert state.row_version[0] == 0


@pytest.mark.parametrize(
    ("request_", "gpus"),
    [
        (whole(1, 1_000, 1_024), [2]),  # width is 2: slot 2 does not exist
        (whole(2, 1_000, 1_024), [0, 0]),  # one GPU named twice for a 2-GPU pod
        (sharing(500, 1_000, 1_024), [-1]),  # choose_gpus's "none fits" marker
    ],
    ids=["slot-beyond-width", "duplicate-slots", "minus-one-slot"],
)
def test_place_refuses_invalid_slots_and_leaves_state_unchanged(
    request_: PodRequest, gpus: list[int]
) -> None:
    state = state_of(node("a", 2))
    before = arrays_of(state)
    with pytest.raises((ValueError, IndexError)):
        state.place(0, request_, gpus)
    assert_same_arrays(state, before)


# --- the capacity invariant, on random clusters ---------------------------------------------


def _assert_within_capacity(state: ClusterState) -> None:
    slots = np.arange(state.max_gpus)[None, :]
    real = slots < state.gpu_count[:, None]
    assert (state.free_milli >= 0).all(), state.free_milli
    assert (state.free_milli <= MILLI_PER_GPU).all(), state.free_milli
    assert (state.free_milli[~real] == 0).all(), "padding slots must stay at 0 free"
    assert (state.cpu_free_milli >= 0).all()
    assert (state.cpu_free_milli <= state.cpu_capacity_milli).all()
    assert (state.memory_free_mib >= 0).all()
    assert (state.memory_free_mib <= state.memory_capacity_mib).all()


@PROPERTY
@given(state=clusters(), data=st.data())
def test_placing_where_feasible_never_exceeds_capacity_and_release_undoes_place(
    state: ClusterState, data: st.DataObject
) -> None:
    initial = arrays_of(state)
    placed: list[tuple[int, PodRequest, list[int]]] = []
    for request in data.draw(st.lists(requests(), min_size=1, max_size=15), label="requests"):
        feasible = check_feasibility(state, request).feasible_rows
        if len(feasible) == 0:
            continue
        row = data.draw(st.sampled_from(feasible.tolist()), label="row")
        gpus = choose_gpus(state.free_milli[[row]], request)[0].tolist()
        # A feasible node always has the slots: distinct, real, never the -1 marker.
        assert len(set(gpus)) == len(gpus) == request.gpu_count
        assert all(0 <= g < state.gpu_count[row] for g in gpus), gpus

        before, versions = arrays_of(state), state.row_version.copy()
        state.place(row, request, gpus)
        _assert_within_capacity(state)
        assert state.row_version[row] == versions[row] + 1
        others = np.arange(state.n_nodes) != row
        np.testing.assert_array_equal(state.row_version[others], versions[others])

        # release right away undoes it exactly, then place again and keep it
        state.release(row, request, gpus)
        assert_same_arrays(state, before)
        assert state.row_version[row] == versions[row] + 2
        state.place(row, request, gpus)
        placed.append((row, request, gpus))

    # What is taken is exactly what was placed, node by node.
    for name, attribute in [("cpu_free_milli", "cpu_milli"), ("memory_free_mib", "memory_mib")]:
        taken = np.zeros(state.n_nodes, dtype=np.int64)
        for row, request, _ in placed:
            taken[row] += getattr(request, attribute)
        np.testing.assert_array_equal(initial[name] - getattr(state, name), taken)

    # Releasing everything, in any order, restores the start; versions only grow.
    for index in data.draw(st.permutations(range(len(placed))), label="release order"):
        row, request, gpus = placed[index]
        versions = state.row_version.copy()
        state.release(row, request, gpus)
        assert state.row_version[row] > versions[row]
        _assert_within_capacity(state)
    assert_same_arrays(state, initial)


def test_set_free_builder_bumps_the_version() -> None:
    # The builder edits arrays the way place() would: caches keyed on row_version must see it.
    state = set_free(state_of(node("a", 2), node("b", 2, capacity_type=SPOT)), 1, [300, 1000])
    np.testing.assert_array_equal(state.row_version, [0, 1])
    assert state.used_gpu_milli == 700  # 4000 - (1000+1000+300+1000)
