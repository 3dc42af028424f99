"""Both admission webhooks, called by the real kube-apiserver.

The shipped ValidatingWebhookConfiguration (manifests/base) and MutatingWebhookConfiguration
(manifests/route-gpu-pods) are registered as they ship (rules, matchConditions, failure
policies, namespace exemptions), except that they call ``fairpack serve --webhook-port`` at
https://127.0.0.1:PORT with a CA bundle made here with openssl, and only for this test's
namespace. The client sees fairpack's messages.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .controlplane import ControlPlane, _Pki, free_ports, wait_for
from .test_manifests import fairpack_command, gpu_pod, http_status, kustomize, running

pytestmark = pytest.mark.e2e

LABELS = {"team": "ml-team-a", "cost-center": "cc-4001"}
SELECT = "fairpack.e2e/webhook"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"


@dataclass
class Webhooks:
    cp: ControlPlane
    namespace: str
    port: int
    stop_fairpack: Any

    def create(
        self, obj: dict[str, Any], *, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["create", "-n", self.namespace, "-o", "json", "-f", "-"]
        if dry_run:
            args.append("--dry-run=server")
        return self.cp.kubectl(*args, input=json.dumps(obj), check=False)


def _registered(
    config: dict[str, Any], name: str, url: str, ca: bytes, selector: str
) -> dict[str, Any]:
    """A shipped webhook configuration pointed at fairpack on loopback, for one namespace."""
    config = copy.deepcopy(config)
    config["metadata"] = {"name": name}
    for webhook in config["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {"url": f"{url}{path}", "caBundle": base64.b64encode(ca).decode()}
        webhook["namespaceSelector"]["matchLabels"] = {SELECT: selector}
    return config


@contextlib.contextmanager
def serving_webhooks(cp: ControlPlane, workdir: Path) -> Iterator[Webhooks]:
    """fairpack's webhook listener, the shipped webhook configurations pointing at it (for a
    namespace of its own), torn down in reverse."""
    selector = uuid.uuid4().hex[:8]
    namespace = f"e2e-webhook-{selector}"
    pki = _Pki(workdir / "pki")
    pki.make_ca()
    cert, key = pki.make_cert("webhook", "/CN=fairpack-webhook", server=True, ips=("127.0.0.1",))
    port, webhook_port = free_ports(2)
    url = f"https://127.0.0.1:{webhook_port}"
    trust = ssl.create_default_context(cafile=str(pki.ca_crt))
    args = [
        *fairpack_command(), "serve", f"--kubeconfig={cp.admin_kubeconfig}", "--host=127.0.0.1",
        f"--port={port}", f"--webhook-port={webhook_port}", "--webhook-host=127.0.0.1",
        f"--webhook-tls-cert={cert}", f"--webhook-tls-key={key}", f"--configmap={namespace}/fairpack-config",
    ]  # fmt: skip
    (validating,) = [o for o in kustomize("base") if o["kind"] == "ValidatingWebhookConfiguration"]
    (mutating,) = [
        o for o in kustomize("route-gpu-pods") if o["kind"] == "MutatingWebhookConfiguration"
    ]
    names = {
        "validatingwebhookconfigurations": f"fairpack-e2e-{selector}",
        "mutatingwebhookconfigurations": f"fairpack-route-e2e-{selector}",
    }
    ca = pki.ca_crt.read_bytes()
    with contextlib.ExitStack() as stack:
        cp.api(
            "POST",
            "/api/v1/namespaces",
            {"metadata": {"name": namespace, "labels": {SELECT: selector}}},
        )
        stack.callback(cp.request, "DELETE", f"/api/v1/namespaces/{namespace}")
        wait_for(
            lambda: (
                cp.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")[0]
                == 200
            ),
            timeout=30,
            what="the default ServiceAccount",
        )
        fairpack = contextlib.ExitStack()
        stack.callback(fairpack.close)
        fairpack.enter_context(
            running(
                "fairpack-webhook",
                args,
                cp.logs_dir,
                lambda: http_status(f"{url}/readyz", trust) == 200,
            )
        )
        for resource, name in names.items():
            stack.callback(cp.request, "DELETE", f"{ADMISSION}/{resource}/{name}")
        cp.api(
            "POST",
            f"{ADMISSION}/validatingwebhookconfigurations",
            _registered(validating, names["validatingwebhookconfigurations"], url, ca, selector),
        )
        cp.api(
            "POST",
            f"{ADMISSION}/mutatingwebhookconfigurations",
            _registered(mutating, names["mutatingwebhookconfigurations"], url, ca, selector),
        )
        hooks = Webhooks(cp, namespace, webhook_port, fairpack.close)
        # The API server picks new webhook configurations up asynchronously.
        wait_for(
            lambda: hooks.create(gpu_pod("probe"), dry_run=True).returncode != 0,
            timeout=30,
            what="the API server to call the validating webhook",
        )
        wait_for(
            lambda: (
                "fairpack-scheduler"
                in hooks.create(gpu_pod("probe", labels=LABELS), dry_run=True).stdout
            ),
            timeout=30,
            what="the API server to call the mutating webhook",
        )
        yield hooks


@pytest.fixture(scope="module")
def webhooks(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhooks]:
    with serving_webhooks(control_plane, tmp_path_factory.mktemp("webhooks")) as hooks:
        yield hooks


def test_a_gpu_pod_without_labels_is_rejected_with_the_missing_labels_named(
    webhooks: Webhooks,
) -> None:
    proc = webhooks.create(gpu_pod("unlabelled"))
    assert proc.returncode != 0
    assert 'admission webhook "pods.validate.fairpack.io" denied the request' in proc.stderr
    assert (
        "is missing required label(s) team, cost-center: set them in metadata.labels" in proc.stderr
    )
    proc = webhooks.create(gpu_pod("half-labelled", labels={"team": "ml-team-a"}))
    assert proc.returncode != 0
    assert "label(s) cost-center:" in proc.stderr


def test_a_labelled_gpu_pod_is_admitted_and_routed_to_fairpack_scheduler(
    webhooks: Webhooks,
) -> None:
    # A real pod named for nothing that runs here; routed, it would be fairpack-scheduler's.
    proc = webhooks.create(gpu_pod("labelled", labels=LABELS), dry_run=True)
    assert proc.returncode == 0, proc.stderr
    pod = json.loads(proc.stdout)
    assert pod["spec"]["schedulerName"] == "fairpack-scheduler"
    assert (
        pod["metadata"]["annotations"]["fairpack.io/routed-from-scheduler"] == "default-scheduler"
    )


def test_pods_for_another_scheduler_and_cpu_pods_are_left_alone(webhooks: Webhooks) -> None:
    proc = webhooks.create(gpu_pod("volcano", labels=LABELS, scheduler="volcano"), dry_run=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["spec"]["schedulerName"] == "volcano"
    # A CPU pod needs no labels and is not routed; created for real.
    proc = webhooks.create(gpu_pod("cpu-only", 0))
    assert proc.returncode == 0, proc.stderr
    pod = json.loads(proc.stdout)
    assert pod["spec"]["schedulerName"] == "default-scheduler"
    assert "annotations" not in pod["metadata"]
    webhooks.cp.request(
        "DELETE",
        f"/api/v1/namespaces/{webhooks.namespace}/pods/cpu-only",
        {"gracePeriodSeconds": 0},
    )


def _template(kind: str, labels: dict[str, str] | None) -> dict[str, Any]:
    pod = gpu_pod("unused", 2)
    template = {"metadata": {"labels": {"app": "trainer", **(labels or {})}}, "spec": pod["spec"]}
    if kind == "Deployment":
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "trainer"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "trainer"}},
                "template": template,
            },
        }
    template["spec"]["restartPolicy"] = "Never"
    job = {"template": template}
    if kind == "Job":
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "trainer"},
            "spec": job,
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "trainer"},
        "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {"spec": job}},
    }


@pytest.mark.parametrize("kind", ["Deployment", "Job", "CronJob"])
def test_workloads_whose_template_requests_gpus_need_the_labels(
    webhooks: Webhooks, kind: str
) -> None:
    proc = webhooks.create(_template(kind, None), dry_run=True)
    assert proc.returncode != 0
    hook = "cronjobs" if kind == "CronJob" else "workloads"
    assert f'admission webhook "{hook}.validate.fairpack.io" denied the request' in proc.stderr
    path = (
        "spec.jobTemplate.spec.template.metadata.labels"
        if kind == "CronJob"
        else "spec.template.metadata.labels"
    )
    assert f"GPU {kind} {webhooks.namespace}/trainer has a pod template" in proc.stderr
    assert path in proc.stderr
    proc = webhooks.create(_template(kind, LABELS), dry_run=True)
    assert proc.returncode == 0, proc.stderr


def test_with_fairpack_down_gpu_pods_fail_closed_and_others_go_on(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with serving_webhooks(control_plane, tmp_path) as webhooks:
        webhooks.stop_fairpack()
        _fails_closed(webhooks)


def _fails_closed(webhooks: Webhooks) -> None:
    proc = webhooks.create(gpu_pod("labelled", labels=LABELS), dry_run=True)
    # Validating: failurePolicy Fail. (The mutating webhook, Ignore, is skipped silently.)
    assert proc.returncode != 0
    assert 'failed calling webhook "pods.validate.fairpack.io"' in proc.stderr
    # matchConditions keep everything that requests no GPU away from the webhooks.
    proc = webhooks.create(gpu_pod("cpu-only", 0), dry_run=True)
    assert proc.returncode == 0, proc.stderr
