"""``fairpack demo``: the built-in trace through the extender's real HTTP API.

    fairpack demo [--pods N] [--seed S]

Starts ``fairpack serve --inventory`` on loopback (a child process, as the
extender is beside kube-scheduler) over the built-in openb node list, then plays
kube-scheduler for every pod of the built-in trace (FGD protocol order: shuffled
with the seed, nothing departs): ``/filter`` with every node name; ``/prioritize``
over the nodes that passed when there are several, the top score winning (ties:
the first); ``/bind``.  fairpack's default (``filter_passes: best``) passes one
node, and kube-scheduler, run from the shipped config, then has nothing to
prioritize and binds that node itself; fairpack counts the pod there from its
filter on, and in a cluster the watch confirms the binding.  Without an API server
``/bind`` stands in for that confirmation.
Prints placement quality and per-verb latency, client side (round trip) and
server side (the ``Server-Timing`` header).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import numpy as np
import orjson
from tqdm import tqdm

from benchmarks.traces import (
    BUILTIN_NODES,
    BUILTIN_PODS,
    TraceError,
    TracePod,
    load_nodes,
    load_pods,
)
from extender.objects import pod_manifest
from scoring import MILLI_PER_GPU, NodeSpec, PodClass

VERBS = ("filter", "prioritize", "bind")
PRIORITY_CLASS = {PodClass.INTERACTIVE: "inference-critical", PodClass.BATCH: "batch-inference"}

# -- the server, in a child process ---------------------------------------------------------------


def _serve_child(
    nodes: list[NodeSpec],
    setup: Callable[[Any], None] | None,
    floor_endpoint: bool,
    ports: Any,
) -> None:
    from aiohttp import web

    from extender import create_app
    from extender.server import inventory_extender
    from extender.watch import freeze_the_heap

    async def run() -> None:
        extender = inventory_extender(nodes)
        if setup is not None:
            setup(extender)
        freeze_the_heap()  # the pods set up stand for a first sync's, as fairpack serve does
        runner = web.AppRunner(create_app(extender, floor_endpoint=floor_endpoint), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        ports.put(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        await asyncio.Event().wait()

    asyncio.run(run())


class LoopbackServer:
    """``fairpack serve --inventory`` in a child process on a free loopback port."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        setup: Callable[[Any], None] | None = None,
        floor_endpoint: bool = False,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._ports = context.Queue()
        self._process = context.Process(
            target=_serve_child,
            args=(list(nodes), setup, floor_endpoint, self._ports),
            daemon=True,
        )
        self.url = ""

    def __enter__(self) -> LoopbackServer:
        self._process.start()
        port = self._ports.get(timeout=120)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._process.terminate()
        self._process.join(timeout=10)


# -- playing kube-scheduler ----------------------------------------------------------------------


@dataclass
class Timings:
    client_ms: dict[str, list[float]] = field(default_factory=lambda: {verb: [] for verb in VERBS})
    server_ms: dict[str, list[float]] = field(default_factory=lambda: {verb: [] for verb in VERBS})

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for verb in VERBS:
            client, server = np.array(self.client_ms[verb]), np.array(self.server_ms[verb])
            if len(client) == 0:
                continue
            out[verb] = {
                "count": len(client),
                "client_p50_ms": float(np.percentile(client, 50)),
                "client_p99_ms": float(np.percentile(client, 99)),
                "server_p50_ms": float(np.percentile(server, 50)),
                "server_p99_ms": float(np.percentile(server, 99)),
            }
        return out


def server_ms(response: aiohttp.ClientResponse) -> float:
    timing = response.headers.get("Server-Timing", "")
    _, _, duration = timing.partition("dur=")
    return float(duration) if duration else float("nan")


