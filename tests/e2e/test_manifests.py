"""The shipped manifests against a real API server.

- Every object of every kustomize directory passes a server-side dry run (with the Pod
  Security admission of the restricted fairpack-system namespace watching, and minimal
  prometheus-operator and cert-manager CRDs installed for the objects that need them).
- RBAC: the scheduler topology's ServiceAccount and exactly its shipped Roles and bindings,
  no admin credentials: fairpack serves (lists, watches its ConfigMap by name, binds) and
  kube-scheduler, run from the shipped KubeSchedulerConfiguration, takes its leader lease
  and schedules a GPU pod through fairpack. What the roles do not grant is refused.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from .controlplane import (
    ControlPlane,
    ControlPlaneError,
    _https_status,
    _set_pdeathsig,
    free_ports,
    stop_process,
    wait_for,
)
from .fairpack_stack import fairpack_command
from .fake_nodes import A100_80GB, kubelet_node

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
DIRECTORIES = sorted(
    p.parent.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("kustomization.yaml")
)
GPU = "nvidia.com/gpu"
CRDS = (
    ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    ("cert-manager.io", "Certificate", "certificates"),
    ("cert-manager.io", "Issuer", "issuers"),
)


# -- helpers (test_webhook.py uses them too) -------------------------------------------------------


def kustomize(directory: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [os.environ.get("KUBECTL") or "kubectl", "kustomize", str(MANIFESTS / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def http_status(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        with err:
            return err.code


def http_text(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as reply:
        return str(reply.read().decode())


@contextlib.contextmanager
def running(
    name: str,
    args: Sequence[str],
    log_dir: Path,
    ready: Any,
    *,
    timeout: float = 90.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process, wait until ready() is true, and stop it (SIGTERM, then SIGKILL)."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise ControlPlaneError(f"{name} exited ({proc.returncode}):\n{tail(log_path)}")
                with contextlib.suppress(Exception):
                    if ready():
                        break
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"{name} not ready after {timeout:.0f}s:\n{tail(log_path)}"
                    )
                time.sleep(0.3)
            yield proc
        finally:
            stop_process(proc)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def gpu_pod(
    name: str,
    gpus: int = 1,
    *,
    labels: dict[str, str] | None = None,
    scheduler: str | None = None,
    node: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/fairpack/noop:1",
                "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {GPU: str(gpus)} if gpus else {},
                },
            }
        ],
    }
    if scheduler:
        spec["schedulerName"] = scheduler
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def token_kubeconfig(cp: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (TokenRequest), nothing else."""
    token = cp.kubectl(
        "create", "token", account, "-n", namespace, "--duration=3600s"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": cp.server, "certificate-authority": str(cp.ca_crt)},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "e2e", "user": account}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def _crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


# -- dry run -------------------------------------------------------------------------------------


@pytest.fixture
def crds(control_plane: ControlPlane) -> Iterator[None]:
    """Minimal ServiceMonitor, PrometheusRule, Certificate and Issuer CRDs (any spec)."""
    cp = control_plane
    created = []
    for group, kind, plural in CRDS:
        name = f"{plural}.{group}"
        if (
            cp.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")[0]
            == 404
        ):
            cp.api(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                _crd(group, kind, plural),
            )
            created.append(name)

    def established(name: str) -> bool:
        body = cp.api("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = body.get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    for group, _, plural in CRDS:
        wait_for(lambda n=f"{plural}.{group}": established(n), timeout=30, what=f"CRD {plural}")
    try:
        yield
    finally:
        for name in created:
            cp.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")


def test_every_manifest_passes_a_server_side_dry_run(
    control_plane: ControlPlane, crds: None, tmp_path: Path
) -> None:
    cp = control_plane
    builds = {directory: kustomize(directory) for directory in DIRECTORIES}
    # Namespaced objects need their namespace to exist: create the shipped ones for real
    # (with their Pod Security labels, so that admission judges the pod templates).
    namespaces = {
        o["metadata"]["name"]: o
        for objects in builds.values()
        for o in objects
        if o["kind"] == "Namespace"
    }
    created = []
    for name, namespace in namespaces.items():
        if cp.request("GET", f"/api/v1/namespaces/{name}")[0] == 404:
            cp.api("POST", "/api/v1/namespaces", namespace)
            created.append(name)
    cache = tmp_path / "kube-cache"
    try:
        for directory, objects in builds.items():
            path = tmp_path / f"{directory.replace('/', '_')}.yaml"
            path.write_text(yaml.safe_dump_all(objects))
            proc = cp.kubectl(
                "apply", "--dry-run=server", f"--cache-dir={cache}", "-f", str(path), check=False
            )
            assert proc.returncode == 0, f"manifests/{directory}:\n{proc.stdout}{proc.stderr}"
            # No Pod Security warning: fairpack-system enforces "restricted".
            assert "PodSecurity" not in proc.stderr, f"manifests/{directory}:\n{proc.stderr}"
            assert proc.stdout.count("(server dry run)") == len(objects), proc.stdout
    finally:
        for name in created:
            cp.request("DELETE", f"/api/v1/namespaces/{name}")


def test_the_dry_run_catches_what_admission_refuses(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The dry run above is not vacuous: a broken CEL matchCondition is refused."""
    (config,) = [o for o in kustomize("base") if o["kind"] == "ValidatingWebhookConfiguration"]
    config["webhooks"][0]["matchConditions"][0]["expression"] = "object.spec.containers.exists(c,"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = control_plane.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert proc.returncode != 0
    assert "matchConditions" in proc.stderr


# -- RBAC ----------------------------------------------------------------------------------------

RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def _relocate(objects: list[dict[str, Any]], namespace: str, suffix: str) -> list[dict[str, Any]]:
    """The shipped objects, moved from fairpack-system to `namespace`, cluster-wide and
    kube-system names suffixed; rules untouched."""
    renamed = {
        o["metadata"]["name"] for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")
    } | {o["metadata"]["name"] for o in objects if o["metadata"].get("namespace") == "kube-system"}
    moved = []
    for obj in copy.deepcopy(objects):
        metadata = obj["metadata"]
        if metadata.get("namespace") == "fairpack-system":
            metadata["namespace"] = namespace
        if metadata["name"] in renamed and obj["kind"] != "ServiceAccount":
            metadata["name"] = f"{metadata['name']}-{suffix}"
        for subject in obj.get("subjects", []):
            if subject.get("namespace") == "fairpack-system":
                subject["namespace"] = namespace
        ref = obj.get("roleRef")
        if ref and ref["kind"] == "ClusterRole" and ref["name"] in renamed:
            ref["name"] = f"{ref['name']}-{suffix}"
        moved.append(obj)
    return moved


def _can(cp: ControlPlane, user: str, *args: str) -> bool:
    proc = cp.kubectl("auth", "can-i", f"--as={user}", *args, check=False)
    return proc.stdout.strip() == "yes"


def test_the_scheduler_topology_runs_with_exactly_the_shipped_rbac(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    suffix = uuid.uuid4().hex[:6]
    home = f"e2e-fairpack-system-{suffix}"
    shipped = kustomize("scheduler")
    objects = _relocate(
        [
            o
            for o in shipped
            if o["kind"] in RBAC_KINDS
            or (o["kind"] == "ConfigMap" and o["metadata"]["name"] == "fairpack-config")
        ],
        home,
        suffix,
    )
    account = "fairpack-scheduler"
    user = f"system:serviceaccount:{home}:{account}"
    node_name = f"rbac-gpu-{suffix}"
    scheduler_name = f"fairpack-rbac-{suffix}"
    fairpack_port, scheduler_port = free_ports(2)
    cluster_objects = [
        o
        for o in objects
        if "namespace" not in o["metadata"] or o["metadata"]["namespace"] == "kube-system"
    ]
    try:
        cp.api("POST", "/api/v1/namespaces", {"metadata": {"name": home}})
        manifest = tmp_path / "rbac.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        cp.kubectl("apply", "-f", str(manifest))
        cp.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(
                kubelet_node(node_name, labels={"nvidia.com/gpu.product": A100_80GB.product})
            ),
        )
        kubeconfig = token_kubeconfig(cp, home, account, tmp_path / "sa.kubeconfig")

        # Least privilege: what the roles do not grant is refused.
        assert _can(cp, user, "create", "pods", "--subresource=binding", "-n", namespace)
        assert _can(cp, user, "watch", "configmaps/fairpack-config", "-n", home)
        assert not _can(cp, user, "list", "configmaps", "-n", home)
        assert not _can(cp, user, "get", "secrets", "-n", home)
        assert not _can(cp, user, "create", "pods", "-n", namespace)
        assert not _can(cp, user, "update", "deployments.apps", "-n", namespace)
        assert not _can(cp, user, "update", "nodes")
        assert not _can(cp, user, "update", "leases.coordination.k8s.io/other-lease", "-n", home)

        # The pod's two containers, with the pod's token and the shipped configuration.
        config = yaml.safe_load(
            (MANIFESTS / "scheduler" / "kube-scheduler-config.yaml").read_text()
        )
        config["clientConnection"]["kubeconfig"] = str(kubeconfig)
        config["leaderElection"]["resourceNamespace"] = home
        config["profiles"][0]["schedulerName"] = scheduler_name
        config["extenders"][0]["urlPrefix"] = f"http://127.0.0.1:{fairpack_port}"
        config_path = tmp_path / "kube-scheduler-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        fairpack_args = [
            *fairpack_command(), "serve", f"--kubeconfig={kubeconfig}", "--host=127.0.0.1",
            f"--port={fairpack_port}", f"--configmap={home}/fairpack-config",
        ]  # fmt: skip
        base_url = f"http://127.0.0.1:{fairpack_port}"
        scheduler_args = [
            str(cp.bin_dir / "kube-scheduler"), f"--config={config_path}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={scheduler_port}",
        ]  # fmt: skip
        with (
            running(
                "fairpack-rbac",
                fairpack_args,
                cp.logs_dir,
                lambda: http_status(f"{base_url}/readyz") == 200,
            ),
            running(
                "kube-scheduler-rbac",
                scheduler_args,
                cp.logs_dir,
                lambda: _https_status(scheduler_port, "/readyz") == 200,
            ),
        ):
            metrics = http_text(f"{base_url}/metrics")
            # Listing its ConfigMap by name is what resourceNames allows.
            assert 'fairpack_watch_synced{resource="configmap"} 1.0' in metrics

            pods = f"/api/v1/namespaces/{namespace}/pods"
            cp.api("POST", pods, gpu_pod("trainer", 2, scheduler=scheduler_name, node=node_name))
            bound = wait_for(
                lambda: cp.api("GET", f"{pods}/trainer")["spec"].get("nodeName"),
                timeout=90,
                what="the RBAC-limited kube-scheduler to bind trainer where fairpack's filter said",
            )
            assert bound == node_name
            assert 'fairpack_filter_assumptions_total{result="assumed"} 1.0' in http_text(
                f"{base_url}/metrics"
            )
            lease = cp.api(
                "GET", f"/apis/coordination.k8s.io/v1/namespaces/{home}/leases/fairpack-scheduler"
            )
            assert lease["spec"]["holderIdentity"]
    finally:
        cp.request(
            "DELETE", f"/api/v1/namespaces/{namespace}/pods/trainer", {"gracePeriodSeconds": 0}
        )
        cp.request("DELETE", f"/api/v1/nodes/{node_name}")
        for obj in cluster_objects:
            kind = obj["kind"]
            name = obj["metadata"]["name"]
            if kind == "ClusterRole":
                cp.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
            elif kind == "ClusterRoleBinding":
                cp.request(
                    "DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}"
                )
            elif kind == "RoleBinding":
                cp.request(
                    "DELETE",
                    f"/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings/{name}",
                )
        cp.request("DELETE", f"/api/v1/namespaces/{home}")
