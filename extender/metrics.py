"""Prometheus metrics, ``fairpack_`` prefix, base units, one private registry per app.

Request metrics are updated by the handlers; everything derived from the view
(GPUs per team, free GPUs per model, stranded GPUs, GPU-seconds) is computed at
scrape time by a collector, so the hot path pays nothing for it.
"""

from __future__ import annotations

import time
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

UNKNOWN_MODEL = "unknown"
"""The model label value for GPUs on a node that names no model."""


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
        self.request_cpu_seconds = Counter(
            "fairpack_request_cpu_seconds",
            "CPU time spent on filter, prioritize and preempt: body parsing to response, and"
            " the bookkeeping done after it. Well below fairpack_request_duration_seconds_sum"
            " + fairpack_after_answer_seconds_sum: fairpack waited for a CPU.",
            ["verb"],
            registry=r,
        )
        self.after_answer_seconds = Histogram(
            "fairpack_after_answer_seconds",
            "Bookkeeping a request left for after its answer was sent (what /debug/explain"
            " shows, rejection counts): done while kube-scheduler works on its side.",
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
        self.filter_assumptions = Counter(
            "fairpack_filter_assumptions",
            "Pods counted on the one node filter passed them, before any bind (assumed), and"
            " those put back to pending because nobody bound them in time (expired).",
            ["result"],
            registry=r,
        )
        self.preemption_nodes = Counter(
            "fairpack_preemption_nodes",
            "Preemption candidate nodes by decision.",
            ["result"],
            registry=r,
        )
        self.watch_synced = Gauge(
            "fairpack_watch_synced",
            "1 while the resource flows into the view: listed, then watched; 0 before its"
            " first list, and from a failed watch until a list, an event or a watch that"
            " lasts comes through.",
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
        self.config_last_reload_successful = Gauge(
            "fairpack_config_last_reload_successful",
            "0 while the policy ConfigMap holds a config that was refused (the last good one runs).",
            registry=r,
        )
        self.config_last_reload_successful.set(1)
        self.admission_reviews = Counter(
            "fairpack_admission_reviews",
            "Admission reviews by webhook (validate, mutate) and result.",
            ["webhook", "result"],
            registry=r,
        )
        self.holds_lifted = Counter(
            "fairpack_holds_lifted",
            "Held pods kube-scheduler was asked to retry once the view showed their hold lift.",
            registry=r,
        )
        self.fairshare_holds = Counter(
            "fairpack_fairshare_holds",
            "Pods held back at filter: their team is over its share while teams under it wait.",
            ["team"],
            registry=r,
        )
        self.gpus_deserved = Gauge(
            "fairpack_gpus_deserved",
            "GPUs each team deserves (weighted max-min over demand), as last computed, for the"
            " teams holding or waiting for GPUs.",
            ["team"],
            registry=r,
        )

    def config_reloaded(self, result: str) -> None:
        """A ConfigMap update was ``applied``, ``unchanged`` or ``invalid`` (refused)."""
        self.config_reloads.labels(result).inc()
        self.config_last_reload_successful.set(0 if result == "invalid" else 1)

    def admission_reviewed(self, webhook: str, result: str) -> None:
        self.admission_reviews.labels(webhook, result).inc()

    def watch_view(
        self,
        view: ClusterView,
        fragments: Callable[[], FragmentAggregates | None],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry.register(_ViewCollector(view, fragments, wall_clock))


class _ViewCollector(Collector):
    def __init__(
        self,
        view: ClusterView,
        fragments: Callable[[], FragmentAggregates | None],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._view = view
        self._fragments = fragments
        self._wall_clock = wall_clock

    def collect(self) -> Iterator[Metric]:
        view = self._view
        yield GaugeMetricFamily(
            "fairpack_ready",
            "1 once every watched resource has been listed (the view is complete), else 0.",
            value=1 if view.ready else 0,
        )
        yield from self._pods(view)
        allocation = view.allocation()
        allocated = GaugeMetricFamily(
            "fairpack_gpus_allocated",
            "GPUs held by bound pods, and by pods counted on the one node filter passed them"
            " (kube-scheduler is binding them there).",
            labels=["team", "class"],
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
            "fairpack_gpu_seconds",
            "GPU-seconds held by each team's bound pods, from their binding (chargeback).",
            labels=["team"],
        )
        for team, value in sorted(allocation.gpu_seconds.items()):
            seconds.add_metric([team], value)
        yield seconds
        quota = GaugeMetricFamily(
            "fairpack_gpus_quota",
            "GPUs the team's ResourceQuotas allow (requests.<gpu resource>), summed.",
            labels=["team"],
        )
        for team, gpus in sorted(view.quota_gpus_by_team().items()):
            quota.add_metric([team], gpus)
        yield quota

        state = view.state
        free = GaugeMetricFamily(
            "fairpack_gpus_free",
            "Free GPU capacity per model on nodes open to new pods (not cordoned), in GPUs "
            "(model unknown: nodes whose labels name none).",
            labels=["model"],
        )
        if state.n_nodes and len(state.models):
            has_model = (state.gpu_model >= 0) & state.schedulable
            free_gpus = np.bincount(
                state.gpu_model[has_model],
                weights=state.free_milli[has_model].sum(axis=1) / MILLI_PER_GPU,
                minlength=len(state.models),
            )
            for model, value in zip(state.models, free_gpus.tolist(), strict=True):
                free.add_metric([model], value)
        unlabelled = (state.gpu_model < 0) & (state.gpu_count > 0) & state.schedulable
        if unlabelled.any():
            free.add_metric(
                [UNKNOWN_MODEL], float(state.free_milli[unlabelled].sum()) / MILLI_PER_GPU
            )
        yield free
        stranded = GaugeMetricFamily(
            "fairpack_gpus_stranded",
            "Free GPU capacity the recent pod-shape mix cannot use (FGD fragment), in GPUs, "
            "on nodes open to new pods (not cordoned).",
        )
        aggregates = self._fragments()
        if aggregates is not None and state.n_nodes:
            aggregates.refresh(state)
            stranded.add_metric(
                [], float(aggregates.fragment[state.schedulable].sum()) / MILLI_PER_GPU
            )
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

    def _pods(self, view: ClusterView) -> Iterator[Metric]:
        """Per-namespace allocation by GPU model (chargeback) and the oldest pending wait."""
        allocated: dict[tuple[str, str, str, str, str], float] = {}
        oldest: dict[tuple[str, str], float] = {}
        now = self._wall_clock()
        nodes = view.nodes
        for pod in view.pods():
            milli = pod.request.gpu_milli
            if not milli or pod.info.terminal:
                continue
            namespace = pod.info.namespace
            pod_class = pod.request.pod_class.value
            if pod.node and not pod.tentative:  # a filter's count there is no binding yet
                spec = nodes.get(pod.node)
                model = (spec.gpu_model if spec is not None else "") or UNKNOWN_MODEL
                key = (namespace, pod.team, view.cost_center_of(namespace), pod_class, model)
                allocated[key] = allocated.get(key, 0.0) + milli / MILLI_PER_GPU
            elif pod.info.started_s > 0:
                wait = max(0.0, now - pod.info.started_s)
                team_class = (pod.team, pod_class)
                oldest[team_class] = max(oldest.get(team_class, 0.0), wait)
        by_namespace = GaugeMetricFamily(
            "fairpack_namespace_gpus_allocated",
            "GPUs held by bound pods, by namespace, team, cost center (namespace label), "
            "class and GPU model: the chargeback gauge.",
            labels=["namespace", "team", "cost_center", "class", "model"],
        )
        for labels, gpus in sorted(allocated.items()):
            by_namespace.add_metric(list(labels), gpus)
        yield by_namespace
        waiting = GaugeMetricFamily(
            "fairpack_pending_wait_seconds",
            "How long the oldest pending GPU pod of each team and class has waited.",
            labels=["team", "class"],
        )
        for (team, pod_class), seconds in sorted(oldest.items()):
            waiting.add_metric([team, pod_class], seconds)
        yield waiting