async def post(
    session: aiohttp.ClientSession, url: str, verb: str, body: bytes, timings: Timings
) -> Any:
    start = time.perf_counter()
    async with session.post(
        f"{url}/{verb}", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        payload = await response.read()
        timings.client_ms[verb].append((time.perf_counter() - start) * 1000)
        timings.server_ms[verb].append(server_ms(response))
        if response.status != 200:
            raise RuntimeError(f"/{verb} answered {response.status}: {payload[:200]!r}")
    return orjson.loads(payload)


async def schedule_one(
    session: aiohttp.ClientSession,
    url: str,
    pod: dict[str, Any],
    node_names: bytes,
    timings: Timings,
) -> str | None:
    """One scheduling cycle as kube-scheduler runs it; the node bound, or None.

    ``node_names`` is the JSON of every node name, written once for the whole replay.
    """
    pod_json = orjson.dumps(pod)
    filtered = await post(
        session,
        url,
        "filter",
        b'{"Pod":' + pod_json + b',"Nodes":null,"NodeNames":' + node_names + b"}",
        timings,
    )
    if filtered["Error"]:
        raise RuntimeError(f"filter error: {filtered['Error']}")
    passed = filtered["NodeNames"] or []
    if not passed:
        return None
    host = passed[0]
    if len(passed) > 1:
        scores = await post(
            session,
            url,
            "prioritize",
            b'{"Pod":' + pod_json + b',"Nodes":null,"NodeNames":' + orjson.dumps(passed) + b"}",
            timings,
        )
        host = max(scores, key=lambda h: h["Score"])["Host"]  # max keeps the first of equals
    metadata = pod["metadata"]
    bound = await post(
        session,
        url,
        "bind",
        orjson.dumps(
            {
                "PodName": metadata["name"],
                "PodNamespace": metadata["namespace"],
                "PodUID": metadata["uid"],
                "Node": host,
            }
        ),
        timings,
    )
    if bound["Error"]:
        raise RuntimeError(f"bind error: {bound['Error']}")
    return str(host)


def trace_pod_manifest(index: int, trace_pod: TracePod) -> dict[str, Any]:
    request = trace_pod.request
    return pod_manifest(
        f"{trace_pod.name}-{index}",
        request,
        namespace="openb",
        uid=f"00000000-0000-4000-8000-{index:012d}",
        priority_class=PRIORITY_CLASS[request.pod_class],
    )


async def replay(
    url: str, nodes: Sequence[NodeSpec], pods: Sequence[TracePod], quiet: bool
) -> dict[str, Any]:
    node_names = orjson.dumps([node.name for node in nodes])
    timings = Timings()
    placed = failed = 0
    placed_milli = 0
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        progress = tqdm(total=len(pods), unit="pod", disable=quiet, file=sys.stderr, smoothing=0.05)
        started_s = time.perf_counter()
        for index, trace_pod in enumerate(pods):
            node = await schedule_one(
                session, url, trace_pod_manifest(index, trace_pod), node_names, timings
            )
            if node is None:
                failed += 1
            else:
                placed += 1
                placed_milli += trace_pod.request.gpu_milli
            progress.update()
            if index % 200 == 0:
                progress.set_postfix(placed=placed, failed=failed, refresh=False)
        progress.close()
        elapsed_s = time.perf_counter() - started_s
        async with session.get(f"{url}/debug/state") as response:
            state = orjson.loads(await response.read())
    total_gpus = sum(node.gpu_count for node in nodes)
    free_gpus = sum(model["free_gpus"] for model in state["models"].values())
    view_allocated_milli = round((total_gpus - free_gpus) * MILLI_PER_GPU)
    requested_milli = sum(p.request.gpu_milli for p in pods)
    return {
        "nodes": len(nodes),
        "gpus": total_gpus,
        "pods": len(pods),
        "placed": placed,
        "failed": failed,
        "requested_gpu_pct": 100.0 * requested_milli / (total_gpus * MILLI_PER_GPU),
        "allocated_gpu_pct": 100.0 * placed_milli / (total_gpus * MILLI_PER_GPU),
        "view_matches_binds": view_allocated_milli == placed_milli,
        "elapsed_s": elapsed_s,
        "pods_per_s": len(pods) / elapsed_s if elapsed_s else 0.0,
        "latency_ms": timings.summary(),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\nfairpack demo: {summary['pods']} pods of the built-in trace onto "
        f"{summary['nodes']} nodes ({summary['gpus']} GPUs) through the HTTP API"
    )
    print(
        f"  placed {summary['placed']}, failed {summary['failed']}; "
        f"GPU requested {summary['requested_gpu_pct']:.1f}% of capacity, "
        f"allocated {summary['allocated_gpu_pct']:.1f}%"
    )
    check = "matches" if summary["view_matches_binds"] else "DOES NOT match"
    print(f"  the extender's view {check} the binds; {summary['pods_per_s']:.0f} pods/s")
    print("\n  latency (ms)     client p50  client p99  server p50  server p99")
    for verb, figures in summary["latency_ms"].items():
        print(
            f"  {verb:<14} {figures['client_p50_ms']:>11.2f} {figures['client_p99_ms']:>11.2f} "
            f"{figures['server_p50_ms']:>11.2f} {figures['server_p99_ms']:>11.2f}"
        )


def main(args: argparse.Namespace) -> int:
    try:
        nodes = load_nodes(args.nodes or BUILTIN_NODES)
        trace = load_pods(args.trace or BUILTIN_PODS)
    except TraceError as exc:
        print(f"fairpack demo: {exc}", file=sys.stderr)
        return 2
    if not any(node.gpu_count for node in nodes):
        print(f"fairpack demo: {args.nodes}: the nodes have no GPUs to place on", file=sys.stderr)
        return 2
    order = np.random.default_rng(args.seed).permutation(len(trace))
    pods = [trace[i] for i in order[: args.pods]]
    with LoopbackServer(nodes) as server:
        summary = asyncio.run(replay(server.url, nodes, pods, args.quiet))
    summary["seed"] = args.seed
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["view_matches_binds"] else 1
