"""Kubernetes objects in, compact records out (and back, for load generators).

Every object fairpack reads, whether the Pod of an extender request or a Node of
the watch, goes through these functions, so the HTTP path and the cluster view
read a pod the same way.  Records are small frozen dataclasses; the client
library's model objects are never kept.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from extender import quantity
from extender.config import FairpackConfig
from extender.errors import ObjectError
from extender.wire import Container, Node, Pod, Quantity
from scoring import MILLI_PER_GPU, ON_DEMAND, SPOT, NodeSpec, PodClass, PodRequest

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the view keeps of a pod.  ``node`` is "" while the pod is pending.

    ``request.team`` is left empty: the team comes from the namespace, which the
    view resolves (a namespace's label may change after its pods were read).
    """

    uid: str
    namespace: str
    name: str
    node: str
    request: PodRequest
    terminal: bool = False
    started_s: float = 0.0
    gated: bool = False
    """Pending behind ``schedulingGates``: kube-scheduler does not try it yet."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    team: str
    cost_center: str = ""


@dataclass(frozen=True, slots=True)
class QuotaInfo:
    """A ResourceQuota's hard limit on GPU requests (None when it sets none)."""

    namespace: str
    name: str
    gpus: int | None


@dataclass(frozen=True, slots=True)
class PriorityClassInfo:
    name: str
    value: int


