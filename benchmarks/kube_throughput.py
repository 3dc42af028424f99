"""``fairpack bench kube``: real kube-scheduler throughput, without fairpack and with it.

    fairpack bench kube --nodes 1000 --pods 3000 --json kube.json
    fairpack bench kube --nodes 5000 --pods 3000 --json kube-5000.json

Per node count, one throw-away control plane on loopback (etcd, kube-apiserver,
kube-controller-manager: tests/e2e/controlplane.py, binaries from
scripts/build-control-plane.sh) gets that many fake GPU nodes (8x A100 and 4x A10G,
created through the API with their status). Then, for percentageOfNodesToScore at its
default (adaptive) and at 100, kube-scheduler runs the shipped
manifests/scheduler/kube-scheduler-config.yaml twice: without its extender (fairpack not
running at all) and with it, as shipped (a fresh ``fairpack serve`` at its defaults): per
pod one filter, which passes the one node fairpack ranks first; no prioritize, no bind
(kube-scheduler binds), preempt only for a pod that fits nowhere. Each run creates
``--pods`` one-GPU pods concurrently and measures pods bound per second from the first
creation to the last binding, as seen by a watch (``--backlog``: all pods first, then
kube-scheduler; from the first binding to the last). Both runs use the same client
settings: kube-scheduler's QPS/burst raised so that its client is not the bottleneck, and
the API server's max-requests-inflight raised to match.
Between runs, the previous run's namespace is deleted (its pods and kube-scheduler's
events) and the control plane left to settle, so that no run pays for the one before.

Also reported per run: the creation rate (if it is close to the bind rate, the run measured
the load generator, not the scheduler), the mean time of kube-scheduler's scheduling
algorithm and of each of its extension points, and, with the extender, fairpack's
server-side time and CPU time per verb (from its /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build-control-plane.sh"
SCHEDULER_QPS = 5000
SCHEDULER_BURST = 10000
APISERVER_ARGS = ("--max-requests-inflight=1000", "--max-mutating-requests-inflight=500")
TARGET_RATIO = 0.5
VERBS = ("filter", "prioritize", "bind", "preempt")
FAIRPACK_COUNTERS = (
    "fairpack_filter_assumptions_total",
    "fairpack_filter_rejections_total",
    "fairpack_fairshare_holds_total",
    "fairpack_holds_lifted_total",
    "fairpack_binds_total",
)


class BenchError(RuntimeError):
    """A run that cannot be measured: pods that cannot all bind, or that did not in time, or
    a request the API server refused."""


def _e2e(module: str) -> Any:
    """A module of tests/e2e (the control plane and the fake fleet live with the tests)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(f"e2e.{module}")


def bin_dir(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if os.environ.get("FAIRPACK_K8S_BIN_DIR"):
        return Path(os.environ["FAIRPACK_K8S_BIN_DIR"])
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-bin-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


@dataclass
class Api:
    """Concurrent requests to kube-apiserver as cluster admin (aiohttp, client certificate)."""

    server: str
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            async with self.session.request(
                method, self.server + path, data=data, headers=headers
            ) as r:
                raw = await r.read()
        except aiohttp.ClientError as exc:  # the API server went away
            raise BenchError(f"{method} {path}: {exc}") from exc
        if r.content_type != "application/json":  # a proxy's or a stopping server's text
            return r.status, raw.decode(errors="replace") or None
        return r.status, orjson.loads(raw) if raw else None

    async def ok(
        self, method: str, path: str, body: Any = None, *, also: tuple[int, ...] = ()
    ) -> Any:
        status, result = await self.request(method, path, body)
        if not (200 <= status < 300 or status in also):
            raise BenchError(f"{method} {path}: HTTP {status}: {str(result)[:300]}")
        return result


def _ssl(cp: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cp.ca_crt))
    context.load_cert_chain(str(cp.admin_crt), str(cp.admin_key))
    return context


async def _bounded(concurrency: int, jobs: list[Any]) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job: Any) -> None:
        async with semaphore:
            await job

    await asyncio.gather(*(one(job) for job in jobs))


