"""Fixtures for the end-to-end tests: a real control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) on loopback, shared by the whole session.

Enabling: install Go (>= 1.25) and run scripts/build-control-plane.sh once (the fixture
also runs it, which builds on first use: ~1 GB of modules, 10-25 minutes on two cores).
Without Go the tests are skipped, unless FAIRPACK_REQUIRE_E2E=1 (CI), which makes them fail.

Environment:
  FAIRPACK_REQUIRE_E2E=1   fail instead of skip when the control plane is unavailable
  FAIRPACK_K8S_BIN_DIR     use binaries from this directory (no build, no Go needed)
  FAIRPACK_E2E_KEEP=1      keep the work dir (logs, certificates, kubeconfig) after the session;
                           it is kept anyway when a test failed
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from .cluster import Cluster
from .controlplane import BINARIES, ControlPlane, ControlPlaneError, wait_for
from .fairpack_stack import FairpackStack

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build-control-plane.sh"
ENABLE_HINT = (
    "install Go >= 1.25 and run scripts/build-control-plane.sh (or point "
    "FAIRPACK_K8S_BIN_DIR at prebuilt binaries); set FAIRPACK_REQUIRE_E2E=1 to make this an error"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only ours: mark the ones under tests/e2e.
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _unavailable(reason: str) -> None:
    if os.environ.get("FAIRPACK_REQUIRE_E2E") == "1":
        pytest.fail(
            f"end-to-end control plane unavailable (FAIRPACK_REQUIRE_E2E=1): {reason}",
            pytrace=False,
        )
    pytest.skip(f"end-to-end control plane unavailable: {reason}; to enable: {ENABLE_HINT}")


def _script(*args: str, capture_stderr: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        check=False,
    )


def _control_plane_binaries(config: pytest.Config) -> Path:
    """The directory with the four binaries, building them if needed and possible."""
    override = os.environ.get("FAIRPACK_K8S_BIN_DIR")
    if override:
        return Path(override)
    bin_dir = Path(_script("--print-bin-dir").stdout.strip())
    built = all(os.access(bin_dir / b, os.X_OK) for b in BINARIES)
    if shutil.which("go") is None:
        if built:  # built earlier; the pin cannot be checked without go, use them as they are
            return bin_dir
        _unavailable(f"the Go toolchain ('go') is not on PATH and {bin_dir} is not built")
    if _script("--check").returncode == 0:
        return bin_dir
    # First use (or the pin changed): build, showing the script's progress live.
    capman = config.pluginmanager.getplugin("capturemanager")
    show = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    with show:
        print(f"\nbuilding the e2e control plane with {BUILD_SCRIPT} ...", file=sys.stderr)
        proc = _script(capture_stderr=False)
    if proc.returncode != 0:
        pytest.fail(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """A running control plane (see controlplane.ControlPlane), shared by the session.

    Tests that restart components (start_scheduler with another config,
    restart_apiserver) should leave them running again."""
    config = request.config
    bin_dir = _control_plane_binaries(config)
    capman = config.pluginmanager.getplugin("capturemanager")

    def say(msg: str) -> None:  # to the terminal, past pytest's output capture
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"\n[control-plane] {msg}", file=sys.stderr)

    cp = ControlPlane(bin_dir, keep_workdir=os.environ.get("FAIRPACK_E2E_KEEP") == "1", log=say)
    failed_before = request.session.testsfailed
    try:
        cp.start()
    except ControlPlaneError as err:
        # start() already stopped what it had started and kept the logs.
        pytest.fail(
            f"the control plane did not start (logs in {cp.logs_dir}):\n{err}", pytrace=False
        )
    try:
        yield cp
    finally:
        failed = request.session.testsfailed > failed_before
        cp.stop(keep=True if failed else None)
        if failed or cp.keep_workdir:
            say(f"kept logs, certificates and kubeconfig in {cp.workdir}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure in a test that uses the control plane, append the components' log tails
    to the report."""
    report = yield
    if report.failed and "control_plane" in getattr(item, "fixturenames", ()):
        cp = getattr(item, "funcargs", {}).get("control_plane")
        if isinstance(cp, ControlPlane):
            report.sections.append(("control plane logs", cp.dump_logs(lines=40)))
        stack = getattr(item, "funcargs", {}).get("fairpack")
        if isinstance(stack, FairpackStack):
            report.sections.append(("fairpack logs", stack.log_tails(lines=60)))
    return report


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"e2e-{base}-{uuid.uuid4().hex[:6]}"


