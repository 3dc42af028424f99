"""A real Kubernetes control plane on loopback, for the end-to-end tests.

Runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built by
``scripts/build-control-plane.sh``, as plain processes bound to 127.0.0.1 on free ports,
with a throw-away CA, certificates and etcd data dir in a temporary directory. There is no
kubelet: nodes are API objects created with their status (capacity, allocatable) set, so the
scheduler sees them as ordinary nodes; the node-lifecycle controller is off so they stay
schedulable.

Deliberately independent of pytest (see conftest.py for the fixtures)::

    cp = ControlPlane(bin_dir)
    cp.start()                      # etcd, apiserver, controller-manager, scheduler
    cp.kubectl("get", "nodes")
    cp.start_scheduler(cp.write_scheduler_config(extenders=[...]))  # restarts it
    cp.stop()

Certificates are made with the ``openssl`` command-line tool (the ``cryptography`` package
is not a dependency of the project).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
ISSUER = "https://kubernetes.default.svc.cluster.local"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

# Controllers of kube-controller-manager that must not run without kubelets: the node
# lifecycle controller would mark every fake node NotReady (no heartbeats), taint it and
# evict its pods. Everything else (Deployments, ReplicaSets, ResourceQuota, namespace
# deletion, garbage collection, service accounts...) runs for real.
DISABLED_CONTROLLERS = ("node-lifecycle-controller",)

# Admission plugins that only make sense with kubelets: TaintNodesByCondition would add a
# node.kubernetes.io/not-ready:NoSchedule taint to every new node, and nothing would remove it.
DISABLED_ADMISSION_PLUGINS = ("TaintNodesByCondition",)


class ControlPlaneError(RuntimeError):
    """A component failed to start or became unreachable."""


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (kept bound together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: kill the child when the test process dies without stop() (even by SIGKILL),
    so that no orphaned apiserver/etcd keeps running; their state is throw-away anyway."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds; reaps it.

    True if it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
    return False


# --------------------------------------------------------------------------- certificates

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
"""