def _fleet_kinds() -> tuple[Any, ...]:
    """The node types of the fleet, taking turns (node i is of kind i % len)."""
    fake = _e2e("fake_nodes")
    return (fake.A100_80GB, fake.A10G_24GB)


def fleet_gpus(count: int) -> int:
    """GPUs of a fleet of ``count`` nodes (create_fleet's)."""
    kinds = _fleet_kinds()
    return sum(kinds[i % len(kinds)].gpus for i in range(count))


async def create_fleet(api: Api, count: int, concurrency: int) -> None:
    fake = _e2e("fake_nodes")
    kinds = _fleet_kinds()
    jobs = [
        api.ok(
            "POST",
            "/api/v1/nodes",
            fake.gpu_node(f"bench-{i:05d}", kinds[i % len(kinds)], fleet="bench", spot=i % 4 == 3),
        )
        for i in range(count)
    ]
    await _bounded(concurrency, jobs)


async def _namespace(api: Api, name: str) -> None:
    await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while (await api.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default"))[
        0
    ] != 200:
        if time.monotonic() > deadline:
            raise BenchError(f"no default ServiceAccount in {name}")
        await asyncio.sleep(0.2)


async def _watch_bindings(
    api: Api, namespace: str, resource_version: str, pods: int, bound_at: dict[str, float]
) -> None:
    """Record when each pod of the namespace is first seen with spec.nodeName, until all are."""
    query = urllib.parse.urlencode(
        {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true"}
    )
    while len(bound_at) < pods:
        url = f"{api.server}/api/v1/namespaces/{namespace}/pods?{query}"
        async with api.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
            async for line in response.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                obj = event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    query = urllib.parse.urlencode(
                        {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true"}
                    )
                if event.get("type") in ("ADDED", "MODIFIED") and obj["spec"].get("nodeName"):
                    bound_at.setdefault(obj["metadata"]["name"], time.monotonic())
                    if len(bound_at) >= pods:
                        return


async def measure(
    api: Api,
    namespace: str,
    pods: int,
    concurrency: int,
    timeout_s: float,
    start_scheduler: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Create ``pods`` one-GPU pods concurrently and time their bindings.

    Streaming (kube-scheduler already running): pods bound per second from the first
    creation to the last binding. Backlog (``start_scheduler`` given): every pod is created
    first, then kube-scheduler starts; pods bound per second from the first binding to the
    last, which leaves the load generator out."""
    fake = _e2e("fake_nodes")
    await _namespace(api, namespace)
    listed = await api.ok("GET", f"/api/v1/namespaces/{namespace}/pods")
    bound_at: dict[str, float] = {}
    watcher = asyncio.create_task(
        _watch_bindings(api, namespace, listed["metadata"]["resourceVersion"], pods, bound_at)
    )
    path = f"/api/v1/namespaces/{namespace}/pods"
    manifests = [fake.gpu_pod(f"p{i:05d}", gpus=1, cpu="100m", memory="256Mi") for i in range(pods)]
    try:
        started = time.monotonic()
        await _bounded(concurrency, [api.ok("POST", path, manifest) for manifest in manifests])
        created = time.monotonic()
        if start_scheduler is not None:
            await asyncio.to_thread(start_scheduler)
        try:
            await asyncio.wait_for(asyncio.shield(watcher), timeout_s)
        except TimeoutError:
            raise BenchError(
                f"only {len(bound_at)} of {pods} pods bound after {timeout_s:.0f}s"
            ) from None
    finally:  # a failed create or Ctrl-C must not leave the watch running
        watcher.cancel()
    first, last = min(bound_at.values()), max(bound_at.values())
    if start_scheduler is not None:
        rate, seconds = (pods - 1) / (last - first), last - first
    else:
        rate, seconds = pods / (last - started), last - started
    return {
        "pods": pods,
        "mode": "backlog" if start_scheduler is not None else "stream",
        "pods_per_s": round(rate, 1),
        "created_per_s": round(pods / (created - started), 1),
        "seconds": round(seconds, 2),
    }


async def _delete_run(api: Api, namespace: str, timeout_s: float = 300.0) -> None:
    """Delete a run's namespace and wait until it is gone.

    Its pods go first, at once (grace period 0: no kubelet would confirm them). Then the
    namespace controller deletes the rest, mostly kube-scheduler's events (one per pod):
    thousands of deletions that would otherwise land in the next run and be charged to it.
    """
    await api.ok(
        "DELETE",
        f"/api/v1/namespaces/{namespace}/pods",
        {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
    )
    await api.ok("DELETE", f"/api/v1/namespaces/{namespace}", also=(404,))
    deadline = time.monotonic() + timeout_s
    while (await api.request("GET", f"/api/v1/namespaces/{namespace}"))[0] != 404:
        if time.monotonic() > deadline:
            raise BenchError(f"namespace {namespace} still there after {timeout_s:.0f} s")
        await asyncio.sleep(0.5)


def _histogram_means(samples: dict[str, float], prefix: str, label: str) -> dict[str, float]:
    """{label value: mean seconds} of a Prometheus histogram's _sum/_count."""
    means: dict[str, float] = {}
    for key, total in samples.items():
        if not key.startswith(f"{prefix}_sum"):
            continue
        labels = key[len(prefix) + 4 :]
        count = samples.get(f"{prefix}_count{labels}", 0.0)
        value = labels.partition(f'{label}="')[2].partition('"')[0] or "all"
        if count:
            means[value] = total / count
    return means


def _scheduler_metrics(cp: Any, port: int) -> dict[str, float]:
    """kube-scheduler's /metrics (as cluster admin), parsed like FairpackStack.metrics()."""
    import urllib.request

    context = _ssl(cp)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(
        f"https://127.0.0.1:{port}/metrics", context=context, timeout=10
    ) as r:
        return _samples(r.read().decode())


async def _apiserver_requests(api: Api) -> dict[str, float]:
    """kube-apiserver's requests so far by verb and resource, and its etcd requests by
    operation and type (from its /metrics)."""
    async with api.session.get(api.server + "/metrics") as r:
        samples = _samples(await r.text())
    counts: dict[str, float] = {}
    for key, value in samples.items():
        name, _, labels = key.partition("{")
        fields: tuple[str, ...]
        if name == "apiserver_request_total":
            fields = ("verb", "resource", "subresource")
        elif name == "etcd_requests_total":
            fields = ("operation", "type")
        else:
            continue
        parts = [labels.partition(f'{field}="')[2].partition('"')[0] for field in fields]
        label = f"{name.split('_')[0]} " + " ".join(part for part in parts if part)
        counts[label] = counts.get(label, 0.0) + value
    return counts


def _samples(text: str) -> dict[str, float]:
    """Prometheus text format as {"name{labels}": value}."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def _counters(samples: dict[str, float], names: tuple[str, ...]) -> dict[str, float]:
    """The samples of these counters, keyed as in the text format (labels included)."""
    return {key: value for key, value in samples.items() if key.partition("{")[0] in names}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids(cp: Any, stack: Any) -> dict[str, int]:
    """The processes that share the machine during a run (the load generator is this one)."""
    pids = {"bench-client": os.getpid()}
    for name, component in cp._components.items():
        if component.proc is not None and component.proc.poll() is None:
            pids[name] = component.proc.pid
    for process in (stack.scheduler, stack.fairpack) if stack is not None else ():
        if process.running:
            pids[process.name] = process.proc.pid
    return pids


def _algorithm_ms(samples: dict[str, float]) -> float | None:
    """Mean time of kube-scheduler's scheduling algorithm (filters, extenders, scores): the
    serial part of a scheduling cycle, where fairpack's filter and prioritize sit."""
    prefix = "scheduler_scheduling_algorithm_duration_seconds"
    total = sum(v for k, v in samples.items() if k.startswith(f"{prefix}_sum"))
    count = sum(v for k, v in samples.items() if k.startswith(f"{prefix}_count"))
    return round(total / count * 1000, 3) if count else None


def _extension_points_ms(samples: dict[str, float]) -> dict[str, float]:
    """Mean time per scheduling attempt of each of kube-scheduler's extension points
    (every profile and status together). The scheduling algorithm's time less its Filter,
    PreFilter, PreScore and Score is what the extenders' filter and prioritize cost it,
    round trips included."""
    prefix = "scheduler_framework_extension_point_duration_seconds"
    sums: dict[str, list[float]] = {}
    for key, value in samples.items():
        for part, index in (("_sum{", 0), ("_count{", 1)):
            if key.startswith(prefix + part):
                point = key.partition('extension_point="')[2].partition('"')[0]
                sums.setdefault(point, [0.0, 0.0])[index] += value
    return {point: round(t / n * 1000, 3) for point, (t, n) in sorted(sums.items()) if n}


async def _run_one(
    cp: Any,
    stack: Any,
    api: Api,
    *,
    extender: bool,
    percentage: int | None,
    index: int,
    args: argparse.Namespace,
    say: Any,
) -> dict[str, Any]:
    if extender:
        stack.start_fairpack()
    config = stack.scheduler_config(
        extender=extender,
        percentageOfNodesToScore=percentage,
        clientConnection={"qps": SCHEDULER_QPS, "burst": SCHEDULER_BURST},
    )
    scheduler_args = [f"--feature-gates={args.feature_gates}"] if args.feature_gates else []
    namespace = f"bench-run-{index}"
    try:
        pids = _pids(cp, stack)
        cpu_before = {name: _cpu_s(pid) for name, pid in pids.items()}
        requests_before = await _apiserver_requests(api)
        if args.backlog:
            result = await measure(
                api,
                namespace,
                args.pods,
                args.concurrency,
                args.timeout,
                lambda: stack.start_scheduler(config, scheduler_args),
            )
            pids = {**pids, **_pids(cp, stack)}
        else:
            stack.start_scheduler(config, scheduler_args)
            pids = {**pids, **_pids(cp, stack)}
            cpu_before.update({n: _cpu_s(p) for n, p in pids.items() if n not in cpu_before})
            result = await measure(api, namespace, args.pods, args.concurrency, args.timeout)
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
        requests_after = await _apiserver_requests(api)
        # What the API server and etcd were asked to do during the run, per pod.
        result["apiserver_requests_per_pod"] = {
            label: round(delta / args.pods, 2)
            for label, count in sorted(requests_after.items())
            if (delta := count - requests_before.get(label, 0.0)) >= args.pods / 100
        }
        result["cpu_s"] = {
            name: round(_cpu_s(pid) - cpu_before.get(name, 0.0), 2) for name, pid in pids.items()
        }
        scheduler_samples = _scheduler_metrics(cp, stack.scheduler_port)
        result["scheduling_algorithm_ms"] = _algorithm_ms(scheduler_samples)
        result["extension_points_ms"] = _extension_points_ms(scheduler_samples)
        # Attempts beyond one per pod (unschedulable, retried) cost every component.
        result["schedule_attempts"] = _counters(
            scheduler_samples, ("scheduler_schedule_attempts_total",)
        )
        if extender:
            samples = stack.metrics()
            means = _histogram_means(samples, "fairpack_request_duration_seconds", "verb")
            result["fairpack_server_ms"] = {
                v: round(means[v] * 1000, 3) for v in VERBS if v in means
            }
            result["fairpack_server_cpu_ms"] = {
                v: round(cpu / count * 1000, 3)
                for v in VERBS
                if (cpu := samples.get(f'fairpack_request_cpu_seconds_total{{verb="{v}"}}'))
                and (count := samples.get(f'fairpack_request_duration_seconds_count{{verb="{v}"}}'))
            }
            result["fairpack_counters"] = _counters(samples, FAIRPACK_COUNTERS)
            result["fairpack_requests"] = {
                v: int(samples.get(f'fairpack_request_duration_seconds_count{{verb="{v}"}}', 0))
                for v in VERBS
            }
    finally:
        stack.stop_scheduler()
        if extender:
            stack.stop_fairpack()
    # Not after a failure or Ctrl-C: the control plane goes then, and may be dead already.
    await _delete_run(api, namespace)
    await _settle(cp, api, say)
    label = "with" if extender else "without"
    say(
        f"  {label} fairpack: {result['pods_per_s']} pods/s "
        f"(created at {result['created_per_s']}/s, {result['seconds']} s)"
    )
    return result


async def _bench_nodes(nodes: int, args: argparse.Namespace, say: Any) -> list[dict[str, Any]]:
    controlplane = _e2e("controlplane")
    stack_module = _e2e("fairpack_stack")
    cp = controlplane.ControlPlane(
        bin_dir(args.bin_dir),
        keep_workdir=args.keep,
        extra_apiserver_args=APISERVER_ARGS,
        log=lambda msg: say(f"[control-plane] {msg}"),
    )
    cp.start(scheduler=False)
    stack = stack_module.FairpackStack(cp, log_level="WARNING", ready_timeout=180.0)
    runs: list[dict[str, Any]] = []
    try:
        connector = aiohttp.TCPConnector(ssl=_ssl(cp), limit=args.concurrency + 4)
        async with aiohttp.ClientSession(connector=connector) as session:
            api = Api(cp.server, session)
            t0 = time.monotonic()
            await create_fleet(api, nodes, args.concurrency)
            say(f"{nodes} nodes created in {time.monotonic() - t0:.1f}s")
            # The TTL controller patches every node at 20/s: give it twice that long.
            await _settle(cp, api, say, timeout_s=120.0 + nodes / 10)
            index = 0
            for percentage in args.percentages:
                pct_label: int | str = percentage if percentage is not None else "default"
                say(f"{nodes} nodes, {args.pods} pods, percentageOfNodesToScore {pct_label}:")
                results = {}
                for extender in (False, True):
                    index += 1
                    results[extender] = await _run_one(
                        cp,
                        stack,
                        api,
                        extender=extender,
                        percentage=percentage,
                        index=index,
                        args=args,
                        say=say,
                    )
                without, with_ = results[False], results[True]
                runs.append(
                    {
                        "nodes": nodes,
                        "pods": args.pods,
                        "percentage_of_nodes_to_score": pct_label,
                        "without_extender_pods_per_s": without["pods_per_s"],
                        "with_extender_pods_per_s": with_["pods_per_s"],
                        "ratio": round(with_["pods_per_s"] / without["pods_per_s"], 3),
                        "without_extender": without,
                        "with_extender": with_,
                    }
                )
    finally:
        stack.stop()
        cp.stop()
    return runs


def _node_writes(requests: dict[str, float]) -> float:
    """Writes to Node objects among _apiserver_requests' counts."""
    return sum(
        count
        for label, count in requests.items()
        if label.split()[1:3] in (["PATCH", "nodes"], ["PUT", "nodes"])
    )


async def _settle(
    cp: Any,
    api: Api,
    say: Any,
    *,
    cores: float = 0.3,
    timeout_s: float = 120.0,
    interval_s: float = 2.0,
) -> None:
    """Wait until the control plane is done with the new fleet (the controller-manager's
    node controllers, the API server's caches): below ``cores`` of CPU and no node written
    over ``interval_s``. Otherwise the first run pays for it. The CPU alone is not enough:
    the TTL controller annotates every node at its client's 20 requests/s, little CPU for
    a long time (300 nodes: 305 patches over 14 s, after 2.7 s below 0.3 cores)."""
    pids = {name: pid for name, pid in _pids(cp, None).items() if name != "bench-client"}
    deadline = time.monotonic() + timeout_s
    used, written = 0.0, 0.0
    while time.monotonic() < deadline:
        before = {name: _cpu_s(pid) for name, pid in pids.items()}
        writes_before = _node_writes(await _apiserver_requests(api))
        await asyncio.sleep(interval_s)
        written = _node_writes(await _apiserver_requests(api)) - writes_before
        used = sum(_cpu_s(pid) - before[name] for name, pid in pids.items()) / interval_s
        if used < cores and not written:
            return
    say(
        f"the control plane still used {used:.2f} cores and wrote {written:.0f} nodes"
        f" in {interval_s:.0f}s after {timeout_s:.0f}s; going on"
    )


def _percentages(text: str) -> list[int | None]:
    values: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "default":
            values.append(None)
        elif part.isdigit() and 1 <= int(part) <= 100:
            values.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"{part!r}: expected 'default' or 1..100")
    return values


def add_arguments(parser: argparse.ArgumentParser, node_counts: Any, positive: Any) -> None:
    parser.add_argument(
        "--nodes",
        type=node_counts,
        default=[1000],
        help="node counts (default 1000; e.g. 1000,5000)",
    )
    parser.add_argument("--pods", type=positive, default=3000, help="pods per run (default 3000)")
    parser.add_argument(
        "--percentages",
        type=_percentages,
        default=[None, 100],
        help="percentageOfNodesToScore values (default: default,100)",
    )
    parser.add_argument(
        "--concurrency", type=positive, default=64, help="parallel create requests (default 64)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds per run before giving up (default 600)",
    )
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="create all pods first, then start kube-scheduler (leaves the load generator out)",
    )
    parser.add_argument(
        "--feature-gates",
        metavar="GATES",
        help="kube-scheduler --feature-gates for both runs (e.g. OpportunisticBatching=false)",
    )
    parser.add_argument(
        "--bin-dir", type=Path, help="Kubernetes binaries (default: the build cache)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the control plane's work dirs")
    parser.add_argument("--json", type=Path, help="write the figures here")


def main(args: argparse.Namespace) -> int:
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    fewest = min(args.nodes)
    if args.pods > (gpus := fleet_gpus(fewest)):
        # Pods that cannot all bind would only show as a timeout, --timeout seconds later.
        print(
            f"fairpack bench kube: --pods {args.pods} (one GPU each) do not fit the {gpus} GPUs"
            f" of --nodes {fewest}; give fewer pods or more nodes",
            file=sys.stderr,
        )
        return 2
    runs: list[dict[str, Any]] = []
    control_plane_error = _e2e("controlplane").ControlPlaneError
    try:
        for nodes in args.nodes:
            runs.extend(asyncio.run(_bench_nodes(nodes, args, say)))
    except (control_plane_error, BenchError) as exc:  # no binaries, a dead component, a timeout
        print(f"fairpack bench kube: {exc}", file=sys.stderr)
        return 2
    document = {
        "settings": {
            "scheduler_config": "manifests/scheduler/kube-scheduler-config.yaml",
            "scheduler_client_qps": SCHEDULER_QPS,
            "scheduler_client_burst": SCHEDULER_BURST,
            "apiserver_args": list(APISERVER_ARGS),
            "create_concurrency": args.concurrency,
            "mode": "backlog" if args.backlog else "stream",
            "scheduler_feature_gates": args.feature_gates or "",
            "cpus": os.cpu_count(),
        },
        "runs": runs,
    }
    print(f"{'nodes':>6} {'pct':>8} {'without/s':>10} {'with/s':>8} {'ratio':>6}")
    for run in runs:
        print(
            f"{run['nodes']:>6} {run['percentage_of_nodes_to_score']!s:>8} "
            f"{run['without_extender_pods_per_s']:>10} {run['with_extender_pods_per_s']:>8} "
            f"{run['ratio']:>6}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    for run in runs:
        if run["ratio"] < TARGET_RATIO:
            print(
                f"below target: {run['nodes']} nodes, percentageOfNodesToScore "
                f"{run['percentage_of_nodes_to_score']}: fairpack keeps {run['ratio']:.0%} of "
                f"kube-scheduler's throughput (target {TARGET_RATIO:.0%})"
            )
    return 0
