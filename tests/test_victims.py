"""Victim order and node choice (scoring/victims.py), node holds for starving pods (scoring/starvation.py)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest
from builders import PROPERTY, node, state_of, whole
from hypothesis import given
from hypothesis import strategies as st

from scoring import PodClass, PodRequest
from scoring.fairshare import GateDecision, TeamShares, fair_share_gate, team_shares
from scoring.starvation import kept_off, reserved_rows
from scoring.victims import (
    VictimDecision,
    VictimRecord,
    best_nodes,
    choose_victims,
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
        # ... and steady's along with 31 GPUs of its own: 70 - 31 + 1 = 40, within its share
        (
            preemptor(team="greedy"),
            [
                VictimRecord("g", team="greedy", pod_class=BATCH, gpus=31),
                VictimRecord("s", team="steady", pod_class=BATCH, gpus=1),
            ],
            True,
            "",
        ),
        # with 30 of its own it would still be over (70 - 30 + 1 = 41 > 40): refused
        (
            preemptor(team="greedy"),
            [
                VictimRecord("g", team="greedy", pod_class=BATCH, gpus=30),
                VictimRecord("s", team="steady", pod_class=BATCH, gpus=1),
            ],
            True,
            "pod s is of team steady",
        ),
        # late is under its share (10 + 1 <= 30): it may evict greedy's batch pods
        (preemptor(team="late"), [VictimRecord("g", team="greedy", pod_class=BATCH)], True, ""),
        # late under its share may also evict steady (also under): only over-share
        # preemptors are restricted
        (preemptor(team="late"), [VictimRecord("s", team="steady", pod_class=BATCH)], True, ""),
        # with 25 GPUs late ends over its share (10 + 25 > 30): it may take greedy's excess
        # (70 - 30 = 40, its share)...
        (
            preemptor(team="late", gpus=25),
            [VictimRecord("g", team="greedy", pod_class=BATCH, gpus=30)],
            True,
            "",
        ),
        # ... but not a GPU more, in one pod or several (70 - 16 - 15 < 40)
        (
            preemptor(team="late", gpus=25),
            [
                VictimRecord("g1", team="greedy", pod_class=BATCH, gpus=16),
                VictimRecord("g2", team="greedy", pod_class=BATCH, gpus=15),
            ],
            True,
            "evicting 31 GPUs of team greedy, which holds 70.0 of a deserved 40.0, would leave"
            " it under its share, and team late would be over its own",
        ),
        # ending within its share (10 + 20 <= 30), late may take more
        (
            preemptor(team="late", gpus=20),
            [VictimRecord("g", team="greedy", pod_class=BATCH, gpus=31)],
            True,
            "",
        ),
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
        "over-share-gives-back-enough",
        "over-share-gives-back-too-little",
        "under-share-evicts-over-share",
        "under-share-evicts-under-share",
        "over-share-takes-the-excess",
        "over-share-pushes-none-under",
        "within-share-takes-more",
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


# --- fairpack's own victims on a node (choose_victims) -------------------------------------


def two_teams(held_a: float) -> TeamShares:
    """a holds ``held_a`` of a deserved 50; b holds 40 of 50 and waits for 10."""
    # demands held_a + (55 - held_a) = 55 and 40 + 20 = 60 over 100 GPUs, weights 1:1:
    # L = 50 -> 50 and 50; b waits for min(pending 20, 50 - 40) = 10
    return team_shares(
        ["a", "b"],
        np.array([1.0, 1.0]),
        np.array([held_a, 40.0]),
        np.array([55.0 - held_a, 20.0]),
        100.0,
        np.array([1.0, 1.0]),
    )


ON_NODE = [
    VictimRecord("a-batch-1", team="a", pod_class=BATCH, started_s=10, gpus=1),
    VictimRecord("b-batch-1", team="b", pod_class=BATCH, started_s=20, gpus=1),
    VictimRecord("a-batch-4", team="a", pod_class=BATCH, started_s=5, gpus=4),
    VictimRecord("a-chat", team="a", pod_class=INTERACTIVE, priority=100, started_s=1, gpus=1),
]
"""A full node; the rest of the cluster has 100 - held_a - 40 GPUs free."""
OWN_CHATS = [
    VictimRecord("b-batch", team="b", pod_class=BATCH, started_s=30, gpus=1),
    VictimRecord("a-chat-2", team="a", pod_class=INTERACTIVE, priority=50, started_s=20, gpus=2),
    VictimRecord("a-chat-1", team="a", pod_class=INTERACTIVE, priority=50, started_s=10, gpus=1),
]
"""A full node: a batch pod of b, and two of a's lower-priority interactive pods."""
SHARED_GPU = [
    VictimRecord("a-half", team="a", pod_class=BATCH, started_s=10, gpus=0.5),
    VictimRecord("b-half", team="b", pod_class=BATCH, started_s=20, gpus=0.5),
]
"""A one-GPU node shared by two half-GPU batch pods."""


