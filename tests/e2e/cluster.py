"""What an end-to-end test does to the cluster, with waits whose failures show the state.

Every wait has a deadline; when it passes, the error carries what one would look at: the
pod's phase, conditions and events, fairpack's /debug/explain for it, and the tails of
fairpack's and its kube-scheduler's logs.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from .controlplane import ControlPlane, ControlPlaneError, wait_for
from .fairpack_stack import FairpackStack
from .fake_nodes import FLEET, GPU, gpu_count, gpu_milli

ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class Cluster:
    """The control plane plus fairpack, as one test uses them.

    Nodes created here are deleted by cleanup() (the ``cluster`` fixture calls it)."""

    def __init__(self, cp: ControlPlane, stack: FairpackStack, fleet: str | None = None) -> None:
        self.cp = cp
        self.stack = stack
        self.fleet = fleet or f"fleet-{uuid.uuid4().hex[:8]}"
        self.node_names: list[str] = []

    # -- nodes ----------------------------------------------------------------------------------

    def create_nodes(self, manifests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Create the nodes and wait until fairpack's view holds them all."""
        created = []
        for manifest in manifests:
            created.append(self.cp.api("POST", "/api/v1/nodes", manifest))
            self.node_names.append(manifest["metadata"]["name"])
        names = {node["metadata"]["name"] for node in created}
        self.wait_in_view(names)
        return created

    def wait_in_view(self, names: set[str], timeout: float = 30) -> None:
        def present() -> bool:
            return names <= {node["name"] for node in self.stack.debug_state()["nodes"]}

        wait_for(
            present,
            timeout=timeout,
            what=f"fairpack's view to hold nodes {sorted(names)}",
            describe=self.stack.log_tails,
        )

    def cleanup(self) -> None:
        for name in self.node_names:
            self.cp.request("DELETE", f"/api/v1/nodes/{name}")
        self.node_names.clear()

    # -- pods -----------------------------------------------------------------------------------

    def create(self, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.cp.api("POST", f"/api/v1/namespaces/{namespace}/pods", manifest))

    def try_create(self, namespace: str, manifest: Mapping[str, Any]) -> tuple[int, Any]:
        return self.cp.request("POST", f"/api/v1/namespaces/{namespace}/pods", manifest)

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, body = self.cp.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        if status == 404:
            return None
        if status != 200:
            raise ControlPlaneError(f"GET pod {namespace}/{name}: HTTP {status}: {body}")
        return dict(body)

    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        query = f"?labelSelector={urllib.parse.quote(selector)}" if selector else ""
        body = self.cp.api("GET", f"/api/v1/namespaces/{namespace}/pods{query}")
        return list(body["items"])

    def delete_pod(self, namespace: str, name: str) -> None:
        """Finish a pod: delete it with grace period 0 (there is no kubelet)."""
        self.cp.api(
            "DELETE",
            f"/api/v1/namespaces/{namespace}/pods/{name}",
            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
        )

    def set_running(self, namespace: str, name: str, started: str) -> None:
        """What a kubelet would report: phase Running since ``started`` (RFC 3339)."""
        pod = self.pod(namespace, name)
        assert pod is not None, f"pod {namespace}/{name} is gone"
        status = dict(pod.get("status") or {})
        status.update(phase="Running", startTime=started)
        pod["status"] = status
        self.cp.api("PUT", f"/api/v1/namespaces/{namespace}/pods/{name}/status", pod)

    def node_of(self, namespace: str, name: str) -> str | None:
        pod = self.pod(namespace, name)
        return (pod or {}).get("spec", {}).get("nodeName") or None

    def wait_bound(self, namespace: str, name: str, timeout: float = 30) -> str:
        """The node kube-scheduler bound the pod to."""
        return str(
            wait_for(
                lambda: self.node_of(namespace, name),
                timeout=timeout,
                what=f"pod {namespace}/{name} to be bound",
                describe=lambda: self.describe(namespace, name),
            )
        )

    def scheduled_condition(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self.pod(namespace, name) or {}
        for condition in pod.get("status", {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled":
                return dict(condition)
        return None

    def wait_bound_or_unschedulable(
        self, namespace: str, name: str, timeout: float = 30
    ) -> str | None:
        """The node, or None once kube-scheduler reported the pod Unschedulable."""

        def outcome() -> tuple[str | None] | None:
            node = self.node_of(namespace, name)
            if node:
                return (node,)
            condition = self.scheduled_condition(namespace, name)
            if condition and condition.get("reason") == "Unschedulable":
                return (None,)
            return None

        result = wait_for(
            outcome,
            timeout=timeout,
            what=f"pod {namespace}/{name} to be bound or reported unschedulable",
            describe=lambda: self.describe(namespace, name),
        )
        return result[0]  # type: ignore[no-any-return]

    def events(self, namespace: str, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name}"
        if reason:
            selector += f",reason={reason}"
        body = self.cp.api(
            "GET",
            f"/api/v1/namespaces/{namespace}/events?fieldSelector={urllib.parse.quote(selector)}",
        )
        return list(body["items"])

    def wait_event(
        self, namespace: str, name: str, reason: str, contains: str, timeout: float = 30
    ) -> dict[str, Any]:
        """The first ``reason`` event of the pod whose message contains ``contains``."""

        def found() -> dict[str, Any] | None:
            for event in self.events(namespace, name, reason):
                if contains in (event.get("message") or ""):
                    return event
            return None

        return dict(
            wait_for(
                found,
                timeout=timeout,
                what=f"a {reason} event of {namespace}/{name} containing {contains!r}",
                describe=lambda: self.describe(namespace, name),
            )
        )

    def describe(self, namespace: str, name: str) -> str:
        """The pod's state, events and fairpack's last decision for it, plus log tails."""
        lines = [f"----- pod {namespace}/{name}"]
        try:
            pod = self.pod(namespace, name)
            if pod is None:
                lines.append("(not found)")
            else:
                spec, status = pod.get("spec", {}), pod.get("status", {})
                lines.append(
                    f"phase={status.get('phase')} node={spec.get('nodeName')} "
                    f"nominated={status.get('nominatedNodeName')} "
                    f"deleting={bool(pod['metadata'].get('deletionTimestamp'))}"
                )
                for condition in status.get("conditions") or []:
                    lines.append(f"condition {json.dumps(condition, sort_keys=True)}")
            for event in self.events(namespace, name):
                lines.append(
                    f"event {event.get('type')} {event.get('reason')} x{event.get('count') or 1}: "
                    f"{event.get('message')}"
                )
        except Exception as exc:  # the API server may be the thing that is down
            lines.append(f"(could not read the pod: {exc})")
        try:
            explain = self.stack.explain(namespace, name)
            lines.append(f"fairpack /debug/explain: {json.dumps(explain, sort_keys=True)}")
        except Exception as exc:
            lines.append(f"(fairpack did not answer /debug/explain: {exc})")
        return "\n".join(lines) + "\n" + self.stack.log_tails(30)

    # -- what fairpack should see ---------------------------------------------------------------

    def used_gpus_by_node(self, namespace: str | None = None) -> dict[str, float]:
        """GPUs (whole + shares) requested by the active pods bound to each node."""
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        body = self.cp.api("GET", f"{path}?fieldSelector={urllib.parse.quote(ACTIVE_PODS)}")
        used: dict[str, float] = {}
        for pod in body["items"]:
            node = pod["spec"].get("nodeName")
            if node:
                used[node] = used.get(node, 0.0) + gpu_count(pod) + gpu_milli(pod) / 1000
        return used

    def fresh_view(self) -> dict[str, Any]:
        """What fairpack's /debug/state should say, from a fresh list of the API server:
        {"pods": active pods, "nodes": {name: (gpus, free_gpus)}} over the GPU nodes."""
        nodes = self.cp.api("GET", "/api/v1/nodes")["items"]
        pods = self.cp.api("GET", f"/api/v1/pods?fieldSelector={urllib.parse.quote(ACTIVE_PODS)}")
        used = self.used_gpus_by_node()
        expected: dict[str, tuple[int, float]] = {}
        for node in nodes:
            gpus = int((node.get("status", {}).get("allocatable") or {}).get(GPU, 0))
            name = node["metadata"]["name"]
            expected[name] = (gpus, round(gpus - used.get(name, 0.0), 3))
        return {"pods": len(pods["items"]), "nodes": expected}

    def fairpack_view(self) -> dict[str, Any]:
        """fairpack's /debug/state in fresh_view()'s shape."""
        state = self.stack.debug_state()
        nodes = {
            node["name"]: (int(node["gpus"]), round(float(node["free_gpus"]), 3))
            for node in state["nodes"]
        }
        return {"pods": state["pods"], "nodes": nodes}

    def fleet_selector(self) -> str:
        return f"{FLEET}={self.fleet}"
