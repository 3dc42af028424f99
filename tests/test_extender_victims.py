"""Victim selection: which proposed victims fairpack agrees to, and their order."""

from __future__ import annotations

import pytest
from extender_builders import request

from extender.victims import VictimRecord, select_victims, victim_order_key
from scoring import PodClass

BATCH, INTERACTIVE = PodClass.BATCH, PodClass.INTERACTIVE


@pytest.mark.parametrize(
    ("preemptor", "offered", "refused"),
    [
        pytest.param(BATCH, [VictimRecord("a", pod_class=BATCH)], "", id="batch-evicts-batch"),
        pytest.param(
            BATCH,
            [VictimRecord("a", pod_class=BATCH), VictimRecord("b", pod_class=INTERACTIVE)],
            "pod b is interactive",
            id="batch-never-evicts-interactive",
        ),
        pytest.param(
            INTERACTIVE,
            [VictimRecord("b", pod_class=INTERACTIVE)],
            "",
            id="interactive-evicts-interactive",
        ),
        pytest.param(BATCH, [VictimRecord("x")], "pod x is unknown", id="unknown-victim-of-batch"),
        pytest.param(INTERACTIVE, [VictimRecord("x")], "", id="unknown-victim-of-interactive"),
        pytest.param(
            INTERACTIVE,
            [VictimRecord("a", pod_class=BATCH, preemptible=False)],
            "pod a is not preemptible",
            id="not-preemptible",
        ),
        pytest.param(INTERACTIVE, [], "no victims proposed", id="nothing-offered"),
    ],
)
def test_select_victims(preemptor: PodClass, offered: list[VictimRecord], refused: str) -> None:
    decision = select_victims(request(pod_class=preemptor), offered)
    assert decision.accepted == (not refused)
    assert refused in decision.refused
    if decision.accepted:
        assert {v.uid for v in decision.victims} == {v.uid for v in offered}


def test_victims_are_ordered_batch_over_share_low_priority_recent_first() -> None:
    offered = [
        VictimRecord("interactive", team="t1", pod_class=INTERACTIVE, priority=0),
        VictimRecord("fair-team", team="t2", pod_class=BATCH, priority=0, started_s=100),
        VictimRecord("greedy-high", team="greedy", pod_class=BATCH, priority=50, started_s=100),
        VictimRecord("greedy-old", team="greedy", pod_class=BATCH, priority=10, started_s=100),
        VictimRecord("greedy-new", team="greedy", pod_class=BATCH, priority=10, started_s=900),
    ]
    decision = select_victims(
        request(pod_class=INTERACTIVE), offered, over_share_teams=frozenset({"greedy"})
    )
    assert [v.uid for v in decision.victims] == [
        "greedy-new",
        "greedy-old",
        "greedy-high",
        "fair-team",
        "interactive",
    ]
    assert victim_order_key(offered[0]) > victim_order_key(offered[1])
