"""Victim order and node choice (scoring/victims.py), node holds for starving pods (scoring/starvation.py)."""

from __future__ import annotations

import numpy as np
import pytest
from builders import node, state_of, whole

from scoring import PodClass, PodRequest
from scoring.fairshare import TeamShares, team_shares
from scoring.starvation import kept_off, reserved_rows
from scoring.victims import (
    VictimDecision,
    VictimRecord,
    best_nodes,
    node_cost,
    select_victims,
    victim_order_key,
)

BATCH, INTERACTIVE = PodClass.BATCH, PodClass.INTERACTIVE


def preemptor(pod_class: PodClass = INTERACTIVE, team: str = "", gpus: int = 1) -> PodRequest:
    return PodRequest(
        gpu_count=gpus, milli_per_gpu=1000, pod_class=pod_class, team=team, priority=100
    )


def shares() -> TeamShares:
    """greedy holds 70 of a deserved 40 (+30), steady 20 of 30 (-10), late 10 of 30 (-20)."""
    # demands 70+10, 20+15, 10+30 with weights 4:3:3 over 100 GPUs: 10 L = 100 -> L = 10,
    # below every team's saturation level (80/4, 35/3, 40/3) -> 40, 30, 30
    return team_shares(
        ["greedy", "steady", "late"],
        np.array([4.0, 3.0, 3.0]),
        np.array([70.0, 20.0, 10.0]),
        np.array([10.0, 15.0, 30.0]),
        100.0,
        np.array([1.0, 1.0, 1.0]),
    )


def test_shares_fixture_is_as_documented() -> None:
    np.testing.assert_allclose(shares().deserved, [40, 30, 30])


@pytest.mark.parametrize(
    ("preemptor_", "offered", "with_shares", "refused"),
    [
        (preemptor(BATCH), [VictimRecord("a", pod_class=BATCH)], False, ""),
        (
            preemptor(BATCH),
            [VictimRecord("a", pod_class=BATCH), VictimRecord("b", pod_class=INTERACTIVE)],
            False,
            "pod b is interactive; a batch pod cannot evict it",
        ),
        (preemptor(), [VictimRecord("b", pod_class=INTERACTIVE)], False, ""),
        (preemptor(BATCH), [VictimRecord("x")], False, "pod x is unknown to fairpack"),
        (preemptor(), [VictimRecord("x")], False, ""),
        (
            preemptor(),
            [VictimRecord("a", pod_class=BATCH, preemptible=False)],
            False,
            "pod a is not preemptible",
        ),
        (preemptor(), [], False, "no victims proposed"),
        # greedy is over its share (70 + 1 > 40): steady (20 of 30) is not its victim
        (
            preemptor(team="greedy"),
            [VictimRecord("s", team="steady", pod_class=BATCH)],
            True,
            "pod s is of team steady, which holds 20.0 GPUs of a deserved 30.0,"
            " and team greedy would be over its share",
        ),
        # ... but greedy may evict its own pods
        (preemptor(team="greedy"), [VictimRecord("g", team="greedy", pod_class=BATCH)], True, ""),
        # late is under its share (10 + 1 <= 30): it may evict greedy's batch pods
        (preemptor(team="late"), [VictimRecord("g", team="greedy", pod_class=BATCH)], True, ""),
        # late under its share may also evict steady (also under): only over-share
        # preemptors are restricted
        (preemptor(team="late"), [VictimRecord("s", team="steady", pod_class=BATCH)], True, ""),
    ],
    ids=[
        "batch-evicts-batch",
        "batch-never-evicts-interactive",
        "interactive-evicts-interactive",
        "unknown-victim-of-batch",
        "unknown-victim-of-interactive",
        "not-preemptible",
        "nothing-offered",
        "over-share-never-evicts-under-share",
        "over-share-evicts-own-team",
        "under-share-evicts-over-share",
        "under-share-evicts-under-share",
    ],
)
def test_select_victims(
    preemptor_: PodRequest, offered: list[VictimRecord], with_shares: bool, refused: str
) -> None:
    decision = select_victims(preemptor_, offered, shares() if with_shares else None)
    assert decision.accepted == (not refused)
    assert refused in decision.refused
    if decision.accepted:
        assert {v.uid for v in decision.victims} == {v.uid for v in offered}


def test_victims_are_ordered_batch_then_furthest_over_share_then_priority_then_recent() -> None:
    # excess over share: greedy +30, steady -10, late -20 (see shares())
    offered = [
        VictimRecord("interactive", team="greedy", pod_class=INTERACTIVE, priority=0),
        VictimRecord("late", team="late", pod_class=BATCH, priority=0, started_s=100),
        VictimRecord("steady", team="steady", pod_class=BATCH, priority=0, started_s=100),
        VictimRecord("greedy-high", team="greedy", pod_class=BATCH, priority=50, started_s=100),
        VictimRecord("greedy-old", team="greedy", pod_class=BATCH, priority=10, started_s=100),
        VictimRecord("greedy-new", team="greedy", pod_class=BATCH, priority=10, started_s=900),
    ]
    decision = select_victims(preemptor(team="late"), offered, shares())
    assert [v.uid for v in decision.victims] == [
        "greedy-new",  # batch, +30 over, priority 10, started last
        "greedy-old",  # batch, +30 over, priority 10, started earlier
        "greedy-high",  # batch, +30 over, priority 50
        "steady",  # batch, -10
        "late",  # batch, -20
        "interactive",  # interactive comes last whatever its team
    ]


