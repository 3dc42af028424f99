"""``fairpack bench latency`` and ``fairpack bench view``: is the extender fast and small enough?

    fairpack bench latency --nodes 500,5000,15000 --json latency.json
    fairpack bench view --nodes 5000 --pods 100000 --json view.json

latency: per node count, the extender serves a synthetic cluster (a mix of 8x and
4x GPU nodes, half their GPUs taken, every node in its own state) from a child
process on loopback; a client plays kube-scheduler's filter then prioritize for
``--decisions`` pods.  With ``--filter-passes best`` (the shipped config) filter passes
one node and counts the pod there, as it does for kube-scheduler, so the cluster fills
as it would; kube-scheduler then binds without calling prioritize (one feasible node),
but prioritize is timed on that node all the same.  With ``feasible`` filter passes
every node that fits, prioritize scores them all, and the client binds the top one
through ``/bind``, as kube-scheduler with a ``prioritizeVerb`` and a ``bindVerb``
would.  Every filter names every node,
shuffled: kube-scheduler's filters run in parallel and list the feasible nodes in the
order they finish, another every cycle (``findNodesThatPassFilters``,
pkg/scheduler/schedule_one.go); ``--node-order fixed`` sends one list throughout.  Reported: server-side p50/p99 per verb (the ``Server-Timing`` header),
the client's round trip, and the transport floor measured in the same run: the
same body posted to an endpoint that only reads it and answers as many bytes as
the real answer had; and beside it the parse floor, the same endpoint when it also
does the least any extender in Python must do with a filter's body (parse it with
orjson, find each name's row in a dict), to show how much of the round trip is
owed to reading the node list at all.  The server finishes some bookkeeping after each answer (what
/debug/explain shows); each timed request waits until that is done, as
kube-scheduler's own plugins give it the time, and the bookkeeping's time is
reported beside (mean, and the histogram bucket holding its 99th percentile).

view: API-shaped Node and Pod objects (managedFields, statuses, env...) are
serialised in pages of 500 as the API server sends them, then parsed and fed
through the view's seam with the garbage collector paused as the reflectors pause
it; reported are the sync time (parse + translate + apply + building the arrays,
page generation excluded) and the process's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from benchmarks.demo import LoopbackServer, server_ms
from extender.objects import PodInfo, node_manifest, pod_manifest
from scoring import SPOT, NodeSpec, PodClass, PodRequest

TARGET_SERVER_P99_MS = 2.0
TARGET_ROUNDTRIP_OVER_FLOOR = 1.5
TARGET_VIEW_RSS_MIB = 300
TARGET_VIEW_SYNC_S = 30.0
WARMUP_DECISIONS = 20

# (model, per-GPU memory MiB, GPUs per node, CPU milli, share of the fleet)
NODE_TYPES = (
    ("NVIDIA-A100-SXM4-80GB", 81920, 8, 96_000, 0.35),
    ("NVIDIA-H100-80GB-HBM3", 81920, 8, 192_000, 0.25),
    ("NVIDIA-L4", 23034, 4, 48_000, 0.25),
    ("NVIDIA-A10G", 23028, 4, 48_000, 0.15),
)


def synthetic_nodes(count: int, seed: int = 0) -> list[NodeSpec]:
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(NODE_TYPES), size=count, p=[t[4] for t in NODE_TYPES])
    spot = rng.random(count) < 0.3
    nodes = []
    for index, (kind, is_spot) in enumerate(zip(kinds.tolist(), spot.tolist(), strict=True)):
        model, memory_mib, gpus, cpu_milli, _ = NODE_TYPES[kind]
        nodes.append(
            NodeSpec(
                name=f"gpu-node-{index:05d}",
                cpu_milli=cpu_milli,
                memory_mib=cpu_milli // 1000 * 8192,
                gpu_count=gpus,
                gpu_model=model,
                gpu_memory_mib=memory_mib,
                capacity_type=SPOT if is_spot else 0,
                pool=f"pool-{kind}",
            )
        )
    return nodes


def prefill(extender: Any, filter_passes: str = "best") -> None:
    """Take about half the GPUs, and a different amount of CPU on every node; then set
    ``filter_passes`` as a ConfigMap would."""
    from extender import Upserted

    view = extender.view
    rng = np.random.default_rng(7)
    for row, spec in enumerate(list(view.nodes.values())):
        gpus = int(rng.integers(0, spec.gpu_count + 1))
        cpu_milli = int(rng.integers(1, spec.cpu_milli // 2000)) * 1000 + row % 997
        request = PodRequest(
            gpu_count=gpus,
            milli_per_gpu=1000 if gpus else 0,
            cpu_milli=cpu_milli,
            memory_mib=gpus * 16384 + 4096,
        )
        info = PodInfo(f"prefill-{row}", f"team-{row % 8}", f"prefill-{row}", spec.name, request)
        view.apply(Upserted("pod", info))
    _ = view.state
    if not extender.config.update({"config.yaml": f"filter_passes: {filter_passes}"}):
        raise ValueError(f"filter_passes: {filter_passes!r} is refused by the config")


def random_request(rng: np.random.Generator) -> PodRequest:
    if rng.random() < 0.2:
        return PodRequest(
            gpu_count=1,
            milli_per_gpu=int(rng.choice([250, 500])),
            cpu_milli=2000,
            memory_mib=8192,
        )
    gpus = int(rng.choice([1, 1, 1, 2, 2, 4, 8]))
    return PodRequest(
        gpu_count=gpus,
        milli_per_gpu=1000,
        cpu_milli=4000 * gpus,
        memory_mib=32768 * gpus,
        pod_class=PodClass.INTERACTIVE if rng.random() < 0.3 else PodClass.BATCH,
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


async def _timed(
    session: aiohttp.ClientSession, url: str, path: str, body: bytes
) -> tuple[float, float, bytes, int]:
    # The server finishes some bookkeeping after each answer (explain's records,
    # rejection counts) while kube-scheduler runs its own plugins. Its answer to
    # /healthz comes once that is done, so no timing (the floor's included) absorbs
    # the previous request's; the time it takes is reported on its own.
    async with session.get(f"{url}/healthz") as idle:
        await idle.read()
    start = time.perf_counter()
    async with session.post(
        f"{url}{path}", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        payload = await response.read()
        elapsed_ms = (time.perf_counter() - start) * 1000
        return elapsed_ms, server_ms(response), payload, response.status


async def measure(
    url: str,
    names: list[str],
    decisions: int,
    seed: int,
    quiet: bool,
    shuffled: bool = True,
    bind_top: bool = False,
) -> dict[str, Any]:
    """Time ``decisions`` pods (after a warm-up); ``bind_top``: bind each pod to the node
    prioritize scores highest, as kube-scheduler does when filter passes several."""
    rng = np.random.default_rng(seed)
    order_rng = np.random.default_rng([seed, 1])
    figures: dict[str, list[float]] = {
        key: []
        for key in (
            "filter",
            "prioritize",
            "cycle",
            "filter_roundtrip",
            "filter_floor",
            "filter_parse_floor",
            "prioritize_roundtrip",
            "prioritize_floor",
        )
    }
    sizes: dict[str, list[int]] = {
        "filter_request": [],
        "filter_response": [],
        "prioritize_request": [],
    }
    passed_counts: list[int] = []
    binds = 0
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for index in tqdm(
            range(decisions + WARMUP_DECISIONS), disable=quiet, file=sys.stderr, unit="pod"
        ):
            pod = pod_manifest(f"bench-{index}", random_request(rng), namespace=f"team-{index % 8}")
            sent = [names[i] for i in order_rng.permutation(len(names))] if shuffled else names
            body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": sent})
            filter_ms, filter_server_ms, answer, status = await _timed(
                session, url, "/filter", body
            )
            if status != 200:
                raise RuntimeError(f"/filter answered {status}: {answer[:200]!r}")
            floor_ms, _, _, _ = await _timed(
                session, url, f"/debug/floor?respond_bytes={len(answer)}", body
            )
            parse_floor_ms, _, _, _ = await _timed(
                session, url, f"/debug/floor?respond_bytes={len(answer)}&parse=1", body
            )
            passed = orjson.loads(answer)["NodeNames"] or []
            warm = index >= WARMUP_DECISIONS
            if warm:
                figures["filter"].append(filter_server_ms)
                figures["filter_roundtrip"].append(filter_ms)
                figures["filter_floor"].append(floor_ms)
                figures["filter_parse_floor"].append(parse_floor_ms)
                sizes["filter_request"].append(len(body))
                sizes["filter_response"].append(len(answer))
                passed_counts.append(len(passed))
            if not passed:
                continue
            body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": passed})
            prioritize_ms, prioritize_server_ms, answer, status = await _timed(
                session, url, "/prioritize", body
            )
            if status != 200:
                raise RuntimeError(f"/prioritize answered {status}: {answer[:200]!r}")
            floor_ms, _, _, _ = await _timed(
                session, url, f"/debug/floor?respond_bytes={len(answer)}", body
            )
            if warm:
                figures["prioritize"].append(prioritize_server_ms)
                figures["cycle"].append(filter_server_ms + prioritize_server_ms)
                figures["prioritize_roundtrip"].append(prioritize_ms)
                figures["prioritize_floor"].append(floor_ms)
                sizes["prioritize_request"].append(len(body))
            if bind_top:
                binds += await _bind(session, url, pod, orjson.loads(answer))
        async with session.get(f"{url}/metrics") as response:
            exposition = await response.text()
    result: dict[str, Any] = after_answer(exposition)
    for key, values in figures.items():
        result[f"{key}_p50_ms"] = percentile(values, 50)
        result[f"{key}_p99_ms"] = percentile(values, 99)
    result["roundtrip_p99_ms"] = result["filter_roundtrip_p99_ms"]
    result["floor_p99_ms"] = result["filter_floor_p99_ms"]
    result["roundtrip_over_floor_p99"] = result["roundtrip_p99_ms"] / result["floor_p99_ms"]
    result["parse_floor_over_floor_p99"] = (
        result["filter_parse_floor_p99_ms"] / result["floor_p99_ms"]
    )
    result["prioritize_roundtrip_over_floor_p99"] = (
        result["prioritize_roundtrip_p99_ms"] / result["prioritize_floor_p99_ms"]
    )
    result["decisions"] = len(figures["filter"])
    result["binds"] = binds
    result["mean_nodes_passed_filter"] = float(np.mean(passed_counts)) if passed_counts else 0.0
    result["filter_request_bytes"] = int(np.mean(sizes["filter_request"]))
    result["filter_response_bytes"] = int(np.mean(sizes["filter_response"]))
    result["prioritize_request_bytes"] = int(np.mean(sizes["prioritize_request"] or [0]))
    return result


async def _bind(
    session: aiohttp.ClientSession, url: str, pod: dict[str, Any], scores: list[dict[str, Any]]
) -> int:
    """Bind ``pod`` to the top-scored host (the first of equals, as kube-scheduler's
    ``selectHost`` may pick); 1 when bound."""
    host = max(scores, key=lambda entry: entry["Score"])["Host"]
    metadata = pod["metadata"]
    args = {
        "PodName": metadata["name"],
        "PodNamespace": metadata["namespace"],
        "PodUID": metadata["uid"],
        "Node": host,
    }
    async with session.post(f"{url}/bind", data=orjson.dumps(args)) as response:
        answer = await response.read()
    if response.status != 200 or orjson.loads(answer).get("Error"):
        raise RuntimeError(f"/bind answered {response.status}: {answer[:200]!r}")
    return 1


def after_answer(exposition: str) -> dict[str, float]:
    """Per verb, the server's bookkeeping after its answers (every request, warm-up
    included): the mean, and the histogram bucket that holds the 99th percentile."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != "fairpack_after_answer_seconds":
            continue
        for sample in family.samples:
            verb, le = sample.labels.get("verb", ""), sample.labels.get("le")
            kind = sample.name.rsplit("_", 1)[1]
            series.setdefault((verb, kind), []).append(
                (float(le) if le is not None else 0.0, sample.value)
            )
    out: dict[str, float] = {}
    for verb in ("filter", "prioritize"):
        count = sum(v for _, v in series.get((verb, "count"), []))
        if not count:
            continue
        total = sum(v for _, v in series.get((verb, "sum"), []))
        out[f"{verb}_after_answer_mean_ms"] = total / count * 1000
        bucket = next(le for le, v in sorted(series[(verb, "bucket")]) if v >= 0.99 * count)
        out[f"{verb}_after_answer_p99_at_most_ms"] = bucket * 1000
    return out


