"""Every extender verb, with bodies shaped exactly like kube-scheduler's, and responses
shaped the way its Go client decodes them (k8s.io/kube-scheduler/extender/v1)."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import web
from extender_builders import (
    RecordingBinder,
    bind_body,
    filter_body,
    node,
    node_list_body,
    nodes,
    pod,
    preempt_body,
    request,
    serve,
    service,
)

from extender import LiveConfig, create_app
from extender.config import FairpackConfig
from extender.wire import (
    ExtenderBindingResult,
    ExtenderFilterResult,
    ExtenderPreemptionResult,
    HostPriority,
)
from scoring import PodClass

FILTER_KEYS = {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}


def passing_every_feasible_node() -> LiveConfig:
    """``filter_passes: feasible``: filter answers with every node the pod fits."""
    return LiveConfig(FairpackConfig(filter_passes="feasible"))


async def post(client: Any, verb: str, body: Any) -> tuple[int, Any]:
    response = await client.post(f"/{verb}", data=orjson.dumps(body))
    return response.status, orjson.loads(await response.read())


def cluster() -> list[Any]:
    # 2 A100 nodes (8 x 80 GiB), 2 L4 nodes (4 x 24 GiB), 1 CPU-only node.
    return [
        node("a100-0"),
        node("a100-1"),
        node("l4-0", gpus=4, model="L4", gpu_memory_mib=24576),
        node("l4-1", gpus=4, model="L4", gpu_memory_mib=24576),
        node("cpu-0", gpus=0),
    ]


NAMES = ["a100-0", "a100-1", "l4-0", "l4-1", "cpu-0"]


async def test_filter_answers_every_key_of_the_go_struct() -> None:
    async with serve(service(cluster(), config=passing_every_feasible_node())) as client:
        status, body = await post(client, "filter", filter_body(pod(req=request(gpus=2)), NAMES))
    assert status == 200
    assert set(body) == FILTER_KEYS
    ExtenderFilterResult.model_validate(body)
    assert body["Nodes"] is None
    assert body["Error"] == ""
    assert body["NodeNames"] == ["a100-0", "a100-1", "l4-0", "l4-1"]
    # A node passed: kube-scheduler would not read why cpu-0 failed (see the next test).
    assert body["FailedAndUnresolvableNodes"] == {}
    assert body["FailedNodes"] == {}


@pytest.mark.parametrize("config", [None, passing_every_feasible_node()], ids=["best", "feasible"])
async def test_filter_lists_the_failed_nodes_only_when_none_passes(config: Any) -> None:
    # kube-scheduler reads the reasons only when no node is left (its FailedScheduling
    # event, and where preemption might help); they are counted either way.
    extender = service(cluster(), config=config)
    two = pod(req=request(gpus=2))
    async with serve(extender) as client:
        _, some = await post(client, "filter", filter_body(two, NAMES))
        counted = extender.explain(f"{two['metadata']['namespace']}/{two['metadata']['name']}")
        _, none = await post(client, "filter", filter_body(two, ["cpu-0"]))
    assert some["NodeNames"] and some["FailedNodes"] == some["FailedAndUnresolvableNodes"] == {}
    assert counted is not None
    assert counted["filter"]["rejected"] == {"node(s) have fewer than 2 GPUs": 1}
    assert none["NodeNames"] == []
    assert none["FailedAndUnresolvableNodes"] == {"cpu-0": "node(s) have fewer than 2 GPUs"}
    assert none["FailedNodes"] == {}


async def test_filter_passes_the_best_node_alone_by_default() -> None:
    # The others are left out without a reason (kube-scheduler drops them).
    async with serve(service(cluster())) as client:
        _, body = await post(client, "filter", filter_body(pod(req=request(gpus=2)), NAMES))
    assert len(body["NodeNames"]) == 1 and body["NodeNames"][0].startswith("l4-")
    assert body["FailedAndUnresolvableNodes"] == body["FailedNodes"] == {}


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
async def test_the_node_filter_passes_is_the_one_prioritize_ranks_first(gpus: int) -> None:
    """What kube-scheduler binds at the shipped extender weight when offered every
    feasible node and fairpack's prioritize is the node filter passes alone."""
    best = service(twelve_nodes())
    every = service(twelve_nodes(), config=passing_every_feasible_node())
    names = busy_cluster(best)
    busy_cluster(every)
    p = pod("probe", request(gpus=gpus))
    async with serve(best) as best_client, serve(every) as every_client:
        _, alone = await post(best_client, "filter", filter_body(p, names))
        _, feasible = await post(every_client, "filter", filter_body(p, names))
        _, scores = await post(every_client, "prioritize", filter_body(p, feasible["NodeNames"]))
    assert len(feasible["NodeNames"]) > 1
    assert alone["NodeNames"] == [s["Host"] for s in scores if s["Score"] == 10]


