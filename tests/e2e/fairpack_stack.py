"""fairpack on a ControlPlane: ``fairpack serve`` plus a second kube-scheduler running the
shipped KubeSchedulerConfiguration (manifests/scheduler/kube-scheduler-config.yaml).

This is the production topology on loopback: the default scheduler keeps the pods of every
other scheduler name, and the ``fairpack-scheduler`` kube-scheduler calls fairpack at
``http://127.0.0.1:PORT`` as its sidecar would. The shipped file is loaded as it is; only
what differs in a throw-away cluster is rewritten: the extender's port, the kubeconfig and
leader election.

Independent of pytest (``fairpack bench kube`` uses it too)::

    stack = FairpackStack(cp)
    stack.start()              # fairpack serve (until /readyz), then its kube-scheduler
    stack.debug_state()
    stack.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from .controlplane import (
    ControlPlane,
    ControlPlaneError,
    _https_status,
    _set_pdeathsig,
    free_ports,
    stop_process,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_SCHEDULER_CONFIG = REPO / "manifests" / "scheduler" / "kube-scheduler-config.yaml"
FAIRPACK_SCHEDULER = "fairpack-scheduler"


def fairpack_command() -> list[str]:
    """``.venv/bin/fairpack`` next to this interpreter, else ``python -m extender.cli``."""
    script = Path(sys.executable).with_name("fairpack")
    if os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "extender.cli"]


class Process:
    """One child process with its log file (appended to across restarts)."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> None:
        if self.running:
            raise ControlPlaneError(f"{self.name} is already running")
        self.starts += 1
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(
            f"\n===== start #{self.starts} {time.strftime('%H:%M:%S')}: {' '.join(args)}\n".encode()
        )
        self._log.flush()
        self.proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait_until(self, ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                code = self.proc.returncode if self.proc else None
                raise ControlPlaneError(
                    f"{self.name} exited with code {code} before {what}\n" + self.tail(40)
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{self.name}: timed out after {timeout:.0f}s waiting for {what}\n"
                    + self.tail(40)
                )
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_bytes()[-200_000:].decode(errors="replace")
        except OSError:
            return f"----- {self.name}: no log\n"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"----- {self.name} ({self.log_path}), last {lines} lines:\n{tail}\n"


class FairpackStack:
    """``fairpack serve`` and the fairpack-scheduler kube-scheduler on a running ControlPlane.

    scheduler_config_path: the KubeSchedulerConfiguration to run (default: the shipped one).
    log_level: fairpack's --log-level.
    """

    def __init__(
        self,
        cp: ControlPlane,
        *,
        scheduler_config_path: Path = SHIPPED_SCHEDULER_CONFIG,
        log_level: str = "INFO",
        ready_timeout: float = 60.0,
    ) -> None:
        self.cp = cp
        self.scheduler_config_path = scheduler_config_path
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.port, self.scheduler_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.port}"
        self.fairpack = Process("fairpack", cp.logs_dir / "fairpack.log")
        self.scheduler = Process(FAIRPACK_SCHEDULER, cp.logs_dir / "fairpack-scheduler.log")
        self.running_scheduler_config: dict[str, Any] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.start_fairpack()
            self.start_scheduler()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.stop_scheduler()
        self.stop_fairpack()

    def start_fairpack(self) -> None:
        """Start ``fairpack serve`` against the control plane and wait for /readyz (its view
        has listed every kind)."""
        args = [
            *fairpack_command(),
            "serve",
            f"--kubeconfig={self.cp.admin_kubeconfig}",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--log-level={self.log_level}",
        ]
        self.fairpack.start(args, cwd=REPO)
        self.fairpack.wait_until(
            lambda: self.get("/readyz", timeout=2)[0] == 200, "/readyz", self.ready_timeout
        )

    def stop_fairpack(self) -> None:
        self.fairpack.stop()

    def restart_fairpack(self) -> None:
        """A fresh process: an empty view relisted from the API server, no learned shapes."""
        self.stop_fairpack()
        self.start_fairpack()

    def scheduler_config(self, *, extender: bool = True, **overrides: Any) -> dict[str, Any]:
        """The shipped configuration for this cluster: the extender at our port, the
        scheduler's kubeconfig, leader election off; top-level ``overrides`` merged in (a
        value None removes the key). Without ``extender``, the same file minus its
        extenders (the throughput baseline)."""
        config: dict[str, Any] = yaml.safe_load(self.scheduler_config_path.read_text())
        connection = config.setdefault("clientConnection", {})
        connection["kubeconfig"] = str(self.cp.scheduler_kubeconfig)
        # One scheduler per throw-away cluster: keep the shipped lease settings (they are
        # still validated) but do not wait for a lease.
        config.setdefault("leaderElection", {})["leaderElect"] = False
        if extender:
            for entry in config.get("extenders") or []:
                entry["urlPrefix"] = self.url
        else:
            config.pop("extenders", None)
        for key, value in overrides.items():
            if value is None:
                config.pop(key, None)
            elif isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def start_scheduler(
        self, config: Mapping[str, Any] | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        """(Re)start the fairpack-scheduler kube-scheduler (default: scheduler_config())."""
        self.stop_scheduler()
        document = dict(config) if config is not None else self.scheduler_config()
        path = self.cp.workdir / f"fairpack-scheduler-{self.scheduler.starts + 1}.yaml"
        path.write_text(json.dumps(document, indent=2) + "\n")
        kubeconfig = str(self.cp.scheduler_kubeconfig)
        args = [
            str(self.cp.bin_dir / "kube-scheduler"),
            f"--config={path}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.scheduler_port}",
            *extra_args,
        ]
        self.scheduler.start(args, cwd=self.cp.workdir)
        self.running_scheduler_config = document
        self.scheduler.wait_until(
            lambda: _https_status(self.scheduler_port, "/readyz") == 200,
            "/readyz",
            self.ready_timeout,
        )

    def stop_scheduler(self) -> None:
        self.scheduler.stop()
        self.running_scheduler_config = None

    def log_tails(self, lines: int = 40) -> str:
        return self.fairpack.tail(lines) + self.scheduler.tail(lines)

    # -- fairpack's HTTP endpoints ------------------------------------------------------------

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        """GET ``path`` from fairpack: (status, decoded JSON or text). Raises on no answer."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            with err:
                status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def post(self, path: str, body: Any, timeout: float = 10.0) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode(errors="replace")

    def debug_state(self) -> dict[str, Any]:
        status, body = self.get("/debug/state")
        if status != 200:
            raise ControlPlaneError(f"fairpack /debug/state: HTTP {status}: {body}")
        return dict(body)

    def explain(self, namespace: str, name: str) -> dict[str, Any] | None:
        """fairpack's last decision for the pod, or None when it has none."""
        status, body = self.get(f"/debug/explain?pod={namespace}/{name}")
        return dict(body) if status == 200 else None

    def metrics(self) -> dict[str, float]:
        """fairpack's /metrics as {"name{labels}": value} (Prometheus text format)."""
        status, text = self.get("/metrics")
        if status != 200:
            raise ControlPlaneError(f"fairpack /metrics: HTTP {status}")
        samples: dict[str, float] = {}
        for line in str(text).splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
        return samples
