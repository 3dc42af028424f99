"""Smoke tests of the end-to-end control plane itself: fake GPU nodes are schedulable,
kube-scheduler binds pods that request nvidia.com/gpu and counts them, controllers run,
server-side dry run works, components can be restarted."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .controlplane import ControlPlane, wait_for
from .fake_nodes import kubelet_node

pytestmark = pytest.mark.e2e

GPU = "nvidia.com/gpu"


def gpu_pod(name: str, node: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            # Other tests share the cluster and may add GPU nodes: pin to ours.
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/fairpack/noop:1",  # never pulled: no kubelet
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {GPU: str(gpus)},
                    },
                }
            ],
        },
    }


@pytest.fixture
def node(control_plane: ControlPlane) -> Iterator[str]:
    """A fake 8-GPU node, created with kubectl from a manifest with status set."""
    name = f"gpu-node-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "-f", "-", input=json.dumps(kubelet_node(name)))
    try:
        yield name
    finally:
        control_plane.request("DELETE", f"/api/v1/nodes/{name}")


def pod_scheduled_condition(cp: ControlPlane, ns: str, pod: str) -> dict[str, Any] | None:
    body = cp.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}")
    for cond in body.get("status", {}).get("conditions", []):
        if cond["type"] == "PodScheduled":
            return dict(cond)
    return None


def test_node_created_with_status_is_untainted(control_plane: ControlPlane, node: str) -> None:
    body = control_plane.api("GET", f"/api/v1/nodes/{node}")
    assert body["status"]["allocatable"][GPU] == "8"
    assert body["status"]["capacity"][GPU] == "8"
    # TaintNodesByCondition is disabled and the node-lifecycle controller is off.
    assert not body["spec"].get("taints")


def test_scheduler_binds_gpu_pod_and_counts_gpus(
    control_plane: ControlPlane, namespace: str, node: str
) -> None:
    cp = control_plane
    pods = f"/api/v1/namespaces/{namespace}/pods"
    cp.api("POST", pods, gpu_pod("one-gpu", node, 1))
    bound = wait_for(
        lambda: cp.api("GET", f"{pods}/one-gpu")["spec"].get("nodeName"),
        timeout=30,
        what="kube-scheduler to bind one-gpu",
    )
    assert bound == node

    # 1 of 8 GPUs is taken: a pod asking for 8 must not fit, for the right reason.
    cp.api("POST", pods, gpu_pod("eight-gpus", node, 8))
    cond = wait_for(
        lambda: (
            (c := pod_scheduled_condition(cp, namespace, "eight-gpus"))
            and c["status"] == "False"
            and c
        ),
        timeout=30,
        what="eight-gpus to be reported unschedulable",
    )
    assert cond["reason"] == "Unschedulable"
    assert f"Insufficient {GPU}" in cond["message"]
    assert not cp.api("GET", f"{pods}/eight-gpus")["spec"].get("nodeName")

    # Freeing the GPU (force delete, as there is no kubelet) lets the 8-GPU pod in.
    cp.api("DELETE", f"{pods}/one-gpu", {"gracePeriodSeconds": 0})
    bound = wait_for(
        lambda: cp.api("GET", f"{pods}/eight-gpus")["spec"].get("nodeName"),
        timeout=60,
        what="kube-scheduler to bind eight-gpus once one-gpu is gone",
    )
    assert bound == node


def test_deployment_pods_are_created_and_scheduled(
    control_plane: ControlPlane, namespace: str, node: str
) -> None:
    """kube-controller-manager runs the Deployment and ReplicaSet controllers."""
    cp = control_plane
    template = gpu_pod("unused", node, 2)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "trainer"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "trainer"}},
            "template": {"metadata": {"labels": {"app": "trainer"}}, "spec": template["spec"]},
        },
    }
    cp.api("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment)

    def bound_pods() -> list[str] | None:
        items = cp.api("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dtrainer")
        nodes = [p["spec"].get("nodeName") for p in items["items"]]
        return nodes if len(nodes) == 3 and all(nodes) else None

    assert wait_for(bound_pods, timeout=60, what="3 trainer pods bound") == [node] * 3


def test_server_side_dry_run(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: dry-config
data:
  policy: fairpack
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: dry-deployment
spec:
  replicas: 1
  selector:
    matchLabels: {app: dry}
  template:
    metadata:
      labels: {app: dry}
    spec:
      containers:
      - name: main
        image: registry.invalid/fairpack/noop:1
        resources:
          limits: {nvidia.com/gpu: 1}
"""
    )
    out = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(manifest)
    ).stdout
    assert "configmap/dry-config created (server dry run)" in out
    assert "deployment.apps/dry-deployment created (server dry run)" in out
    # Nothing was persisted.
    assert (
        control_plane.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/dry-config")[0]
        == 404
    )
    assert (
        control_plane.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/dry-deployment"
        )[0]
        == 404
    )

    # The server validates: an invalid object is rejected by the dry run.
    manifest.write_text(manifest.read_text().replace("replicas: 1", "replicas: -1"))
    proc = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(manifest), check=False
    )
    assert proc.returncode != 0
    assert "spec.replicas" in proc.stderr


def test_scheduler_restart_with_new_config(control_plane: ControlPlane) -> None:
    """Later tests swap the scheduler's extender configuration this way."""
    cp = control_plane
    config = cp.scheduler_config(
        profiles=[{"schedulerName": "default-scheduler"}, {"schedulerName": "fairpack-e2e"}]
    )
    try:
        cp.start_scheduler(cp.write_scheduler_config(config, name="two-profiles"))
        assert cp.scheduler_config_path is not None
        assert "fairpack-e2e" in cp.scheduler_config_path.read_text()
    finally:
        cp.start_scheduler()  # back to the defaults for the other tests


def test_apiserver_restart_keeps_state(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    cp.api(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "survivor"}, "data": {"k": "v"}},
    )
    cp.restart_apiserver()
    assert cp.api("GET", f"/api/v1/namespaces/{namespace}/configmaps/survivor")["data"] == {
        "k": "v"
    }