@pytest.mark.parametrize(
    ("req", "resolvable", "unresolvable"),
    [
        pytest.param(
            request(gpus=4, min_gpu_memory_mib=40 * 1024),
            {},
            # L4 has 24 GiB per GPU: no eviction helps.
            {"l4-0", "l4-1", "cpu-0"},
            id="gpu-memory-is-unresolvable",
        ),
        pytest.param(
            request(gpus=8),
            {"a100-0": "node(s) lack 8 free GPUs"},
            {"l4-0", "l4-1", "cpu-0"},
            id="busy-node-is-resolvable",
        ),
        pytest.param(
            request(gpus=1, models=["L4"]),
            {},
            {"a100-0", "a100-1", "cpu-0"},
            id="wrong-model",
        ),
    ],
)
async def test_filter_reasons_split_resolvable_from_unresolvable(
    req: Any, resolvable: dict[str, str], unresolvable: set[str]
) -> None:
    extender = service(cluster())
    async with serve(extender) as client:
        # a100-0 already runs a 1-GPU pod: 7 of 8 free.
        first = pod("warm", request(gpus=1))
        await post(client, "filter", filter_body(first, ["a100-0"]))
        assert (await post(client, "bind", bind_body(first, "a100-0")))[1] == {"Error": ""}
        # Only the nodes that fail are offered: the reasons are listed when none passes.
        failing = [name for name in NAMES if name in resolvable or name in unresolvable]
        status, body = await post(client, "filter", filter_body(pod(req=req), failing))
    assert status == 200
    assert body["NodeNames"] == []
    assert body["FailedNodes"] == resolvable
    assert set(body["FailedAndUnresolvableNodes"]) == unresolvable


async def test_filter_reason_reads_like_a_failed_scheduling_event() -> None:
    specs = nodes(40)
    extender = service(specs)
    async with serve(extender) as client:
        # Every node has only 3 GPUs free.
        for i in range(40):
            busy = pod(f"busy-{i}", request(gpus=5))
            await post(client, "filter", filter_body(busy, [f"gpu-{i}"]))
            await post(client, "bind", bind_body(busy, f"gpu-{i}"))
        wanted = request(gpus=4, min_gpu_memory_mib=40 * 1024)
        _, body = await post(
            client, "filter", filter_body(pod(req=wanted), [s.name for s in specs])
        )
    reasons = list(body["FailedNodes"].values())
    assert len(reasons) == 40
    assert set(reasons) == {"node(s) lack 4 free GPUs with >= 40 GiB memory"}


async def test_filter_with_a_full_node_list_answers_with_nodes() -> None:
    """``nodeCacheCapable: false``: the NodeList comes in, the passing Node objects go back."""
    specs = cluster()
    async with serve(service(specs, config=passing_every_feasible_node())) as client:
        status, body = await post(client, "filter", node_list_body(pod(req=request(gpus=8)), specs))
    assert status == 200
    assert body["NodeNames"] is None
    names = [item["metadata"]["name"] for item in body["Nodes"]["items"]]
    assert names == ["a100-0", "a100-1"]
    # The objects are returned whole: kube-scheduler uses them as they come back.
    assert body["Nodes"]["items"][0]["status"]["allocatable"]["nvidia.com/gpu"] == "8"


async def test_prioritize_returns_a_bare_list_of_request_hosts_best_strictly_on_top() -> None:
    async with serve(service(cluster())) as client:
        names = ["a100-0", "l4-0", "a100-1"]
        status, body = await post(
            client, "prioritize", filter_body(pod(req=request(gpus=4)), names)
        )
    assert status == 200
    assert isinstance(body, list)
    priorities = [HostPriority.model_validate(item) for item in body]
    assert [p.host for p in priorities] == names
    assert all(set(item) == {"Host", "Score"} for item in body)
    assert all(0 <= p.score <= 10 for p in priorities)
    # A 4-GPU pod fills an L4 node exactly: best fit, smallest sufficient memory.
    by_host = {p.host: p.score for p in priorities}
    assert by_host["l4-0"] == 10
    assert by_host["a100-0"] < 10 and by_host["a100-1"] < 10


async def test_prioritize_scores_unknown_nodes_neutrally_and_counts_them() -> None:
    extender = service(cluster())
    async with serve(extender) as client:
        names = ["a100-0", "ghost-1", "l4-0"]
        status, body = await post(
            client, "prioritize", filter_body(pod(req=request(gpus=4)), names)
        )
        metrics = await (await client.get("/metrics")).text()
    assert status == 200
    assert [item["Host"] for item in body] == names
    assert {item["Host"]: item["Score"] for item in body}["ghost-1"] == 5
    assert 'fairpack_unknown_nodes_total{verb="prioritize"} 1.0' in metrics


async def test_filter_fails_unknown_nodes_for_gpu_pods_as_retryable() -> None:
    async with serve(service(cluster())) as client:
        _, body = await post(
            client, "filter", filter_body(pod(req=request(gpus=1)), ["cpu-0", "ghost"])
        )
    assert body["NodeNames"] == []
    assert body["FailedNodes"] == {"ghost": "node(s) not yet in fairpack's view"}
    assert body["FailedAndUnresolvableNodes"] == {"cpu-0": "node(s) have no GPU"}


async def test_the_node_filter_passes_alone_is_taken_before_any_bind() -> None:
    # kube-scheduler binds a pod with one feasible node there, and without a bindVerb
    # fairpack learns of it from the watch only: the next filter must not offer it again.
    extender = service(cluster())
    first, second = pod("first", request(gpus=8)), pod("second", request(gpus=8))
    async with serve(extender) as client:
        _, one = await post(client, "filter", filter_body(first, NAMES))
        (chosen,) = one["NodeNames"]
        _, other = await post(client, "filter", filter_body(second, NAMES))
        _, same = await post(client, "filter", filter_body(second, [chosen]))
        # Filtered again (its cycle failed after filter): its own GPUs are free to it.
        _, again = await post(client, "filter", filter_body(first, [chosen]))
    assert other["NodeNames"] != [chosen] and len(other["NodeNames"]) == 1
    assert same["NodeNames"] == [] and same["FailedNodes"] == {chosen: "node(s) lack 8 free GPUs"}
    assert again["NodeNames"] == [chosen]
    placement = extender.view.lookup(first["metadata"]["uid"])
    assert placement is not None and placement.node == chosen and placement.tentative