def _timestamp_s(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _resource(
    values: Mapping[str, Quantity | None] | None, name: str, parse: Any, path: str
) -> int:
    if not values:
        return 0
    value = values.get(name)
    if value is None:
        return 0
    try:
        amount: int = parse(value)
    except ObjectError as exc:
        raise ObjectError(f"{path}.{name}: {exc}") from None
    return amount


_PARSERS = (quantity.cpu_milli, quantity.memory_mib, quantity.count, quantity.count)


def _container_amounts(
    container: Container | None, names: tuple[str, ...], path: str
) -> tuple[int, ...]:
    resources = container.resources if container is not None else None
    if resources is None:
        return (0,) * len(names)
    requests, limits = resources.requests or {}, resources.limits or {}
    amounts = []
    for name, parse in zip(names, _PARSERS, strict=True):
        # Without a request, the limit is the request (the API server's defaulting,
        # and the only rule for extended resources).
        value, source = requests.get(name), "requests"
        if value is None:
            value, source = limits.get(name), "limits"
            if value is None:
                amounts.append(0)
                continue
        try:
            amounts.append(parse(value))
        except ObjectError as exc:
            raise ObjectError(f"{path}.resources.{source}.{name}: {exc}") from None
    return tuple(amounts)


_POD_LEVEL = frozenset({"cpu", "memory"})
"""Resources a pod-level request may set (hugepages too, which fairpack does not read)."""


def _effective_requests(pod: Pod, names: tuple[str, ...]) -> list[int]:
    """Per resource: what kube-scheduler counts for the pod.

    max(sum of containers + sidecars, each init container + the sidecars started
    before it), or the pod-level request where the pod sets one (CPU and memory), plus
    overhead: ``PodRequests`` in k8s.io/component-helpers/resource.
    """
    spec = pod.spec
    if spec is None:
        return [0] * len(names)
    containers = spec.containers or ()
    if len(containers) == 1 and not (spec.init_containers or spec.overhead or spec.resources):
        return list(_container_amounts(containers[0], names, "Pod.spec.containers[0]"))
    total = [0] * len(names)
    for index, container in enumerate(spec.containers or ()):
        amounts = _container_amounts(container, names, f"Pod.spec.containers[{index}]")
        total = [a + b for a, b in zip(total, amounts, strict=True)]
    sidecars = [0] * len(names)
    init_peak = [0] * len(names)
    for index, container in enumerate(spec.init_containers or ()):
        amounts = _container_amounts(container, names, f"Pod.spec.initContainers[{index}]")
        if container is not None and container.restart_policy == "Always":
            sidecars = [a + b for a, b in zip(sidecars, amounts, strict=True)]
        else:
            init_peak = [
                max(p, a + s) for p, a, s in zip(init_peak, amounts, sidecars, strict=True)
            ]
    effective = [max(t + s, p) for t, s, p in zip(total, sidecars, init_peak, strict=True)]
    pod_level = spec.resources.requests if spec.resources else None
    for index, (name, parse) in enumerate(zip(names, _PARSERS, strict=True)):
        if pod_level and name in _POD_LEVEL and pod_level.get(name) is not None:
            path = "Pod.spec.resources.requests"
            effective[index] = _resource(pod_level, name, parse, path)
        effective[index] += _resource(spec.overhead, name, parse, "Pod.spec.overhead")
    return effective


def pod_class(pod: Pod, config: FairpackConfig) -> PodClass:
    rules = config.pods
    labels = (pod.metadata.labels if pod.metadata else None) or {}
    label = labels.get(rules.class_label, "").strip().lower()
    if label in (PodClass.INTERACTIVE, PodClass.BATCH):
        return PodClass(label)
    priority_class = pod.spec.priority_class_name if pod.spec else None
    if priority_class and priority_class in rules.priority_classes:
        return rules.priority_classes[priority_class]
    return rules.default_class


def pod_request(pod: Pod, config: FairpackConfig, team: str = "") -> PodRequest:
    """The request of ``pod`` as scoring reads it; ObjectError names the bad field."""
    names = ("cpu", "memory", config.resources.gpu, config.resources.gpu_milli)
    cpu, memory, gpus, milli = _effective_requests(pod, names)
    if gpus and milli:
        raise ObjectError(
            f"Pod asks for both {names[2]} and {names[3]}; a GPU share is one GPU's fraction"
        )
    if milli > MILLI_PER_GPU:
        raise ObjectError(f"Pod.{names[3]}={milli} is more than one GPU ({MILLI_PER_GPU})")
    if milli:
        gpus, milli_per_gpu = 1, milli
    else:
        milli_per_gpu = MILLI_PER_GPU if gpus else 0
    metadata, spec = pod.metadata, pod.spec
    annotations = (metadata.annotations if metadata else None) or {}
    labels = (metadata.labels if metadata else None) or {}
    rules = config.pods
    models = {
        model.strip()
        for model in annotations.get(rules.gpu_models_annotation, "").replace(",", "|").split("|")
        if model.strip()
    }
    selector = (spec.node_selector if spec else None) or {}
    models.update(selector[key] for key in config.nodes.gpu_model if key in selector)
    min_memory = annotations.get(rules.gpu_memory_annotation)
    min_memory_mib = 0
    if min_memory:
        try:
            min_memory_mib = quantity.memory_mib(min_memory)
        except ObjectError as exc:
            path = f"Pod.metadata.annotations[{rules.gpu_memory_annotation}]"
            raise ObjectError(f"{path}: {exc}") from None
    return PodRequest(
        gpu_count=gpus,
        milli_per_gpu=milli_per_gpu,
        cpu_milli=cpu,
        memory_mib=memory,
        min_gpu_memory_mib=min_memory_mib if gpus else 0,
        allowed_models=frozenset(models) if gpus else frozenset(),
        team=team,
        pod_class=pod_class(pod, config),
        priority=(spec.priority if spec and spec.priority is not None else 0),
        preemptible=labels.get(rules.preemptible_label, "").lower() != "false",
    )


def pod_info(pod: Pod, config: FairpackConfig) -> PodInfo:
    metadata = pod.metadata
    if metadata is None or not metadata.uid or not metadata.name:
        raise ObjectError("Pod.metadata needs a name and a uid")
    status = pod.status
    phase = status.phase if status else None
    started = _timestamp_s(status.start_time if status else None) or _timestamp_s(
        metadata.creation_timestamp
    )
    return PodInfo(
        uid=metadata.uid,
        namespace=metadata.namespace or "default",
        name=metadata.name,
        node=(pod.spec.node_name if pod.spec else None) or "",
        request=pod_request(pod, config),
        terminal=phase in TERMINAL_PHASES,
        started_s=started,
        gated=bool(pod.spec and pod.spec.scheduling_gates),
    )


def _first_label(labels: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value:
            return value
    return None


def _gpu_memory_mib(node: str, labels: Mapping[str, str], config: FairpackConfig) -> int:
    """Per-GPU memory from the node's labels (MiB first, then a quantity); 0, unknown,
    when none is set or readable.

    An unreadable label is logged and skipped, not a reason to leave the node out of the
    view, where its pods' GPUs would go uncounted.  Unknown memory fits no pod that asks
    for a minimum (``scoring.feasibility``), so such pods avoid the node until it is fixed."""
    keys = config.nodes
    for label_keys, parse in (
        (keys.gpu_memory_mib, quantity.count),
        (keys.gpu_memory_quantity, quantity.memory_mib),
    ):
        if (value := _first_label(labels, label_keys)) is None:
            continue
        try:
            return parse(value)
        except ObjectError as exc:
            log.warning(
                "node %s: GPU memory label %r unreadable (%s): pods asking for a minimum of"
                " GPU memory will not go there until it is fixed",
                node,
                value,
                exc,
            )
    return 0


def node_spec(node: Node, config: FairpackConfig) -> NodeSpec:
    metadata = node.metadata
    if metadata is None or not metadata.name:
        raise ObjectError("Node.metadata.name is missing")
    labels = metadata.labels or {}
    status = node.status
    resources = (status.allocatable or status.capacity) if status else None
    path = "Node.status.allocatable"
    gpus = _resource(resources, config.resources.gpu, quantity.count, path)
    node_labels = config.nodes
    memory_mib = _gpu_memory_mib(metadata.name, labels, config) if gpus else 0
    capacity = _first_label(labels, node_labels.capacity_type)
    return NodeSpec(
        name=metadata.name,
        cpu_milli=_resource(resources, "cpu", quantity.cpu_milli, path),
        memory_mib=_resource(resources, "memory", quantity.memory_mib, path),
        gpu_count=gpus,
        gpu_model=(_first_label(labels, node_labels.gpu_model) or "") if gpus else "",
        gpu_memory_mib=memory_mib,
        capacity_type=SPOT
        if capacity and capacity.lower() in node_labels.spot_values
        else ON_DEMAND,
        pool=_first_label(labels, node_labels.pool) or "",
        schedulable=not (node.spec and node.spec.unschedulable),
    )


def namespace_info(obj: Mapping[str, Any], config: FairpackConfig) -> NamespaceInfo:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError("Namespace.metadata.name is missing")
    labels = metadata.get("labels") or {}
    team = labels.get(config.pods.team_label)
    cost_center = labels.get(config.pods.cost_center_label)
    return NamespaceInfo(
        name,
        team if isinstance(team, str) and team else name,
        cost_center if isinstance(cost_center, str) else "",
    )


def quota_info(obj: Mapping[str, Any], config: FairpackConfig) -> QuotaInfo:
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise ObjectError("ResourceQuota.metadata needs a namespace and a name")
    hard = (obj.get("spec") or {}).get("hard") or {}
    value = hard.get(f"requests.{config.resources.gpu}")
    try:
        gpus = quantity.count(value) if value is not None else None
    except ObjectError as exc:
        raise ObjectError(f"ResourceQuota.spec.hard: {exc}") from None
    return QuotaInfo(namespace, name, gpus)


def priority_class_info(obj: Mapping[str, Any]) -> PriorityClassInfo:
    name = (obj.get("metadata") or {}).get("name")
    value = obj.get("value")
    if not isinstance(name, str) or not isinstance(value, int) or isinstance(value, bool):
        raise ObjectError("PriorityClass needs metadata.name and an integer value")
    return PriorityClassInfo(name, value)


# -- builders, for load generators, the demo and tests ------------------------------------------


def node_manifest(
    spec: NodeSpec,
    *,
    labels: Mapping[str, str] | None = None,
    gpu_resource: str = "nvidia.com/gpu",
) -> dict[str, Any]:
    """A Node as the API server returns it, carrying ``spec`` in the default label keys."""
    node_labels = {"kubernetes.io/hostname": spec.name}
    if spec.gpu_model:
        node_labels["nvidia.com/gpu.product"] = spec.gpu_model
    if spec.gpu_memory_mib:
        node_labels["nvidia.com/gpu.memory"] = str(spec.gpu_memory_mib)
    node_labels["karpenter.sh/capacity-type"] = (
        "spot" if spec.capacity_type == SPOT else "on-demand"
    )
    if spec.pool:
        node_labels["karpenter.sh/nodepool"] = spec.pool
    node_labels.update(labels or {})
    resources = {
        "cpu": f"{spec.cpu_milli}m",
        "memory": f"{spec.memory_mib}Mi",
        "pods": "110",
        gpu_resource: str(spec.gpu_count),
    }
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": spec.name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, spec.name)),
            "resourceVersion": "1",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": node_labels,
            "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsV1": {}}],
        },
        "spec": {"podCIDR": "10.0.0.0/24", **({} if spec.schedulable else _cordoned())},
        "status": {"capacity": dict(resources), "allocatable": resources, "conditions": []},
    }


