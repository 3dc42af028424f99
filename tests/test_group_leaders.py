"""GroupLeaders (benchmarks/policies/common.py) against NodeGroups.representatives."""

from __future__ import annotations

import numpy as np
import pytest
from builders import node, state_of, whole

from benchmarks.policies.common import GroupLeaders
from scoring.groups import NodeGroups


def test_leaders_on_a_hand_made_fleet() -> None:
    # Four idle 2-GPU nodes (one group) and one 4-GPU node; rank 3,1,0,2,4 -> row 2 leads
    # the 2-GPU group, row 4 is alone.  Row 2 takes a GPU: it leaves the group (leader of a
    # new one, still ranked first) and row 1 (rank 1) leads the idle 2-GPU nodes.
    state = state_of(*(node(f"n{i}", 2) for i in range(4)), node("big", 4))
    groups, leaders = NodeGroups(), GroupLeaders(np.array([3, 1, 0, 2, 4]))
    groups.refresh(state)
    assert leaders.leaders(groups.group).tolist() == [2, 4]
    state.place(2, whole(1), (0,))
    groups.refresh(state)
    assert leaders.leaders(groups.group).tolist() == [2, 1, 4]
    # and back: row 2 is idle again and leads the group once more
    state.release(2, whole(1), (0,))
    groups.refresh(state)
    assert leaders.leaders(groups.group).tolist() == [2, 4]


@pytest.mark.parametrize("seed", range(3))
def test_leaders_match_representatives_through_a_run(seed: int) -> None:
    rng = np.random.default_rng(seed)
    specs = [node(f"n{i}", int(rng.choice([1, 2, 4, 8])), cpu_milli=64_000) for i in range(60)]
    state = state_of(*specs)
    rank = rng.permutation(len(specs))
    by_rank = np.argsort(rank)
    groups, leaders = NodeGroups(), GroupLeaders(rank)
    placed: list[tuple[int, int]] = []
    for step in range(200):
        groups.refresh(state)
        expected = groups.representatives(by_rank)
        assert leaders.leaders(groups.group).tolist() == expected.tolist(), step
        if placed and rng.random() < 0.3:  # release a random earlier placement
            row, slot = placed.pop(int(rng.integers(len(placed))))
            state.release(row, whole(1, 1_000), (slot,))
            continue
        row = int(rng.integers(len(specs)))
        free = np.flatnonzero(state.free_milli[row, : state.gpu_count[row]] == 1000)
        if len(free):
            state.place(row, whole(1, 1_000), (int(free[0]),))
            placed.append((row, int(free[0])))


def test_many_changes_at_once_rebuild() -> None:
    # 100 idle nodes, then every one takes a GPU: more changed rows than the incremental
    # path handles, so the leaders are rebuilt (one group, led by the best-ranked row).
    state = state_of(*(node(f"n{i}", 2) for i in range(100)))
    rank = np.arange(100)[::-1].copy()
    groups, leaders = NodeGroups(), GroupLeaders(rank)
    groups.refresh(state)
    assert leaders.leaders(groups.group).tolist() == [99]
    for row in range(100):
        state.place(row, whole(1), (0,))
    groups.refresh(state)
    assert leaders.leaders(groups.group).tolist() == [99]
