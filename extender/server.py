"""Running the service: over a live cluster, or over a static node inventory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from extender.app import create_app
from extender.config import LiveConfig
from extender.metrics import Metrics
from extender.service import Extender, ViewOnlyBinder
from extender.view import KINDS, ClusterView
from scoring import NodeSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    port: int = 8888
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    """With a CA, clients must present a certificate it signed (mutual TLS)."""


def ssl_context(options: ServeOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    if options.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(options.client_ca)
    return context


def inventory_extender(nodes: Sequence[NodeSpec], metrics: Metrics | None = None) -> Extender:
    """A service over a fixed node list: binds update the view only (no API server)."""
    metrics = metrics or Metrics()
    config = LiveConfig(on_reload=lambda result: metrics.config_reloads.labels(result).inc())
    extender = Extender(ClusterView(nodes), config, ViewOnlyBinder(), metrics)
    metrics.watch_view(extender.view, lambda: extender.fragments.aggregates)
    return extender


async def _serve_until_stopped(app: web.Application, options: ServeOptions) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, ssl_context=ssl_context(options))
    await site.start()
    log.info("fairpack listening on %s:%d", options.host, options.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def serve_inventory(nodes: Sequence[NodeSpec], options: ServeOptions) -> None:
    extender = inventory_extender(nodes)
    log.info("serving a static inventory of %d nodes", len(nodes))
    await _serve_until_stopped(create_app(extender), options)


async def serve_cluster(
    options: ServeOptions,
    *,
    configmap: tuple[str, str] | None,
    kubeconfig: str | None = None,
) -> None:
    """List+watch the cluster, serve the extender, bind through the API server."""
    from kubernetes_asyncio import client, config

    from extender.watch import KubeBinder, KubeSource, Reflector, ViewFeed

    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
    metrics = Metrics()
    live = LiveConfig(on_reload=lambda result: metrics.config_reloads.labels(result).inc())
    view = ClusterView(required_kinds=KINDS)
    async with client.ApiClient() as api:
        extender = Extender(view, live, KubeBinder(api), metrics)
        metrics.watch_view(view, lambda: extender.fragments.aggregates)
        source = KubeSource(api, configmap)
        feed = ViewFeed(view, live, metrics)
        reflectors = [
            Reflector(source, resource, feed.sink(resource), metrics, clock=view.clock)
            for resource in source.resources
        ]
        tasks = [asyncio.create_task(r.run(), name=f"watch-{r.resource}") for r in reflectors]
        try:
            await _serve_until_stopped(create_app(extender), options)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
