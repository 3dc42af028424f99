"""Reading Kubernetes objects: quantities, pod requests, node GPU labels, teams and quotas."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from extender_builders import pod, request

from extender import FairpackConfig, ObjectError
from extender.objects import (
    namespace_info,
    node_manifest,
    node_spec,
    pod_info,
    pod_request,
    quota_info,
)
from extender.quantity import count, cpu_milli, memory_mib
from extender.wire import Node, Pod
from scoring import ON_DEMAND, SPOT, PodClass

CONFIG = FairpackConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("500m", 500, id="milli"),
        pytest.param("2", 2000, id="cores"),
        pytest.param("1.5", 1500, id="decimal"),
        pytest.param("0.0001", 1, id="rounds-up"),  # 0.1 milli -> 1
        pytest.param("1e1", 10_000, id="exponent"),
        pytest.param(3, 3000, id="json-number"),
        pytest.param("100u", 1, id="micro-rounds-up"),
    ],
)
def test_cpu_milli(text: Any, expected: int) -> None:
    assert cpu_milli(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("16Gi", 16384, id="gibi"),
        pytest.param("512Mi", 512, id="mebi"),
        pytest.param("1G", 954, id="giga"),  # 10^9 / 2^20 = 953.7 -> 954
        pytest.param("1", 1, id="one-byte-takes-a-mib"),
        pytest.param("128974848", 123, id="bytes"),
        pytest.param("1.5Ki", 1, id="fraction-of-kibi"),
    ],
)
def test_memory_mib(text: str, expected: int) -> None:
    assert memory_mib(text) == expected


# "²" and "٣" are digits to str.isdigit (int() reads the second, not the first); the
# API server's grammar has ASCII digits only.
@pytest.mark.parametrize("text", ["", "12x", "1.2.3", "Gi", "--1", "1e99", "-1", "²", "٣"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ObjectError):
        cpu_milli(text)
    with pytest.raises(ObjectError):
        count(text)


def with_containers(
    containers: list[Any],
    init: list[Any] | None = None,
    overhead: Any = None,
    pod_level: Any = None,
) -> Pod:
    body = pod(req=request(gpus=0, cpu_milli=0, memory_mib=0))
    body["spec"]["containers"] = containers
    body["spec"]["initContainers"] = init
    body["spec"]["overhead"] = overhead
    body["spec"]["resources"] = pod_level
    return Pod.model_validate(body)


def container(
    cpu: str | None = None, gpus: str | None = None, *, sidecar: bool = False, limits: bool = False
) -> Any:
    amounts = {key: value for key, value in (("cpu", cpu), ("nvidia.com/gpu", gpus)) if value}
    resources = {"limits": amounts, "requests": None} if limits else {"requests": amounts}
    return {"name": "c", "resources": resources, "restartPolicy": "Always" if sidecar else None}


@pytest.mark.parametrize(
    ("pod_object", "cpu", "gpus"),
    [
        pytest.param(
            with_containers([container("1", "2"), container("500m", "1")]),
            1500,
            3,
            id="containers-add-up",
        ),
        # init 4 cores alone > 1 + 1 of the main containers.
        pytest.param(
            with_containers([container("1"), container("1")], [container("4")]),
            4000,
            0,
            id="init-peak",
        ),
        # sidecar 1 core runs beside the 2 main ones; the init container after it peaks at 1 + 1.5.
        pytest.param(
            with_containers([container("2")], [container("1", sidecar=True), container("1500m")]),
            3000,
            0,
            id="sidecar-adds",
        ),
        pytest.param(
            with_containers([container("1")], overhead={"cpu": "250m"}), 1250, 0, id="overhead"
        ),
        pytest.param(
            with_containers([container(gpus="2", limits=True)]), 0, 2, id="gpu-limit-is-the-request"
        ),
        pytest.param(with_containers([None, {"name": "bare"}]), 0, 0, id="nulls-and-no-resources"),
        # A pod-level request replaces the containers' CPU (1 + 1); GPUs stay per container.
        pytest.param(
            with_containers(
                [container("1", "2"), container("1")], pod_level={"requests": {"cpu": "3"}}
            ),
            3000,
            2,
            id="pod-level-cpu",
        ),
        # One container too; the overhead still adds to the pod-level request: 500m + 250m.
        pytest.param(
            with_containers(
                [container("2")], overhead={"cpu": "250m"}, pod_level={"requests": {"cpu": "500m"}}
            ),
            750,
            0,
            id="pod-level-and-overhead",
        ),
        # Pod-level limits alone change nothing here (the API server defaults the requests).
        pytest.param(
            with_containers([container("2")], pod_level={"limits": {"cpu": "4"}, "requests": None}),
            2000,
            0,
            id="pod-level-limits-only",
        ),
    ],
)
def test_effective_requests_follow_kube_scheduler(pod_object: Pod, cpu: int, gpus: int) -> None:
    req = pod_request(pod_object, CONFIG)
    assert (req.cpu_milli, req.gpu_count) == (cpu, gpus)


def test_a_pod_level_request_counts_for_a_single_container_too() -> None:
    # The common shape (one container, no init containers, no overhead) takes a shortcut;
    # the pod-level request must still replace its CPU and memory.
    one = {"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
    pod_level = {"requests": {"cpu": "3", "memory": "4Gi"}}
    req = pod_request(with_containers([one], pod_level=pod_level), CONFIG)
    assert (req.cpu_milli, req.memory_mib) == (3000, 4096)


@pytest.mark.parametrize(
    ("labels", "priority_class", "expected"),
    [
        pytest.param(
            {"fairpack.io/class": "interactive"},
            "batch-inference",
            PodClass.INTERACTIVE,
            id="label-wins",
        ),
        pytest.param({}, "inference-critical", PodClass.INTERACTIVE, id="priority-class"),
        pytest.param({}, "batch-inference", PodClass.BATCH, id="batch-priority-class"),
        pytest.param({}, None, PodClass.BATCH, id="default"),
        pytest.param(
            {"fairpack.io/class": "bogus"},
            "inference-critical",
            PodClass.INTERACTIVE,
            id="bad-label-ignored",
        ),
    ],
)
def test_pod_class(labels: dict[str, str], priority_class: str | None, expected: PodClass) -> None:
    body = pod(req=request(), priority_class=priority_class or "other", labels=labels)
    if priority_class is None:
        body["spec"]["priorityClassName"] = None
    assert pod_request(Pod.model_validate(body), CONFIG).pod_class == expected


def test_gpu_constraints_from_annotations_and_node_selector() -> None:
    body = pod(
        req=request(gpus=2),
        annotations={"fairpack.io/gpu-memory": "40Gi", "fairpack.io/gpu-models": "A100, H100"},
    )
    body["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "H200"}
    req = pod_request(Pod.model_validate(body), CONFIG)
    assert req.min_gpu_memory_mib == 40 * 1024
    assert req.allowed_models == {"A100", "H100", "H200"}


def test_a_gpu_share_is_one_gpu() -> None:
    body = pod(req=request(gpus=1, milli=250))
    req = pod_request(Pod.model_validate(body), CONFIG)
    assert (req.gpu_count, req.milli_per_gpu, req.is_sharing) == (1, 250, True)


def test_pod_info_reads_identity_node_and_phase() -> None:
    body = pod("p", request(gpus=1), namespace="ns", uid="u-1", node_name="n-1", phase="Succeeded")
    info = pod_info(Pod.model_validate(body), CONFIG)
    assert (info.uid, info.key, info.node, info.terminal) == ("u-1", "ns/p", "n-1", True)


@pytest.mark.parametrize(
    ("gates", "gated"),
    [
        ([{"name": "kueue.x-k8s.io/admission"}], True),
        ([], False),
        (None, False),
        ([None], True),  # a gate kube-scheduler would see, however it is written
    ],
    ids=["one-gate", "no-gates", "null", "null-gate"],
)
def test_pod_info_reads_scheduling_gates(gates: Any, gated: bool) -> None:
    body = pod("p", request(gpus=1))
    body["spec"]["schedulingGates"] = gates
    assert pod_info(Pod.model_validate(body), CONFIG).gated is gated


def kube_node(labels: dict[str, str], gpus: str = "8") -> Node:
    return Node.model_validate(
        {
            "metadata": {"name": "n", "labels": labels, "managedFields": [{}]},
            "status": {
                "capacity": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": gpus},
                "allocatable": {"cpu": "95500m", "memory": "1000Gi", "nvidia.com/gpu": gpus},
            },
        }
    )


@pytest.mark.parametrize(
    ("labels", "model", "memory", "capacity"),
    [
        pytest.param(
            {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"},
            "NVIDIA-A100-SXM4-80GB",
            81920,
            ON_DEMAND,
            id="gpu-feature-discovery",
        ),
        pytest.param(
            {"accelerator": "h100", "gpu-memory": "80Gi", "karpenter.sh/capacity-type": "spot"},
            "h100",
            81920,
            SPOT,
            id="platform-labels",
        ),
        pytest.param(
            {"accelerator": "l4", "cloud.google.com/gke-spot": "true"}, "l4", 0, SPOT, id="gke-spot"
        ),
        pytest.param(
            {"eks.amazonaws.com/capacityType": "ON_DEMAND"}, "", 0, ON_DEMAND, id="eks-on-demand"
        ),
        # An unreadable memory label leaves the memory unknown (0), never the node unread.
        pytest.param({"nvidia.com/gpu.memory": "80GB"}, "", 0, ON_DEMAND, id="memory-unreadable"),
        pytest.param(
            {"nvidia.com/gpu.memory": "lots", "gpu-memory": "48Gi"},
            "",
            48 * 1024,
            ON_DEMAND,
            id="memory-next-label",
        ),
    ],
)
def test_node_spec_from_labels(
    labels: dict[str, str], model: str, memory: int, capacity: int
) -> None:
    spec = node_spec(kube_node(labels), CONFIG)
    assert (spec.gpu_model, spec.gpu_memory_mib, spec.capacity_type) == (model, memory, capacity)
    assert (spec.cpu_milli, spec.memory_mib, spec.gpu_count) == (95_500, 1_024_000, 8)


def test_a_cordoned_node_is_not_schedulable_and_its_manifest_says_so() -> None:
    open_node = node_spec(kube_node({}), CONFIG)
    assert open_node.schedulable
    cordoned = replace(open_node, schedulable=False)
    manifest = node_manifest(cordoned)
    assert manifest["spec"]["unschedulable"] is True
    assert node_spec(Node.model_validate(manifest), CONFIG) == cordoned
    uncordoned = {**manifest, "spec": {**manifest["spec"], "unschedulable": None}}
    assert node_spec(Node.model_validate(uncordoned), CONFIG).schedulable


def test_a_node_reporting_absurdly_many_gpus_is_refused() -> None:
    # One such node would widen every node's GPU columns to its count (gigabytes).
    with pytest.raises(ValueError, match="node 'n' has 100000000 GPUs; fairpack takes 0 to 1024"):
        node_spec(kube_node({}, gpus="1e8"), CONFIG)
    assert node_spec(kube_node({}, gpus="1024"), CONFIG).gpu_count == 1024


def test_unreadable_memory_label_says_what_it_costs(caplog: pytest.LogCaptureFixture) -> None:
    node_spec(kube_node({"nvidia.com/gpu.memory": "80GB"}), CONFIG)
    assert "node n: GPU memory label '80GB' unreadable" in caplog.text
    assert "will not go there until it is fixed" in caplog.text


def test_label_keys_are_configurable() -> None:
    config = FairpackConfig.model_validate(
        {"nodes": {"gpu_model": ["example.com/gpu"]}, "resources": {"gpu": "example.com/gpu"}}
    )
    node = Node.model_validate(
        {
            "metadata": {"name": "n", "labels": {"example.com/gpu": "X1"}},
            "status": {"allocatable": {"example.com/gpu": "4"}},
        }
    )
    spec = node_spec(node, config)
    assert (spec.gpu_model, spec.gpu_count) == ("X1", 4)


def test_team_and_quota() -> None:
    assert (
        namespace_info({"metadata": {"name": "ns", "labels": {"team": "vision"}}}, CONFIG).team
        == "vision"
    )
    assert namespace_info({"metadata": {"name": "ns"}}, CONFIG).team == "ns"
    quota = {
        "metadata": {"namespace": "ns", "name": "q"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "16"}},
    }
    assert quota_info(quota, CONFIG).gpus == 16
    assert (
        quota_info({"metadata": {"namespace": "ns", "name": "q"}, "spec": {}}, CONFIG).gpus is None
    )