async def test_a_bind_after_filter_binds_where_kube_scheduler_says() -> None:
    binder = RecordingBinder()
    extender = service(cluster(), binder=binder)
    first = pod("first", request(gpus=4))
    async with serve(extender) as client:
        _, one = await post(client, "filter", filter_body(first, ["a100-0", "a100-1"]))
        (chosen,) = one["NodeNames"]
        elsewhere = "a100-1" if chosen == "a100-0" else "a100-0"
        _, bound = await post(client, "bind", bind_body(first, elsewhere))
    assert bound == {"Error": ""}
    placement = extender.view.lookup(first["metadata"]["uid"])
    assert placement is not None and placement.node == elsewhere and not placement.tentative
    state = extender.view.state
    assert [
        int((state.free_milli[state.row_of(n)] >= 1000).sum()) for n in (chosen, elsewhere)
    ] == [8, 4]


async def test_a_pod_filter_passed_that_nobody_binds_is_pending_again_after_a_while() -> None:
    extender = service(cluster(), config=LiveConfig(FairpackConfig(assume_ttl_s=30)))
    now = [1000.0]
    extender.view.clock = lambda: now[0]
    first, second = pod("first", request(gpus=8)), pod("second", request(gpus=8))
    async with serve(extender) as client:
        _, one = await post(client, "filter", filter_body(first, NAMES))
        (chosen,) = one["NodeNames"]
        now[0] += 31
        _, later = await post(client, "filter", filter_body(second, [chosen]))
    assert later["NodeNames"] == [chosen]
    assert extender.metrics.filter_assumptions.labels("expired")._value.get() == 1
    # Known from the filter alone (no watch here): forgotten, not left pending for ever.
    assert extender.view.lookup(first["metadata"]["uid"]) is None


async def test_bind_posts_the_binding_and_takes_the_gpus_at_once() -> None:
    binder = RecordingBinder()
    extender = service(cluster(), binder=binder)
    async with serve(extender) as client:
        big = pod("big", request(gpus=8))
        await post(client, "filter", filter_body(big, NAMES))
        status, body = await post(client, "bind", bind_body(big, "a100-0"))
        assert status == 200
        ExtenderBindingResult.model_validate(body)
        assert body == {"Error": ""}
        # The very next filter already sees a100-0 full, before any watch event.
        _, after = await post(
            client, "filter", filter_body(pod("next", request(gpus=1)), ["a100-0"])
        )
    assert binder.bound == [("team-a", "big", big["metadata"]["uid"], "a100-0")]
    assert after["NodeNames"] == []
    assert after["FailedNodes"] == {"a100-0": "node(s) lack 1 free GPU"}


async def test_failed_binding_reports_the_error_and_releases_the_gpus() -> None:
    binder = RecordingBinder(refuse={"big"})
    extender = service(cluster(), binder=binder)
    async with serve(extender) as client:
        big = pod("big", request(gpus=8))
        await post(client, "filter", filter_body(big, NAMES))
        status, body = await post(client, "bind", bind_body(big, "a100-0"))
        _, after = await post(
            client, "filter", filter_body(pod("next", request(gpus=8)), ["a100-0"])
        )
    assert status == 200
    assert "binding refused" in body["Error"]
    assert after["NodeNames"] == ["a100-0"]


async def test_bind_refuses_a_node_that_no_longer_fits() -> None:
    async with serve(service(cluster())) as client:
        first, second = pod("first", request(gpus=8)), pod("second", request(gpus=8))
        for p in (first, second):
            await post(client, "filter", filter_body(p, ["a100-0"]))
        await post(client, "bind", bind_body(first, "a100-0"))
        status, body = await post(client, "bind", bind_body(second, "a100-0"))
    assert status == 200
    assert body["Error"].startswith("node a100-0 no longer fits pod team-a/second")


def preempt_setup() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """a100-0 runs a batch pod, a100-1 an interactive one; both are proposed as victims."""
    extender = service(cluster())
    batch_victim = pod(
        "batch-victim", request(gpus=8, priority=10), node_name="a100-0", phase="Running"
    )
    interactive_victim = pod(
        "chat-victim",
        request(gpus=8, pod_class=PodClass.INTERACTIVE, priority=10),
        node_name="a100-1",
        phase="Running",
    )
    from extender import Upserted
    from extender.objects import pod_info
    from extender.wire import Pod

    for victim in (batch_victim, interactive_victim):
        info = pod_info(Pod.model_validate(victim), extender.config.current)
        extender.view.apply(Upserted("pod", info))
    return extender, batch_victim, interactive_victim


@pytest.mark.parametrize(
    ("preemptor_class", "accepted"),
    [
        pytest.param(PodClass.BATCH, {"a100-0"}, id="batch-never-evicts-interactive"),
        # Both nodes are acceptable; only the best tier (a batch victim) goes back.
        pytest.param(PodClass.INTERACTIVE, {"a100-0"}, id="interactive-prefers-batch-victims"),
    ],
)
async def test_preempt_keeps_only_nodes_whose_victims_fairpack_agrees_to(
    preemptor_class: PodClass, accepted: set[str]
) -> None:
    extender, batch_victim, interactive_victim = preempt_setup()
    preemptor = pod("urgent", request(gpus=8, pod_class=preemptor_class, priority=1000))
    body = preempt_body(
        preemptor,
        {
            "a100-0": [batch_victim["metadata"]["uid"]],
            "a100-1": [interactive_victim["metadata"]["uid"]],
        },
        pdb=1,
    )
    async with serve(extender) as client:
        status, answer = await post(client, "preempt", body)
    assert status == 200
    result = ExtenderPreemptionResult.model_validate(answer)
    assert result.node_name_to_meta_victims is not None
    assert set(result.node_name_to_meta_victims) == accepted
    for name, victims in answer["NodeNameToMetaVictims"].items():
        offered = body["NodeNameToMetaVictims"][name]["Pods"]
        assert victims["Pods"] and all(v in offered for v in victims["Pods"])
        assert victims["NumPDBViolations"] == 1


