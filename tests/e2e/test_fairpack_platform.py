"""The GPU platform's own setup, end to end through kube-scheduler and fairpack.

Team namespaces labelled with team and cost-center, GPU ResourceQuotas (4 GPUs for
ml-team-a, 2 for ml-team-b), a LimitRange with container defaults and maxima, the
``inference-critical`` and ``batch-inference`` PriorityClasses, and a tainted, labelled fleet
of A100 (80Gi) and A10G (24Gi) nodes; the ``llm-inference`` Deployment of 2 replicas x 2
GPUs, preferring 80Gi nodes, tolerating the GPU taint.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from extender.watch import REQUEUE_ANNOTATION

from .cluster import Cluster
from .controlplane import wait_for
from .fairpack_stack import FairpackStack
from .fake_nodes import (
    A10G_24GB,
    A100_80GB,
    FAIRPACK_SCHEDULER,
    GPU,
    GPU_MEMORY,
    GPU_TOLERATION,
    NOOP_IMAGE,
    gpu_node,
    gpu_pod,
)
from .mirror import Mirror

POOL = "fairpack.e2e/pool"
CLASS_LABEL = "fairpack.io/class"
QUOTA_GPUS = {"ml-team-a": 4, "ml-team-b": 2}
LIMIT_RANGE = {
    "type": "Container",
    "default": {"cpu": "2", "memory": "8Gi"},
    "defaultRequest": {"cpu": "1", "memory": "4Gi"},
    "max": {"cpu": "16", "memory": "128Gi"},
}


@dataclass
class Platform:
    cluster: Cluster
    namespaces: dict[str, str]
    """team -> its namespace in this test"""
    nodes: list[dict[str, Any]]
    make_namespace: Callable[..., str]

    def pool_pod(self, name: str, pool: str, **kw: Any) -> dict[str, Any]:
        """A pod pinned to one pool of this test's fleet (limits and defaults of
        the LimitRange apply: no cpu/memory unless given)."""
        kw.setdefault("cpu", None)
        kw.setdefault("memory", None)
        pod = gpu_pod(name, fleet=self.cluster.fleet, **kw)
        pod["spec"]["nodeSelector"][POOL] = pool
        return pod


def _quota(namespace: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpu-quota", "namespace": namespace},
        "spec": {"hard": {f"requests.{GPU}": str(gpus)}},
    }


def _limit_range(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "container-limits", "namespace": namespace},
        "spec": {"limits": [LIMIT_RANGE]},
    }


@pytest.fixture
def platform(
    cluster: Cluster,
    make_namespace: Callable[..., str],
    priority_classes: dict[str, int],
) -> Iterator[Platform]:
    cp = cluster.cp
    namespaces = {}
    for index, (team, gpus) in enumerate(QUOTA_GPUS.items()):
        ns = make_namespace(team, {"team": team, "cost-center": f"cc-{4001 + index}"})
        cp.api("POST", f"/api/v1/namespaces/{ns}/resourcequotas", _quota(ns, gpus))
        cp.api("POST", f"/api/v1/namespaces/{ns}/limitranges", _limit_range(ns))
        namespaces[team] = ns
    for ns in namespaces.values():
        # Pods are refused ("status unknown for quota") until the controller has synced it.
        wait_for(
            lambda ns=ns: (
                cp.api("GET", f"/api/v1/namespaces/{ns}/resourcequotas/gpu-quota")
                .get("status", {})
                .get("hard")
            ),
            timeout=30,
            what=f"the quota controller to sync gpu-quota in {ns}",
        )
    fleet = cluster.fleet
    nodes = cluster.create_nodes(
        [
            gpu_node(f"{fleet}-a100-1", A100_80GB, fleet=fleet, labels={POOL: "a100"}),
            gpu_node(f"{fleet}-a100-2", A100_80GB, fleet=fleet, labels={POOL: "a100"}),
            gpu_node(f"{fleet}-a10g-1", A10G_24GB, fleet=fleet, labels={POOL: "a10g"}),
            gpu_node(f"{fleet}-a10g-2", A10G_24GB, fleet=fleet, spot=True, labels={POOL: "a10g"}),
        ]
    )
    yield Platform(cluster, namespaces, nodes, make_namespace)


def llm_inference(fleet_selector: dict[str, str]) -> dict[str, Any]:
    labels = {"app": "llm-inference"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm-inference", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "schedulerName": FAIRPACK_SCHEDULER,
                    "priorityClassName": "inference-critical",
                    "terminationGracePeriodSeconds": 0,
                    "nodeSelector": fleet_selector,
                    "tolerations": [GPU_TOLERATION],
                    "affinity": {
                        "nodeAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "preference": {
                                        "matchExpressions": [
                                            {
                                                "key": GPU_MEMORY,
                                                "operator": "In",
                                                "values": ["80Gi"],
                                            }
                                        ]
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [
                        {
                            "name": "server",
                            "image": NOOP_IMAGE,
                            # cpu and memory come from the LimitRange's defaults.
                            "resources": {"limits": {GPU: "2"}},
                        }
                    ],
                },
            },
        },
    }


def test_llm_inference_replicas_land_where_fairpack_ranks_first(
    platform: Platform, fresh_fairpack: FairpackStack
) -> None:
    cluster = platform.cluster
    ns = platform.namespaces["ml-team-a"]
    cluster.cp.api(
        "POST",
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        llm_inference({"fairpack.e2e/fleet": cluster.fleet}),
    )

    def bound_replicas() -> list[dict[str, Any]] | None:
        pods = cluster.pods(ns, "app=llm-inference")
        return pods if len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods) else None

    def describe() -> str:
        return "".join(cluster.describe(ns, p["metadata"]["name"]) for p in cluster.pods(ns))

    replicas = wait_for(
        bound_replicas, timeout=60, what="2 llm-inference replicas bound", describe=describe
    )

    # The LimitRange filled in the container's requests.
    requests = replicas[0]["spec"]["containers"][0]["resources"]["requests"]
    assert (requests["cpu"], requests["memory"], requests[GPU]) == ("1", "4Gi", "2")

    # Recompute fairpack's ranking on the same inventory, replica after replica (both ask
    # the same, so the order they were scheduled in does not matter).
    mirror = Mirror(platform.nodes)
    expected = []
    for replica in replicas:
        decision = mirror.decide(mirror.request(replica, team="ml-team-a"))
        assert decision.best is not None
        expected.append(decision.best)
        mirror.place(decision, decision.best)
    actual = [replica["spec"]["nodeName"] for replica in replicas]
    assert Counter(actual) == Counter(expected), describe()

    for replica in replicas:
        name = replica["metadata"]["name"]
        explain = cluster.stack.explain(ns, name)
        assert explain is not None and explain["assumed"]["node"] == replica["spec"]["nodeName"]
        assert explain["request"]["class"] == "interactive"
        assert explain["request"]["team"] == "ml-team-a"


def test_quota_and_limit_range_rejections_come_back_with_their_messages(
    platform: Platform,
) -> None:
    cluster = platform.cluster
    team_a, team_b = platform.namespaces["ml-team-a"], platform.namespaces["ml-team-b"]

    status, body = cluster.try_create(team_b, platform.pool_pod("too-many", "a100", gpus=3))
    assert status == 403, body
    assert (
        "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=3, "
        "used: requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=2"
    ) in body["message"]

    for index in range(2):
        cluster.create(team_a, platform.pool_pod(f"two-{index}", "a100", gpus=2))
    status, body = cluster.try_create(team_a, platform.pool_pod("one-more", "a100", gpus=1))
    assert status == 403, body
    assert (
        "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, "
        "used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    ) in body["message"]

    huge = platform.pool_pod("huge", "a100", gpus=1, cpu="32")
    huge["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "32"
    status, body = cluster.try_create(team_b, huge)
    assert status == 403, body
    assert "maximum cpu usage per Container is 16, but limit is 32" in body["message"]


def _started(index: int) -> str:
    return f"2026-01-01T00:00:{10 + index:02d}Z"


def test_interactive_pod_preempts_the_batch_pod_first_in_fairpack_victim_order(
    platform: Platform,
) -> None:
    cluster = platform.cluster
    batch_ns = platform.make_namespace("ml-batch", {"team": "ml-batch", "cost-center": "cc-4009"})
    # Fill the A10G pool (2 x 4 GPUs) with 2-GPU batch pods, started one after the other.
    batch = []
    for index in range(4):
        name = f"batch-{index}"
        cluster.create(
            batch_ns,
            platform.pool_pod(
                name, "a10g", gpus=2, cpu="1", memory="4Gi", priority_class="batch-inference"
            ),
        )
        cluster.wait_bound(batch_ns, name)
        cluster.set_running(batch_ns, name, _started(index))
        batch.append(cluster.pod(batch_ns, name))
    accepted_before = cluster.stack.metrics().get(
        'fairpack_preemption_nodes_total{result="accepted"}', 0.0
    )

    team_b = platform.namespaces["ml-team-b"]
    cluster.create(
        team_b, platform.pool_pod("chat", "a10g", gpus=2, priority_class="inference-critical")
    )
    node = cluster.wait_bound(team_b, "chat", timeout=60)

    # fairpack's victim order: batch before interactive, over-share teams first, lowest
    # priority, then the most recently started (least work lost). Among these batch pods of
    # one team and one priority, that is the last started; kube-scheduler evicts one pod,
    # on the node fairpack accepted, and it is that one.
    first = max(batch, key=lambda pod: pod["status"]["startTime"])
    remaining = {pod["metadata"]["name"] for pod in cluster.pods(batch_ns)}
    assert remaining == {p["metadata"]["name"] for p in batch} - {first["metadata"]["name"]}, (
        cluster.describe(team_b, "chat")
    )
    assert node == first["spec"]["nodeName"]
    assert (
        cluster.stack.metrics()['fairpack_preemption_nodes_total{result="accepted"}']
        > accepted_before
    )


def test_a_team_at_its_share_makes_room_for_its_interactive_pod_from_its_own_batch(
    cluster: Cluster, make_namespace: Callable[..., str], priority_classes: dict[str, int]
) -> None:
    """kube-scheduler proposes another team's pod; fairpack names the preemptor's own.

    One A10G (4 GPUs), teams "own" and "other" of equal weight, each running a 2-GPU batch
    pod (own's at batch-inference, other's at priority 0).  own's 2-GPU interactive pod
    arrives: demands 4 and 2 in 4 GPUs water-fill to 2 and 2.  kube-scheduler's dry run
    spares the higher-priority pod and proposes other's, but other is at its share while
    own would hold 4: fairpack refuses it and names own's batch pod (own then holds 2).
    kube-scheduler takes a victim outside its proposal if it is on the node.
    """
    fleet = cluster.fleet
    cluster.create_nodes([gpu_node(f"{fleet}-only", A10G_24GB, fleet=fleet, labels={POOL: "only"})])
    suffix = fleet.rsplit("-", 1)[-1]
    namespaces = {
        role: make_namespace(
            f"ml-{role}", {"team": f"ml-{role}-{suffix}", "cost-center": "cc-4030"}
        )
        for role in ("own", "other")
    }

    def pod(name: str, **kw: Any) -> dict[str, Any]:
        manifest = gpu_pod(name, fleet=fleet, gpus=2, cpu="1", memory="4Gi", **kw)
        manifest["spec"]["nodeSelector"][POOL] = "only"
        return manifest

    cluster.create(namespaces["own"], pod("own-batch", priority_class="batch-inference"))
    cluster.create(namespaces["other"], pod("other-batch"))
    for role in ("own", "other"):
        cluster.wait_bound(namespaces[role], f"{role}-batch")
    cluster.create(namespaces["own"], pod("chat", priority_class="inference-critical"))

    assert cluster.wait_bound(namespaces["own"], "chat", timeout=60) == f"{fleet}-only"
    assert cluster.pod(namespaces["own"], "own-batch") is None
    survivor = cluster.pod(namespaces["other"], "other-batch")
    assert survivor is not None and not survivor["metadata"].get("deletionTimestamp"), (
        cluster.describe(namespaces["own"], "chat")
    )


def test_batch_pod_never_preempts_an_interactive_pod(platform: Platform) -> None:
    cluster = platform.cluster
    # Interactive by label, at priority 0: kube-scheduler alone would evict them for a
    # batch-inference pod (priority 1000).
    serving = platform.make_namespace(
        "ml-serving", {"team": "ml-serving", "cost-center": "cc-4010"}
    )
    interactive = []
    for index in range(4):
        name = f"notebook-{index}"
        cluster.create(
            serving,
            platform.pool_pod(
                name, "a10g", gpus=2, cpu="1", memory="4Gi", labels={CLASS_LABEL: "interactive"}
            ),
        )
        interactive.append((name, cluster.wait_bound(serving, name)))
    refused_before = cluster.stack.metrics().get(
        'fairpack_preemption_nodes_total{result="refused"}', 0.0
    )

    batch_ns = platform.make_namespace("ml-batch", {"team": "ml-batch", "cost-center": "cc-4009"})
    cluster.create(
        batch_ns,
        platform.pool_pod(
            "offline", "a10g", gpus=2, cpu="1", memory="4Gi", priority_class="batch-inference"
        ),
    )
    # kube-scheduler proposes both A10G nodes with interactive victims; fairpack refuses both.
    wait_for(
        lambda: (
            cluster.stack.metrics().get('fairpack_preemption_nodes_total{result="refused"}', 0.0)
            >= refused_before + 2
        ),
        timeout=30,
        what="fairpack to refuse the preemption of interactive pods",
        describe=lambda: cluster.describe(batch_ns, "offline"),
    )
    cluster.wait_event(batch_ns, "offline", "FailedScheduling", "0/")
    time.sleep(2)  # room for an eviction that should not come
    for name, node in interactive:
        pod = cluster.pod(serving, name)
        assert pod is not None, f"{name} was evicted\n" + cluster.describe(batch_ns, "offline")
        assert not pod["metadata"].get("deletionTimestamp") and pod["spec"]["nodeName"] == node
    offline = cluster.pod(batch_ns, "offline")
    assert offline is not None
    assert not offline["spec"].get("nodeName")
    assert not offline["status"].get("nominatedNodeName")


def test_fairpack_filter_reason_shows_in_the_failed_scheduling_event(platform: Platform) -> None:
    """kube-scheduler counts nvidia.com/gpu and ignores fairpack.io/gpu-milli: after five
    0.6-GPU shares, it sees 8 free GPUs where fairpack sees 3 whole ones."""
    cluster = platform.cluster
    fleet = cluster.fleet
    cluster.create_nodes(
        [gpu_node(f"{fleet}-shared", A100_80GB, fleet=fleet, labels={POOL: "shared"})]
    )
    team_a = platform.namespaces["ml-team-a"]
    for index in range(5):
        name = f"share-{index}"
        cluster.create(team_a, platform.pool_pod(name, "shared", milli=600, cpu="1", memory="4Gi"))
        cluster.wait_bound(team_a, name)
    cluster.create(team_a, platform.pool_pod("four", "shared", gpus=4, cpu="1", memory="4Gi"))

    event = cluster.wait_event(team_a, "four", "FailedScheduling", "1 node(s) lack 4 free GPUs")
    reporter = event.get("reportingComponent") or event.get("source", {}).get("component")
    assert reporter == FAIRPACK_SCHEDULER
    assert not cluster.node_of(team_a, "four")


@dataclass
class Hold:
    namespaces: dict[str, str]
    """role (hog, late) -> namespace"""
    teams: dict[str, str]
    """role -> team"""


def hold_hog_more(cluster: Cluster, make_namespace: Callable[..., str]) -> Hold:
    """A team over its share is held while an under-share team waits.

    Fleet: one A100 (8 GPUs, pool "busy") and one A10G (4 GPUs, pool "spare"), 12 GPUs.
    ``hog`` fills the A100 with four 2-GPU pods; ``late`` then asks for 4 GPUs on the A100
    and waits.  Demands 8 and 4 fit in 12, so hog deserves 8 and late 4.  hog asks for 2
    more on the A10G (``hog-more``): demands 10 and 4 water-fill to 8 and 4, hog would hold
    10 > 8, and the 4 free GPUs less 2 would not cover late's 4.  fairpack holds hog's pod on
    every node, and kube-scheduler's event carries the reason.
    """
    fleet = cluster.fleet
    cluster.create_nodes(
        [
            gpu_node(f"{fleet}-busy", A100_80GB, fleet=fleet, labels={POOL: "busy"}),
            gpu_node(f"{fleet}-spare", A10G_24GB, fleet=fleet, labels={POOL: "spare"}),
        ]
    )
    suffix = fleet.rsplit("-", 1)[-1]
    teams = {role: f"ml-{role}-{suffix}" for role in ("hog", "late")}
    namespaces = {
        role: make_namespace(f"ml-{role}", {"team": team, "cost-center": "cc-4020"})
        for role, team in teams.items()
    }

    def pod(name: str, pool: str, gpus: int) -> dict[str, Any]:
        manifest = gpu_pod(name, fleet=fleet, gpus=gpus, cpu="1", memory="4Gi")
        manifest["spec"]["nodeSelector"][POOL] = pool
        return manifest

    for index in range(4):
        cluster.create(namespaces["hog"], pod(f"hog-{index}", "busy", 2))
        cluster.wait_bound(namespaces["hog"], f"hog-{index}")
    cluster.create(namespaces["late"], pod("late", "busy", 4))
    cluster.wait_event(namespaces["late"], "late", "FailedScheduling", "0/")

    def fair_shares() -> dict[str, Any]:
        return {
            t: v for t, v in cluster.stack.debug_state()["teams"].items() if t in teams.values()
        }

    wait_for(
        lambda: sum(fair_shares().get(teams["late"], {}).get("pending_gpus", {}).values()) == 4,
        timeout=30,
        what="fairpack's view to count late's pending 4 GPUs",
        describe=lambda: str(fair_shares()),
    )

    cluster.create(namespaces["hog"], pod("hog-more", "spare", 2))
    event = cluster.wait_event(
        namespaces["hog"],
        "hog-more",
        "FailedScheduling",
        f"team {teams['hog']} holds 8.0 GPUs against a deserved 8.0",
    )
    assert (
        f"teams under their share ({teams['late']} 0.0/4.0) wait for 4.0 GPUs" in (event["message"])
    ), event["message"]
    assert not cluster.node_of(namespaces["hog"], "hog-more")
    return Hold(namespaces, teams)


def test_a_fairness_hold_shows_in_the_failed_scheduling_event(
    cluster: Cluster, make_namespace: Callable[..., str]
) -> None:
    hold = hold_hog_more(cluster, make_namespace)
    # One of hog's pods finishes: hog holds 6, and 6 + 2 is within its 8.  The deletion of a
    # bound pod makes kube-scheduler retry the held one, which now binds on the spare node
    # (late still waits: 2 free GPUs on the A100 are not its 4).  Should kube-scheduler
    # retry before fairpack's view has seen the deletion, fairpack asks it again.
    hog = hold.namespaces["hog"]
    cluster.cp.request("DELETE", f"/api/v1/namespaces/{hog}/pods/hog-0?gracePeriodSeconds=0")
    assert cluster.wait_bound(hog, "hog-more", timeout=60) == f"{cluster.fleet}-spare"
    assert not cluster.node_of(hold.namespaces["late"], "late")


def test_a_hold_lifted_by_a_quota_is_retried_at_once(
    cluster: Cluster, make_namespace: Callable[..., str]
) -> None:
    """A ResourceQuota is no event to kube-scheduler: left to itself, it would retry the
    held pod after five minutes.  fairpack sees the quota weigh hog 100 to late's 1 (hog
    now deserves its 10), stamps the pod's annotation, and kube-scheduler retries it."""
    hold = hold_hog_more(cluster, make_namespace)
    hog = hold.namespaces["hog"]
    cluster.cp.api("POST", f"/api/v1/namespaces/{hog}/resourcequotas", _quota(hog, 100))
    assert cluster.wait_bound(hog, "hog-more", timeout=25) == f"{cluster.fleet}-spare"
    pod = cluster.pod(hog, "hog-more")
    assert pod is not None and REQUEUE_ANNOTATION in pod["metadata"].get("annotations", {})
