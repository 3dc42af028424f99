"""Builders for the fake GPU fleet of the end-to-end tests and of ``fairpack bench kube``.

Nodes are API objects created with their status (capacity, allocatable) set, as a kubelet
would register them; nothing runs on them. Pods carry ``terminationGracePeriodSeconds: 0``
so that deleting them (a test "finishing" a pod, or kube-scheduler evicting a preemption
victim) removes them at once instead of waiting for a kubelet that does not exist.

Pure functions over dicts: no client, no pytest (the benchmark imports this module too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GPU = "nvidia.com/gpu"
GPU_MILLI = "fairpack.io/gpu-milli"
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
FAIRPACK_SCHEDULER = "fairpack-scheduler"
NOOP_IMAGE = "registry.invalid/fairpack/noop:1"  # never pulled: there is no kubelet
CAPACITY_TYPE = "karpenter.sh/capacity-type"
# The platform's own labels, next to GPU Feature Discovery's.
ACCELERATOR = "accelerator"
GPU_MEMORY = "gpu-memory"
# Every node a test creates carries FLEET=<its fleet name>; pods select it, so tests that
# share the cluster never see each other's nodes.
FLEET = "fairpack.e2e/fleet"


@dataclass(frozen=True)
class GpuType:
    """A GPU node type as GPU Feature Discovery and the platform label it."""

    product: str
    accelerator: str
    memory_gib: int
    gpus: int
    cpu: int
    memory_gib_node: int

    @property
    def memory_mib(self) -> int:
        return self.memory_gib * 1024


A100_80GB = GpuType("NVIDIA-A100-SXM4-80GB", "nvidia-a100", 80, 8, 96, 1152)
H100_80GB = GpuType("NVIDIA-H100-80GB-HBM3", "nvidia-h100", 80, 8, 192, 2048)
A10G_24GB = GpuType("NVIDIA-A10G", "nvidia-a10g", 24, 4, 48, 192)
T4_16GB = GpuType("Tesla-T4", "nvidia-t4", 16, 1, 8, 32)


def kubelet_node(
    name: str, gpus: int = 8, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A plain node as a kubelet would register it, status included (capacity =
    allocatable): 64 CPUs, 512Gi, ``gpus`` GPUs, no taint and no GPU labels beyond ``labels``."""
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", GPU: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                **(labels or {}),
            },
        },
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def gpu_node(
    name: str,
    gpu_type: GpuType,
    *,
    fleet: str,
    spot: bool = False,
    tainted: bool = True,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A GPU node with status, GPU labels (GFD's and the platform's), capacity type and,
    by default, the platform's ``nvidia.com/gpu=present:NoSchedule`` taint."""
    resources = {
        "cpu": str(gpu_type.cpu),
        "memory": f"{gpu_type.memory_gib_node}Gi",
        "pods": "110",
        GPU: str(gpu_type.gpus),
    }
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": gpu_type.product,
        "nvidia.com/gpu.count": str(gpu_type.gpus),
        "nvidia.com/gpu.memory": str(gpu_type.memory_mib),
        ACCELERATOR: gpu_type.accelerator,
        GPU_MEMORY: f"{gpu_type.memory_gib}Gi",
        CAPACITY_TYPE: "spot" if spot else "on-demand",
        FLEET: fleet,
        **(labels or {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
        "spec": {"taints": [dict(GPU_TAINT)] if tainted else []},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def gpu_pod(
    name: str,
    *,
    gpus: int = 0,
    milli: int = 0,
    cpu: str | None = "1",
    memory: str | None = "4Gi",
    fleet: str | None = None,
    scheduler_name: str = FAIRPACK_SCHEDULER,
    priority_class: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    affinity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod asking for ``gpus`` whole GPUs or a ``milli`` share of one (fairpack.io/gpu-milli),
    tolerating the GPU taint, pinned to ``fleet`` when given. ``cpu``/``memory`` None leaves
    the request out (a LimitRange may default it)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    if gpus:
        requests[GPU] = limits[GPU] = str(gpus)
    if milli:
        requests[GPU_MILLI] = limits[GPU_MILLI] = str(milli)
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    spec: dict[str, Any] = {
        "schedulerName": scheduler_name,
        "terminationGracePeriodSeconds": 0,
        "tolerations": [dict(GPU_TOLERATION)],
        "containers": [{"name": "main", "image": NOOP_IMAGE, "resources": resources}],
    }
    if fleet is not None:
        spec["nodeSelector"] = {FLEET: fleet}
    if priority_class is not None:
        spec["priorityClassName"] = priority_class
    if affinity is not None:
        spec["affinity"] = dict(affinity)
    metadata: dict[str, Any] = {"name": name, "labels": {"app": name, **(labels or {})}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def gpu_count(pod: Mapping[str, Any]) -> int:
    """Whole GPUs requested by a pod object (limits, as the API server defaults requests)."""
    total = 0
    for container in pod.get("spec", {}).get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(limits.get(GPU, 0))
    return total


def gpu_milli(pod: Mapping[str, Any]) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(limits.get(GPU_MILLI, 0))
    return total
