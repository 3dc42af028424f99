"""Running the service: over a live cluster, or over a static node inventory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from extender.app import create_app
from extender.config import LiveConfig
from extender.metrics import Metrics
from extender.service import Extender, ViewOnlyBinder
from extender.view import KINDS, ClusterView
from extender.watch import freeze_the_heap
from extender.webhook import WebhookConfig
from scoring import NodeSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookListener:
    port: int
    tls_cert: Path
    tls_key: Path
    host: str = "0.0.0.0"
    config: WebhookConfig = field(default_factory=WebhookConfig)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    port: int = 8888
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    """With a CA, clients must present a certificate it signed (mutual TLS)."""
    webhook: WebhookListener | None = None
    """A second, HTTPS listener with only health, metrics and the admission webhooks."""


CERT_RELOAD_INTERVAL_S = 30.0


class ServeError(Exception):
    """What keeps the service from starting, in one line that says what to change."""


def _load(what: str, paths: Sequence[Path | None], load: Any) -> None:
    for path in paths:
        if path is not None and not path.is_file():
            raise ServeError(f"{what}: {path}: no such file")
    try:
        load()
    except (OSError, ssl.SSLError) as exc:
        names = " and ".join(str(p) for p in paths if p is not None)
        raise ServeError(f"{what}: cannot load {names} ({exc}); give PEM files") from None


def server_context(cert: Path, key: Path | None, what: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(what, (cert, key), lambda: context.load_cert_chain(cert, key))
    return context


def ssl_context(options: ServeOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None:
        return None
    context = server_context(options.tls_cert, options.tls_key, "--tls-cert/--tls-key")
    if options.client_ca is not None:
        client_ca = options.client_ca
        context.verify_mode = ssl.CERT_REQUIRED
        _load("--client-ca", (client_ca,), lambda: context.load_verify_locations(client_ca))
    return context


async def _listen(site: web.TCPSite, host: str, port: int, flags: str) -> None:
    try:
        await site.start()
    except OSError as exc:  # in use, a privileged port, an unknown host
        raise ServeError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); check {flags}"
        ) from None


def _mtimes(*paths: Path | None) -> tuple[int, ...]:
    return tuple(p.stat().st_mtime_ns if p is not None else 0 for p in paths)


async def reload_certificates(
    context: ssl.SSLContext,
    cert: Path,
    key: Path | None,
    interval_s: float = CERT_RELOAD_INTERVAL_S,
) -> None:
    """Load a renewed certificate into ``context`` (new connections use it) until cancelled.

    A Secret volume (cert-manager's renewals) swaps the files in place; without this, a
    long-running pod would serve its first certificate until it expired.
    """
    seen = _mtimes(cert, key)
    while True:
        await asyncio.sleep(interval_s)
        try:
            current = _mtimes(cert, key)
            if current != seen:
                context.load_cert_chain(cert, key)
                seen = current
                log.info("reloaded the TLS certificate %s", cert)
        except (OSError, ssl.SSLError) as exc:  # half-written during a swap: next round
            log.warning("TLS certificate %s not reloaded yet: %s", cert, exc)


def inventory_extender(nodes: Sequence[NodeSpec], metrics: Metrics | None = None) -> Extender:
    """A service over a fixed node list: binds update the view only (no API server)."""
    metrics = metrics or Metrics()
    config = LiveConfig(on_reload=metrics.config_reloaded)
    extender = Extender(ClusterView(nodes), config, ViewOnlyBinder(), metrics)
    metrics.watch_view(extender.view, lambda: extender.fragments.aggregates)
    return extender


async def _serve_until_stopped(
    app: web.Application, options: ServeOptions, public: web.Application | None = None
) -> None:
    runners: list[web.AppRunner] = []
    reloads: list[asyncio.Task[None]] = []
    try:
        runner = web.AppRunner(app, access_log=None)
        runners.append(runner)
        await runner.setup()
        context = ssl_context(options)
        site = web.TCPSite(runner, options.host, options.port, ssl_context=context)
        await _listen(site, options.host, options.port, "--host and --port")
        if context is not None and options.tls_cert is not None:
            reloads.append(
                asyncio.create_task(reload_certificates(context, options.tls_cert, options.tls_key))
            )
        log.info("fairpack listening on %s:%d", options.host, options.port)
        webhook = options.webhook
        if public is not None and webhook is not None:
            public_runner = web.AppRunner(public, access_log=None)
            runners.append(public_runner)
            await public_runner.setup()
            public_context = server_context(
                webhook.tls_cert, webhook.tls_key, "--webhook-tls-cert/--webhook-tls-key"
            )
            public_site = web.TCPSite(
                public_runner, webhook.host, webhook.port, ssl_context=public_context
            )
            await _listen(
                public_site, webhook.host, webhook.port, "--webhook-host and --webhook-port"
            )
            reloads.append(
                asyncio.create_task(
                    reload_certificates(public_context, webhook.tls_cert, webhook.tls_key)
                )
            )
            log.info("webhooks, health and metrics on https://%s:%d", webhook.host, webhook.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        for task in reloads:
            task.cancel()
        await asyncio.gather(*reloads, return_exceptions=True)
        for runner in reversed(runners):
            await runner.cleanup()


def _apps(
    extender: Extender, options: ServeOptions
) -> tuple[web.Application, web.Application | None]:
    """The main app (verbs and all) and, with a webhook listener, the public one."""
    webhook = options.webhook
    if webhook is None:
        return create_app(extender), None
    return (
        create_app(extender, webhook=webhook.config),
        create_app(extender, webhook=webhook.config, public=True),
    )


async def serve_inventory(nodes: Sequence[NodeSpec], options: ServeOptions) -> None:
    extender = inventory_extender(nodes)
    freeze_the_heap()  # as the live path does after its first sync
    log.info("serving a static inventory of %d nodes", len(nodes))
    app, public = _apps(extender, options)
    await _serve_until_stopped(app, options, public)


def skip_env_lookups(api: Any) -> bool:
    """Stop kubernetes-asyncio's session looking up proxies and netrc on every request.

    Its aiohttp session trusts the environment, so every request (a bind per pod)
    looks for a proxy and a netrc entry on a worker thread: two thread hand-offs
    on the event loop's critical path, a tenth of fairpack's busy time under
    kube-scheduler at 1,000 nodes (py-spy).  When aiohttp's own lookups (the
    same functions, asked once here) find neither, they are switched off;
    otherwise they stay.  Returns whether they were switched off.
    """
    from urllib.request import getproxies

    from aiohttp.helpers import netrc_from_env

    if any(scheme in ("http", "https", "ws", "wss") for scheme in getproxies()):
        return False
    if netrc_from_env() is not None:
        return False
    session = api.rest_client.pool_manager
    if not hasattr(session, "_trust_env"):  # a future aiohttp: leave it be
        log.info("aiohttp session has no _trust_env; proxy and netrc lookups stay on")
        return False
    session._trust_env = False
    return True


async def serve_cluster(
    options: ServeOptions,
    *,
    configmap: tuple[str, str] | None,
    kubeconfig: str | None = None,
) -> None:
    """List+watch the cluster, serve the extender, bind through the API server."""
    from kubernetes_asyncio import client, config

    from extender.watch import (
        KubeBinder,
        KubeRequeuer,
        KubeSource,
        Reflector,
        ViewFeed,
        relist_when_reading_changes,
    )

    default = os.environ.get("KUBECONFIG") or "~/.kube/config"  # as the client reads it
    try:
        if kubeconfig:
            if not Path(kubeconfig).is_file():
                raise ServeError(f"--kubeconfig {kubeconfig}: no such file")
            await config.load_kube_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                if not any(Path(p).expanduser().is_file() for p in default.split(os.pathsep)):
                    raise ServeError(
                        f"no cluster to serve: not in a pod, and no kubeconfig at {default};"
                        " give --kubeconfig, or --inventory NODES.csv"
                    ) from None
                await config.load_kube_config()
    except ServeError:
        raise
    except Exception as exc:  # the client's errors for a bad file are of many kinds
        where = kubeconfig or f"{default} (not in a pod)"
        reason = " ".join(str(exc).split())  # a YAML error spans lines
        raise ServeError(
            f"no cluster to serve: {where}: {reason}; give --kubeconfig, or --inventory NODES.csv"
        ) from None
    metrics = Metrics()
    live = LiveConfig(on_reload=metrics.config_reloaded)
    # Ready only once the policy ConfigMap was listed too: until then the built-in defaults
    # (GPU resource names, label keys, weights) would decide.
    view = ClusterView(required_kinds=(*KINDS, "configmap") if configmap is not None else KINDS)
    async with client.ApiClient() as api:
        skip_env_lookups(api)
        extender = Extender(view, live, KubeBinder(api), metrics, requeuer=KubeRequeuer(api))
        metrics.watch_view(view, lambda: extender.fragments.aggregates)
        source = KubeSource(api, configmap)
        feed = ViewFeed(view, live, metrics)
        reflectors = [
            Reflector(source, resource, feed.sink(resource), metrics, clock=view.clock)
            for resource in source.resources
        ]
        relist_when_reading_changes(live, reflectors, view)
        tasks = [asyncio.create_task(r.run(), name=f"watch-{r.resource}") for r in reflectors]
        tasks.append(asyncio.create_task(extender.requeue_lifted_holds(), name="requeue"))
        try:
            app, public = _apps(extender, options)
            await _serve_until_stopped(app, options, public)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