def _load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {
        "decisions": args.decisions,
        "seed": args.seed,
        "node_order": args.node_order,
        "filter_passes": args.filter_passes,
        "load_average_before": _load_average(),
        "targets": {
            "server_p99_ms_at_5000": TARGET_SERVER_P99_MS,
            "roundtrip_over_floor": TARGET_ROUNDTRIP_OVER_FLOOR,
        },
        "nodes": {},
    }
    for count in args.nodes:
        nodes = synthetic_nodes(count, args.seed)
        names = [node.name for node in nodes]
        print(f"{count} nodes: starting the extender ...", file=sys.stderr)
        setup = functools.partial(prefill, filter_passes=args.filter_passes)
        with LoopbackServer(nodes, setup=setup, floor_endpoint=True) as server:
            report["nodes"][str(count)] = asyncio.run(
                measure(
                    server.url,
                    names,
                    args.decisions,
                    args.seed,
                    quiet=False,
                    shuffled=args.node_order == "shuffled",
                    bind_top=args.filter_passes == "feasible",
                )
            )
    report["load_average_after"] = _load_average()
    print_latency(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_latency(report: dict[str, Any]) -> None:
    passes = report.get("filter_passes", "best")
    print(f"\nfilter_passes: {passes}", end="")
    if passes == "best":
        print(" (prioritize gets the one node passed; kube-scheduler would not call it)")
    else:
        print(" (prioritize gets every node passed; the client binds the top one)")
    print("\nserver side (ms)           filter p50/p99   prioritize p50/p99   both p99   passed")
    for count, r in report["nodes"].items():
        print(
            f"  {count:>6} nodes        {r['filter_p50_ms']:7.2f} {r['filter_p99_ms']:7.2f}"
            f"      {r['prioritize_p50_ms']:7.2f} {r['prioritize_p99_ms']:7.2f}   {r['cycle_p99_ms']:7.2f}"
            f"  {r['mean_nodes_passed_filter']:7.0f}"
        )
    print("\nround trip p99 (ms)        filter  floor  ratio   prioritize  floor  ratio")
    for count, r in report["nodes"].items():
        print(
            f"  {count:>6} nodes       {r['filter_roundtrip_p99_ms']:7.2f} {r['filter_floor_p99_ms']:6.2f}"
            f" {r['roundtrip_over_floor_p99']:6.2f}     {r['prioritize_roundtrip_p99_ms']:7.2f}"
            f" {r['prioritize_floor_p99_ms']:6.2f} {r['prioritize_roundtrip_over_floor_p99']:6.2f}"
        )
    print("\nparse floor p99 (ms)       parse  floor  ratio   (orjson + a dict lookup per name)")
    for count, r in report["nodes"].items():
        if "filter_parse_floor_p99_ms" in r:
            print(
                f"  {count:>6} nodes       {r['filter_parse_floor_p99_ms']:7.2f}"
                f" {r['filter_floor_p99_ms']:6.2f} {r['parse_floor_over_floor_p99']:6.2f}"
            )
    print("\nafter the answer (ms)      filter mean/p99 <=   prioritize mean/p99 <=")
    for count, r in report["nodes"].items():
        print(
            f"  {count:>6} nodes        {r.get('filter_after_answer_mean_ms', 0):7.2f}"
            f" {r.get('filter_after_answer_p99_at_most_ms', 0):7.2f}"
            f"      {r.get('prioritize_after_answer_mean_ms', 0):7.2f}"
            f" {r.get('prioritize_after_answer_p99_at_most_ms', 0):7.2f}"
        )
    print(
        f"\nload average before/after: {report['load_average_before']} / {report['load_average_after']}"
    )


# -- the view: memory and sync time ----------------------------------------------------------------


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def realistic_pod(index: int, spec: NodeSpec, request: PodRequest) -> dict[str, Any]:
    """A running pod with the bulk real ones carry (statuses, env, mounts, managedFields)."""
    pod = pod_manifest(
        f"worker-{index:06d}",
        request,
        namespace=f"team-{index % 40}",
        uid=f"{index:08d}-0000-4000-8000-000000000000",
        node_name=spec.name,
        phase="Running",
        labels={"app.kubernetes.io/name": f"job-{index // 16}", "pod-template-hash": "7c9d8f6b5"},
        annotations={"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"},
    )
    container = pod["spec"]["containers"][0]
    container["env"] = [{"name": f"VAR_{i}", "value": f"value-{i}-{index}"} for i in range(12)]
    container["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"},
        {
            "name": "kube-api-access",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        },
    ]
    pod["spec"]["volumes"] = [
        {"name": "data", "emptyDir": {}},
        {"name": "kube-api-access", "projected": {"sources": []}},
    ]
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": f"job-{index // 16}",
            "uid": f"job-{index // 16}",
            "controller": True,
        }
    ]
    pod["metadata"]["managedFields"] *= 3
    pod["status"] = {
        "phase": "Running",
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "lastProbeTime": None,
            }
            for kind in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ],
        "hostIP": "10.0.0.1",
        "podIP": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
        "startTime": "2025-01-01T00:00:00Z",
        "containerStatuses": [
            {
                "name": "main",
                "ready": True,
                "restartCount": 0,
                "image": "registry.example/model-server:1",
                "imageID": "registry.example/model-server@sha256:" + "0" * 64,
                "containerID": "containerd://" + f"{index:064d}",
                "started": True,
                "state": {"running": {"startedAt": "2025-01-01T00:00:01Z"}},
            }
        ],
        "qosClass": "Burstable",
    }
    return pod


