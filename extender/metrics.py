"""Prometheus metrics, ``fairpack_`` prefix, base units, one private registry per app.

Request metrics are updated by the handlers; everything derived from the view
(GPUs per team, free GPUs per model, stranded GPUs, GPU-seconds) is computed at
scrape time by a collector, so the hot path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from extender.view import ClusterView
from scoring import MILLI_PER_GPU, FragmentAggregates

LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fairpack_requests",
            "Extender requests by verb and HTTP status.",
            ["verb", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "fairpack_request_duration_seconds",
            "Server-side time per extender request, body parsing to response.",
            ["verb"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.filter_rejections = Counter(
            "fairpack_filter_rejections",
            "Nodes rejected by filter, by reason.",
            ["reason"],
            registry=r,
        )
        self.unknown_nodes = Counter(
            "fairpack_unknown_nodes",
            "Node names in requests that the view does not hold.",
            ["verb"],
            registry=r,
        )
        self.prioritize_reused = Counter(
            "fairpack_prioritize_reused",
            "Prioritize requests answered from the same cycle's filter evaluation.",
            registry=r,
        )
        self.binds = Counter("fairpack_binds", "Bind requests by result.", ["result"], registry=r)
        self.preemption_nodes = Counter(
            "fairpack_preemption_nodes",
            "Preemption candidate nodes by decision.",
            ["result"],
            registry=r,
        )
        self.watch_synced = Gauge(
            "fairpack_watch_synced",
            "1 once the resource has been listed and is being watched.",
            ["resource"],
            registry=r,
        )
        self.watch_events = Counter(
            "fairpack_watch_events",
            "Watch events applied to the view.",
            ["resource", "type"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "fairpack_watch_restarts",
            "Watch restarts by cause (relist, error).",
            ["resource", "reason"],
            registry=r,
        )
        self.object_errors = Counter(
            "fairpack_object_errors",
            "API objects that could not be read and were skipped.",
            ["resource"],
            registry=r,
        )
        self.config_reloads = Counter(
            "fairpack_config_reloads",
            "Policy ConfigMap updates by result.",
            ["result"],
            registry=r,
        )

    def watch_view(
        self, view: ClusterView, fragments: Callable[[], FragmentAggregates | None]
    ) -> None:
        self.registry.register(_ViewCollector(view, fragments))


class _ViewCollector(Collector):
    def __init__(
        self, view: ClusterView, fragments: Callable[[], FragmentAggregates | None]
    ) -> None:
        self._view = view
        self._fragments = fragments

    def collect(self) -> Iterator[Metric]:
        view = self._view
        allocation = view.allocation()
        allocated = GaugeMetricFamily(
            "fairpack_gpus_allocated", "GPUs held by bound pods.", labels=["team", "class"]
        )
        for (team, pod_class), gpus in sorted(allocation.allocated.items()):
            allocated.add_metric([team, pod_class], gpus)
        yield allocated
        pending = GaugeMetricFamily(
            "fairpack_gpus_pending", "GPUs requested by pending pods.", labels=["team", "class"]
        )
        for (team, pod_class), gpus in sorted(allocation.pending.items()):
            pending.add_metric([team, pod_class], gpus)
        yield pending
        seconds = CounterMetricFamily(
            "fairpack_gpu_seconds", "GPU-seconds held by each team (chargeback).", labels=["team"]
        )
        for team, value in sorted(allocation.gpu_seconds.items()):
            seconds.add_metric([team], value)
        yield seconds

        state = view.state
        free = GaugeMetricFamily(
            "fairpack_gpus_free", "Free GPU capacity per model, in GPUs.", labels=["model"]
        )
        if state.n_nodes and len(state.models):
            has_model = state.gpu_model >= 0
            free_gpus = np.bincount(
                state.gpu_model[has_model],
                weights=state.free_milli[has_model].sum(axis=1) / MILLI_PER_GPU,
                minlength=len(state.models),
            )
            for model, value in zip(state.models, free_gpus.tolist(), strict=True):
                free.add_metric([model], value)
        yield free
        stranded = GaugeMetricFamily(
            "fairpack_gpus_stranded",
            "Free GPU capacity the recent pod-shape mix cannot use (FGD fragment), in GPUs.",
        )
        aggregates = self._fragments()
        if aggregates is not None and state.n_nodes:
            aggregates.refresh(state)
            stranded.add_metric([], float(aggregates.fragment.sum()) / MILLI_PER_GPU)
        yield stranded
        yield GaugeMetricFamily("fairpack_view_nodes", "Nodes in the view.", value=state.n_nodes)
        yield GaugeMetricFamily("fairpack_view_pods", "Pods in the view.", value=view.pod_count)
        yield GaugeMetricFamily(
            "fairpack_view_assumed_pods",
            "Pods bound by fairpack that the watch has not shown bound yet.",
            value=view.assumed_count,
        )
        yield CounterMetricFamily(
            "fairpack_view_conflicts",
            "Pods the watch showed on a node without room for them in the view.",
            value=view.conflicts,
        )
