"""The timed replay (benchmarks/replay.py) on small clusters, worked by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from builders import node

from benchmarks.replay import (
    BATCH_PRIORITY,
    INTERACTIVE_PRIORITY,
    Arm,
    ReplayPod,
    ReplayResult,
    ReplaySettings,
    replay,
    trace_replay_pods,
)
from benchmarks.traces import TracePod
from scoring import NodeSpec, PodClass, PodRequest, PolicyConfig
from scoring.policy import FairnessConfig, StarvationConfig

KUBE = Arm("kube", placement="kube-least", priorities=True)
FIFO = Arm("fifo", placement="kube-least", priorities=False)


def fairpack_arm(wait_s: float = 600.0, weights: dict[str, float] | None = None) -> Arm:
    policy = PolicyConfig(
        fairness=FairnessConfig(
            team_weights=weights or {}, starvation=StarvationConfig(wait_s=wait_s)
        )
    )
    return Arm("fairpack", placement="fairpack", policy=policy, fairness=True)


def pod(
    name: str,
    team: str = "a",
    gpus: int = 1,
    at: float = 0,
    run: float = 100,
    pod_class: PodClass = PodClass.BATCH,
    priority: int | None = None,
) -> ReplayPod:
    if priority is None:
        priority = INTERACTIVE_PRIORITY if pod_class is PodClass.INTERACTIVE else BATCH_PRIORITY
    request = PodRequest(
        gpu_count=gpus,
        milli_per_gpu=1000,
        cpu_milli=1000,
        memory_mib=1024,
        team=team,
        pod_class=pod_class,
        priority=priority,
    )
    return ReplayPod(name, request, at, run)


def run(
    nodes: list[NodeSpec],
    pods: list[ReplayPod],
    arm: Arm,
    horizon: float = 1000,
    teams: tuple[str, ...] = ("a", "b"),
) -> ReplayResult:
    settings = ReplaySettings(
        horizon_s=horizon, teams=teams, weights=(1.0,) * len(teams), sample_s=10, grace_s=30
    )
    return replay(nodes, pods, arm, settings)


def waits(result: ReplayResult, team: str | None = None) -> list[float]:
    return [w.wait_s for w in result.waits if team is None or w.team == team]


def test_a_pod_waits_for_a_departure() -> None:
    # 2 GPUs: the first pod takes both until t=100, the second (t=10) waits 100 - 10 = 90
    result = run([node("n", 2)], [pod("big", gpus=2), pod("small", at=10)], KUBE)
    assert sorted(waits(result)) == [0, 90]


def test_the_queue_is_priority_then_oldest() -> None:
    # 1 GPU held by an interactive pod until t=100 (nothing lower to preempt); at t=100
    # the interactive pod (t=20) goes before the older batch pod (t=10), which waits for
    # it to leave at 200: 200 - 10 = 190
    pods = [
        pod("first", pod_class=PodClass.INTERACTIVE),
        pod("old-batch", at=10),
        pod("interactive", at=20, pod_class=PodClass.INTERACTIVE),
    ]
    result = run([node("n", 1)], pods, KUBE)
    by_class = {(w.pod_class, w.arrival_s): w.wait_s for w in result.waits}
    assert by_class == {("interactive", 0): 0, ("batch", 10): 190, ("interactive", 20): 80}
    # without priorities it is first come, first served: the batch pod goes at 100
    fifo = {(w.pod_class, w.arrival_s): w.wait_s for w in run([node("n", 1)], pods, FIFO).waits}
    assert fifo[("batch", 10)] == 90 and fifo[("interactive", 20)] == 180


def test_interactive_preempts_batch_after_the_grace_period() -> None:
    # the batch pod is evicted at t=10, gone at 40; the interactive pod starts then (wait
    # 30); the batch pod is recreated at 40 and waits for the interactive one (until 140)
    pods = [pod("batch", run=1000), pod("chat", at=10, pod_class=PodClass.INTERACTIVE)]
    for arm in (KUBE, fairpack_arm()):
        result = run([node("n", 1)], pods, arm)
        assert [(p.preemptor_class, p.victim_class) for p in result.preemptions] == [
            ("interactive", "batch")
        ]
        recreated = [w for w in result.waits if w.recreated]
        assert [w.arrival_s for w in recreated] == [40] and recreated[0].wait_s == 100
        assert [w.wait_s for w in result.waits if w.pod_class == "interactive"] == [30]


def test_batch_never_preempts_interactive_in_the_fairpack_arm() -> None:
    # an interactive pod of low priority (its class from a label) and a batch pod of higher
    # priority: kube-scheduler alone preempts it, fairpack's victim rules refuse
    pods = [
        pod("chat", pod_class=PodClass.INTERACTIVE, priority=10, run=1000),
        pod("batch", at=10, priority=BATCH_PRIORITY),
    ]
    assert len(run([node("n", 1)], pods, KUBE).preemptions) == 1
    assert run([node("n", 1)], pods, fairpack_arm()).preemptions == []


def test_a_team_at_its_share_makes_room_for_its_interactive_pod_from_its_own_batch() -> None:
    # 4 GPUs, teams a and b (1:1) each run two batch pods to the end (b's started last).
    # a's interactive pod arrives at t=10: demand a 3, b 2 -> deserved 2 and 2, so a would
    # be over its share.  kube-scheduler's dry run offers b's last-started pod, which
    # fairpack refuses (b is at its share); it names one of a's own batch pods instead
    # (a ends at 2 - 1 + 1 = 2).  The interactive pod starts after the 30 s grace; without
    # the swap it would wait for a batch pod to leave (t=2000, past the horizon).
    pods = [
        pod("a0", run=2000),
        pod("a1", run=2000),
        pod("b0", team="b", at=1, run=2000),
        pod("b1", team="b", at=1, run=2000),
        pod("chat", at=10, pod_class=PodClass.INTERACTIVE),
    ]
    result = run([node("n", 4)], pods, fairpack_arm())
    assert [(p.preemptor_team, p.victim_team, p.victim_class) for p in result.preemptions] == [
        ("a", "a", "batch")
    ]
    assert [w.wait_s for w in result.waits if w.pod_class == "interactive"] == [30]
    # kube-scheduler alone takes b's pod
    assert [p.victim_team for p in run([node("n", 4)], pods, KUBE).preemptions] == ["b"]


def test_hard_quotas_cap_a_team_and_leave_gpus_idle() -> None:
    # team a may hold 2 of 4 GPUs: its 4 pods run two at a time (0-100, 100-200)
    pods = [pod(f"a{i}") for i in range(4)]
    capped = replace(KUBE, quotas={"a": 2.0})
    result = run([node("n", 4)], pods, capped, horizon=300)
    assert sorted(waits(result)) == [0, 0, 100, 100]
    assert result.allocated_gpus[result.times_s < 100].max() == 2


def flood_and_late_team() -> list[ReplayPod]:
    # team a: 4 pods at t=0 and 4 more at t=1 (1 GPU, 100 s); team b: 2 pods at t=10
    return [
        *(pod(f"a{i}", at=0) for i in range(4)),
        *(pod(f"a{i + 4}", at=1) for i in range(4)),
        pod("b0", team="b", at=10),
        pod("b1", team="b", at=10),
    ]


def test_the_gate_keeps_gpus_for_the_team_under_its_share() -> None:
    # 4 GPUs; demand a 8, b 2 over weights 1:1 -> deserved 2 and 2.  At t=100 a's first 4
    # leave: a's older pods pass while a holds at most 2, then the gate holds a back while
    # b waits for 2 and only 2 are free, so b starts at 100 (wait 90).  First come, first
    # served, a's 4 pods of t=1 take all 4 GPUs and b waits until 200 (wait 190).
    fair = run([node("n", 4)], flood_and_late_team(), fairpack_arm(), horizon=400)
    fifo = run([node("n", 4)], flood_and_late_team(), FIFO, horizon=400)
    assert waits(fair, "b") == [90, 90]
    assert waits(fifo, "b") == [190, 190]
    assert fair.gate_holds > 0


def test_the_gate_never_idles_gpus_when_nobody_else_waits() -> None:
    # team a alone asks for 8 GPUs on 4: it borrows b's share, every GPU stays busy
    pods = [pod(f"a{i}", at=0) for i in range(8)]
    result = run([node("n", 4)], pods, fairpack_arm(), horizon=200)
    assert (result.allocated_gpus == 4).all()
    assert result.gate_holds == 0


def test_a_starving_large_pod_gets_a_node_drained_for_it() -> None:
    # one 8-GPU node kept full by 1-GPU pods of team s that arrive every 10 s and run 80 s;
    # an 8-GPU pod arrives at t=5.  kube-scheduler hands every freed GPU to the next small
    # pod; fairpack holds the node once the large pod has waited 50 s, the small pods
    # drain (the last one started before the hold leaves by t=55 + 80), and it starts.
    small = [pod(f"s{i}", team="s", at=i * 10, run=80) for i in range(100)]
    large = pod("large", team="big", gpus=8, at=5, run=100)
    teams = ("s", "big")
    kube = run([node("n", 8)], [*small, large], FIFO, horizon=1000, teams=teams)
    fair = run([node("n", 8)], [*small, large], fairpack_arm(wait_s=50), horizon=1000, teams=teams)
    large_wait = {r.arm: next(w for w in r.waits if w.gpu_count == 8) for r in (kube, fair)}
    assert not large_wait["fifo"].started
    assert large_wait["fairpack"].started and large_wait["fairpack"].wait_s <= 140


def test_deserved_shares_follow_demand_over_time() -> None:
    result = run([node("n", 4)], flood_and_late_team(), fairpack_arm(), horizon=400)
    # before b arrives (t < 10) a deserves all it asks (capped at 4); from 10 on, 2 and 2
    before = result.times_s < 10
    np.testing.assert_allclose(result.deserved_gpus[before][:, 0], 4)
    during = (result.times_s >= 10) & (result.times_s < 100)
    np.testing.assert_allclose(result.deserved_gpus[during], [[2, 2]] * int(during.sum()))


def test_trace_replay_pods_take_the_trace_timing_and_classes() -> None:
    request = PodRequest(gpu_count=1, milli_per_gpu=1000)
    trace = [
        TracePod("ls", request, qos="LS", creation_s=100, deletion_s=400),
        TracePod("be", request, qos="BE", creation_s=50, deletion_s=50),
        TracePod("untimed", request, qos="BE"),
    ]
    pods = trace_replay_pods(trace, team_of={"ls": "serving"})
    assert [(p.name, p.team, p.arrival_s, p.duration_s) for p in pods] == [
        ("ls", "serving", 100.0, 300.0),
        ("be", "default", 50.0, 1.0),
    ]
    assert [(p.request.pod_class, p.request.priority) for p in pods] == [
        (PodClass.INTERACTIVE, INTERACTIVE_PRIORITY),
        (PodClass.BATCH, BATCH_PRIORITY),
    ]


@pytest.mark.parametrize("arm", [KUBE, FIFO, fairpack_arm()], ids=lambda a: a.name)
def test_a_trace_replays_to_the_end_with_every_pod_accounted(arm: Arm) -> None:
    request = PodRequest(gpu_count=1, milli_per_gpu=500, cpu_milli=100)
    trace = [
        TracePod(
            f"p{i}", request, qos="LS" if i % 3 else "BE", creation_s=i * 7, deletion_s=i * 7 + 50
        )
        for i in range(60)
    ]
    result = run([node("n", 2), node("m", 1)], trace_replay_pods(trace), arm, teams=("default",))
    assert len([w for w in result.waits if not w.recreated]) == 60
    assert (result.allocated_gpus <= 3).all()


def pinned(name: str, model: str, priority: int, at: float, team: str = "a") -> ReplayPod:
    """A 1-GPU pod that only a node of ``model`` takes, running past the horizon."""
    pinned_pod = pod(name, team=team, at=at, run=10_000, priority=priority)
    return replace(
        pinned_pod, request=replace(pinned_pod.request, allowed_models=frozenset({model}))
    )


def victim_teams(result: ReplayResult) -> list[str]:
    return [p.victim_team for p in result.preemptions]


@pytest.mark.parametrize(
    ("on_a", "on_b", "expected"),
    [
        # same highest priority (10), sums 10+0+0 = 10 against 10+5 = 15: kube-scheduler
        # adds MaxInt32+1 to every victim's priority, so 3 victims cost more than 2 -> b
        ([(10, 0), (0, 1), (0, 2)], [(10, 0), (5, 1)], "b"),
        # two victims of priority 1 on each; a's started at 0 and 10, b's at 2 and 5:
        # kube-scheduler takes the node whose earliest victim started latest (b: 2 > 0),
        # not the one whose latest did (a: 10 > 5)
        ([(1, 0), (1, 10)], [(1, 2), (1, 5)], "b"),
    ],
    ids=["sum-of-shifted-priorities", "latest-earliest-start"],
)
def test_preemption_picks_the_node_as_pick_one_node_for_preemption_does(
    on_a: list[tuple[int, float]], on_b: list[tuple[int, float]], expected: str
) -> None:
    # (priority, start) of the 1-GPU pods on nodes a and b; the preemptor (priority 100)
    # asks for every GPU of either node at t=20
    a = [pinned(f"a{i}", "A", p, at, team="a") for i, (p, at) in enumerate(on_a)]
    b = [pinned(f"b{i}", "B", p, at, team="b") for i, (p, at) in enumerate(on_b)]
    gpus = max(len(on_a), len(on_b))
    nodes = [node("a", gpus, model="A"), node("b", gpus, model="B")]
    preemptor = pod("preemptor", team="p", gpus=gpus, at=20, priority=100)
    result = run(nodes, [*a, *b, preemptor], KUBE, teams=("a", "b", "p"))
    assert set(victim_teams(result)) == {expected}


def test_parked_pods_are_flushed_back_even_when_nothing_happens() -> None:
    # node n (model A, 4 GPUs) runs a0, a1; node m (model B, 2 GPUs) runs b0, b1, all to
    # the end.  b's pod bp (model B) waits; a's 2-GPU pod arrives at t=2: demand a 4, b 3
    # on 6 -> deserved 3 and 3, a would hold 4 and b waits for 1 with 2 - 2 = 0 free, so
    # the gate holds it.  It starves at 2 + 50 and passes the gate from then; no pod
    # comes or goes after t=2, and the flush at t=300 tries it: it starts (wait 298).
    starvation = StarvationConfig(min_gpus=2, wait_s=50)
    arm = replace(
        fairpack_arm(), policy=PolicyConfig(fairness=FairnessConfig(starvation=starvation))
    )
    pods = [
        pinned("a0", "A", BATCH_PRIORITY, 0),
        pinned("a1", "A", BATCH_PRIORITY, 0),
        pinned("b0", "B", BATCH_PRIORITY, 0, team="b"),
        pinned("b1", "B", BATCH_PRIORITY, 0, team="b"),
        pinned("bp", "B", BATCH_PRIORITY, 1, team="b"),
        pod("large", gpus=2, at=2),
    ]
    result = run([node("n", 4, model="A"), node("m", 2, model="B")], pods, arm)
    assert result.gate_holds > 0
    large = next(w for w in result.waits if w.gpu_count == 2)
    assert large.started and large.wait_s == 298


@pytest.mark.parametrize("arm", [KUBE, fairpack_arm()], ids=lambda a: a.name)
def test_a_pod_leaving_lets_a_parked_pod_preempt_again(arm: Arm) -> None:
    # 2 GPUs, two batch pods to the end.  chat-1 (t=10) preempts one (gone at 40) and
    # starts there; chat-2 (t=20) finds the node still draining, preempts nothing and
    # is parked.  The victim's deletion at 40 requeues it (kube-scheduler's
    # NodeResourcesFit queues on any pod deletion) and it preempts the other batch pod:
    # starts at 40 + 30 = 70, wait 50, rather than at the flush (300 + 30 - 20 = 310).
    pods = [
        pod("b0", run=1000),
        pod("b1", run=1000),
        pod("chat-1", at=10, run=1000, pod_class=PodClass.INTERACTIVE),
        pod("chat-2", at=20, run=1000, pod_class=PodClass.INTERACTIVE),
    ]
    result = run([node("n", 2)], pods, arm)
    assert [p.at_s for p in result.preemptions] == [10, 40]
    assert [w.wait_s for w in result.waits if w.pod_class == "interactive"] == [30, 50]
