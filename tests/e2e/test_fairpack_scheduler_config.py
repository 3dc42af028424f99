"""The shipped KubeSchedulerConfiguration, as kube-scheduler runs it with fairpack."""

from __future__ import annotations

import yaml

from .cluster import Cluster
from .controlplane import wait_for
from .fairpack_stack import SHIPPED_SCHEDULER_CONFIG
from .fake_nodes import A100_80GB, gpu_node, gpu_pod


def test_shipped_config_declares_fairpack_as_node_cache_capable_extender() -> None:
    config = yaml.safe_load(SHIPPED_SCHEDULER_CONFIG.read_text())
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert config["percentageOfNodesToScore"] == 100
    assert [p["schedulerName"] for p in config["profiles"]] == ["fairpack-scheduler"]
    (extender,) = config["extenders"]
    assert extender["urlPrefix"].startswith("http://127.0.0.1:")  # the sidecar on loopback
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is True
    verbs = ("filterVerb", "preemptVerb")
    assert [extender[v] for v in verbs] == ["filter", "preempt"]
    # kube-scheduler binds; fairpack counts the pod on the node its filter passed.
    assert "bindVerb" not in extender
    # filter passes fairpack's best node alone (filter_passes: best): nothing to prioritize
    assert "prioritizeVerb" not in extender
    managed = {r["name"]: r.get("ignoredByScheduler", False) for r in extender["managedResources"]}
    assert managed == {"nvidia.com/gpu": False, "fairpack.io/gpu-milli": True}
    # Should prioritize be turned on: one fairpack point (weight x 10) outweighs every
    # in-tree score plugin together (100 x the sum of their weights, 15 with v1.35's
    # defaults), so kube-scheduler still binds fairpack's best node.
    assert extender["weight"] * 10 > 100 * 15


def test_fairpack_filters_a_gpu_pod_and_counts_it_where_kube_scheduler_binds_it(
    cluster: Cluster, namespace: str
) -> None:
    """kube-scheduler, run from the shipped file, sends a GPU pod to fairpack's filter,
    binds it on the node filter passed, and fairpack has counted it there from the start."""
    stack = cluster.stack
    node = f"{cluster.fleet}-a100"
    cluster.create_nodes([gpu_node(node, A100_80GB, fleet=cluster.fleet)])
    assumed = 'fairpack_filter_assumptions_total{result="assumed"}'
    assumed_before = stack.metrics().get(assumed, 0.0)

    cluster.create(namespace, gpu_pod("one-gpu", gpus=1, fleet=cluster.fleet))
    assert cluster.wait_bound(namespace, "one-gpu") == node

    explain = stack.explain(namespace, "one-gpu")
    assert explain is not None, "fairpack has no decision for the pod it should have filtered"
    assert explain["filter"]["passed"] == 1
    assert explain["assumed"]["node"] == node
    assert "bind" not in explain  # kube-scheduler bound it
    assert stack.metrics()[assumed] == assumed_before + 1
    # The watch confirms the placement: 7 of 8 GPUs left, counted once, nothing assumed.
    wait_for(
        lambda: stack.debug_state()["assumed_pods"] == 0,
        what="the watch to confirm the pod fairpack counted at filter",
    )
    state = stack.debug_state()
    (row,) = [n for n in state["nodes"] if n["name"] == node]
    assert row["free_gpus"] == 7


def test_with_a_bind_verb_fairpack_binds_the_pod_it_counted(
    cluster: Cluster, namespace: str
) -> None:
    """The optional bindVerb (for filter_passes: feasible, see the shipped file): the real
    kube-scheduler calls fairpack's bind, fairpack posts the binding, and the pod counted at
    filter is counted once."""
    stack = cluster.stack
    node = f"{cluster.fleet}-a100"
    cluster.create_nodes([gpu_node(node, A100_80GB, fleet=cluster.fleet)])
    config = stack.scheduler_config()
    (extender,) = config["extenders"]
    extender["bindVerb"] = "bind"
    bound = 'fairpack_binds_total{result="bound"}'
    bound_before = stack.metrics().get(bound, 0.0)
    stack.start_scheduler(config)
    try:
        cluster.create(namespace, gpu_pod("bound-by-fairpack", gpus=2, fleet=cluster.fleet))
        assert cluster.wait_bound(namespace, "bound-by-fairpack") == node
        explain = stack.explain(namespace, "bound-by-fairpack")
        assert explain is not None and explain["bind"]["node"] == node
        assert stack.metrics()[bound] == bound_before + 1
        wait_for(
            lambda: stack.debug_state()["assumed_pods"] == 0,
            what="the watch to confirm fairpack's bind",
        )
        (row,) = [n for n in stack.debug_state()["nodes"] if n["name"] == node]
        assert row["free_gpus"] == 6
    finally:
        stack.start_scheduler()  # the shipped configuration, for the other tests


def test_finished_pods_free_their_gpus(cluster: Cluster, namespace: str) -> None:
    """A pod finishes by its phase (Succeeded) or by deletion with grace period 0; both
    free its GPUs in fairpack's view, and kube-scheduler places the next pod there."""
    node = f"{cluster.fleet}-a100"
    cluster.create_nodes([gpu_node(node, A100_80GB, fleet=cluster.fleet)])
    for name in ("done", "deleted"):
        cluster.create(namespace, gpu_pod(name, gpus=4, fleet=cluster.fleet))
        assert cluster.wait_bound(namespace, name) == node

    def free_gpus() -> float:
        return float(cluster.fairpack_view()["nodes"][node][1])

    pod = cluster.pod(namespace, "done")
    assert pod is not None
    pod["status"]["phase"] = "Succeeded"
    cluster.cp.api("PUT", f"/api/v1/namespaces/{namespace}/pods/done/status", pod)
    wait_for(lambda: free_gpus() == 4, timeout=30, what=f"4 free GPUs on {node} in fairpack's view")
    cluster.delete_pod(namespace, "deleted")
    wait_for(lambda: free_gpus() == 8, timeout=30, what=f"8 free GPUs on {node} in fairpack's view")

    cluster.create(namespace, gpu_pod("next", gpus=8, fleet=cluster.fleet))
    assert cluster.wait_bound(namespace, "next") == node