class _Pki:
    """A throw-away CA and the certificates the control plane needs (openssl CLI)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ControlPlaneError("the `openssl` command is needed to make certificates")
        self.openssl: str = openssl
        self.cnf = self.dir / "openssl.cnf"
        self.cnf.write_text(_OPENSSL_CNF)
        self.ca_crt = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            [self.openssl, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")

    def _ec_key(self, path: Path) -> None:
        self._run(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
        )
        path.chmod(0o600)

    def make_ca(self) -> None:
        self._ec_key(self.ca_key)
        self._run(
            "req",
            "-x509",
            "-new",
            "-config",
            str(self.cnf),
            "-extensions",
            "v3_ca",
            "-key",
            str(self.ca_key),
            "-subj",
            "/CN=fairpack-e2e-ca",
            "-days",
            "3650",
            "-out",
            str(self.ca_crt),
        )

    def make_cert(
        self,
        name: str,
        subject: str,
        *,
        server: bool = False,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> tuple[Path, Path]:
        """Sign a leaf certificate; returns (cert, key). subject like "/O=g/CN=name"."""
        crt, key, csr = (self.dir / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        ext = self.dir / f"{name}.ext"
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        lines = [
            "[v3]",
            "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage = " + ("serverAuth,clientAuth" if server else "clientAuth"),
            "authorityKeyIdentifier = keyid",
        ]
        if sans:
            lines.append("subjectAltName = " + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        self._ec_key(key)
        self._run(
            "req",
            "-new",
            "-config",
            str(self.cnf),
            "-key",
            str(key),
            "-subj",
            subject,
            "-out",
            str(csr),
        )
        self._run(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.ca_crt),
            "-CAkey",
            str(self.ca_key),
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            "365",
            "-extfile",
            str(ext),
            "-extensions",
            "v3",
            "-out",
            str(crt),
        )
        csr.unlink()
        ext.unlink()
        return crt, key

    def make_service_account_keys(self) -> tuple[Path, Path]:
        """RSA key pair that signs and verifies service-account tokens: (private, public)."""
        key, pub = self.dir / "sa.key", self.dir / "sa.pub"
        self._run(
            "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)
        )
        key.chmod(0o600)
        self._run("pkey", "-in", str(key), "-pubout", "-out", str(pub))
        return key, pub


# ------------------------------------------------------------------------------ processes


@dataclass
class _Component:
    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1.

    bin_dir: directory holding the four binaries (scripts/build-control-plane.sh prints it).
    workdir: where certificates, kubeconfigs, etcd data and logs go; a fresh temporary
      directory by default, removed by stop() unless keep_workdir is set (or stop(keep=True)).
    """

    def __init__(
        self,
        bin_dir: str | os.PathLike[str],
        workdir: str | os.PathLike[str] | None = None,
        *,
        keep_workdir: bool = False,
        start_timeout: float = 120.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.bin_dir = Path(bin_dir)
        missing = [b for b in BINARIES if not os.access(self.bin_dir / b, os.X_OK)]
        if missing:
            raise ControlPlaneError(
                f"missing in {self.bin_dir}: {', '.join(missing)} "
                "(run scripts/build-control-plane.sh)"
            )
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fairpack-e2e-"))
        self.keep_workdir = keep_workdir
        self.start_timeout = start_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        self._log = log or (lambda msg: print(f"[control-plane] {msg}", file=sys.stderr))
        self.pki_dir = self.workdir / "pki"
        self.logs_dir = self.workdir / "logs"
        self.etcd_data_dir = self.workdir / "etcd-data"
        (
            self.etcd_port,
            self.etcd_peer_port,
            self.apiserver_port,
            self.controller_manager_port,
            self.scheduler_port,
        ) = free_ports(5)
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.controller_manager_kubeconfig = self.workdir / "controller-manager.kubeconfig"
        self.scheduler_kubeconfig = self.workdir / "scheduler.kubeconfig"
        self.scheduler_config_path: Path | None = None
        self.timings: dict[str, float] = {}  # seconds, per start step (see start())
        self._components: dict[str, _Component] = {}
        self._admin_ssl: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, scheduler: bool = True) -> None:
        """Start everything and wait until it is usable (raises ControlPlaneError)."""
        t0 = time.monotonic()
        try:
            self._prepare()
            self.timings["certificates"] = time.monotonic() - t0
            self.start_etcd()
            self.start_apiserver()
            self.start_controller_manager()
            if scheduler:
                self.start_scheduler()
        except BaseException:
            self.timings["total"] = time.monotonic() - t0
            self.stop(keep=True)
            raise
        self.timings["total"] = time.monotonic() - t0
        self._log(
            f"up in {self.timings['total']:.1f}s at {self.server} "
            f"(kubeconfig {self.admin_kubeconfig}): "
            + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "total")
        )

    def _prepare(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        pki = _Pki(self.pki_dir)
        pki.make_ca()
        self.ca_crt, self.ca_key = pki.ca_crt, pki.ca_key
        self.apiserver_crt, self.apiserver_key = pki.make_cert(
            "apiserver",
            "/CN=kube-apiserver",
            server=True,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", SERVICE_IP),
        )
        self.admin_crt, self.admin_key = pki.make_cert(
            "admin", "/O=system:masters/CN=kubernetes-admin"
        )
        kcm_crt, kcm_key = pki.make_cert("controller-manager", "/CN=system:kube-controller-manager")
        sched_crt, sched_key = pki.make_cert("scheduler", "/CN=system:kube-scheduler")
        # The aggregator's client certificate. Configuring request-header authentication
        # also fills the extension-apiserver-authentication ConfigMap that the scheduler
        # and controller-manager read (they log errors every few seconds without it).
        self.front_proxy_crt, self.front_proxy_key = pki.make_cert(
            "front-proxy-client", "/CN=front-proxy-client"
        )
        self.sa_key, self.sa_pub = pki.make_service_account_keys()
        self._write_kubeconfig(self.admin_kubeconfig, "admin", self.admin_crt, self.admin_key)
        self._write_kubeconfig(
            self.controller_manager_kubeconfig, "controller-manager", kcm_crt, kcm_key
        )
        self._write_kubeconfig(self.scheduler_kubeconfig, "scheduler", sched_crt, sched_key)

    def _write_kubeconfig(self, path: Path, user: str, crt: Path, key: Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fairpack-e2e",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_crt)},
                }
            ],
            "users": [
                {"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}
            ],
            "contexts": [{"name": user, "context": {"cluster": "fairpack-e2e", "user": user}}],
            "current-context": user,
        }
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid kubeconfig YAML
        path.chmod(0o600)

    def stop(self, *, keep: bool | None = None, timeout: float = 10.0) -> None:
        """Terminate every component (SIGTERM, then SIGKILL after `timeout` seconds).

        The work directory (logs, certificates) is removed only if this object created
        it and neither keep nor keep_workdir is set."""
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._terminate(name, timeout)
        keep = self.keep_workdir if keep is None else keep
        if self._own_workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ----------------------------------------------------------------- components

    def _spawn(self, name: str, args: list[str]) -> _Component:
        comp = self._components.get(name)
        if comp is not None and comp.running:
            raise ControlPlaneError(f"{name} is already running")
        comp = comp or _Component(name, args, self.logs_dir / f"{name}.log")
        comp.args = args
        comp.log = open(comp.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        comp.starts += 1
        header = f"\n===== start #{comp.starts} {time.strftime('%H:%M:%S')}: {' '.join(args)}\n"
        comp.log.write(header.encode())
        comp.log.flush()
        comp.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=comp.log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
        )
        self._components[name] = comp
        return comp

    def _terminate(self, name: str, timeout: float = 10.0) -> None:
        comp = self._components.get(name)
        if comp is None:
            return
        if comp.proc is not None:
            if stop_process(comp.proc, timeout):
                self._log(f"{name} ignored SIGTERM for {timeout}s; killed it")
            comp.proc = None
        if comp.log is not None:
            comp.log.close()
            comp.log = None

    def _wait(
        self, name: str, ready: Callable[[], bool], what: str, timeout: float | None = None
    ) -> None:
        comp = self._components[name]
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            if not comp.running:
                code = comp.proc.returncode if comp.proc else None
                raise ControlPlaneError(
                    f"{name} exited with code {code} before {what}\n" + self.log_tail(name, 40)
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name}: timed out after {timeout or self.start_timeout:.0f}s waiting for "
                    f"{what}\n" + self.log_tail(name, 40)
                )
            time.sleep(0.2)

    def _timed(self, key: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[key] = time.monotonic() - t0

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        args = [
            str(self.bin_dir / "etcd"),
            "--name=fairpack-e2e",
            f"--data-dir={self.etcd_data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=fairpack-e2e={peer}",
            "--initial-cluster-state=new",
            # Throw-away data: skip fsync, it is what makes etcd slow on CI disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=2) as resp:
                return bool(json.load(resp).get("health") == "true")

        def run() -> None:
            self._spawn("etcd", args)
            self._wait("etcd", healthy, "/health")

        self._timed("etcd", run)

    def _apiserver_args(self) -> list[str]:
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={self.apiserver_crt}",
            f"--tls-private-key-file={self.apiserver_key}",
            f"--client-ca-file={self.ca_crt}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            "--authorization-mode=Node,RBAC",
            f"--requestheader-client-ca-file={self.ca_crt}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.front_proxy_crt}",
            f"--proxy-client-key-file={self.front_proxy_key}",
            f"--disable-admission-plugins={','.join(DISABLED_ADMISSION_PLUGINS)}",
            # 127.0.0.1 is not a valid Endpoints address: do not maintain the `kubernetes`
            # Service's endpoints (nothing in the cluster runs pods that would use them).
            "--endpoint-reconciler-type=none",
            # On SIGTERM, drain and then give open watches 2 s instead of --request-timeout
            # (60 s): restart_apiserver() is quick while the scheduler is still watching.
            "--shutdown-send-retry-after=true",
            "--profiling=false",
            *self.extra_apiserver_args,
        ]

    def start_apiserver(self) -> None:
        def run() -> None:
            self._spawn("kube-apiserver", self._apiserver_args())
            self._wait("kube-apiserver", lambda: self._get_status("/readyz") == 200, "/readyz")

        self._timed("kube-apiserver", run)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver (SIGTERM) and start it again on the same port and etcd."""
        self.stop_apiserver()
        self.start_apiserver()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (SIGTERM); start_apiserver() brings it back on the same port."""
        self._terminate("kube-apiserver")

    def start_controller_manager(self) -> None:
        kc = str(self.controller_manager_kubeconfig)
        args = [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.controller_manager_port}",
            "--leader-elect=false",
            "--controllers=*," + ",".join(f"-{c}" for c in DISABLED_CONTROLLERS),
            # Each controller acts as its own service account (as kubeadm does): the
            # system:kube-controller-manager role alone may not, e.g., create pods.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.sa_key}",
            f"--root-ca-file={self.ca_crt}",
            f"--cluster-signing-cert-file={self.ca_crt}",
            f"--cluster-signing-key-file={self.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            *self.extra_controller_manager_args,
        ]

        def run() -> None:
            self._spawn("kube-controller-manager", args)
            self._wait(
                "kube-controller-manager",
                lambda: _https_status(self.controller_manager_port, "/healthz") == 200,
                "/healthz",
            )
            # The service-account controller works once `default` has its ServiceAccount;
            # pods are rejected by the ServiceAccount admission plugin until then.
            self._wait(
                "kube-controller-manager",
                lambda: (
                    self._get_status("/api/v1/namespaces/default/serviceaccounts/default") == 200
                ),
                "the default ServiceAccount",
            )

        self._timed("kube-controller-manager", run)

    # ------------------------------------------------------------------ scheduler

    def scheduler_config(
        self,
        *,
        extenders: Iterable[Mapping[str, Any]] | None = None,
        profiles: Iterable[Mapping[str, Any]] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) for this cluster:
        the scheduler's kubeconfig, no leader election, plus the given fields."""
        config: dict[str, Any] = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(self.scheduler_kubeconfig)},
            "leaderElection": {"leaderElect": False},
        }
        if extenders is not None:
            config["extenders"] = [dict(e) for e in extenders]
        if profiles is not None:
            config["profiles"] = [dict(p) for p in profiles]
        config.update(fields)
        return config

    def write_scheduler_config(
        self, config: Mapping[str, Any] | None = None, name: str = "scheduler-config", **kw: Any
    ) -> Path:
        """Write a scheduler config file (default: scheduler_config(**kw)); returns its path."""
        path = self.workdir / f"{name}.yaml"
        path.write_text(json.dumps(dict(config or self.scheduler_config(**kw)), indent=2) + "\n")
        return path

    def _complete_scheduler_config(self, path: Path) -> Path:
        """The scheduler ignores --kubeconfig when --config is given: make sure the file
        names the scheduler's kubeconfig and disables leader election (a restarted
        scheduler would otherwise wait for the previous one's lease)."""
        import yaml  # PyYAML: a dependency of kubernetes_asyncio

        config = yaml.safe_load(path.read_text()) or {}
        conn = config.setdefault("clientConnection", {})
        election = config.setdefault("leaderElection", {})
        if conn.get("kubeconfig") and "leaderElect" in election:
            return path
        conn.setdefault("kubeconfig", str(self.scheduler_kubeconfig))
        election.setdefault("leaderElect", False)
        completed = self.workdir / f"{path.stem}.completed.yaml"
        completed.write_text(json.dumps(config, indent=2) + "\n")
        return completed

    def start_scheduler(
        self, config_path: str | os.PathLike[str] | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        """(Re)start kube-scheduler with a KubeSchedulerConfiguration file and wait until it
        is ready. Without a path: scheduler_config() defaults. A running scheduler is
        stopped first, so tests can switch extender configurations."""
        self.stop_scheduler()
        path = Path(config_path) if config_path else self.write_scheduler_config()
        path = self._complete_scheduler_config(path)
        self.scheduler_config_path = path
        kc = str(self.scheduler_kubeconfig)
        args = [
            str(self.bin_dir / "kube-scheduler"),
            f"--config={path}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.scheduler_port}",
            *extra_args,
        ]

        def run() -> None:
            self._spawn("kube-scheduler", args)
            # /readyz includes "sched-handler-sync": informers synced, handlers registered.
            self._wait(
                "kube-scheduler",
                lambda: _https_status(self.scheduler_port, "/readyz") == 200,
                "/readyz",
            )

        self._timed("kube-scheduler", run)

    def stop_scheduler(self) -> None:
        self._terminate("kube-scheduler")

    # ------------------------------------------------------------------ API access

    def _ssl(self) -> ssl.SSLContext:
        if self._admin_ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_crt))
            ctx.load_cert_chain(str(self.admin_crt), str(self.admin_key))
            self._admin_ssl = ctx
        return self._admin_ssl

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """A request to kube-apiserver as cluster admin: (HTTP status, decoded JSON or text).
        Does not raise on HTTP errors."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            with err:
                status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def api(self, method: str, path: str, body: Any = None, *, ok: Iterable[int] = ()) -> Any:
        """Like request() but raises ControlPlaneError unless the status is 2xx (or in ok)."""
        status, result = self.request(method, path, body)
        if not (200 <= status < 300 or status in set(ok)):
            raise ControlPlaneError(f"{method} {path}: HTTP {status}: {result}")
        return result

    def _get_status(self, path: str) -> int:
        return self.request("GET", path, timeout=5)[0]

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as cluster admin against this control plane."""
        kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl"
        proc = subprocess.run(
            [kubectl, f"--kubeconfig={self.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def env(self) -> dict[str, str]:
        """Environment for child processes that should talk to this cluster (KUBECONFIG)."""
        return {**os.environ, "KUBECONFIG": str(self.admin_kubeconfig)}

    # ------------------------------------------------------------------ logs

    def log_tail(self, name: str, lines: int = 30) -> str:
        comp = self._components.get(name)
        path = comp.log_path if comp else self.logs_dir / f"{name}.log"
        try:
            text = path.read_bytes()[-200_000:].decode(errors="replace")
        except OSError:
            return f"----- {name}: no log\n"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"----- {name} ({path}), last {lines} lines:\n{tail}\n"

    def dump_logs(self, lines: int = 30, file: IO[str] | None = None) -> str:
        """The tail of every component's log; also printed to `file` if given."""
        text = f"control plane work dir: {self.workdir}\n" + "".join(
            self.log_tail(name, lines) for name in self._components
        )
        if file is not None:
            print(text, file=file)
        return text


class WaitError(AssertionError, TimeoutError):
    """A wait timed out; the message says what it waited for and the state it found.

    An AssertionError, so that pytest reports it as a failed expectation, and a TimeoutError,
    so that a caller may ``contextlib.suppress(TimeoutError)`` a wait that may run out."""


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "",
    describe: Callable[[], str] | None = None,
) -> Any:
    """predicate()'s first truthy value, polled every ``interval`` s; after ``timeout`` s a
    WaitError naming ``what`` (else the predicate) followed by describe(), if given."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.0f}s waiting for {what or predicate}"
            if describe is not None:
                message += f"\n{describe()}"
            raise WaitError(message)
        time.sleep(interval)


def _https_status(port: int, path: str) -> int:
    """GET https://127.0.0.1:port/path without verifying the (self-signed, in-memory)
    serving certificate of kube-controller-manager / kube-scheduler."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        with err:
            return err.code
