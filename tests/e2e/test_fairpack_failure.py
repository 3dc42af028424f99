"""When fairpack or the API server goes away.

* fairpack down: the shipped configuration marks the extender ``ignorable``, so
  kube-scheduler goes on alone (its own filters, scores and binding); fairpack, started
  again, lists what happened meanwhile.
* kube-apiserver restarted: fairpack keeps answering from its view while the API server is
  gone, its watches resume, and its view ends equal to a fresh list.
"""

from __future__ import annotations

import uuid
from typing import Any

from .cluster import Cluster
from .controlplane import wait_for
from .fake_nodes import A10G_24GB, A100_80GB, gpu_node, gpu_pod


def _view_diff(cluster: Cluster) -> str:
    """ "" when fairpack's /debug/state equals a fresh list of the API server."""
    expected, actual = cluster.fresh_view(), cluster.fairpack_view()
    problems = []
    if expected["pods"] != actual["pods"]:
        problems.append(f"active pods: API {expected['pods']}, fairpack {actual['pods']}")
    for name in sorted(expected["nodes"].keys() | actual["nodes"].keys()):
        want, got = expected["nodes"].get(name), actual["nodes"].get(name)
        if want != got:
            problems.append(f"node {name}: API (gpus, free) {want}, fairpack {got}")
    return "\n".join(problems)


def test_pods_schedule_while_fairpack_is_down(cluster: Cluster, namespace: str) -> None:
    fleet = cluster.fleet
    node = f"{fleet}-a100"
    cluster.create_nodes([gpu_node(node, A100_80GB, fleet=fleet)])
    cluster.stack.stop_fairpack()
    try:
        cluster.create(namespace, gpu_pod("whole", gpus=2, fleet=fleet))
        cluster.create(namespace, gpu_pod("share", milli=500, fleet=fleet))
        # kube-scheduler finds fairpack unreachable, skips it (ignorable) and binds itself.
        assert cluster.wait_bound(namespace, "whole") == node
        assert cluster.wait_bound(namespace, "share") == node
    finally:
        cluster.stack.start_fairpack()
    # Started again, fairpack lists the pods bound without it: 8 - 2 - 0.5 GPUs free.
    wait_for(
        lambda: cluster.fairpack_view()["nodes"].get(node) == (8, 5.5),
        timeout=30,
        what=f"fairpack's view of {node} to show 5.5 free GPUs",
        describe=lambda: str(cluster.fairpack_view()["nodes"].get(node)),
    )


def _filter_args(name: str, gpus: int, nodes: list[str]) -> dict[str, Any]:
    """An ExtenderArgs as kube-scheduler posts it with nodeCacheCapable: true."""
    pod = gpu_pod(name, gpus=gpus)
    pod["metadata"].update(namespace="default", uid=str(uuid.uuid4()), resourceVersion="1")
    return {"Pod": pod, "Nodes": None, "NodeNames": nodes}


def test_fairpack_answers_through_an_apiserver_restart_and_resyncs(
    cluster: Cluster, namespace: str
) -> None:
    cp, stack = cluster.cp, cluster.stack
    fleet = cluster.fleet
    big, small = f"{fleet}-a100", f"{fleet}-a10g"
    cluster.create_nodes(
        [gpu_node(big, A100_80GB, fleet=fleet), gpu_node(small, A10G_24GB, fleet=fleet)]
    )
    for name, gpus in (("six", 6), ("three", 3)):
        cluster.create(namespace, gpu_pod(name, gpus=gpus, fleet=fleet))
        cluster.wait_bound(namespace, name)
    wait_for(
        lambda: not _view_diff(cluster),
        timeout=30,
        what="fairpack's view to settle",
        describe=lambda: _view_diff(cluster),
    )
    before = cluster.fairpack_view()["nodes"]

    cp.stop_apiserver()
    try:
        # No API server: fairpack still answers, from its view.
        assert stack.get("/readyz")[0] == 200
        now = cluster.fairpack_view()["nodes"]
        assert {node: now[node] for node in before} == before
        status, result = stack.post("/filter", _filter_args("probe", 2, [big, small]))
        assert status == 200, result
        # 2 of 8 free on the A100, 1 of 4 on the A10G.
        assert result["NodeNames"] == [big] and result["Error"] == ""
    finally:
        cp.start_apiserver()

    # Changes after the restart reach fairpack through resumed (or relisted) watches.
    cluster.delete_pod(namespace, "six")
    cluster.create(namespace, gpu_pod("two", gpus=2, fleet=fleet))
    cluster.wait_bound(namespace, "two", timeout=60)
    extra = f"{fleet}-a10g-extra"
    cluster.create_nodes([gpu_node(extra, A10G_24GB, fleet=fleet)])

    wait_for(
        lambda: not _view_diff(cluster),
        timeout=60,
        what="fairpack's view to equal a fresh list of the API server",
        describe=lambda: _view_diff(cluster) + "\n" + stack.log_tails(40),
    )
    state = stack.debug_state()
    assert state["assumed_pods"] == 0, "fairpack holds binds the watch never confirmed"
    restarts = {k: v for k, v in stack.metrics().items() if k.startswith("fairpack_watch_restarts")}
    assert restarts, "the watches should have noticed the API server going away"
