"""List+watch of the cluster into view events, and the binder (kubernetes-asyncio).

The Kubernetes I/O is two small pieces: :class:`KubeSource` lists pages and
streams watch events as plain dicts (no client model objects: the bodies are
parsed with orjson), and :class:`KubeBinder` posts a pod's ``binding``.  A
:class:`Reflector` per resource turns a source into events for the view: list,
then watch from the list's resourceVersion; resume from the last resourceVersion
when a watch ends; relist on ``410 Gone``; back off on errors.  Reflectors are
tested with an in-memory source.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import orjson

from extender.config import FairpackConfig, LiveConfig
from extender.errors import BindError, FairpackError, ObjectError
from extender.metrics import Metrics
from extender.objects import (
    namespace_info,
    node_spec,
    pod_info,
    priority_class_info,
    quota_info,
)
from extender.view import ClusterView, Deleted, Kind, Record, Replaced, Upserted
from extender.wire import Node, Pod

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
LIST_TIMEOUT_S = 60
"""Per list page (the API server answers a page of 500 in well under a second)."""
WATCH_TIMEOUT_S = (300, 600)
"""Each watch asks the server to end it after a random time in this range."""
SHORT_WATCH_S = 1.0
"""A watch that ends sooner than this without an event counts as failed (backoff)."""
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class GoneError(FairpackError):
    """410 Gone: the resourceVersion is too old; the resource must be listed again."""


class SourceError(FairpackError):
    """A list or watch request failed; retried with backoff."""


class _CollectorPause:
    """Python's cyclic garbage collector off while lists are read.

    A list of 100,000 pods allocates millions of objects (the parsed pages, the
    records), and each allocation burst sets off collections that walk the
    whole growing heap: a third of the sync time at 40,000 pods (``fairpack bench
    view``).  The records hold no reference cycles, so nothing waits for the
    collector meanwhile.  When the last concurrent list ends, the collector comes
    back; after the first complete sync it collects once and moves everything
    then alive (the view) to the permanent generation (``gc.freeze``), so later
    collections, between requests, no longer walk it.  A list that fails or is
    cancelled only turns the collector back on.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._was_enabled = False
        self._frozen = False

    def __enter__(self) -> None:
        if self._depth == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
        self._depth += 1

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._depth -= 1
        if self._depth or not self._was_enabled:
            return
        if exc_type is None and not self._frozen:
            freeze_the_heap()
            self._frozen = True
        gc.enable()


def freeze_the_heap() -> None:
    """Collect once, then move everything alive (the view just built) to the permanent
    generation: later collections, between requests, no longer walk it.  Over 120,000
    objects of a 5,000-node inventory, a full collection took 50 to 70 ms, inside
    whichever request set it off."""
    gc.collect()  # nothing unreachable goes to the permanent generation
    gc.freeze()


collector_paused = _CollectorPause()
"""Shared by every reflector (they list concurrently at start-up) and the view benchmark."""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str | None


class Source(Protocol):
    """Where a reflector reads one resource from."""

    async def list(self, resource: str, continue_token: str | None) -> Page: ...

    def watch(self, resource: str, resource_version: str) -> AsyncIterator[dict[str, Any]]: ...


# -- translation: API objects to view records ---------------------------------------------------


def translate(kind: Kind, obj: Mapping[str, Any], config: FairpackConfig) -> Record:
    if kind == "node":
        return node_spec(Node.model_validate(obj), config)
    if kind == "pod":
        return pod_info(Pod.model_validate(obj), config)
    if kind == "namespace":
        return namespace_info(obj, config)
    if kind == "quota":
        return quota_info(obj, config)
    return priority_class_info(obj)