def _create_namespace(cp: ControlPlane, name: str, labels: dict[str, str]) -> None:
    cp.api(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
    )
    wait_for(
        lambda: cp.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200,
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )


def _delete_namespace(cp: ControlPlane, name: str) -> None:
    # Namespace first (no new pods from controllers once it is Terminating), then pods.
    cp.request("DELETE", f"/api/v1/namespaces/{name}")
    cp.request(
        "DELETE",
        f"/api/v1/namespaces/{name}/pods",
        {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
    )

    def no_pods() -> bool:
        status, body = cp.request("GET", f"/api/v1/namespaces/{name}/pods")
        return status == 200 and isinstance(body, dict) and not body.get("items")

    with contextlib.suppress(TimeoutError):
        wait_for(no_pods, timeout=30, what=f"the pods of {name} to be deleted")


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (its name) for one test, with its default ServiceAccount ready.

    Teardown deletes the namespace and force-deletes its pods (grace period 0): without a
    kubelet nobody would finish a graceful deletion, and pods stuck in Terminating still
    hold their node's GPUs in the scheduler's accounting."""
    name = _namespace_name(request.node.name)
    _create_namespace(control_plane, name, {"fairpack.e2e/test": "true"})
    try:
        yield name
    finally:
        _delete_namespace(control_plane, name)


@pytest.fixture
def make_namespace(control_plane: ControlPlane) -> Iterator[Callable[..., str]]:
    """make_namespace(prefix, labels) -> a fresh namespace named prefix-<random>, deleted
    (pods force-deleted) after the test; for tests that need several, e.g. one per team."""
    created: list[str] = []

    def make(prefix: str, labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        _create_namespace(control_plane, name, {"fairpack.e2e/test": "true", **(labels or {})})
        created.append(name)
        return name

    try:
        yield make
    finally:
        for name in created:
            _delete_namespace(control_plane, name)


# ------------------------------------------------------------------------------------ fairpack


@pytest.fixture(scope="session")
def fairpack(control_plane: ControlPlane) -> Iterator[FairpackStack]:
    """``fairpack serve`` against the session's API server, and a second kube-scheduler (the
    ``fairpack-scheduler`` profile) run from the shipped
    manifests/scheduler/kube-scheduler-config.yaml with fairpack as its extender on loopback.

    The default scheduler keeps running for every other scheduler name. Tests that stop or
    restart either process leave it running again. Logs go to the control plane's logs
    directory (kept when a test failed)."""
    stack = FairpackStack(control_plane)
    try:
        stack.start()
    except ControlPlaneError as err:
        pytest.fail(f"fairpack or its kube-scheduler did not start:\n{err}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def cluster(control_plane: ControlPlane, fairpack: FairpackStack) -> Iterator[Cluster]:
    """The control plane and fairpack for one test, with its own fleet name (nodes it
    creates through the Cluster are deleted afterwards). fairpack and its scheduler are
    brought back if the test left them stopped."""
    cluster = Cluster(control_plane, fairpack)
    try:
        yield cluster
    finally:
        cluster.cleanup()
        if not fairpack.fairpack.running:
            fairpack.start_fairpack()
        if not fairpack.scheduler.running:
            fairpack.start_scheduler()


@pytest.fixture
def fresh_fairpack(fairpack: FairpackStack) -> FairpackStack:
    """fairpack restarted for this test: no pod shapes learned from earlier tests, so that
    its fragmentation term can be recomputed from this test's pods alone."""
    fairpack.restart_fairpack()
    return fairpack


PRIORITY_CLASSES = (
    # The platform's two classes, (name, value, description); fairpack reads them as
    # interactive and batch.
    ("inference-critical", 1_000_000, "Online inference."),
    ("batch-inference", 1_000, "Offline, preemptible batch inference."),
)


@pytest.fixture(scope="session")
def priority_classes(control_plane: ControlPlane) -> dict[str, int]:
    """The platform's PriorityClasses (created once; cluster-scoped), name -> value."""
    for name, value, description in PRIORITY_CLASSES:
        control_plane.api(
            "POST",
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "preemptionPolicy": "PreemptLowerPriority",
                "globalDefault": False,
                "description": description,
            },
            ok=(409,),
        )
    return {name: value for name, value, _ in PRIORITY_CLASSES}
