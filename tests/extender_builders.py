"""Builders for the extender's tests: nodes, pods and request bodies shaped like kube-scheduler's.

Bodies are built the way kube-scheduler's Go client marshals them: PascalCase
top-level keys, never omitted (``null`` for nil), the Pod in camelCase with
``managedFields`` and ``creationTimestamp: null``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import builders
from aiohttp.test_utils import TestClient, TestServer
from builders import request

from extender import ClusterView, Extender, LiveConfig, Metrics, create_app
from extender.errors import BindError
from extender.objects import node_manifest, pod_manifest
from scoring import ON_DEMAND, SPOT, NodeSpec, PodRequest


def node(
    name: str = "gpu-0",
    gpus: int = 8,
    model: str = "A100",
    gpu_memory_mib: int = 81920,
    cpu_milli: int = 96_000,
    memory_mib: int = 1024 * 1024,
    spot: bool = False,
    pool: str = "",
) -> NodeSpec:
    """``builders.node`` with the extender tests' defaults: an 8 x A100 80 GB node."""
    return builders.node(
        name,
        gpus,
        model=model,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_memory_mib=gpu_memory_mib,
        capacity_type=SPOT if spot else ON_DEMAND,
        pool=pool,
    )


def nodes(count: int, prefix: str = "gpu-", **kwargs: Any) -> list[NodeSpec]:
    return [node(f"{prefix}{i}", **kwargs) for i in range(count)]


def pod(
    name: str = "trainer-0",
    req: PodRequest | None = None,
    *,
    namespace: str = "team-a",
    uid: str | None = None,
    node_name: str | None = None,
    phase: str = "Pending",
    **kwargs: Any,
) -> dict[str, Any]:
    return pod_manifest(
        name,
        req if req is not None else request(),
        namespace=namespace,
        uid=uid or str(uuid.uuid4()),
        node_name=node_name,
        phase=phase,
        **kwargs,
    )


def kube_node(spec: NodeSpec, **kwargs: Any) -> dict[str, Any]:
    return node_manifest(spec, **kwargs)


def namespace(name: str, team: str | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": name}
    if team:
        labels["team"] = team
    return {"metadata": {"name": name, "labels": labels, "managedFields": []}, "spec": {}}


def filter_body(pod_object: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``ExtenderArgs`` as kube-scheduler sends it with ``nodeCacheCapable: true``."""
    return {"Pod": pod_object, "Nodes": None, "NodeNames": list(names)}


def node_list_body(pod_object: Mapping[str, Any], specs: Sequence[NodeSpec]) -> dict[str, Any]:
    """``ExtenderArgs`` with ``nodeCacheCapable: false``: the full NodeList, no names."""
    return {
        "Pod": pod_object,
        "Nodes": {"metadata": {}, "items": [kube_node(s) for s in specs]},
        "NodeNames": None,
    }


def preempt_body(
    pod_object: Mapping[str, Any], victims: Mapping[str, Sequence[str]], pdb: int = 0
) -> dict[str, Any]:
    return {
        "Pod": pod_object,
        "NodeNameToVictims": None,
        "NodeNameToMetaVictims": {
            name: {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": pdb}
            for name, uids in victims.items()
        },
    }


def bind_body(pod_object: Mapping[str, Any], node_name: str) -> dict[str, Any]:
    metadata = pod_object["metadata"]
    return {
        "PodName": metadata["name"],
        "PodNamespace": metadata["namespace"],
        "PodUID": metadata["uid"],
        "Node": node_name,
    }


class RecordingBinder:
    """Remembers every binding; refuses the pods named in ``refuse``."""

    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.bound: list[tuple[str, str, str, str]] = []
        self.refuse = set(refuse)

    async def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        if name in self.refuse:
            raise BindError(f'pods "{name}" is forbidden: binding refused')
        self.bound.append((namespace, name, uid, node))


def service(
    specs: Iterable[NodeSpec],
    *,
    binder: Any = None,
    config: LiveConfig | None = None,
) -> Extender:
    return Extender(ClusterView(specs), config, binder or RecordingBinder(), Metrics())


@asynccontextmanager
async def serve(extender: Extender, **app_options: Any) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(extender, **app_options))) as client:
        yield client


def pod_info(
    uid: str,
    node_name: str = "",
    req: PodRequest | None = None,
    *,
    namespace: str = "team-a",
    terminal: bool = False,
) -> Any:
    """A pod as the view keeps it (what the watch translates a Pod object into)."""
    from extender.objects import PodInfo

    return PodInfo(
        uid=uid,
        namespace=namespace,
        name=f"pod-{uid}",
        node=node_name,
        request=req if req is not None else request(),
        terminal=terminal,
    )


def snapshot(view: ClusterView) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """Free CPU, free memory and the multiset of free GPU milli of every node."""
    state = view.state
    return {
        name: (
            int(state.cpu_free_milli[row]),
            int(state.memory_free_mib[row]),
            tuple(sorted(state.free_milli[row].tolist())),
        )
        for row, name in enumerate(state.names)
    }