async def test_preempt_accepts_full_victim_pods_too() -> None:
    """Without nodeCacheCapable kube-scheduler sends NodeNameToVictims with whole pods."""
    extender, batch_victim, _ = preempt_setup()
    body = {
        "Pod": pod("urgent", request(gpus=8, priority=1000)),
        "NodeNameToVictims": {"a100-0": {"Pods": [batch_victim], "NumPDBViolations": 0}},
        "NodeNameToMetaVictims": None,
    }
    async with serve(extender) as client:
        status, answer = await post(client, "preempt", body)
    assert status == 200
    assert answer == {
        "NodeNameToMetaVictims": {
            "a100-0": {"Pods": [{"UID": batch_victim["metadata"]["uid"]}], "NumPDBViolations": 0}
        }
    }


async def test_preempt_drops_a_node_where_the_eviction_would_not_make_room() -> None:
    extender, batch_victim, _ = preempt_setup()
    small_victim = pod("small", request(gpus=0, cpu_milli=100), node_name="a100-1", phase="Running")
    from extender import Upserted
    from extender.objects import pod_info
    from extender.wire import Pod

    extender.view.apply(
        Upserted("pod", pod_info(Pod.model_validate(small_victim), extender.config.current))
    )
    body = preempt_body(
        pod("urgent", request(gpus=8, pod_class=PodClass.INTERACTIVE, priority=1000)),
        # Evicting a CPU pod from a100-1 leaves its 8 GPUs taken by the interactive pod.
        {"a100-0": [batch_victim["metadata"]["uid"]], "a100-1": [small_victim["metadata"]["uid"]]},
    )
    async with serve(extender) as client:
        _, answer = await post(client, "preempt", body)
    assert set(answer["NodeNameToMetaVictims"]) == {"a100-0"}


async def test_preempt_refuses_a_node_missing_from_fairpacks_view() -> None:
    # fairpack's filter rejects a node it does not know for a GPU pod: evicting pods there
    # (unchecked, fairpack cannot see what they free) would only make room it never uses
    extender, _, _ = preempt_setup()
    body = preempt_body(
        pod("urgent", request(gpus=8, pod_class=PodClass.INTERACTIVE, priority=1000)),
        {"a100-new": ["uid-unseen"]},
    )
    async with serve(extender) as client:
        _, answer = await post(client, "preempt", body)
    assert answer == {"NodeNameToMetaVictims": {}}


async def test_debug_state_and_explain() -> None:
    extender = service(cluster())
    async with serve(extender) as client:
        p = pod("explained", request(gpus=4))
        _, filtered = await post(client, "filter", filter_body(p, NAMES))
        await post(client, "prioritize", filter_body(p, ["a100-0", "l4-0"]))
        await post(client, "bind", bind_body(p, "l4-0"))
        state = orjson.loads(await (await client.get("/debug/state")).read())
        explain = await client.get("/debug/explain", params={"pod": "team-a/explained"})
        decision = orjson.loads(await explain.read())
        missing = await client.get("/debug/explain", params={"pod": "team-a/nobody"})
        malformed = await client.get("/debug/explain", params={"pod": "nobody"})
    assert state["models"]["L4"] == {"gpus": 8, "free_gpus": 4.0}
    assert state["teams"]["team-a"]["allocated_gpus"] == {"batch": 4.0}
    assert (decision["filter"]["passed"], decision["filter"]["outranked"]) == (1, 3)
    # The filter's own ranking (kube-scheduler calls no prioritize by default), with the
    # GPUs the pod would take: those free before the filter counted it there.
    chosen, *runners_up = decision["filter"]["top"]
    assert [chosen["node"]] == filtered["NodeNames"]
    assert (chosen["priority"], chosen["gpus"]) == (10, [0, 1, 2, 3])
    assert runners_up and all(r["priority"] < 10 for r in runners_up)
    top = decision["prioritize"]["top"][0]
    assert top["node"] == "l4-0" and top["priority"] == 10
    assert set(top["terms"]) == set(extender.config.current.policy.weights)
    assert decision["bind"]["node"] == "l4-0"
    assert (missing.status, malformed.status) == (404, 400)


async def test_explain_shows_the_last_cycle_alone() -> None:
    extender = service(cluster())
    async with serve(extender) as client:
        p = pod("retried", request(gpus=8))
        # Cycle 1: filter passes (and counts the pod on) one node; prioritize; no bind.
        await post(client, "filter", filter_body(p, NAMES))
        await post(client, "prioritize", filter_body(p, ["a100-0"]))
        # Cycle 2: only nodes too small for it are left.
        await post(client, "filter", filter_body(p, ["l4-0", "cpu-0"]))
        explain = await client.get("/debug/explain", params={"pod": "team-a/retried"})
        decision = orjson.loads(await explain.read())
    assert decision["filter"]["passed"] == 0
    # Neither cycle 1's ranking nor its assumption, which cycle 2's filter took back.
    assert set(decision) == {"pod", "uid", "request", "filter"}


