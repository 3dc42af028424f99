"""Packing through the real kube-scheduler ends where the simulator ends.

A fixed sequence of 1/2/4/8-GPU pods goes, one pod at a time, through kube-scheduler run
from the shipped configuration, on a mixed fleet. The expected outcome is computed in the
test with ``scoring.evaluate`` over a ClusterState of the same nodes, with the service's
policy, shape learning and tie-break (tests/e2e/mirror.py).

Deterministic, and so asserted exactly: fairpack gives 10 to one node alone (near-best
ties go to a stable order of node names) and its weight outweighs kube-scheduler's own
scores, so every pod lands on the node the simulator picks, the same pods find no room,
and the GPUs in use per node and the stranded GPUs are the simulator's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .cluster import Cluster
from .fairpack_stack import FairpackStack
from .fake_nodes import A10G_24GB, A100_80GB, H100_80GB, GpuType, gpu_node, gpu_pod
from .mirror import Mirror

FLEET: tuple[tuple[str, GpuType, bool], ...] = (
    # (name suffix, type, spot)
    ("a100-1", A100_80GB, False),
    ("a100-2", A100_80GB, False),
    ("h100-1", H100_80GB, True),
    ("a10g-1", A10G_24GB, False),
    ("a10g-2", A10G_24GB, False),
    ("a10g-3", A10G_24GB, True),
)  # 8 + 8 + 8 + 4 + 4 + 4 = 36 GPUs

SEQUENCE = (2, 1, 8, 4, 1, 2, 4, 1, 8, 8, 2, 4)
"""GPUs per pod, in arrival order: 45 GPUs asked of 36; the simulator places every pod
but the last 8-GPU one (a 2-GPU pod after it still fits) and the last 4-GPU one, and
leaves 3 GPUs stranded."""


def pod_for(index: int, gpus: int, fleet: str) -> dict[str, Any]:
    # CPU and memory in proportion, as real GPU jobs ask (best_fit weighs CPU too).
    return gpu_pod(
        f"p{index:02d}-{gpus}g", gpus=gpus, cpu=str(4 * gpus), memory=f"{16 * gpus}Gi", fleet=fleet
    )


def stranded_gpus(used: Mapping[str, float], capacity: Mapping[str, int]) -> float:
    """GPUs left free on partly used nodes: the holes packing tries not to leave."""
    return sum(
        capacity[name] - used.get(name, 0.0)
        for name in capacity
        if 0 < used.get(name, 0.0) < capacity[name]
    )


def simulate(
    nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> tuple[Mirror, list[str | None]]:
    """The simulator's run of the sequence: each pod on fairpack's best node."""
    mirror = Mirror(nodes)
    placements: list[str | None] = []
    for pod in pods:
        decision = mirror.decide(mirror.request(pod))
        if decision.best is not None:
            mirror.place(decision, decision.best)
        placements.append(decision.best)
    return mirror, placements


def test_packing_sequence_matches_the_simulator(
    cluster: Cluster, fresh_fairpack: FairpackStack, namespace: str
) -> None:
    fleet = cluster.fleet
    created = cluster.create_nodes(
        gpu_node(f"{fleet}-{suffix}", kind, fleet=fleet, spot=spot) for suffix, kind, spot in FLEET
    )
    capacity = {
        node["metadata"]["name"]: int(node["status"]["allocatable"]["nvidia.com/gpu"])
        for node in created
    }
    pods = [pod_for(i, gpus, fleet) for i, gpus in enumerate(SEQUENCE)]
    expected_mirror, expected = simulate(created, pods)
    assert None in expected and len(set(expected) - {None}) == len(FLEET), (
        "the sequence should use every node and end with pods that find no room"
    )

    actual: list[str | None] = []
    for pod, node in zip(pods, expected, strict=True):
        name = pod["metadata"]["name"]
        cluster.create(namespace, pod)
        bound = cluster.wait_bound_or_unschedulable(namespace, name, timeout=30)
        assert bound == node, (
            f"{name} went to {bound}, the simulator puts it on {node}\n"
            + cluster.describe(namespace, name)
        )
        actual.append(bound)

    used = cluster.used_gpus_by_node(namespace)
    expected_used = expected_mirror.used_gpus()
    assert {n: used.get(n, 0.0) for n in capacity} == {n: expected_used[n] for n in capacity}
    assert stranded_gpus(used, capacity) == stranded_gpus(expected_used, capacity)
    # fairpack's own view agrees with the API server.
    view = cluster.fairpack_view()["nodes"]
    assert {n: view[n][1] for n in capacity} == {
        n: capacity[n] - used.get(n, 0.0) for n in capacity
    }