def pod_pages(nodes: list[NodeSpec], pod_count: int, page_size: int = 500) -> Iterator[bytes]:
    """The pods of a full cluster as list pages of JSON: GPUs filled first, then small CPU pods."""
    per_node = -(-pod_count // len(nodes))
    page: list[dict[str, Any]] = []
    index = 0
    for spec in nodes:
        free_gpus = spec.gpu_count
        for slot in range(per_node):
            if index == pod_count:
                break
            if free_gpus and slot % 2 == 0:
                gpus = min(free_gpus, 1 + slot % 2)
                free_gpus -= gpus
                request = PodRequest(
                    gpu_count=gpus, milli_per_gpu=1000, cpu_milli=2000, memory_mib=8192
                )
            else:
                request = PodRequest(cpu_milli=250, memory_mib=512)
            page.append(realistic_pod(index, spec, request))
            index += 1
            if len(page) == page_size:
                yield orjson.dumps({"kind": "PodList", "items": page})
                page = []
    if page:
        yield orjson.dumps({"kind": "PodList", "items": page})


def main_view(args: argparse.Namespace) -> int:
    from extender import ClusterView, LiveConfig, Metrics
    from extender.view import KINDS
    from extender.watch import ViewFeed, collector_paused

    nodes = synthetic_nodes(args.nodes, args.seed)
    node_page = orjson.dumps({"kind": "NodeList", "items": [node_manifest(n) for n in nodes]})
    gc.collect()
    baseline_mib = rss_mib()
    view = ClusterView(required_kinds=KINDS)
    feed = ViewFeed(view, LiveConfig(), Metrics())
    sync_s = 0.0
    # The collector pauses as in the reflectors' lists (extender.watch.collector_paused).
    with collector_paused:
        started = time.perf_counter()
        feed.list("node", orjson.loads(node_page)["items"])
        del node_page
        sync_s += time.perf_counter() - started
        pods = feed.sink("pod")
        records: list[Any] = []
        listed_at_s = view.clock()
        page_bytes = 0
        for page in tqdm(
            pod_pages(nodes, args.pods), total=-(-args.pods // 500), unit="page", file=sys.stderr
        ):
            page_bytes += len(page)
            started = time.perf_counter()
            records.extend(
                r for obj in orjson.loads(page)["items"] if (r := pods.translate(obj)) is not None
            )
            sync_s += time.perf_counter() - started
        started = time.perf_counter()
        pods.replaced(records, listed_at_s)
        del records
    sync_s += time.perf_counter() - started  # freezing the view included
    started = time.perf_counter()
    state = view.state  # the arrays are built and every pod placed here
    sync_s += time.perf_counter() - started
    gc.collect()
    report = {
        "nodes": args.nodes,
        "pods": view.pod_count,
        "list_bytes": page_bytes,
        "sync_s": sync_s,
        "rss_mib": rss_mib(),
        "rss_before_sync_mib": baseline_mib,
        "view_mib": rss_mib() - baseline_mib,
        "peak_rss_mib": peak_rss_mib(),
        "gpus_used": int(state.gpu_count.sum() - (state.free_milli.sum() // 1000)),
        "conflicts": view.conflicts,
        "targets": {"rss_mib": TARGET_VIEW_RSS_MIB, "sync_s": TARGET_VIEW_SYNC_S},
    }
    print(
        f"\nview of {report['nodes']} nodes and {report['pods']} pods "
        f"({page_bytes / 2**20:.0f} MiB of list JSON): synced in {sync_s:.1f} s, "
        f"RSS {report['rss_mib']:.0f} MiB ({report['view_mib']:.0f} MiB for the view, "
        f"peak {report['peak_rss_mib']:.0f} MiB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