async def test_health_readiness_and_metrics() -> None:
    from extender import ClusterView, Extender, Replaced

    view = ClusterView(cluster(), required_kinds=["node"])
    extender = Extender(view)
    async with serve(extender) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        view.apply(Replaced("node", cluster()))
        assert (await client.get("/readyz")).status == 200
        await post(client, "filter", filter_body(pod(req=request(gpus=2)), NAMES))
        text = await (await client.get("/metrics")).text()
    assert 'fairpack_requests_total{code="200",verb="filter"} 1.0' in text
    assert "fairpack_request_duration_seconds_bucket" in text
    assert 'fairpack_filter_rejections_total{reason="node(s) have fewer than 2 GPUs"} 1.0' in text


@pytest.mark.parametrize("query", ["", "&parse=1"])
async def test_the_benchmarks_floor_answers_the_bytes_asked_whatever_it_reads(query: str) -> None:
    extender = service(cluster())
    bodies = [
        orjson.dumps(filter_body(pod(req=request(gpus=1)), [*NAMES, "gone"])),
        b"{not json",
        b'["a list"]',
        b'{"NodeNames": [["a"], {"b": 1}]}',
        b'{"NodeNames": null}',
        b"",
    ]
    async with serve(extender, floor_endpoint=True) as client:
        for body in bodies:
            response = await client.post(f"/debug/floor?respond_bytes=40{query}", data=body)
            assert response.status == 200, body
            assert len(await response.read()) == 40
    async with serve(extender) as client:  # only where the benchmark asks for it
        assert (await client.post("/debug/floor", data=b"{}")).status == 404


def test_the_parse_floor_finds_each_names_row_as_a_filter_must() -> None:
    from extender.app import _parse_floor

    extender = service(cluster())
    rows = extender.view.state.row_by_name
    body = orjson.dumps(filter_body(pod(req=request(gpus=1)), ["l4-1", "gone", "a100-0"]))
    assert _parse_floor(extender, body) == [rows["l4-1"], None, rows["a100-0"]]
    for other in (b"{not json", b'["a list"]', b'{"NodeNames": [["a"]]}', b'{"NodeNames": 3}'):
        assert _parse_floor(extender, other) == []


async def test_view_metrics_are_collected_at_scrape_time() -> None:
    from extender.server import inventory_extender

    extender = inventory_extender(cluster())
    async with serve(extender) as client:
        p = pod("p", request(gpus=2))
        await post(client, "filter", filter_body(p, NAMES))
        await post(client, "bind", bind_body(p, "a100-0"))
        text = await (await client.get("/metrics")).text()
    assert 'fairpack_gpus_allocated{class="batch",team="team-a"} 2.0' in text
    assert 'fairpack_gpus_free{model="A100"} 14.0' in text
    assert "fairpack_gpu_seconds_total" in text
    assert "fairpack_gpus_stranded" in text


async def test_free_gpus_of_nodes_without_a_model_label_count_as_unknown() -> None:
    from extender.server import inventory_extender

    # A GPU node whose model label is missing: its 2 GPUs are free all the same.
    extender = inventory_extender([*cluster(), node("bare-0", gpus=2, model="")])
    async with serve(extender) as client:
        text = await (await client.get("/metrics")).text()
        state = orjson.loads(await (await client.get("/debug/state")).read())
    assert 'fairpack_gpus_free{model="unknown"} 2.0' in text
    assert state["models"]["unknown"] == {"gpus": 2, "free_gpus": 2.0}
    # free: 8 + 8 A100, 4 + 4 L4, 2 unknown
    assert [line for line in text.splitlines() if line.startswith("fairpack_gpus_free{")] == [
        'fairpack_gpus_free{model="A100"} 16.0',
        'fairpack_gpus_free{model="L4"} 8.0',
        'fairpack_gpus_free{model="unknown"} 2.0',
    ]


async def test_the_gpus_of_a_cordoned_node_are_free_for_nobody() -> None:
    from extender_builders import pod_info

    from extender import Upserted
    from extender.server import inventory_extender

    # a100-1 is cordoned (a drain), one of its GPUs still in use: its 7 idle GPUs are
    # neither free nor stranded (an 8-GPU shape could not use them on an open node).
    specs = [replace(s, schedulable=False) if s.name == "a100-1" else s for s in cluster()]

    async def scrape(specs: list[Any]) -> tuple[str, Any, list[str]]:
        extender = inventory_extender(specs)
        if any(s.name == "a100-1" for s in specs):
            extender.view.apply(Upserted("pod", pod_info("r", "a100-1", request(gpus=1))))
        async with serve(extender) as client:
            for name in ("p0", "p1", "p2"):  # the shape mix: 8-GPU pods
                await post(client, "filter", filter_body(pod(name, request(gpus=8)), NAMES))
            text = await (await client.get("/metrics")).text()
            state = orjson.loads(await (await client.get("/debug/state")).read())
        stranded = [
            line for line in text.splitlines() if line.startswith("fairpack_gpus_stranded ")
        ]
        return text, state, stranded

    text, state, stranded = await scrape(specs)
    assert 'fairpack_gpus_free{model="A100"} 0.0' in text  # a100-0 taken by p0
    assert state["models"]["A100"] == {"gpus": 16, "free_gpus": 0.0}
    assert [n["name"] for n in state["nodes"] if n["cordoned"]] == ["a100-1"]
    # as if a100-1 were not there: the L4 nodes' 8 GPUs alone are stranded
    *_, without = await scrape([s for s in specs if s.schedulable])
    assert stranded == without == ["fairpack_gpus_stranded 8.0"]