def object_key(kind: Kind, obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    if kind == "pod":
        return str(metadata.get("uid", ""))
    if kind == "quota":
        return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    return str(metadata.get("name", ""))


# -- reflectors ----------------------------------------------------------------------------------


class Sink(Protocol):
    """Where one resource's objects go: translated page by page, so a list of
    100,000 pods never sits in memory as API objects."""

    def translate(self, obj: dict[str, Any]) -> Any | None: ...

    def replaced(self, records: list[Any], listed_at_s: float) -> None: ...

    def upserted(self, obj: dict[str, Any]) -> None: ...

    def deleted(self, obj: dict[str, Any]) -> None: ...


class Reflector:
    """Keeps one resource flowing into its sink: list, watch, resume, relist, back off."""

    def __init__(
        self,
        source: Source,
        resource: str,
        sink: Sink,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.source = source
        self.resource = resource
        self._sink = sink
        self._metrics = metrics
        self._clock = clock
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self._cycle: asyncio.Future[None] | None = None
        self._relisting = False
        self._events = 0
        """Events handled by the current list-and-watch cycle."""
        self._synced(False)

    def relist(self) -> None:
        """List again now, dropping the list or watch in progress: what was read was
        translated under a config that no longer holds (resource names, label keys)."""
        self.resource_version = None
        if self._cycle is not None and not self._cycle.done():
            self._relisting = True
            self._cycle.cancel()

    async def run(self) -> None:
        backoff_s = self._backoff_initial_s
        while True:
            try:
                self._events = 0
                self._cycle = asyncio.ensure_future(self._list_and_watch())
                try:
                    await self._cycle
                finally:
                    self._cycle = None
                    if self._events:
                        backoff_s = self._backoff_initial_s
                # The server ended the watch (its timeout): resume where it stopped.
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self._relisting or (task is not None and task.cancelling()):
                    raise
                self._relisting = False
                self.resource_version = None
                log.info(
                    "%s: the config changed how objects are read, listing again", self.resource
                )
            except GoneError:
                log.info("%s: resourceVersion expired, listing again", self.resource)
                self._metrics.watch_restarts.labels(self.resource, "relist").inc()
                self._synced(False)
                self.resource_version = None
            except Exception as exc:
                self._metrics.watch_restarts.labels(self.resource, "error").inc()
                self._synced(False)
                delay_s = backoff_s * random.uniform(0.5, 1.0)
                log.warning("%s: %s; retrying in %.1f s", self.resource, exc, delay_s)
                await asyncio.sleep(delay_s)
                backoff_s = min(backoff_s * 2, self._backoff_max_s)

    async def _list_and_watch(self) -> None:
        """List if needed, then watch until the watch ends."""
        if self.resource_version is None:
            await self._list()
        loop = asyncio.get_running_loop()
        started_s = loop.time()
        # Flowing again (after an error) once an event comes, or the watch lasts: a quiet
        # resource may send none for minutes.
        lasted = loop.call_later(SHORT_WATCH_S, self._synced, True)
        try:
            async for event in self.source.watch(self.resource, self.resource_version or ""):
                self._handle(event)
                if not self._events:
                    self._synced(True)
                self._events += 1
        finally:
            lasted.cancel()
        if not self._events and loop.time() - started_s < SHORT_WATCH_S:
            # Ended at once with nothing (a proxy, a server going away): back off
            # as on an error, not reconnect at full speed (client-go does the same).
            raise SourceError("watch ended at once without an event")

    async def _list(self) -> None:
        listed_at_s = self._clock()
        records: list[Any] = []
        token: str | None = None
        with collector_paused:
            while True:
                page = await self.source.list(self.resource, token)
                translate = self._sink.translate
                records.extend(r for obj in page.items if (r := translate(obj)) is not None)
                token = page.continue_token
                if not token:
                    break
            self._sink.replaced(records, listed_at_s)
        self.resource_version = page.resource_version
        self._synced(True)
        self.synced.set()

    def _synced(self, synced: bool) -> None:
        self._metrics.watch_synced.labels(self.resource).set(1 if synced else 0)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise GoneError(obj.get("message", "gone"))
            raise SourceError(f"watch error {obj.get('code')}: {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._metrics.watch_events.labels(self.resource, kind).inc()
            self._sink.upserted(obj)
        elif kind == "DELETED":
            self._metrics.watch_events.labels(self.resource, kind).inc()
            self._sink.deleted(obj)
        if version:
            self.resource_version = version


class ViewFeed:
    """The sinks of every resource: the view's kinds, and the policy ConfigMap.

    Objects that cannot be read are logged, counted and skipped, never fatal.
    """

    def __init__(self, view: ClusterView, config: LiveConfig, metrics: Metrics) -> None:
        self.view = view
        self.config = config
        self.metrics = metrics

    def sink(self, resource: str) -> Sink:
        if resource == "configmap":
            return _ConfigSink(self.config, lambda: self.view.listed(resource))
        return _ViewSink(self, resource)  # type: ignore[arg-type]

    def list(self, resource: str, objects: list[dict[str, Any]], listed_at_s: float = 0.0) -> None:
        """A whole list at once (tests, benchmarks); reflectors go page by page."""
        sink = self.sink(resource)
        sink.replaced([r for obj in objects if (r := sink.translate(obj)) is not None], listed_at_s)


def relist_when_reading_changes(
    config: LiveConfig, reflectors: list[Reflector], view: ClusterView | None = None
) -> None:
    """List the view's kinds again whenever the config changes how their objects are read
    (the GPU resource names, node label keys, pod rules): the view keeps records, not
    objects, and what was read under the old config (the built-in defaults, at start-up,
    until the policy ConfigMap's list lands) would otherwise stay until each object
    changes; a running pod rarely does.  Not ready yet, ``view`` waits for those lists too."""
    reading = _reading(config.current)

    def changed(new: FairpackConfig) -> None:
        nonlocal reading
        if _reading(new) == reading:
            return
        reading = _reading(new)
        for reflector in reflectors:
            if reflector.resource in ("node", "pod", "namespace", "quota"):
                if view is not None:
                    view.relisting(reflector.resource)
                reflector.relist()

    config.subscribe(changed)


def _reading(config: FairpackConfig) -> tuple[object, ...]:
    return (config.nodes, config.resources, config.pods)


class _ViewSink:
    def __init__(self, feed: ViewFeed, kind: Kind) -> None:
        self._feed = feed
        self._kind = kind

    def translate(self, obj: dict[str, Any]) -> Record | None:
        try:
            return translate(self._kind, obj, self._feed.config.current)
        except (ObjectError, ValueError) as exc:
            # pydantic's ValidationError is a ValueError; PodRequest refuses nonsense the same way.
            name = object_key(self._kind, obj)
            log.warning("skipping %s %s: %s", self._kind, name, " ".join(str(exc).split())[:300])
            self._feed.metrics.object_errors.labels(self._kind).inc()
            return None

    def replaced(self, records: list[Any], listed_at_s: float) -> None:
        self._feed.view.apply(Replaced(self._kind, records, listed_at_s))

    def upserted(self, obj: dict[str, Any]) -> None:
        record = self.translate(obj)
        if record is not None:
            self._feed.view.apply(Upserted(self._kind, record))

    def deleted(self, obj: dict[str, Any]) -> None:
        self._feed.view.apply(Deleted(self._kind, object_key(self._kind, obj)))


class _ConfigSink:
    def __init__(self, config: LiveConfig, listed: Callable[[], None]) -> None:
        self._config = config
        self._listed = listed

    def translate(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    def replaced(self, records: list[Any], listed_at_s: float) -> None:
        if records:
            self.upserted(records[0])
        else:
            log.warning(
                "policy ConfigMap not found; the config in force stays "
                "(at start, the built-in defaults)"
            )
        self._listed()  # the view is ready once the policy has been read (or is known absent)

    def upserted(self, obj: dict[str, Any]) -> None:
        self._config.update(obj.get("data") or {})

    def deleted(self, obj: dict[str, Any]) -> None:
        log.warning("policy ConfigMap deleted; keeping the config in force")


# -- kubernetes-asyncio --------------------------------------------------------------------------


class KubeSource:
    """Lists and watches over kubernetes-asyncio, reading raw JSON instead of model objects."""

    def __init__(self, api_client: Any, configmap: tuple[str, str] | None = None) -> None:
        from kubernetes_asyncio import client

        core = client.CoreV1Api(api_client)
        scheduling = client.SchedulingV1Api(api_client)
        self._calls: dict[str, Callable[..., Any]] = {
            "node": core.list_node,
            "pod": lambda **kw: core.list_pod_for_all_namespaces(field_selector=ACTIVE_PODS, **kw),
            "namespace": core.list_namespace,
            "quota": core.list_resource_quota_for_all_namespaces,
            "priorityclass": scheduling.list_priority_class,
        }
        if configmap is not None:
            namespace, name = configmap
            self._calls["configmap"] = lambda **kw: core.list_namespaced_config_map(
                namespace, field_selector=f"metadata.name={name}", **kw
            )

    @property
    def resources(self) -> list[str]:
        return list(self._calls)

    async def _request(self, resource: str, **params: Any) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._calls[resource](
                _preload_content=False, **params
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"{resource}: {exc.__class__.__name__}: {exc}") from exc
        if response.status == 410:
            response.release()
            raise GoneError(f"{resource}: 410 Gone")
        if response.status != 200:
            text = (await response.read())[:300].decode(errors="replace")
            raise SourceError(f"{resource}: HTTP {response.status}: {text}")
        return response

    async def list(self, resource: str, continue_token: str | None) -> Page:
        # A page that never comes would hold the collector off (collector_paused).
        params: dict[str, Any] = {"limit": LIST_PAGE_SIZE, "_request_timeout": LIST_TIMEOUT_S}
        if continue_token:
            params["_continue"] = continue_token
        response = await self._request(resource, **params)
        body = orjson.loads(await response.read())
        metadata = body.get("metadata") or {}
        return Page(
            body.get("items") or [],
            metadata.get("resourceVersion", ""),
            metadata.get("continue") or None,
        )

    async def watch(self, resource: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        timeout_s = random.randint(*WATCH_TIMEOUT_S)
        response = await self._request(
            resource,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_s,
            _request_timeout=aiohttp.ClientTimeout(sock_read=timeout_s + 30),
        )
        try:
            async for line in response.content:
                if line.strip():
                    yield orjson.loads(line)
        finally:
            response.release()


class KubeBinder:
    """Posts ``pods/binding``, as kube-scheduler's default binder does."""

    def __init__(self, api_client: Any, timeout_s: float = 4.0) -> None:
        from kubernetes_asyncio import client

        self._core = client.CoreV1Api(api_client)
        self._timeout_s = timeout_s

    async def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        body: Any = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            response: Any = await self._core.create_namespaced_pod_binding(
                name, namespace, body, _preload_content=False, _request_timeout=self._timeout_s
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BindError(f"binding {namespace}/{name} to {node}: {exc}") from exc
        if response.status in (200, 201):
            response.release()
            return
        text = await response.read()
        try:
            message = orjson.loads(text).get("message", "")
        except orjson.JSONDecodeError:
            message = text[:200].decode(errors="replace")
        raise BindError(f"binding {namespace}/{name} to {node}: HTTP {response.status}: {message}")


REQUEUE_ANNOTATION = "fairpack.io/hold-lifted-at"


class KubeRequeuer:
    """Makes kube-scheduler retry a pending pod by patching an annotation on it.

    kube-scheduler retries a pod an extender rejected on any cluster event, the pod's
    own updates included (its ``Extender`` pseudo-plugin queues on every event).
    """

    def __init__(self, api_client: Any, timeout_s: float = 4.0) -> None:
        from kubernetes_asyncio import client

        self._core = client.CoreV1Api(api_client)
        self._timeout_s = timeout_s

    async def requeue(self, namespace: str, name: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body: Any = {"metadata": {"annotations": {REQUEUE_ANNOTATION: now}}}
        response: Any = await self._core.patch_namespaced_pod(
            name, namespace, body, _preload_content=False, _request_timeout=self._timeout_s
        )
        if response.status == 200 or response.status == 404:  # 404: gone, nothing to retry
            response.release()
            return
        text = await response.read()
        raise RuntimeError(
            f"patching {namespace}/{name}: HTTP {response.status}: {text[:200].decode(errors='replace')}"
        )