def team_pod(
    team: str, gpus: int, pod_class: PodClass = INTERACTIVE, priority: int = 100
) -> PodRequest:
    return PodRequest(
        gpu_count=gpus, milli_per_gpu=1000, pod_class=pod_class, team=team, priority=priority
    )


@pytest.mark.parametrize(
    ("held_a", "preemptor_", "on_node", "expected"),
    [
        # a is at its share (50 + 1 > 50): b (40 of 50) is not its victim; a-chat is of its
        # priority.  Its own batch pods, most recently started first: a-batch-1 alone makes
        # room, and a ends within its share (50 - 1 + 1 = 50) -> pass
        (50, team_pod("a", 1), ON_NODE, ["a-batch-1"]),
        # 2 GPUs: a-batch-1 is not enough, a-batch-4 is added (fits, 50 - 5 + 2 = 47); then
        # a-batch-1 is spared (a-batch-4 alone: 4 >= 2, 50 - 4 + 2 = 48)
        (50, team_pod("a", 2), ON_NODE, ["a-batch-4"]),
        # a holds 52, over its share (+2, b -10): its own batch pods come first, and
        # swapping a-batch-1 for the 1-GPU interactive pod does not grow a (52 - 1 + 1):
        # the gate passes
        (52, team_pod("a", 1), ON_NODE, ["a-batch-1"]),
        # 2 GPUs: a-batch-1 leaves no room; with a-batch-4 too (5 of its own GPUs for 2) it
        # fits and a does not grow; a-batch-1 is spared (4 of its own for 2)
        (52, team_pod("a", 2), ON_NODE, ["a-batch-4"]),
        # without a-batch-4 on the node: b's pod is not a's victim (52 - 1 + 2 > 50 even
        # with a-batch-1 gone), and a-batch-1 alone leaves no room
        (52, team_pod("a", 2), ON_NODE[:2], "the pod would not fit"),
        # b is under its share (40 + 1 <= 50): any team's batch pods, a's (excess 0) before
        # its own (-10); a-chat is interactive, never the victim of a batch pod
        (50, team_pod("b", 1, BATCH, priority=50), ON_NODE, ["a-batch-1"]),
        # only b's pod and an interactive pod of a's priority: nothing a may evict
        (50, team_pod("a", 1), ON_NODE[1::2], "no pod on the node that fairpack may evict"),
        # 8 GPUs: a's 5 evictable GPUs on the node are not enough
        (50, team_pod("a", 8), ON_NODE, "the pod would not fit"),
        # one GPU shared by a half-GPU batch pod of a and one of b; a holds 49.5: giving
        # back its half it ends at 49.5 - 0.5 + 1 = 50 <= 50, within its share, so b's
        # half may go too (a is not over b), and the gate passes
        (49.5, team_pod("a", 1), SHARED_GPU, ["a-half", "b-half"]),
        # a holds 50: 50 - 0.5 + 1 > 50, a stays over its share: b's half is not its victim
        # and a's half alone does not free the GPU
        (50, team_pod("a", 1), SHARED_GPU, "the pod would not fit"),
        # a holds 52: b's batch pod comes first, and goes only with 3 of a's GPUs (52 - 3 +
        # 1 = 50), so all three are taken; once b's pod is spared, one of a's pods makes
        # room and a does not grow (1 of its own for 1): a-chat-1 is spared too
        (52, team_pod("a", 1), OWN_CHATS, ["a-chat-2"]),
    ],
    ids=[
        "swap-own-batch",
        "spare-what-is-not-needed",
        "over-share-swaps-own",
        "over-share-swap-must-not-grow",
        "over-share-no-room",
        "under-share-reclaims",
        "none-allowed",
        "no-room",
        "gives-back-enough-to-share-a-gpu",
        "gives-back-too-little",
        "spared-other-team-frees-own",
    ],
)
def test_choose_victims(
    held_a: float, preemptor_: PodRequest, on_node: list[VictimRecord], expected: list[str] | str
) -> None:
    shares = two_teams(held_a)
    free = 100 - held_a - 40
    size = preemptor_.gpu_count

    def fits(victims: Sequence[VictimRecord]) -> bool:
        return sum(v.gpus for v in victims) >= size

    def gate(victims: Sequence[VictimRecord]) -> GateDecision:
        freed = sum(v.gpus for v in victims)
        own = sum(v.gpus for v in victims if v.team == preemptor_.team)
        return fair_share_gate(shares, preemptor_.team, size, free + freed, own)

    decision = choose_victims(preemptor_, on_node, fits, shares, gate=gate)
    if isinstance(expected, str):
        assert not decision.accepted and expected in decision.refused
    else:
        assert [v.uid for v in decision.victims] == expected