def busy_cluster(extender: Any) -> list[str]:
    """Twelve nodes, some identical and some not, partly taken."""
    from extender_builders import pod_info

    from extender import Upserted

    for i, (node_name, gpus, cpu) in enumerate(
        [
            ("a100-0", 3, 4000),
            ("a100-1", 3, 4000),
            ("l4-0", 1, 2000),
            ("l4-2", 2, 500),
            ("a100-3", 7, 100),
        ]
    ):
        extender.view.apply(
            Upserted("pod", pod_info(f"warm-{i}", node_name, request(gpus=gpus, cpu_milli=cpu)))
        )
    return [s.name for s in extender.view.nodes.values()]


def twelve_nodes() -> list[Any]:
    return [node(f"a100-{i}") for i in range(6)] + [
        node(f"l4-{i}", gpus=4, model="L4", gpu_memory_mib=24576) for i in range(6)
    ]


@pytest.mark.parametrize("gpus", [1, 2, 4], ids=["1-gpu", "2-gpus", "4-gpus"])
async def test_shortcuts_answer_exactly_what_a_plain_evaluation_answers(gpus: int) -> None:
    """Grouping identical nodes and reusing the filter's evaluation change no answer."""
    from extender import ClusterView, Extender

    fast = service(twelve_nodes(), config=passing_every_feasible_node())
    plain = Extender(ClusterView(twelve_nodes()), passing_every_feasible_node(), shortcuts=False)
    names = busy_cluster(fast)
    busy_cluster(plain)
    p = pod("probe", request(gpus=gpus))
    async with serve(fast) as fast_client, serve(plain) as plain_client:
        _, filtered = await post(fast_client, "filter", filter_body(p, names))
        _, plain_filtered = await post(plain_client, "filter", filter_body(p, names))
        assert filtered == plain_filtered
        # After its filter, the fast service reuses the evaluation; the plain one evaluates again.
        _, fast_scores = await post(
            fast_client, "prioritize", filter_body(p, filtered["NodeNames"])
        )
        _, plain_scores = await post(
            plain_client, "prioritize", filter_body(p, filtered["NodeNames"])
        )
    assert fast_scores == plain_scores
    assert max(s["Score"] for s in fast_scores) == 10
    reused = "fairpack_prioritize_reused_total"
    assert fast.metrics.registry.get_sample_value(reused) == 1.0
    assert plain.metrics.registry.get_sample_value(reused) == 0.0


@pytest.mark.parametrize(
    ("between", "reused"),
    [("pending", 1.0), ("elsewhere", 1.0), ("on-a-passed-node", 0.0)],
)
async def test_the_filters_evaluation_is_reused_only_while_its_nodes_stand_still(
    between: str, reused: float
) -> None:
    """Between filter and prioritize, another pod arrives or lands somewhere: the
    answer always equals a plain evaluation, and it is the filter's own only while
    no passed node changed."""
    from extender_builders import pod_info

    from extender import ClusterView, Extender, Upserted

    fast = service(twelve_nodes(), config=passing_every_feasible_node())
    plain = Extender(ClusterView(twelve_nodes()), passing_every_feasible_node(), shortcuts=False)
    names = busy_cluster(fast)
    busy_cluster(plain)
    p = pod("probe", request(gpus=4))
    async with serve(fast) as fast_client, serve(plain) as plain_client:
        _, filtered = await post(fast_client, "filter", filter_body(p, names))
        _, plain_filtered = await post(plain_client, "filter", filter_body(p, names))
        assert filtered == plain_filtered
        passed = filtered["NodeNames"]
        node_name = {
            "pending": "",
            "elsewhere": next(n for n in names if n not in passed),
            "on-a-passed-node": passed[0],
        }[between]
        other = pod_info("other", node_name, request(gpus=1, cpu_milli=1000))
        for extender in (fast, plain):
            extender.view.apply(Upserted("pod", other))
        _, fast_scores = await post(fast_client, "prioritize", filter_body(p, passed))
        _, plain_scores = await post(plain_client, "prioritize", filter_body(p, passed))
    assert fast_scores == plain_scores
    counter = "fairpack_prioritize_reused_total"
    assert fast.metrics.registry.get_sample_value(counter) == reused


@pytest.mark.parametrize(("between", "reused"), [("nothing", 1.0), ("a-pod-lands-there", 0.0)])
async def test_prioritize_of_the_node_filter_passed_alone_is_the_filters_answer(
    between: str, reused: float
) -> None:
    """kube-scheduler does not score a single feasible node; a caller that does gets 10
    for it while it stands still (the view counts the pod there since the filter)."""
    from extender_builders import pod_info

    from extender import Upserted

    extender = service(twelve_nodes())
    names = busy_cluster(extender)
    p = pod("probe", request(gpus=4))
    async with serve(extender) as client:
        _, filtered = await post(client, "filter", filter_body(p, names))
        [passed] = filtered["NodeNames"]
        if between == "a-pod-lands-there":
            other = pod_info("other", passed, request(gpus=1, cpu_milli=1000))
            extender.view.apply(Upserted("pod", other))
        status, scores = await post(client, "prioritize", filter_body(p, [passed]))
    assert status == 200 and [s["Host"] for s in scores] == [passed]
    if between == "nothing":
        assert scores[0]["Score"] == 10
    counter = "fairpack_prioritize_reused_total"
    assert extender.metrics.registry.get_sample_value(counter) == reused


