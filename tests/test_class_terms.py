"""Class terms (scoring/terms/class_placement.py, reclaim_cost.py) and the state they read."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from builders import cpu_only, node, sharing, state_of, whole

from scoring import SPOT, Candidates, ClusterState, PodClass, PodRequest, check_feasibility
from scoring.groups import NodeGroups
from scoring.terms import class_placement, reclaim_cost

INTERACTIVE, BATCH = PodClass.INTERACTIVE, PodClass.BATCH


def candidates_of(state: ClusterState, request: PodRequest) -> Candidates:
    rows = check_feasibility(state, request).feasible_rows
    return Candidates(state, request, rows, np.zeros(0, dtype=np.int64))


def interactive(gpus: int) -> PodRequest:
    return replace(whole(gpus), pod_class=INTERACTIVE)


def batch(gpus: int, team: str = "") -> PodRequest:
    return replace(whole(gpus), team=team)


def cluster() -> ClusterState:
    """Three 8-GPU nodes: on-demand empty, on-demand half batch, spot with 6 batch GPUs."""
    state = state_of(node("od-empty"), node("od-half"), node("spot", capacity_type=SPOT))
    state.place(1, batch(4), [0, 1, 2, 3])
    state.place(2, batch(6), [0, 1, 2, 3, 4, 5])
    return state


# --- class_placement ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        # interactive: (on_demand + 1 - preemptible/capacity) / 2
        #   od-empty: (1 + 1 - 0/8000) / 2 = 1;  od-half: (1 + 1 - 4000/8000) / 2 = 0.75
        #   spot: (0 + 1 - 6000/8000) / 2 = 0.125
        (interactive(1), [1.0, 0.75, 0.125]),
        # batch: (spot + 1 - free/capacity) / 2
        #   od-empty: (0 + 1 - 8000/8000) / 2 = 0;  od-half: (0 + 1 - 4000/8000) / 2 = 0.25
        #   spot: (1 + 1 - 2000/8000) / 2 = 0.875
        (batch(1), [0.0, 0.25, 0.875]),
        # a share counts like a batch pod: same node figures as above
        (sharing(500), [0.0, 0.25, 0.875]),
        # no GPUs asked: neutral everywhere
        (cpu_only(1000), [0.5, 0.5, 0.5]),
    ],
    ids=["interactive", "batch", "sharing-batch", "cpu-only"],
)
def test_class_placement(request_: PodRequest, expected: list[float]) -> None:
    np.testing.assert_allclose(class_placement(candidates_of(cluster(), request_)), expected)


def test_class_placement_on_a_node_without_gpus() -> None:
    # no GPU capacity: nothing preemptible (interactive: (1 + 1 - 0) / 2 = 1), and the node
    # counts as empty for batch ((0 + 1 - 1) / 2 = 0); a CPU-only pod would be neutral
    state = state_of(node("cpu", 0))
    rows = np.array([0])
    for request_, expected in ((interactive(1), 1.0), (batch(1), 0.0)):
        candidates = Candidates(state, request_, rows, np.zeros(0, dtype=np.int64))
        assert class_placement(candidates).tolist() == [expected]


# --- reclaim_cost ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "over_share", "expected"),
    [
        # over-share batch: (preemptible + 1000) / 8000
        #   od-empty: 1000/8000 = 0.125;  od-half: 5000/8000 = 0.625;  spot: 7000/8000 = 0.875
        (batch(1, "greedy"), {"greedy"}, [0.125, 0.625, 0.875]),
        # within its share: neutral
        (batch(1, "greedy"), set(), [0.5, 0.5, 0.5]),
        # interactive pods are not reclaimed by fairness: neutral
        (replace(interactive(1), team="greedy"), {"greedy"}, [0.5, 0.5, 0.5]),
        # not preemptible: neutral
        (replace(batch(1, "greedy"), preemptible=False), {"greedy"}, [0.5, 0.5, 0.5]),
    ],
    ids=["over-share-batch", "within-share", "interactive", "not-preemptible"],
)
def test_reclaim_cost(request_: PodRequest, over_share: set[str], expected: list[float]) -> None:
    state = cluster()
    state.over_share_teams = frozenset(over_share)
    np.testing.assert_allclose(reclaim_cost(candidates_of(state, request_)), expected)


@pytest.mark.parametrize("term", [class_placement, reclaim_cost], ids=["class", "reclaim"])
@pytest.mark.parametrize(
    "request_", [interactive(2), batch(1, "t"), sharing(300), cpu_only(500)], ids=str
)
def test_class_terms_stay_in_unit_range(term: object, request_: PodRequest) -> None:
    state = cluster()
    state.over_share_teams = frozenset({"t"})
    scores = term(candidates_of(state, request_))  # type: ignore[operator]
    assert ((scores >= 0) & (scores <= 1)).all()


# --- the state they read --------------------------------------------------------------------


def test_state_counts_preemptible_batch_gpus_and_copies_them() -> None:
    state = state_of(node("n", 8))
    state.place(0, batch(2), [0, 1])  # preemptible batch: counted
    state.place(0, interactive(2), [2, 3])  # interactive: not counted
    state.place(0, replace(batch(1), preemptible=False), [4])  # not preemptible: not counted
    state.place(0, sharing(300), [5])  # a batch share: counted, 300 milli
    assert state.preemptible_milli.tolist() == [2300]
    clone = state.copy()
    state.release(0, batch(2), [0, 1])
    assert (state.preemptible_milli.tolist(), clone.preemptible_milli.tolist()) == ([300], [2300])


def test_node_groups_tell_preemptible_work_apart() -> None:
    # same free GPUs, but one node's pods are preemptible batch and the other's interactive
    state = state_of(node("a", 8), node("b", 8))
    state.place(0, batch(4), [0, 1, 2, 3])
    state.place(1, interactive(4), [0, 1, 2, 3])
    groups = NodeGroups()
    groups.refresh(state)
    assert groups.group[0] != groups.group[1]