def test_a_set_the_order_misses_is_found_set_by_set() -> None:
    # late ends over its share with 28 GPUs (10 + 28 > 30), so it may take at most greedy's
    # excess (30).  In order, g20 and g15 make room but take 35; g13 then adds more.  Of
    # the sets of two, g15 and g13 make room (28) within greedy's excess.
    on_node = [
        VictimRecord("g20", team="greedy", pod_class=BATCH, started_s=5, gpus=20),
        VictimRecord("g15", team="greedy", pod_class=BATCH, started_s=4, gpus=15),
        VictimRecord("g13", team="greedy", pod_class=BATCH, started_s=3, gpus=13),
    ]
    decision = choose_victims(
        preemptor(team="late", gpus=28), on_node, lambda v: sum(x.gpus for x in v) >= 28, shares()
    )
    assert [v.uid for v in decision.victims] == ["g15", "g13"]


def test_no_set_is_searched_where_every_pod_gone_is_not_enough() -> None:
    # Eight pods of greedy (over its share) free 8 GPUs; a 9-GPU pod does not fit.  Taking
    # more pods only frees more, so once all eight are not enough no set of them is: the
    # node costs one fits call per pod taken in order, not one per set (8 + 255).
    on_node = [
        VictimRecord(f"g{i}", team="greedy", pod_class=BATCH, started_s=i, gpus=1) for i in range(8)
    ]
    calls: list[int] = []

    def fits(victims: Sequence[VictimRecord]) -> bool:
        calls.append(len(victims))
        return sum(v.gpus for v in victims) >= 9

    decision = choose_victims(preemptor(team="late", gpus=9), on_node, fits, shares())
    assert decision.refused.endswith("the pod would not fit")
    assert len(calls) == len(on_node)


victim_records = st.builds(
    VictimRecord,
    uid=st.uuids().map(str),
    team=st.sampled_from(["a", "b", "c", ""]),
    pod_class=st.sampled_from([BATCH, INTERACTIVE, None]),
    priority=st.sampled_from([0, 50, 100]),
    preemptible=st.booleans(),
    started_s=st.integers(0, 5).map(float),
    gpus=st.integers(1, 3).map(float),
)


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.integers(0, 20), st.integers(0, 10)), min_size=3, max_size=3
    ),
    st.integers(0, 30),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([BATCH, INTERACTIVE]),
    st.sampled_from([50, 100]),
    st.integers(1, 4),
    st.lists(victim_records, max_size=6, unique_by=lambda v: v.uid),
)
def test_choose_victims_against_every_subset(
    teams: list[tuple[int, int, int]],
    spare_gpus: int,
    team: str,
    pod_class: PodClass,
    priority: int,
    size: int,
    on_node: list[VictimRecord],
) -> None:
    """fairpack's victims keep every rule and none of them can be spared; when it finds
    none, no set of the node's pods would do."""
    held = np.array([h for _, h, _ in teams], float)
    capacity = float(held.sum() + spare_gpus)
    shares = team_shares(
        ["a", "b", "c"],
        np.array([w for w, _, _ in teams], float),
        held,
        np.array([p for *_, p in teams], float),
        capacity,
        np.array([min(p, 1) for *_, p in teams], float),
    )
    preemptor_ = team_pod(team, size, pod_class, priority)

    def fits(victims: Sequence[VictimRecord]) -> bool:  # a full node
        return sum(v.gpus for v in victims) >= size

    def gate(victims: Sequence[VictimRecord]) -> GateDecision:
        freed = sum(v.gpus for v in victims)
        own = sum(v.gpus for v in victims if v.team == team)
        return fair_share_gate(shares, team, size, spare_gpus + freed, own)

    def allowed(victims: Sequence[VictimRecord]) -> bool:
        return (
            fits(victims)
            and not gate(victims).hold
            and select_victims(preemptor_, victims, shares).accepted
            and all(v.priority < priority for v in victims)
        )

    decision = choose_victims(preemptor_, on_node, fits, shares, gate=gate)
    if decision.accepted:
        victims = list(decision.victims)
        assert allowed(victims)
        if pod_class == BATCH:
            assert all(v.pod_class == BATCH for v in victims)
        for i in range(len(victims)):
            assert not allowed(victims[:i] + victims[i + 1 :]), f"{victims[i].uid} not needed"
    else:
        assert not any(
            allowed(subset)
            for n in range(1, len(on_node) + 1)
            for subset in itertools.combinations(on_node, n)
        )


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
    # nor a cordoned one: kube-scheduler sends no pod there, the starving one neither
    state.schedulable[4] = False
    rows, _ = reserved_rows(state, starving, max_nodes=4)
    assert rows.tolist() == [1, 0]
    rows, _ = reserved_rows(state, starving, max_nodes=4, exclude=~excluded)
    assert rows.tolist() == []


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