@pytest.mark.parametrize("carry", [0, 3, 32])
@pytest.mark.parametrize("filter_passes", ["best", "feasible"])
async def test_a_run_of_pods_over_distinct_nodes_is_answered_as_a_plain_evaluation(
    filter_passes: str, carry: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes each in a state of their own: the service evaluates the request's node list
    once and then only the rows that changed (scoring.incremental; from 2,000 nodes, here
    from any number); pod after pod, its answers are those of a service that evaluates
    everything every time.  Explain and the rejection counts read the remembered entry
    whether or not it was completed after the answer (``carry``).  (Every term here is
    the same on every node: tests/test_incremental.py holds the terms read from an
    entry not completed to ``evaluate``'s.)"""
    from extender import ClusterView, Extender

    monkeypatch.setattr("extender.service._INCREMENTAL_FROM_NODES", 0)
    monkeypatch.setattr("extender.service._CARRY_CHANGED_ROWS", carry)

    def distinct() -> list[Any]:
        return [node(f"n-{i:02d}", cpu_milli=48_000 + 1_000 * i) for i in range(16)]

    config = LiveConfig(FairpackConfig(filter_passes=filter_passes))
    fast = service(distinct(), config=config)
    plain = Extender(ClusterView(distinct()), config, shortcuts=False)
    names = [f"n-{i:02d}" for i in range(16)]
    async with serve(fast) as fast_client, serve(plain) as plain_client:
        for i in range(24):
            p = pod(f"p-{i}", request(gpus=[1, 2, 1, 4][i % 4], cpu_milli=2_000))
            _, filtered = await post(fast_client, "filter", filter_body(p, names))
            _, plain_filtered = await post(plain_client, "filter", filter_body(p, names))
            assert filtered == plain_filtered
            # What explain shows is made after the answer, from the evaluation the
            # decision saw: the same as the plain service's.
            explained = [
                _timeless(orjson.loads(await (await c.get("/debug/explain", params=q)).read()))
                for c in (fast_client, plain_client)
                for q in [{"pod": f"team-a/p-{i}"}]
            ]
            assert explained[0] == explained[1]
            if filter_passes == "feasible":  # nothing assumed: bind the top node
                _, scores = await post(fast_client, "prioritize", filter_body(p, names))
                top = max(scores, key=lambda s: s["Score"])["Host"]
                for client in (fast_client, plain_client):
                    await post(client, "bind", bind_body(p, top))
    assert fast._incremental.patched > 0
    rejections = [
        {
            tuple(sorted(labels.items())): value
            for family in e.metrics.registry.collect()
            if family.name == "fairpack_filter_rejections"
            for name, labels, value, *_ in family.samples
            if name.endswith("_total")
        }
        for e in (fast, plain)
    ]
    assert rejections[0] == rejections[1] and rejections[0]


async def test_whether_grouping_pays_is_looked_at_after_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where nodes are each in a state of their own, every node is evaluated; whether
    grouping identical ones would pay is looked at again now and then, after an answer
    (grouping changes no answer, only the work of the next ones), and it resumes once
    enough nodes are alike."""
    from extender import Upserted
    from extender.app import NodeNamesMemo, _filter_with

    monkeypatch.setattr("extender.service._REGROUP_CHECK_EVERY", 2)
    distinct = [node(f"n-{i:02d}", cpu_milli=48_000 + 1_000 * i) for i in range(16)]
    extender = service(distinct)
    names = [spec.name for spec in distinct]
    looked: list[float] = []
    grouped = extender._grouped

    def spy(*args: Any) -> Any:
        answer = grouped(*args)
        looked.append(extender._group_share)
        return answer

    monkeypatch.setattr(extender, "_grouped", spy)
    handler = _filter_with(NodeNamesMemo())

    async def decide(i: int) -> None:
        body = orjson.dumps(filter_body(pod(f"p-{i}", request(gpus=1)), names))
        await handler(extender, body)

    await decide(0)  # grouping is presumed to pay until seen not to
    assert looked == [1.0]
    extender.settle()
    await decide(1)  # every second decision looks again: after its answer
    await decide(2)
    assert looked == [1.0] and extender.unsettled
    extender.settle()
    assert looked == [1.0, 1.0]
    # Nodes alike (all but one of one kind) make grouping pay: it resumes.
    for spec in distinct:
        extender.view.apply(Upserted("node", replace(spec, cpu_milli=48_000)))
    await decide(3)
    await decide(4)
    extender.settle()
    assert looked[-1] < 0.5
    await decide(5)
    assert len(looked) == 4  # grouped at once, inside the decision


async def test_work_left_for_after_the_answer_is_done_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Answers given back to back, with no pause to settle between them, leave each
    piece of work once (a caller that never settles does not pile it up)."""
    from extender.app import NodeNamesMemo, _filter_with

    extender = service(twelve_nodes())
    names = [spec.name for spec in twelve_nodes()]
    calls: list[str] = []
    monkeypatch.setattr(extender.fragments, "prepare", lambda: calls.append("prepare"))
    handler = _filter_with(NodeNamesMemo())
    for i in range(5):
        await handler(extender, orjson.dumps(filter_body(pod(f"p-{i}", request(gpus=1)), names)))
    assert calls == [] and extender.unsettled
    extender.settle()
    assert calls == ["prepare"] and not extender.unsettled


async def test_a_filters_assumption_is_counted_after_its_answer_before_the_next_read() -> None:
    """The node a filter passes alone counts the pod once the answer is out, and before
    anything reads the view again: a prioritize right after finds its GPUs taken."""
    from extender.app import NodeNamesMemo, _filter_with
    from extender.wire import ExtenderArgs

    extender = service([node("gpu-0"), node("gpu-1")])
    first = pod("first", request(gpus=8))
    answer = await _filter_with(NodeNamesMemo())(
        extender, orjson.dumps(filter_body(first, ["gpu-0", "gpu-1"]))
    )
    [passed] = answer["NodeNames"]
    placement = extender.view.lookup(first["metadata"]["uid"])
    assert placement is None or not placement.node  # not yet: the answer went first
    second = ExtenderArgs.model_validate(filter_body(pod("second", request(gpus=8)), [passed]))
    [score] = orjson.loads(extender.prioritize(second).body)
    assert score == {"Host": passed, "Score": 0}  # no room left there
    placement = extender.view.lookup(first["metadata"]["uid"])
    assert placement is not None and placement.node == passed


async def test_a_bind_right_after_an_unsettled_filter_sees_its_assumption() -> None:
    """A bind that comes before the last filter's work is done (another connection)
    checks the node against the view with that filter's pod counted: a refusal that
    names the conflict, not a failure."""
    from extender.app import NodeNamesMemo, _filter_with
    from extender.wire import ExtenderBindingArgs

    config = LiveConfig(FairpackConfig(filter_passes="feasible"))
    extender = service([node("gpu-0"), node("gpu-1")], config=config)
    filter_ = _filter_with(NodeNamesMemo())
    first = pod("first", request(gpus=4))
    await filter_(extender, orjson.dumps(filter_body(first, ["gpu-0", "gpu-1"])))
    extender.settle()
    whole = pod("whole", request(gpus=8))
    answer = await filter_(extender, orjson.dumps(filter_body(whole, ["gpu-0"])))
    assert answer["NodeNames"] == ["gpu-0"]  # passed alone: counted there after the answer
    result = await extender.bind(ExtenderBindingArgs.model_validate(bind_body(first, "gpu-0")))
    assert result["Error"].startswith("node gpu-0 no longer fits pod team-a/first")


def _timeless(document: Any) -> Any:
    """``document`` without its timestamps (``at_s``)."""
    if isinstance(document, dict):
        return {k: _timeless(v) for k, v in document.items() if k != "at_s"}
    if isinstance(document, list):
        return [_timeless(v) for v in document]
    return document


async def test_explain_names_the_node_filter_passed_among_identical_ones() -> None:
    """Identical nodes are evaluated once, through one of them; explain still names the
    node filter passed and the GPUs its assumption took."""
    extender = service([node(f"gpu-{i}") for i in range(6)])
    p = pod("p0", request(gpus=2))
    async with serve(extender) as client:
        _, filtered = await post(client, "filter", filter_body(p, [f"gpu-{i}" for i in range(6)]))
        decision = orjson.loads(
            await (await client.get("/debug/explain", params={"pod": "team-a/p0"})).read()
        )
    [chosen] = decision["filter"]["top"]  # the others are its group: one entry per group
    assert [chosen["node"]] == filtered["NodeNames"] == [decision["assumed"]["node"]]
    assert (chosen["priority"], chosen["gpus"]) == (10, decision["assumed"]["gpus"])


async def test_prioritize_of_the_node_passed_alone_explains_that_node_as_filter_saw_it() -> None:
    extender = service(twelve_nodes())
    names = busy_cluster(extender)
    p = pod("probe", request(gpus=4))
    async with serve(extender) as client:
        _, filtered = await post(client, "filter", filter_body(p, names))
        # The over-share teams move with any other pod's filter; no weighted term reads them.
        extender.view.state.over_share_teams = frozenset({"team-z"})
        _, scores = await post(client, "prioritize", filter_body(p, filtered["NodeNames"]))
        decision = orjson.loads(
            await (await client.get("/debug/explain", params={"pod": "team-a/probe"})).read()
        )
    assert scores == [{"Host": filtered["NodeNames"][0], "Score": 10}]
    assert extender.metrics.registry.get_sample_value("fairpack_prioritize_reused_total") == 1.0
    [ranked] = decision["prioritize"]["top"]
    assert (ranked["node"], ranked["priority"]) == (filtered["NodeNames"][0], 10)
    assert ranked["gpus"] == decision["assumed"]["gpus"]  # free before the assumption


def test_the_answer_is_sent_before_the_bookkeeping_it_leaves_for_later() -> None:
    """Explain's records and rejection counts are made once the answer is on the wire:
    here that bookkeeping waits until the client has read the answer, which it could not
    if the server did it first."""
    extender = service(cluster())
    order: list[str] = []
    answered = threading.Event()
    settle = extender.settle

    def settle_after_the_answer() -> None:
        answered.wait(timeout=10)
        order.append("settled")
        settle()

    extender.settle = settle_after_the_answer  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(extender))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    server = threading.Thread(target=loop.run_forever, daemon=True)
    server.start()
    try:
        body = orjson.dumps(filter_body(pod("p", request(gpus=2)), NAMES))
        post = urllib.request.Request(f"http://127.0.0.1:{port}/filter", data=body)
        with urllib.request.urlopen(post, timeout=5) as response:
            answer = orjson.loads(response.read())
        order.append("answered")
        answered.set()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/explain?pod=team-a/p") as r:
            explained = orjson.loads(r.read())
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        server.join(timeout=10)
        loop.close()
    assert len(answer["NodeNames"]) == 1
    assert order[:2] == ["answered", "settled"]
    assert explained["filter"]["rejected"] == {"node(s) have fewer than 2 GPUs": 1}
    assert explained["filter"]["top"][0]["node"] == answer["NodeNames"][0]