def test_victim_order_key_accepts_a_set_of_over_share_teams() -> None:
    greedy = VictimRecord("g", team="greedy", pod_class=BATCH)
    fair = VictimRecord("f", team="fair", pod_class=BATCH)
    assert victim_order_key(greedy, frozenset({"greedy"})) < victim_order_key(
        fair, frozenset({"greedy"})
    )
    assert victim_order_key(VictimRecord("i", pod_class=INTERACTIVE)) > victim_order_key(fair)


def accepted(*victims: VictimRecord) -> VictimDecision:
    return VictimDecision(victims=victims)


@pytest.mark.parametrize(
    ("decisions", "pdb", "expected"),
    [
        # a node with only batch victims beats one with an interactive victim
        (
            {
                "n0": accepted(VictimRecord("i", pod_class=INTERACTIVE)),
                "n1": accepted(VictimRecord("b", pod_class=BATCH)),
            },
            {},
            ["n1"],
        ),
        # fewer PDB violations come first, even with an interactive victim
        (
            {
                "n0": accepted(VictimRecord("i", pod_class=INTERACTIVE)),
                "n1": accepted(VictimRecord("b", pod_class=BATCH)),
            },
            {"n1": 1},
            ["n0"],
        ),
        # victims of greedy (+30) beat victims of steady (-10); a node mixing both counts
        # by its least over-share victim (steady)
        (
            {
                "mixed": accepted(
                    VictimRecord("g1", team="greedy", pod_class=BATCH),
                    VictimRecord("s1", team="steady", pod_class=BATCH),
                ),
                "greedy": accepted(VictimRecord("g2", team="greedy", pod_class=BATCH)),
                "steady": accepted(VictimRecord("s2", team="steady", pod_class=BATCH)),
            },
            {},
            ["greedy"],
        ),
        # ties stay, in input order; refused nodes never come back
        (
            {
                "a": accepted(VictimRecord("g1", team="greedy", pod_class=BATCH)),
                "no": VictimDecision(refused="not preemptible"),
                "b": accepted(VictimRecord("g2", team="greedy", pod_class=BATCH, priority=9)),
            },
            {},
            ["a", "b"],
        ),
        ({"no": VictimDecision(refused="x")}, {}, []),
    ],
    ids=["batch-over-interactive", "pdb-first", "furthest-over-share", "ties-kept", "none"],
)
def test_best_nodes(
    decisions: dict[str, VictimDecision], pdb: dict[str, int], expected: list[str]
) -> None:
    assert best_nodes(decisions, pdb, shares()) == expected


def test_node_cost_without_shares_counts_class_only() -> None:
    # (pdb, worst class, -least excess): no shares -> every excess is 0
    decision = accepted(VictimRecord("g", team="greedy", pod_class=BATCH))
    assert node_cost(decision, 2) == (2, 0, 0.0)
    assert best_nodes({"a": decision, "b": decision}, {}) == ["a", "b"]


# --- node holds for starving large pods ------------------------------------------------------


def test_reserved_rows_take_the_node_closest_to_freeing() -> None:
    state = state_of(
        node("a", 8), node("b", 8), node("c", 4), node("d", 8, model="B"), node("e", 8)
    )
    state.free_milli[0, :5] = 0  # a: 3 free
    state.free_milli[1, :2] = 0  # b: 6 free
    state.free_milli[4, :1] = 0  # e: 7 free
    # c has 4 GPUs, too few; d is model B.  Most free of a, b, e: e (7), then b (6)
    starving = [
        PodRequest(gpu_count=8, milli_per_gpu=1000, allowed_models=frozenset({"A"})),
        PodRequest(gpu_count=8, milli_per_gpu=1000, allowed_models=frozenset({"A"})),
    ]
    rows, sizes = reserved_rows(state, starving, max_nodes=4)
    assert rows.tolist() == [4, 1] and sizes == (8, 8)
    # at most one node
    rows, _ = reserved_rows(state, starving, max_nodes=1)
    assert rows.tolist() == [4]
    # an excluded node (draining for a preemptor) is never held
    excluded = np.array([False, False, False, False, True])
    rows, _ = reserved_rows(state, starving, max_nodes=1, exclude=excluded)
    assert rows.tolist() == [1]


@pytest.mark.parametrize(
    ("starving", "max_nodes"),
    [([], 4), ([whole(8)], 0), ([whole(16)], 4)],
    ids=["nobody-starves", "holds-off", "no-node-big-enough"],
)
def test_reserved_rows_hold_nothing(starving: list[PodRequest], max_nodes: int) -> None:
    rows, sizes = reserved_rows(state_of(node("a", 8)), starving, max_nodes)
    assert len(rows) == 0 and sizes == ()


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (whole(1), [0, 1]),  # 1 < 8 and 1 < 4: off both
        (whole(4), [0]),  # 4 < 8 only
        (whole(8), []),  # as large as any held-for pod
        (PodRequest(cpu_milli=1000), []),  # CPU-only pods do not take GPUs
    ],
    ids=["small", "medium", "large", "cpu-only"],
)
def test_kept_off(request_: PodRequest, expected: list[int]) -> None:
    assert kept_off(request_, (8, 4)).tolist() == expected
