"""The shipped install: every kustomize directory builds, the objects are hardened and wired
to each other, the rules pass promtool (check and unit tests), the dashboard is valid and
every PromQL expression in it parses, and every fairpack metric they use is exported.

Needs kubectl (for `kubectl kustomize`) and promtool (Debian's `prometheus` package; `make
tools` installs it). Without them these tests skip, unless FAIRPACK_REQUIRE_E2E=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from extender_builders import node, pod_info, request
from prometheus_client import generate_latest

from extender import ClusterView, Metrics, Upserted, parse_config
from extender.config import FairpackConfig
from extender.objects import NamespaceInfo, QuotaInfo
from extender.webhook import DEFAULT_EXEMPT_NAMESPACES, DEFAULT_REQUIRED_LABELS
from scoring import PodClass

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
MONITORING = MANIFESTS / "monitoring"
DIRECTORIES = sorted(
    path.parent.relative_to(MANIFESTS).as_posix() for path in MANIFESTS.rglob("kustomization.yaml")
)
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "CustomResourceDefinition",
}
SYSTEM_NAMESPACES = {"kube-system", "kube-public", "kube-node-lease"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        hint = f"{name} not found (run `make tools`)"
        if os.environ.get("FAIRPACK_REQUIRE_E2E") == "1":
            pytest.fail(hint, pytrace=False)
        pytest.skip(hint)
    return path


@cache
def _build(directory: str) -> tuple[dict[str, Any], ...]:
    kubectl = _tool("kubectl")
    proc = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize manifests/{directory}:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def build(directory: str) -> list[dict[str, Any]]:
    return list(_build(directory))


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def containers(workload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("containers", [])}


# -- kustomize -----------------------------------------------------------------------------------


def test_the_expected_directories_exist() -> None:
    for directory in (
        "base",
        "scheduler",
        "extender-service",
        "extender-service/cert-manager",
        "platform",
        "monitoring",
        "cert-manager",
        "route-gpu-pods",
    ):
        assert directory in DIRECTORIES


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_every_directory_builds(directory: str) -> None:
    objects = build(directory)
    assert objects
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name")
        if obj["kind"] not in CLUSTER_SCOPED:
            # Never "whatever namespace kubectl points at".
            assert obj["metadata"].get("namespace"), f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("directory", ["scheduler", "extender-service"])
def test_fairpack_pods_are_hardened(directory: str) -> None:
    objects = build(directory)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == 1
    deployment = deployments[0]
    assert deployment["spec"]["replicas"] == 2
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    for name, container in containers(deployment).items():
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        assert container["resources"]["requests"]["cpu"], name
        assert container["resources"]["requests"]["memory"], name
        assert container["resources"]["limits"]["memory"], name
        assert container["readinessProbe"] and container["livenessProbe"], name
    fairpack = containers(deployment)["fairpack"]
    assert fairpack["image"] == "fairpack:0.1.0"
    assert fairpack["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert fairpack["livenessProbe"]["httpGet"]["path"] == "/healthz"
    namespace = find(objects, "Namespace", "fairpack-system")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pdb = find(objects, "PodDisruptionBudget", "fairpack")
    assert pdb["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _arg(container: Mapping[str, Any], flag: str) -> str | None:
    for arg in [*container.get("command", []), *container.get("args", [])]:
        if arg.startswith(f"{flag}="):
            return str(arg.split("=", 1)[1])
    return None


def test_the_scheduler_topology_wires_kube_scheduler_to_fairpack_on_loopback() -> None:
    objects = build("scheduler")
    deployment = find(objects, "Deployment", "fairpack-scheduler")
    pods = containers(deployment)
    assert set(pods) == {"kube-scheduler", "fairpack"}
    scheduler = pods["kube-scheduler"]
    assert scheduler["image"] == "registry.k8s.io/kube-scheduler:v1.35.8"
    config_path = _arg(scheduler, "--config")
    assert config_path is not None
    mount = next(m for m in scheduler["volumeMounts"] if config_path.startswith(m["mountPath"]))
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    configmap = find(objects, "ConfigMap", volume["configMap"]["name"])
    file_name = Path(config_path).name
    shipped = (MANIFESTS / "scheduler" / "kube-scheduler-config.yaml").read_text()
    assert configmap["data"][file_name] == shipped
    config = yaml.safe_load(shipped)
    # The extender is fairpack's loopback listener in the same pod.
    (extender,) = config["extenders"]
    fairpack = pods["fairpack"]
    assert extender["urlPrefix"] == f"http://{_arg(fairpack, '--host')}:{_arg(fairpack, '--port')}"
    assert _arg(fairpack, "--host") == "127.0.0.1"
    assert config["profiles"][0]["schedulerName"] == "fairpack-scheduler"
    # Leader election on a lease the ServiceAccount may update.
    election = config["leaderElection"]
    assert election["leaderElect"] is True
    role = find(objects, "Role", "fairpack-scheduler-leader-election")
    assert role["metadata"]["namespace"] == election["resourceNamespace"]
    assert role["rules"][0]["resourceNames"] == [election["resourceName"]]
    # One identity for the pod, bound to kube-scheduler's and fairpack's roles.
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == "fairpack-scheduler"
    bound = {
        (o["roleRef"]["kind"], o["roleRef"]["name"])
        for o in objects
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["name"] == account for s in o["subjects"])
    }
    assert bound == {
        ("ClusterRole", "system:kube-scheduler"),
        ("ClusterRole", "system:volume-scheduler"),
        ("Role", "extension-apiserver-authentication-reader"),
        ("Role", "fairpack-scheduler-leader-election"),
        ("ClusterRole", "fairpack-extender"),
        ("Role", "fairpack-config-reader"),
    }
    reader = find(objects, "RoleBinding", "fairpack-scheduler-authentication-reader")
    assert reader["metadata"]["namespace"] == "kube-system"
    # The base's extender ServiceAccount is not shipped where nothing runs under it.
    assert not [
        o for o in objects if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "fairpack"
    ]


def test_the_service_topology_serves_the_verbs_over_mutual_tls() -> None:
    objects = build("extender-service")
    deployment = find(objects, "Deployment", "fairpack")
    fairpack = containers(deployment)["fairpack"]
    assert _arg(fairpack, "--tls-cert") and _arg(fairpack, "--tls-key")
    assert _arg(fairpack, "--client-ca")
    assert _arg(fairpack, "--webhook-port") == "8443"
    service = find(objects, "Service", "fairpack-extender")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["ports"][0]["port"] == 8888
    policy = find(objects, "NetworkPolicy", "fairpack-extender")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "extender", "protocol": "TCP"}]
    certificates = build("extender-service/cert-manager")
    client = find(certificates, "Certificate", "fairpack-scheduler-client")
    assert client["spec"]["usages"][0] == "client auth"
    example = yaml.safe_load(
        (MANIFESTS / "extender-service" / "kube-scheduler-extender.example.yaml").read_text()
    )
    (extender,) = example["extenders"]
    assert extender["enableHTTPS"] is True
    assert extender["urlPrefix"].endswith(":8888")
    assert set(extender["tlsConfig"]) >= {"certFile", "keyFile", "caFile", "serverName"}


def test_fairpack_rbac_is_exactly_what_it_calls() -> None:
    objects = build("base")
    role = find(objects, "ClusterRole", "fairpack-extender")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    view = {
        ("", r, v)
        for r in ("nodes", "pods", "namespaces", "resourcequotas")
        for v in ("list", "watch")
    }
    assert granted == view | {
        ("scheduling.k8s.io", "priorityclasses", "list"),
        ("scheduling.k8s.io", "priorityclasses", "watch"),
        ("", "pods/binding", "create"),
        ("", "pods", "patch"),
    }
    config_role = find(objects, "Role", "fairpack-config-reader")
    assert config_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["fairpack-config"],
            "verbs": ["list", "watch"],
        }
    ]
    for directory in DIRECTORIES:
        for obj in build(directory):
            for rule in obj.get("rules", []) if obj["kind"] in ("Role", "ClusterRole") else []:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], obj


def _paths(model: Any, prefix: str = "") -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}{name}"
        yield path
        if hasattr(type(value), "model_fields"):
            yield from _paths(value, f"{path}.")


def test_the_policy_configmap_documents_every_knob_at_its_default() -> None:
    configmap = find(build("base"), "ConfigMap", "fairpack-config")
    text = configmap["data"]["config.yaml"]
    assert parse_config(configmap["data"]) == FairpackConfig(), (
        "manifests/base/policy-configmap.yaml differs from the built-in defaults"
    )
    document = yaml.safe_load(text)
    for path in _paths(FairpackConfig()):
        node_: Any = document
        for part in path.split("."):
            assert isinstance(node_, dict) and part in node_, (
                f"knob {path} is not in manifests/base/policy-configmap.yaml: add it, with its "
                "default and a comment"
            )
            node_ = node_[part]
    # Documented: a comment line precedes every top-level section and most keys.
    assert text.count("#") >= 20


def _webhooks(directory: str, kind: str) -> list[dict[str, Any]]:
    return [w for o in build(directory) if o["kind"] == kind for w in o["webhooks"]]


def test_the_webhooks_fail_as_chosen_and_leave_system_namespaces_alone() -> None:
    validating = _webhooks("base", "ValidatingWebhookConfiguration")
    mutating = _webhooks("route-gpu-pods", "MutatingWebhookConfiguration")
    assert {w["name"] for w in validating} == {
        "pods.validate.fairpack.io",
        "workloads.validate.fairpack.io",
        "cronjobs.validate.fairpack.io",
    }
    resources = {r for w in validating for rule in w["rules"] for r in rule["resources"]}
    assert resources == {
        "pods",
        "deployments",
        "statefulsets",
        "replicasets",
        "daemonsets",
        "jobs",
        "cronjobs",
    }
    assert {w["failurePolicy"] for w in validating} == {"Fail"}
    assert [w["failurePolicy"] for w in mutating] == ["Ignore"]
    for webhook, path in [
        *((w, "/validate") for w in validating),
        *((w, "/mutate") for w in mutating),
    ]:
        assert webhook["sideEffects"] == "None"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["clientConfig"]["service"] == {
            "namespace": "fairpack-system",
            "name": "fairpack",
            "path": path,
            "port": 443,
        }
        (expression,) = webhook["namespaceSelector"]["matchExpressions"]
        assert expression["operator"] == "NotIn"
        assert set(expression["values"]) == set(DEFAULT_EXEMPT_NAMESPACES)
        assert webhook["matchConditions"]
    service = find(build("base"), "Service", "fairpack")
    assert service["spec"]["ports"][0]["port"] == 443
    assert DEFAULT_REQUIRED_LABELS == ("team", "cost-center")


def test_the_platform_has_the_teams_quotas_and_classes() -> None:
    objects = build("platform")
    quotas = {
        o["metadata"]["namespace"]: o["spec"]["hard"]["requests.nvidia.com/gpu"]
        for o in objects
        if o["kind"] == "ResourceQuota"
    }
    assert quotas == {"ml-team-a": "4", "ml-team-b": "2"}
    for team in quotas:
        labels = find(objects, "Namespace", team)["metadata"]["labels"]
        assert labels["team"] == team and labels["cost-center"]
        (limits,) = [
            o for o in objects if o["kind"] == "LimitRange" and o["metadata"]["namespace"] == team
        ]
        assert limits["spec"]["limits"][0]["defaultRequest"]
    classes = {o["metadata"]["name"]: o["value"] for o in objects if o["kind"] == "PriorityClass"}
    assert classes == {"inference-critical": 1_000_000, "batch-inference": 1_000}
    assert set(FairpackConfig().pods.priority_classes) == set(classes)
    plugin = find(objects, "DaemonSet", "nvidia-device-plugin-daemonset")
    assert containers(plugin)["nvidia-device-plugin-ctr"]["image"].startswith(
        "nvcr.io/nvidia/k8s-device-plugin:"
    )
    find(objects, "Service", "dcgm-exporter")


# -- monitoring ----------------------------------------------------------------------------------


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


RULE_FILES = sorted((MONITORING / "rules").glob("*.rules.yaml"))
RULE_TESTS = sorted((MONITORING / "tests").glob("*.test.yaml"))


def test_promtool_checks_the_rules() -> None:
    proc = _promtool("check", "rules", *map(str, RULE_FILES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    proc = _promtool("test", "rules", path.name, cwd=path.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested


def test_the_prometheusrule_objects_are_generated_from_the_rule_files() -> None:
    proc = subprocess.run(
        [sys.executable, str(MONITORING / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    objects = build("monitoring")
    rules = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PrometheusRule"}
    assert rules == {
        "fairpack": yaml.safe_load((MONITORING / "rules" / "fairpack.rules.yaml").read_text()),
        "fairpack-gpu": yaml.safe_load((MONITORING / "rules" / "gpu.rules.yaml").read_text()),
    }


def _dashboard() -> dict[str, Any]:
    configmap = find(build("monitoring"), "ConfigMap", "fairpack-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    document: dict[str, Any] = json.loads(configmap["data"]["fairpack.json"])
    return document


def _panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1d",
    "$team": ".*",
}


def _expressions(dashboard: Mapping[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


def test_the_dashboard_is_valid_and_has_the_panels() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in (
        "gpu utilisation per node",
        "gpu utilisation per pod",
        "gpu memory used vs allocated",
        "decision latency",
        "allocated vs deserved",
        "pending gpu demand (queue depth) by team and class",
        "stranded",
        "cost per team",
    ):
        assert wanted in titles
    # The shipped scheduler configurations have no bindVerb: fairpack's placements show as
    # pods counted at filter (and expired), not as binds (docs/operator-guide.md).
    assert any("fairpack_filter_assumptions_total" in e for e in _expressions(dashboard))
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["gridPos"]["w"] <= 24


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    rules = []
    for index, expr in enumerate(_expressions(_dashboard())):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expression_{index}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = _promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the metrics the rules and the dashboard use --------------------------------------------------

AWAITED = {
    # Exported once fair share (scoring) computes each team's deserved share.
    "fairpack_gpus_deserved",
}
DCGM = {
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
}


def _exported_metrics() -> tuple[set[str], str]:
    view = ClusterView([node("gpu-0", gpus=8, model="NVIDIA-A100-SXM4-80GB")])
    metrics = Metrics()
    metrics.watch_view(view, lambda: None)
    text = generate_latest(metrics.registry).decode()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    return names | {re.sub(r"_total$", "", name) for name in names}, text


def test_every_fairpack_metric_used_is_exported() -> None:
    exported, _ = _exported_metrics()
    texts = [p.read_text() for p in RULE_FILES] + _expressions(_dashboard())
    used = {
        m
        for text in texts
        for m in re.findall(r"(?<![:\w])(fairpack_[a-z_]+|DCGM_FI_[A-Z_]+)(?![:\w])", text)
    }
    for name in used:
        if name.startswith("DCGM_"):
            assert name in DCGM, name
            continue
        base = re.sub(r"_(bucket|count|sum|total)$", "", name)
        assert base in exported or name in AWAITED, (
            f"{name} is used but fairpack does not export it"
        )


def test_the_chargeback_and_queue_gauges() -> None:
    now = 10_000.0
    view = ClusterView([node("gpu-0", gpus=8, model="NVIDIA-A100-SXM4-80GB")])
    view.apply(Upserted("namespace", NamespaceInfo("ml-team-a", "ml-team-a", "cc-4001")))
    view.apply(Upserted("namespace", NamespaceInfo("ml-team-b", "ml-team-b")))
    view.apply(Upserted("quota", QuotaInfo("ml-team-a", "gpu-quota", 4)))
    view.apply(Upserted("pod", pod_info("a1", "gpu-0", request(gpus=2), namespace="ml-team-a")))
    view.apply(Upserted("pod", pod_info("b1", "gpu-0", request(gpus=1), namespace="ml-team-b")))
    waiting = pod_info(
        "a2", "", request(gpus=4, pod_class=PodClass.INTERACTIVE), namespace="ml-team-a"
    )
    view.apply(Upserted("pod", waiting.__class__(**{**_fields(waiting), "started_s": now - 90})))
    metrics = Metrics()
    metrics.watch_view(view, lambda: None, wall_clock=lambda: now)
    text = generate_latest(metrics.registry).decode()
    assert (
        'fairpack_namespace_gpus_allocated{class="batch",cost_center="cc-4001",model="NVIDIA-A100-SXM4-80GB",'
        'namespace="ml-team-a",team="ml-team-a"} 2.0' in text
    )
    assert 'cost_center="",model="NVIDIA-A100-SXM4-80GB",namespace="ml-team-b"' in text
    assert 'fairpack_pending_wait_seconds{class="interactive",team="ml-team-a"} 90.0' in text
    assert 'fairpack_gpus_quota{team="ml-team-a"} 4.0' in text
    assert "fairpack_ready 1.0" in text
    assert "fairpack_config_last_reload_successful 1.0" in text
    metrics.config_reloaded("invalid")
    assert (
        "fairpack_config_last_reload_successful 0.0" in generate_latest(metrics.registry).decode()
    )
    metrics.config_reloaded("unchanged")
    assert (
        "fairpack_config_last_reload_successful 1.0" in generate_latest(metrics.registry).decode()
    )


def test_the_chargeback_gauge_waits_for_the_binding() -> None:
    now = 10_000.0
    view = ClusterView([node("gpu-0", gpus=8)])
    waiting = pod_info("a1", "", request(gpus=2), namespace="ml-team-a")
    view.apply(Upserted("pod", waiting.__class__(**{**_fields(waiting), "started_s": now - 90})))
    # Filter passed it gpu-0 alone and counts it there; kube-scheduler has not bound it.
    view.assume(waiting, "gpu-0", [0, 1], tentative=True)
    metrics = Metrics()
    metrics.watch_view(view, lambda: None, wall_clock=lambda: now)
    text = generate_latest(metrics.registry).decode()
    assert "fairpack_namespace_gpus_allocated{" not in text
    assert 'fairpack_pending_wait_seconds{class="batch",team="ml-team-a"} 90.0' in text
    view.apply(Upserted("pod", pod_info("a1", "gpu-0", request(gpus=2), namespace="ml-team-a")))
    text = generate_latest(metrics.registry).decode()
    assert 'namespace="ml-team-a",team="ml-team-a"} 2.0' in text
    assert "fairpack_pending_wait_seconds{" not in text


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


# -- the image -----------------------------------------------------------------------------------


def test_the_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2
    final = text[text.rindex("\nFROM ") :]
    assert final.split()[1] == "python:3.11-slim"
    user = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert not re.search(r"apt-get install|gcc|build-essential|pip install --upgrade pip", final)
    assert (
        'ENTRYPOINT ["fairpack"]' in final or 'ENTRYPOINT ["/opt/fairpack/bin/fairpack"]' in final
    )
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "**/__pycache__"):
        assert entry in ignored
