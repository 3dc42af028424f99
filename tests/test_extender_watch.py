"""Reflectors over an in-memory source: list, watch, resume, relist on 410, back off."""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from extender_builders import kube_node, node, pod, request

from extender import ClusterView, LiveConfig, Metrics
from extender.view import KINDS, Replaced
from extender.watch import Page, Reflector, SourceError, ViewFeed


class FakeSource:
    """Scripted answers: each list call pops a page list, each watch call pops an event list.

    A watch script entry that is an exception is raised when that watch starts.
    """

    def __init__(self, lists: list[list[Page]], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[tuple[str, str | None]] = []
        self.done = asyncio.Event()

    async def list(self, resource: str, continue_token: str | None) -> Page:
        self.calls.append(("list", continue_token))
        pages = self.lists[0]
        page = pages.pop(0)
        if not pages:
            self.lists.pop(0)
        return page

    async def watch(self, resource: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", resource_version))
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def with_version(obj: dict[str, Any], version: str) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = version
    return obj


async def run_until_done(reflector: Reflector, source: FakeSource) -> None:
    task = asyncio.create_task(reflector.run())
    await asyncio.wait_for(source.done.wait(), timeout=10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def feed() -> tuple[ClusterView, ViewFeed, Metrics]:
    view = ClusterView(required_kinds=KINDS)
    metrics = Metrics()
    return view, ViewFeed(view, LiveConfig(), metrics), metrics


async def test_lists_in_pages_then_watches_from_the_list_version() -> None:
    view, sink, _ = feed()
    n0, n1 = kube_node(node("n0")), kube_node(node("n1"))
    source = FakeSource(
        lists=[[Page([n0], "10", "token-1"), Page([n1], "11", None)]],
        watches=[[event("ADDED", with_version(kube_node(node("n2")), "12"))]],
    )
    reflector = Reflector(source, "node", sink.sink("node"), Metrics(), clock=view.clock)
    await run_until_done(reflector, source)
    assert source.calls == [("list", None), ("list", "token-1"), ("watch", "11"), ("watch", "12")]
    assert view.state.names == ["n0", "n1", "n2"]
    assert reflector.synced.is_set()


async def test_a_410_relists_and_an_error_backs_off_then_resumes() -> None:
    view, sink, metrics = feed()
    n0, n1 = kube_node(node("n0")), kube_node(node("n1"))
    resized = with_version(kube_node(node("n1", gpus=4)), "21")
    source = FakeSource(
        lists=[[Page([n0], "5", None)], [Page([n0, n1], "20", None)]],
        watches=[
            [event("ADDED", with_version(kube_node(node("n1")), "6"))],
            [
                event(
                    "ERROR", {"kind": "Status", "code": 410, "message": "too old resource version"}
                )
            ],
            SourceError("connection reset"),
            [event("MODIFIED", resized)],
        ],
    )
    reflector = Reflector(
        source, "node", sink.sink("node"), metrics, clock=view.clock, backoff_initial_s=0.01
    )
    await run_until_done(reflector, source)
    assert source.calls == [
        ("list", None),
        ("watch", "5"),
        ("watch", "6"),  # the first watch ended: resume from the last version seen
        ("list", None),  # 410 Gone: list again
        ("watch", "20"),
        ("watch", "20"),  # after the error and its backoff, from the same version
        ("watch", "21"),
    ]
    assert view.nodes["n1"].gpu_count == 4
    restarts = {
        reason: metrics.registry.get_sample_value(
            "fairpack_watch_restarts_total", {"resource": "node", "reason": reason}
        )
        for reason in ("relist", "error")
    }
    assert restarts == {"relist": 1.0, "error": 1.0}


async def test_the_synced_gauge_is_0_from_a_failure_until_the_resource_flows_again() -> None:
    view, sink, metrics = feed()
    seen: list[float | None] = []

    class SyncedAtEachCall(FakeSource):
        """Notes ``fairpack_watch_synced`` as each list and watch starts."""

        def note(self) -> None:
            labels = {"resource": "node"}
            seen.append(metrics.registry.get_sample_value("fairpack_watch_synced", labels))

        async def list(self, resource: str, continue_token: str | None) -> Page:
            self.note()
            return await super().list(resource, continue_token)

        def watch(self, resource: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
            self.note()
            return super().watch(resource, resource_version)

    gone = {"kind": "Status", "code": 410, "message": "too old resource version"}
    source = SyncedAtEachCall(
        lists=[[Page([kube_node(node("n0"))], "5", None)], [Page([], "20", None)]],
        watches=[
            SourceError("connection refused"),
            [event("ADDED", with_version(kube_node(node("n1")), "6"))],
            [event("ERROR", gone)],
        ],
    )
    reflector = Reflector(
        source, "node", sink.sink("node"), metrics, clock=view.clock, backoff_initial_s=0.01
    )
    await run_until_done(reflector, source)
    assert seen == [
        0.0,  # the first list
        1.0,  # watching from it
        0.0,  # after the error: nothing has come through yet
        1.0,  # the last watch delivered an event, then ended (its timeout)
        0.0,  # 410 Gone: listing again
        1.0,
    ]


async def test_a_quiet_watch_that_lasts_after_an_error_is_synced_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("extender.watch.SHORT_WATCH_S", 0.05)
    view, sink, metrics = feed()
    source = FakeSource(lists=[[Page([], "5", None)]], watches=[SourceError("connection refused")])
    reflector = Reflector(
        source, "node", sink.sink("node"), metrics, clock=view.clock, backoff_initial_s=0.01
    )
    task = asyncio.create_task(reflector.run())
    labels = {"resource": "node"}
    await asyncio.wait_for(source.done.wait(), timeout=10)  # watching again, no event yet
    resumed = metrics.registry.get_sample_value("fairpack_watch_synced", labels)
    await asyncio.sleep(0.2)
    lasted = metrics.registry.get_sample_value("fairpack_watch_synced", labels)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (resumed, lasted) == (0.0, 1.0)


async def test_pod_watch_events_reach_the_view_and_deletes_release() -> None:
    view, sink, _ = feed()
    sink.list("node", [kube_node(node("n0", gpus=4))])
    sink.list("pod", [])
    pods = sink.sink("pod")
    running = pod("p", request(gpus=2), uid="u-1", node_name="n0", phase="Running")
    pods.upserted(running)
    assert view.state.free_milli[0].tolist() == [0, 0, 1000, 1000]
    pods.deleted(running)
    pods.deleted(running)
    assert view.state.free_milli[0].tolist() == [1000] * 4


async def test_unreadable_objects_are_skipped_and_counted() -> None:
    view, sink, metrics = feed()
    sink.list("node", [kube_node(node("n0"))])
    broken = pod("broken", request(gpus=1), uid="u-2", node_name="n0")
    broken["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "lots"
    sink.sink("pod").upserted(broken)
    assert view.pod_count == 0
    assert (
        metrics.registry.get_sample_value("fairpack_object_errors_total", {"resource": "pod"})
        == 1.0
    )


async def test_the_policy_configmap_is_reloaded_and_a_bad_one_refused() -> None:
    _, sink, _ = feed()
    config = sink.sink("configmap")
    good = {
        "metadata": {"name": "fairpack-config"},
        "data": {"config.yaml": "policy:\n  weights:\n    best_fit: 5\n"},
    }
    config.replaced([good], 0.0)
    assert sink.config.current.policy.weights == {"best_fit": 5.0}
    config.upserted({"metadata": {}, "data": {"config.yaml": "policy: {weights: {x: 1}}"}})
    config.deleted(good)
    assert sink.config.current.policy.weights == {"best_fit": 5.0}


class GatedSource(FakeSource):
    """A FakeSource whose second list page waits for ``release``."""

    def __init__(self, lists: list[list[Page]]) -> None:
        super().__init__(lists, [])
        self.release = asyncio.Event()
        self.collector_during_list: list[bool] = []

    async def list(self, resource: str, continue_token: str | None) -> Page:
        self.collector_during_list.append(gc.isenabled())
        if continue_token:
            await self.release.wait()
        return await super().list(resource, continue_token)


async def test_the_collector_is_off_while_any_list_runs_then_the_view_is_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import extender.watch

    monkeypatch.setattr(extender.watch, "collector_paused", extender.watch._CollectorPause())
    view, sink, _ = feed()
    slow = GatedSource([[Page([kube_node(node("n0"))], "1", "more"), Page([], "2", None)]])
    fast = FakeSource([[Page([], "1", None)]], [])
    nodes = Reflector(slow, "node", sink.sink("node"), Metrics(), clock=view.clock)
    namespaces = Reflector(fast, "namespace", sink.sink("namespace"), Metrics(), clock=view.clock)
    gc.enable()
    frozen_before = gc.get_freeze_count()
    tasks = [asyncio.create_task(r.run()) for r in (nodes, namespaces)]
    try:
        await asyncio.wait_for(namespaces.synced.wait(), timeout=10)
        assert not gc.isenabled()  # the node list is still running
        slow.release.set()
        await asyncio.wait_for(nodes.synced.wait(), timeout=10)
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen_before
        assert slow.collector_during_list == [False, False]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        gc.unfreeze()
        gc.enable()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_first_sync_freezes_no_garbage_and_a_failed_list_freezes_nothing() -> None:
    from extender.watch import _CollectorPause

    pause = _CollectorPause()
    gc.enable()
    try:
        frozen_before = gc.get_freeze_count()
        with pytest.raises(SourceError), pause:
            assert not gc.isenabled()
            raise SourceError("connection reset")
        assert gc.isenabled()
        assert gc.get_freeze_count() == frozen_before
        with pause:
            garbage = weakref.ref(Cycle())  # unreachable at once, but a cycle
        assert gc.get_freeze_count() > frozen_before
        gc.collect()
        assert garbage() is None  # collected before the freeze, not kept for ever
    finally:
        gc.unfreeze()
        gc.enable()


# -- the API client's per-request environment lookups ----------------------------------------------


@pytest.mark.parametrize(
    ("variable", "netrc", "switched_off"),
    [
        (None, None, True),  # nothing to find: no thread hand-offs per bind
        ("HTTPS_PROXY", None, False),  # a proxy to honour
        ("Http_Proxy", None, False),  # any case, as urllib reads them
        ("no_proxy", None, True),  # exclusions alone need no lookup
        (None, ".netrc", False),  # credentials to read
        (None, "elsewhere", False),  # NETRC names the file
    ],
)
async def test_env_lookups_are_skipped_only_when_there_is_nothing_to_find(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variable: str | None,
    netrc: str | None,
    switched_off: bool,
) -> None:
    from kubernetes_asyncio import client

    from extender.server import skip_env_lookups

    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "NETRC":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    if variable:
        monkeypatch.setenv(variable, "http://proxy.example:3128")
    if netrc:
        (tmp_path / netrc).write_text("machine 127.0.0.1 login a password b\n")
        if netrc != ".netrc":
            monkeypatch.setenv("NETRC", str(tmp_path / netrc))
    configuration = client.Configuration(host="https://127.0.0.1:6443")
    async with client.ApiClient(configuration) as api:
        assert skip_env_lookups(api) is switched_off
        assert api.rest_client.pool_manager.trust_env is not switched_off


async def test_a_static_inventory_is_frozen_before_it_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import extender.server

    frozen_when_served: list[int] = []

    async def serve(*_: Any) -> None:
        frozen_when_served.append(gc.get_freeze_count())

    monkeypatch.setattr(extender.server, "_serve_until_stopped", serve)
    gc.unfreeze()
    try:
        await extender.server.serve_inventory([node("n0")], extender.server.ServeOptions())
        assert frozen_when_served and frozen_when_served[0] > 0
    finally:
        gc.unfreeze()


async def test_a_watch_that_ends_at_once_without_events_backs_off() -> None:
    # A proxy or an API server shutting down may end each watch cleanly and at once.
    # Reconnecting at full speed would hammer the API server (client-go calls it a
    # "very short watch" and backs off); here too, until a watch delivers something.
    view, sink, metrics = feed()
    watches = 0

    class EmptyWatches(FakeSource):
        async def watch(  # type: ignore[override]
            self, resource: str, resource_version: str
        ) -> AsyncIterator[dict[str, Any]]:
            nonlocal watches
            watches += 1
            await asyncio.sleep(0)
            return
            yield

    source = EmptyWatches(lists=[[Page([kube_node(node("n0"))], "5", None)]], watches=[])
    reflector = Reflector(
        source, "node", sink.sink("node"), metrics, clock=view.clock, backoff_initial_s=0.05
    )
    task = asyncio.create_task(reflector.run())
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 1 <= watches <= 6  # 0.05 s doubling: about four in 0.3 s, not thousands
    assert view.state.names == ["n0"]


async def test_a_config_that_reads_objects_differently_relists_them() -> None:
    # Reflectors list concurrently: the pods may be read under the built-in defaults
    # before the policy ConfigMap lands. A running pod seldom changes again, so without
    # a relist an AMD cluster's bound pods would hold no GPUs in the view for good.
    from extender.watch import relist_when_reading_changes

    view, sink, metrics = feed()
    view.apply(Replaced("node", [node("n0", gpus=8)]))
    amd = pod(
        "trainer",
        request(gpus=2),
        node_name="n0",
        phase="Running",
        gpu_resource="amd.com/gpu",
    )
    gate = asyncio.Event()

    class Source(FakeSource):
        async def watch(  # type: ignore[override]
            self, resource: str, resource_version: str
        ) -> AsyncIterator[dict[str, Any]]:
            self.calls.append(("watch", resource_version))
            gate.set()
            await asyncio.Event().wait()
            yield {}

    source = Source(lists=[[Page([amd], "5", None)], [Page([amd], "9", None)]], watches=[])
    pods = Reflector(source, "pod", sink.sink("pod"), metrics, clock=view.clock)
    relist_when_reading_changes(sink.config, [pods])
    task = asyncio.create_task(pods.run())
    await asyncio.wait_for(gate.wait(), timeout=5)
    assert view.allocation().allocated == {}  # nvidia.com/gpu by default: none asked
    gate.clear()
    sink.sink("configmap").upserted(
        {"data": {"config.yaml": "policy:\n  weights:\n    best_fit: 5\n"}}
    )
    await asyncio.sleep(0.05)
    assert source.calls == [("list", None), ("watch", "5")]  # nothing read differently
    sink.sink("configmap").upserted({"data": {"config.yaml": "resources:\n  gpu: amd.com/gpu\n"}})
    await asyncio.wait_for(gate.wait(), timeout=5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert source.calls[2:] == [("list", None), ("watch", "9")]
    assert view.allocation().allocated == {("team-a", "batch"): 2.0}


async def test_a_shutdown_right_after_a_relist_still_stops_the_reflector() -> None:
    # relist() cancels the list in progress; a shutdown cancelling the reflector before
    # it has run again must not be taken for that relist, or the service never stops.
    view, sink, metrics = feed()
    listing = asyncio.Event()

    class SlowList(FakeSource):
        async def list(self, resource: str, continue_token: str | None) -> Page:
            listing.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    source = SlowList(lists=[], watches=[])
    reflector = Reflector(source, "node", sink.sink("node"), metrics, clock=view.clock)
    task = asyncio.create_task(reflector.run())
    await asyncio.wait_for(listing.wait(), timeout=5)
    reflector.relist()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()


async def test_the_service_is_ready_only_once_the_policy_configmap_was_listed_too() -> None:
    # Ready before the ConfigMap list (a slow one, or one refused for good: RBAC), fairpack
    # would answer on the built-in defaults: another GPU resource name or label keys, weights.
    view = ClusterView(required_kinds=(*KINDS, "configmap"))
    live = LiveConfig()
    feed = ViewFeed(view, live, Metrics())
    for kind in KINDS:
        feed.list(kind, [])
    assert not view.ready
    feed.list("configmap", [])  # listed, and not there: the defaults are the config, knowingly
    assert view.ready


async def test_a_configmap_that_reads_objects_differently_keeps_the_view_unready_until_relisted() -> (
    None
):
    # The pods were listed under the built-in defaults (nvidia.com/gpu), then the policy
    # ConfigMap lands saying amd.com/gpu: until the relist lands, the view holds pods
    # without their GPUs, and kube-scheduler must not be told fairpack is ready.
    from extender.watch import relist_when_reading_changes

    view = ClusterView(required_kinds=(*KINDS, "configmap"))
    metrics = Metrics()
    sink = ViewFeed(view, LiveConfig(), metrics)
    for kind in KINDS:
        if kind != "pod":
            sink.list(kind, [])
    view.apply(Replaced("node", [node("n0", gpus=8)]))
    amd = pod(
        "trainer", request(gpus=2), node_name="n0", phase="Running", gpu_resource="amd.com/gpu"
    )
    source = GatedSource([[Page([amd], "5", None)], [Page([], "", "more"), Page([amd], "9", None)]])
    pods = Reflector(source, "pod", sink.sink("pod"), metrics, clock=view.clock)
    relist_when_reading_changes(sink.config, [pods], view)
    task = asyncio.create_task(pods.run())
    await asyncio.wait_for(pods.synced.wait(), timeout=5)
    pods.synced.clear()
    sink.list("configmap", [{"data": {"config.yaml": "resources:\n  gpu: amd.com/gpu\n"}}])
    await asyncio.sleep(0.05)  # the relist's second page waits
    assert not view.ready and view.allocation().allocated == {}
    source.release.set()
    await asyncio.wait_for(pods.synced.wait(), timeout=5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert view.ready and view.allocation().allocated == {("team-a", "batch"): 2.0}
    # Once ready, a config change relists without taking readiness away.
    sink.sink("configmap").upserted({"data": {"config.yaml": "resources:\n  gpu: x.com/gpu\n"}})
    assert view.ready
