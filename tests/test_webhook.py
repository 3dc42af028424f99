"""The admission webhooks: label enforcement on GPU workloads, routing GPU pods to
fairpack-scheduler, AdmissionReview v1 answers, and no 5xx whatever the body."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from extender_builders import node, service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender import create_app
from extender.cli import main
from extender.server import WebhookListener, reload_certificates
from extender.webhook import (
    ROUTED_ANNOTATION,
    AdmissionInputError,
    WebhookConfig,
    missing_labels,
    mutate,
    requests_gpus,
    validate,
)

CONFIG = WebhookConfig()
LABELS = {"team": "ml-team-a", "cost-center": "cc-4711"}


def pod_spec(gpus: Any = 1, *, resource: str = "nvidia.com/gpu", init: bool = False) -> dict:
    container = {"name": "main", "image": "x", "resources": {"limits": {resource: gpus}}}
    if init:
        return {"containers": [{"name": "c", "image": "x"}], "initContainers": [container]}
    return {"containers": [container]}


def pod(labels: dict | None = None, **spec_kw: Any) -> dict:
    spec = pod_spec(**spec_kw)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml-team-a", "labels": labels or {}},
        "spec": spec,
    }


def workload(kind: str, labels: dict | None = None, gpus: Any = 2) -> dict:
    template = {"metadata": {"labels": labels or {}}, "spec": pod_spec(gpus)}
    if kind == "CronJob":
        spec: dict[str, Any] = {
            "schedule": "@daily",
            "jobTemplate": {"spec": {"template": template}},
        }
    else:
        spec = {"template": template}
    return {"kind": kind, "metadata": {"name": "w", "namespace": "ml-team-a"}, "spec": spec}


def review(
    obj: Any,
    *,
    kind: str | None = None,
    operation: str = "CREATE",
    namespace: str = "ml-team-a",
    old: Any = None,
    uid: str = "uid-1",
) -> dict:
    kind = kind or (obj or {}).get("kind", "Pod")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "namespace": namespace,
            "operation": operation,
            "object": obj,
            "oldObject": old,
        },
    }


def response(answer: dict) -> dict:
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    return dict(answer["response"])


def patch_of(answer: dict) -> list[dict]:
    return list(json.loads(base64.b64decode(response(answer)["patch"])))


# -- validate ------------------------------------------------------------------------------------


def test_a_gpu_pod_without_labels_is_rejected_naming_them() -> None:
    answer = response(validate(review(pod()), CONFIG))
    assert answer["uid"] == "uid-1"
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    message = answer["status"]["message"]
    assert "team, cost-center" in message
    assert "metadata.labels" in message
    assert "ml-team-a/p" in message


def test_only_the_missing_labels_are_named() -> None:
    message = response(validate(review(pod({"team": "a"})), CONFIG))["status"]["message"]
    assert "label(s) cost-center:" in message
    assert "label(s) team" not in message


def test_a_labelled_gpu_pod_and_a_cpu_pod_are_admitted() -> None:
    assert response(validate(review(pod(LABELS)), CONFIG))["allowed"] is True
    assert response(validate(review(pod(gpus=0)), CONFIG))["allowed"] is True
    assert response(validate(review(pod(gpus="0")), CONFIG))["allowed"] is True
    cpu_only = pod()
    cpu_only["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2"}}
    assert response(validate(review(cpu_only), CONFIG))["allowed"] is True


def test_empty_label_values_count_as_missing() -> None:
    answer = response(validate(review(pod({"team": " ", "cost-center": ""})), CONFIG))
    assert answer["allowed"] is False
    assert "team, cost-center" in answer["status"]["message"]


@pytest.mark.parametrize(
    "spec_kw",
    [
        {"gpus": 1},
        {"gpus": "2"},
        {"gpus": "500m"},
        {"gpus": 250, "resource": "fairpack.io/gpu-milli"},
        {"gpus": 1, "init": True},
        {"gpus": "lots"},  # not a quantity: the API server refuses it, we do not let it slip
    ],
)
def test_every_way_of_asking_for_a_gpu_counts(spec_kw: dict) -> None:
    assert response(validate(review(pod(**spec_kw)), CONFIG))["allowed"] is False


def test_requests_count_as_well_as_limits() -> None:
    spec = {"containers": [{"resources": {"requests": {"nvidia.com/gpu": "1"}}}]}
    assert requests_gpus(spec, CONFIG.gpu_resources)
    assert not requests_gpus({"containers": "nonsense"}, CONFIG.gpu_resources)


@pytest.mark.parametrize(
    "kind", ["Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job", "CronJob"]
)
def test_workload_templates_are_checked(kind: str) -> None:
    answer = response(validate(review(workload(kind)), CONFIG))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert f"GPU {kind} ml-team-a/w has a pod template" in message
    path = (
        "spec.jobTemplate.spec.template.metadata.labels"
        if kind == "CronJob"
        else "spec.template.metadata.labels"
    )
    assert path in message
    assert response(validate(review(workload(kind, LABELS)), CONFIG))["allowed"] is True
    assert response(validate(review(workload(kind, gpus=0)), CONFIG))["allowed"] is True


def test_labels_on_the_workload_itself_do_not_replace_the_template_labels() -> None:
    obj = workload("Deployment")
    obj["metadata"]["labels"] = dict(LABELS)
    assert response(validate(review(obj), CONFIG))["allowed"] is False


def test_system_namespaces_deletes_and_unknown_kinds_are_left_alone() -> None:
    assert response(validate(review(pod(), namespace="kube-system"), CONFIG))["allowed"]
    assert response(validate(review(pod(), namespace="fairpack-system"), CONFIG))["allowed"]
    assert response(validate(review(None, kind="Pod", operation="DELETE"), CONFIG))["allowed"]
    other = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    assert response(validate(review(other), CONFIG))["allowed"]


def test_the_required_labels_and_exemptions_are_configurable() -> None:
    config = WebhookConfig(required_labels=("owner",), exempt_namespaces=frozenset({"ml-team-a"}))
    assert response(validate(review(pod(), namespace="other"), config))["allowed"] is False
    message = response(validate(review(pod(), namespace="other"), config))["status"]["message"]
    assert "label(s) owner:" in message
    assert response(validate(review(pod()), config))["allowed"] is True
    assert missing_labels({"owner": "x"}, ("owner", "team")) == ["team"]


def test_an_update_that_removes_labels_is_rejected() -> None:
    answer = validate(
        review(workload("Deployment"), operation="UPDATE", old=workload("Deployment", LABELS)),
        CONFIG,
    )
    assert response(answer)["allowed"] is False


def test_an_update_of_an_already_unlabelled_workload_is_admitted_with_a_warning() -> None:
    obj = workload("Deployment")
    answer = response(validate(review(obj, operation="UPDATE", old=obj), CONFIG))
    assert answer["allowed"] is True
    assert "team, cost-center" in answer["warnings"][0]


def test_a_workload_being_deleted_can_lose_its_finalizers() -> None:
    obj = workload("Deployment")
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    old = workload("Deployment", LABELS)
    assert response(validate(review(obj, operation="UPDATE", old=old), CONFIG))["allowed"]


def test_generate_name_pods_are_named_in_the_message() -> None:
    obj = pod()
    obj["metadata"] = {"generateName": "trainer-7d9f-", "namespace": "ml-team-a"}
    message = response(validate(review(obj), CONFIG))["status"]["message"]
    assert "ml-team-a/trainer-7d9f-*" in message


@pytest.mark.parametrize(
    "body",
    [
        [],
        "review",
        {"kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 3}},
    ],
)
def test_what_is_not_an_admission_review_is_refused(body: Any) -> None:
    with pytest.raises(AdmissionInputError):
        validate(body, CONFIG)
    with pytest.raises(AdmissionInputError):
        mutate(body, CONFIG)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        {"kind": "Pod", "metadata": [], "spec": []},
        {"kind": "Pod", "spec": {"containers": [None, 3, {"resources": []}]}},
        {"kind": "Pod", "spec": {"containers": [{"resources": {"limits": []}}]}},
        {"kind": "Deployment", "spec": {"template": []}},
        {"kind": "CronJob", "spec": {"jobTemplate": {"spec": None}}},
    ],
)
def test_odd_objects_get_an_answer(obj: Any) -> None:
    kind = obj.get("kind", "Pod") if isinstance(obj, dict) else "Pod"
    assert response(validate(review(obj, kind=kind), CONFIG))["uid"] == "uid-1"
    assert response(mutate(review(obj, kind=kind), CONFIG))["allowed"] is True


# -- mutate --------------------------------------------------------------------------------------


def test_a_gpu_pod_for_the_default_scheduler_is_routed_to_fairpack() -> None:
    obj = pod(LABELS)
    obj["spec"]["schedulerName"] = "default-scheduler"
    answer = mutate(review(obj), CONFIG)
    assert response(answer)["allowed"] is True
    assert response(answer)["patchType"] == "JSONPatch"
    patch = patch_of(answer)
    assert patch[0] == {
        "op": "replace",
        "path": "/spec/schedulerName",
        "value": "fairpack-scheduler",
    }
    assert patch[1] == {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {ROUTED_ANNOTATION: "default-scheduler"},
    }


def test_the_patch_adds_what_is_absent_and_escapes_annotation_keys() -> None:
    obj = pod(LABELS)
    obj["metadata"]["annotations"] = {"a": "b"}
    patch = patch_of(mutate(review(obj), CONFIG))
    assert patch[0]["op"] == "add"
    assert patch[1]["path"] == "/metadata/annotations/fairpack.io~1routed-from-scheduler"


def test_pods_for_other_schedulers_cpu_pods_and_updates_are_not_routed() -> None:
    for scheduler in ("fairpack-scheduler", "volcano"):
        obj = pod(LABELS)
        obj["spec"]["schedulerName"] = scheduler
        assert "patch" not in response(mutate(review(obj), CONFIG))
    assert "patch" not in response(mutate(review(pod(gpus=0)), CONFIG))
    assert "patch" not in response(mutate(review(pod(), operation="UPDATE"), CONFIG))
    assert "patch" not in response(mutate(review(pod(), namespace="kube-system"), CONFIG))
    assert "patch" not in response(mutate(review(workload("Deployment")), CONFIG))


def test_the_routing_target_is_configurable() -> None:
    config = WebhookConfig(scheduler_name="gpu-pool-b")
    assert patch_of(mutate(review(pod()), config))[0]["value"] == "gpu-pool-b"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_object_inside_a_review_gets_an_answer(obj: Any) -> None:
    for decide in (validate, mutate):
        for kind in ("Pod", "Deployment", "CronJob"):
            answer = response(decide(review(obj, kind=kind), CONFIG))
            assert answer["uid"] == "uid-1"
            assert isinstance(answer["allowed"], bool)


# -- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    extender = service([node("gpu-0")])
    app = create_app(extender, webhook=WebhookConfig(), public=True)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_validate_over_http(client: TestClient) -> None:
    async with client.post("/validate", json=review(pod())) as reply:
        assert reply.status == 200
        answer = response(await reply.json())
    assert answer["allowed"] is False
    async with client.post("/validate", json=review(pod(LABELS))) as reply:
        assert response(await reply.json())["allowed"] is True
    async with client.get("/metrics") as reply:
        text = await reply.text()
    assert 'fairpack_admission_reviews_total{result="denied",webhook="validate"} 1.0' in text
    assert 'fairpack_admission_reviews_total{result="allowed",webhook="validate"} 1.0' in text


async def test_mutate_over_http(client: TestClient) -> None:
    async with client.post("/mutate", json=review(pod())) as reply:
        assert reply.status == 200
        answer = await reply.json()
    assert patch_of(answer)[0]["value"] == "fairpack-scheduler"


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b"null", b'"x"', b'{"kind": "AdmissionReview"}', b"\xff\xfe"]
)
async def test_bad_bodies_get_a_400_never_a_5xx(client: TestClient, body: bytes) -> None:
    for path in ("/validate", "/mutate"):
        async with client.post(path, data=body) as reply:
            assert reply.status == 400
            assert "error" in await reply.json()


async def test_the_public_app_has_no_extender_verbs(client: TestClient) -> None:
    for path in ("/filter", "/prioritize", "/preempt", "/bind"):
        async with client.post(path, json={}) as reply:
            assert reply.status in (404, 405)
    async with client.get("/debug/state") as reply:
        assert reply.status == 404
    async with client.get("/readyz") as reply:
        assert reply.status == 200


async def test_an_internal_error_denies_on_validate_and_admits_on_mutate(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setattr("extender.webhook.requests_gpus", broken)
    async with client.post("/validate", json=review(pod())) as reply:
        assert reply.status == 200
        answer = response(await reply.json())
    assert answer["allowed"] is False
    assert "internal error" in answer["status"]["message"]
    async with client.post("/mutate", json=review(pod())) as reply:
        assert reply.status == 200
        answer = response(await reply.json())
    assert answer["allowed"] is True
    assert "patch" not in answer


async def test_the_gpu_resources_follow_the_live_policy() -> None:
    extender = service([node("gpu-0")])
    assert extender.config.update({"config.yaml": "resources: {gpu: example.com/gpu}"})
    app = create_app(extender, webhook=WebhookConfig(), public=True)
    async with TestClient(TestServer(app)) as test_client:
        async with test_client.post(
            "/validate", json=review(pod(resource="example.com/gpu"))
        ) as reply:
            assert response(await reply.json())["allowed"] is False
        async with test_client.post("/validate", json=review(pod())) as reply:
            assert response(await reply.json())["allowed"] is True


# -- serving -------------------------------------------------------------------------------------


def test_the_cli_builds_the_webhook_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(options: Any, **kw: Any) -> None:
        seen["options"] = options

    monkeypatch.setattr("extender.server.serve_cluster", fake_serve)
    argv = ["serve", "--webhook-port", "8443", "--webhook-tls-cert", "c.pem",
            "--webhook-tls-key", "k.pem", "--required-labels", "team, owner,team",
            "--exempt-namespaces", "kube-system", "--route-to-scheduler", "pool-b"]  # fmt: skip
    assert main(argv) == 0
    listener = seen["options"].webhook
    assert isinstance(listener, WebhookListener)
    assert (listener.port, listener.host, listener.tls_cert) == (8443, "0.0.0.0", Path("c.pem"))
    assert listener.config.required_labels == ("team", "owner")
    assert listener.config.exempt_namespaces == frozenset({"kube-system"})
    assert listener.config.scheduler_name == "pool-b"


def test_an_empty_list_of_required_labels_is_said_aloud(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(options: Any, **kw: Any) -> None:
        seen["options"] = options

    monkeypatch.setattr("extender.server.serve_cluster", fake_serve)
    argv = ["serve", "--webhook-port", "8443", "--webhook-tls-cert", "c.pem",
            "--webhook-tls-key", "k.pem"]  # fmt: skip
    with caplog.at_level("WARNING", logger="extender.webhook"):
        assert main([*argv, "--required-labels", "team"]) == 0
        assert not caplog.records
        assert main([*argv, "--required-labels", ""]) == 0
    assert seen["options"].webhook.config.required_labels == ()
    assert "admits GPU pods without any label" in caplog.text


def test_the_webhook_listener_needs_a_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--webhook-port", "8443"])
    assert "HTTPS" in capsys.readouterr().err


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "first")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(create_app(service([node("gpu-0")]), public=True))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    reload = asyncio.create_task(reload_certificates(context, cert, key, interval_s=0.05))

    async def served() -> str:
        pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
        return "".join(pem.split())

    def pem_of(path: Path) -> str:
        return "".join(path.read_text().split())

    try:
        assert await served() == pem_of(cert)
        second_cert, second_key = _self_signed(tmp_path, "second")
        cert.write_bytes(second_cert.read_bytes())
        key.write_bytes(second_key.read_bytes())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await served() == pem_of(second_cert):
                break
        assert await served() == pem_of(second_cert)
    finally:
        reload.cancel()
        await asyncio.gather(reload, return_exceptions=True)
        await runner.cleanup()