def _cordoned() -> dict[str, Any]:
    """What ``kubectl cordon`` leaves in a node's spec (the taint is the node lifecycle
    controller's); new objects for each manifest, which callers may change."""
    return {
        "unschedulable": True,
        "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
    }


def pod_manifest(
    name: str,
    request: PodRequest,
    *,
    namespace: str = "default",
    uid: str | None = None,
    node_name: str | None = None,
    phase: str = "Pending",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    priority_class: str | None = None,
    scheduler_name: str = "fairpack-scheduler",
    gpu_resource: str = "nvidia.com/gpu",
    gpu_milli_resource: str = "fairpack.io/gpu-milli",
) -> dict[str, Any]:
    """A Pod as kube-scheduler sends it: camelCase, ``managedFields``, nulls where Go has nil."""
    requests: dict[str, str] = {}
    if request.cpu_milli:
        requests["cpu"] = f"{request.cpu_milli}m"
    if request.memory_mib:
        requests["memory"] = f"{request.memory_mib}Mi"
    limits: dict[str, str] = {}
    if request.is_sharing:
        requests[gpu_milli_resource] = limits[gpu_milli_resource] = str(request.milli_per_gpu)
    elif request.gpu_count:
        requests[gpu_resource] = limits[gpu_resource] = str(request.gpu_count)
    pod_annotations = dict(annotations or {})
    if request.allowed_models:
        pod_annotations["fairpack.io/gpu-models"] = "|".join(sorted(request.allowed_models))
    if request.min_gpu_memory_mib:
        pod_annotations["fairpack.io/gpu-memory"] = f"{request.min_gpu_memory_mib}Mi"
    pod_labels = {"app": name}
    if priority_class is None:
        pod_labels["fairpack.io/class"] = request.pod_class.value
    if not request.preemptible:
        pod_labels["fairpack.io/preemptible"] = "false"
    pod_labels.update(labels or {})
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "resourceVersion": "1",
            "creationTimestamp": None,
            "labels": pod_labels,
            "annotations": pod_annotations or None,
            "managedFields": [
                {
                    "manager": "kubectl-client-side-apply",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2025-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {'k:{"name":"main"}': {}}}},
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/model-server:1",
                    "resources": {"limits": limits or None, "requests": requests or None},
                    "terminationMessagePolicy": "File",
                }
            ],
            "restartPolicy": "Always",
            "schedulerName": scheduler_name,
            "nodeName": node_name,
            "priority": request.priority,
            "priorityClassName": priority_class,
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
        "status": {"phase": phase, "conditions": None, "qosClass": "Burstable"},
    }
