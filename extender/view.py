"""The live view of the cluster's GPUs: one ClusterState kept exact by events.

This is the seam between Kubernetes and placement.  The watch loop (or a test, or
a static inventory) turns API objects into three kinds of events, ``Upserted``,
``Deleted`` and ``Replaced`` (a fresh list), and :meth:`ClusterView.apply` is the
only way they change the view.  Our own placements are applied at once as
*assumed* pods, like kube-scheduler's assume cache, so the next filter never sees
GPUs that a binding in flight has taken: when filter passes a pod one node (which
kube-scheduler then binds), tentatively, and when fairpack binds it, for good.  The
watch later confirms them (no double count); a failed bind forgets its pod; a
tentative assumption is replaced when the pod is filtered again, and lapses after a
while (the pod is pending again if the watch has shown it, forgotten if not).

The node set changes rarely: a node added, removed or resized marks the arrays
stale, and the next read rebuilds them, copying the rows of unchanged nodes and
re-placing only the pods of the changed ones.  Pods are applied with
``ClusterState.place``/``release``; a pod seen through the watch takes the slots
scoring would choose (the lowest free GPUs for whole GPUs).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from extender.objects import NamespaceInfo, PodInfo, PriorityClassInfo, QuotaInfo
from scoring import (
    MILLI_PER_GPU,
    ClusterState,
    NodeSpec,
    PodRequest,
    choose_gpus,
    fits_when_empty,
)

log = logging.getLogger(__name__)

Kind = Literal["node", "pod", "namespace", "quota", "priorityclass"]
KINDS: tuple[Kind, ...] = ("node", "pod", "namespace", "quota", "priorityclass")
Record = NodeSpec | PodInfo | NamespaceInfo | QuotaInfo | PriorityClassInfo


@dataclass(frozen=True)
class Upserted:
    kind: Kind
    record: Record


@dataclass(frozen=True)
class Deleted:
    kind: Kind
    key: str
    """Node name, pod UID, namespace name, ``namespace/name`` of a quota, class name."""


@dataclass(frozen=True)
class Replaced:
    """A complete list of one kind; what is not in it is gone.

    ``listed_at_s`` is the view clock's time when the list was requested: pods we
    assumed after it may be missing from the list without being gone.
    """

    kind: Kind
    records: Sequence[Record]
    listed_at_s: float = 0.0


Event = Upserted | Deleted | Replaced


def record_key(kind: Kind, record: Record) -> str:
    if isinstance(record, PodInfo):
        return record.uid
    if isinstance(record, QuotaInfo):
        return f"{record.namespace}/{record.name}"
    return record.name


@dataclass(slots=True)
class _Entry:
    """A tracked pod.  ``placed`` is exactly what is taken out of the state (None: nothing)."""

    info: PodInfo
    team: str
    node: str
    request: PodRequest
    """``info.request`` with the team resolved."""
    gpus: tuple[int, ...] = ()
    placed: PodRequest | None = None
    assumed_at_s: float | None = None
    tentative: bool = False
    """Assumed where filter passed it alone: kube-scheduler has not bound it yet."""
    watched: bool = True
    """The watch (or a list) has shown this pod; False for a pod known only from a request."""
    model: str = ""
    """GPU model of the node the pod was counted on (fair-share value weighting)."""


@dataclass(frozen=True)
class PodPlacement:
    """A pod as the view holds it."""

    info: PodInfo
    team: str
    node: str
    request: PodRequest
    gpus: tuple[int, ...]
    assumed: bool
    placed: PodRequest | None
    """What the pod takes out of the arrays (None: its node is unknown)."""
    tentative: bool = False
    """Assumed at filter time, not bound by anyone yet (:meth:`ClusterView.assume`)."""


@dataclass(frozen=True)
class FairLedger:
    """What fair shares are computed from, in GPUs (a share counts its fraction).

    held : per (team, GPU model of the node) of bound pods
    pending : per team, pending pods' GPUs
    smallest_pending : per team, its smallest pending pod
    """

    held: dict[tuple[str, str], float]
    pending: dict[str, float]
    smallest_pending: dict[str, float]


@dataclass
class Allocation:
    """GPUs per (team, class), in GPUs (a share counts its fraction)."""

    allocated: dict[tuple[str, str], float] = field(default_factory=dict)
    pending: dict[tuple[str, str], float] = field(default_factory=dict)
    gpu_seconds: dict[str, float] = field(default_factory=dict)


_NodeKind = tuple[int, str, int, int, int]


def _node_kinds(specs: Iterable[NodeSpec]) -> dict[_NodeKind, NodeSpec]:
    """One node per kind: GPU count, model and memory, CPU and memory, all that
    ``scoring.fits_when_empty`` reads.  Some node takes a pod once empty exactly when one
    of these does: at 5,000 nodes, ~15 us a request instead of ~150 us."""
    kinds: dict[_NodeKind, NodeSpec] = {}
    for spec in specs:
        kind = (
            spec.gpu_count,
            spec.gpu_model,
            spec.gpu_memory_mib,
            spec.cpu_milli,
            spec.memory_mib,
        )
        kinds.setdefault(kind, spec)
    return kinds


class ClusterView:
    """Nodes, pods, teams and their GPUs, kept exact by :meth:`apply`.

    ``required_kinds`` are the kinds that must have been listed once before the
    view is ready (none for a static inventory); also any other watched resource
    decisions depend on ("configmap": the policy), which reports its list with
    :meth:`listed`.
    """

    def __init__(
        self,
        nodes: Iterable[NodeSpec] = (),
        *,
        required_kinds: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self._nodes: dict[str, NodeSpec] = {node.name: node for node in nodes}
        self._state = ClusterState.from_nodes(list(self._nodes.values()))
        self._stale_nodes: set[str] = set()
        self._pods: dict[str, _Entry] = {}
        self._by_node: dict[str, dict[str, None]] = {}
        self._teams: dict[str, str] = {}
        self._cost_centers: dict[str, str] = {}
        self._quotas: dict[str, QuotaInfo] = {}
        self._priority_classes: dict[str, int] = {}
        self._resolved: dict[tuple[PodRequest, str], PodRequest] = {}
        self._allocated_milli: dict[tuple[str, str], int] = {}
        self._pending_milli: dict[tuple[str, str], int] = {}
        self._allocated_model_milli: dict[tuple[str, str], int] = {}
        self._pending_sizes: dict[str, dict[int, int]] = {}
        """Per team, its pending pods' GPU milli, counted by size: of the pods some node
        could take once empty (fair shares count no others)."""
        self._pending_runnable_milli: dict[str, int] = {}
        """Per team, the GPU milli of those pods."""
        self._pending_requests: dict[tuple[PodRequest, bool], int] = {}
        """Every pending GPU pod's request (resolved, with its team) and whether it is
        gated (``schedulingGates``), counted."""
        self._runs: dict[PodRequest, bool] = {}
        """Per request, whether some node of the current arrays could take it once empty
        (``scoring.fits_when_empty``); asked again when the node kinds change."""
        self._kinds = _node_kinds(self._nodes.values())
        self._kind_state = ClusterState.from_nodes(list(self._kinds.values()))
        """One node of each kind: what ``fits_when_empty`` reads, over a few rows."""
        self._pending_multi_gpu: dict[str, None] = {}
        self._tentative: dict[str, float] = {}
        """UIDs assumed at filter time, oldest first, with when."""
        self.pending_multi_gpu_version = 0
        self.fair_version = 0
        """Bumped whenever a team's GPUs, pending GPUs or weights may have changed."""
        self._gpu_seconds: dict[str, float] = {}
        self._charged_milli: dict[str, int] = {}
        """GPU milli per team of the pods bound (or being bound by fairpack): what
        GPU-seconds accrue on.  A filter's tentative assumption is no binding."""
        self._accrued_at_s = clock()
        self._missing_kinds: set[str] = set(required_kinds)
        self.conflicts = 0
        """Pods the watch placed where the view had no room (over-commit seen, clamped)."""
        self._deferred: deque[Callable[[], object]] = deque()
        self._settling = False

    # -- work that reads the view as it is now, done later ---------------------------------------

    def defer(self, work: Callable[[], object]) -> None:
        """Run ``work`` at the next :meth:`settle`, and at the latest before the view next
        changes: work taken off the answer's path and done once the answer is sent, that
        reads the view as it stands (what ``/debug/explain`` shows) or changes it first (a
        filter's assumption; whatever reads the view for a decision settles first)."""
        self._deferred.append(work)

    @property
    def unsettled(self) -> bool:
        """Whether deferred work waits for :meth:`settle`."""
        return bool(self._deferred)

    def settle(self) -> None:
        """Run the deferred work, oldest first; a failure is logged and the rest still runs
        (the view itself must go on).  Work that changes the view (a filter's assumption)
        finds the work deferred before it done, and the rest waits for it."""
        if self._settling:
            return
        self._settling = True
        deferred = self._deferred
        try:
            while deferred:
                try:
                    deferred.popleft()()
                except Exception:
                    log.exception("deferred work failed")
        finally:
            self._settling = False

    # -- reading ---------------------------------------------------------------------------------

    @property
    def state(self) -> ClusterState:
        """The arrays scoring reads; rebuilt here when the node set changed."""
        if self._stale_nodes:
            self._rebuild()
        return self._state

    @property
    def ready(self) -> bool:
        return not self._missing_kinds

    def listed(self, resource: str) -> None:
        """``resource``, watched beside the view's kinds (the policy ConfigMap), was listed."""
        self._missing_kinds.discard(resource)

    def relisting(self, kind: str) -> None:
        """``kind`` is listed again because the config changed how its objects are read.
        Before the view is first ready (the policy ConfigMap landing after the kinds were
        read under the built-in defaults), it waits for that list too; once ready, it stays
        so (the records read under the old config are replaced as the list lands)."""
        if self._missing_kinds:
            self._missing_kinds.add(kind)

    @property
    def nodes(self) -> dict[str, NodeSpec]:
        return self._nodes

    def team_of(self, namespace: str) -> str:
        return self._teams.get(namespace, namespace)

    def cost_center_of(self, namespace: str) -> str:
        """The namespace's cost-center label ("" when it has none); for chargeback only."""
        return self._cost_centers.get(namespace, "")

    def lookup(self, uid: str) -> PodPlacement | None:
        entry = self._pods.get(uid)
        if entry is None:
            return None
        return PodPlacement(
            entry.info,
            entry.team,
            entry.node,
            entry.request,
            entry.gpus,
            entry.assumed_at_s is not None,
            entry.placed,
            entry.tentative,
        )

    def pods(self) -> Iterable[PodPlacement]:
        for uid in list(self._pods):
            placement = self.lookup(uid)
            if placement is not None:
                yield placement

    def pods_on(self, node: str) -> list[PodPlacement]:
        placements = (self.lookup(uid) for uid in self._by_node.get(node, {}))
        return [p for p in placements if p is not None]

    @property
    def pod_count(self) -> int:
        return len(self._pods)

    @property
    def assumed_count(self) -> int:
        return sum(1 for entry in self._pods.values() if entry.assumed_at_s is not None)

    def quota_gpus_by_team(self) -> dict[str, int]:
        quota: dict[str, int] = {}
        for info in self._quotas.values():
            if info.gpus is not None:
                team = self.team_of(info.namespace)
                quota[team] = quota.get(team, 0) + info.gpus
        return quota

    def fair_ledger(self) -> FairLedger:
        """GPUs held per (team, GPU model) and pending per team: what fair shares need.

        Pending counts only the pods some node could take once empty, and that no
        scheduling gate keeps from kube-scheduler: a pod asking for 16 GPUs on 8-GPU
        nodes, for a GPU model the cluster lacks, or still gated (a queue such as Kueue
        holds it) waits for nothing yet, and must not hold other teams' pods back (or
        raise its team's share)."""
        _ = self.state  # counted against the nodes as they are now
        pending = {
            team: milli / MILLI_PER_GPU
            for team, milli in self._pending_runnable_milli.items()
            if milli
        }
        return FairLedger(
            {
                key: milli / MILLI_PER_GPU
                for key, milli in self._allocated_model_milli.items()
                if milli
            },
            pending,
            {
                team: min(sizes) / MILLI_PER_GPU
                for team, sizes in self._pending_sizes.items()
                if sizes
            },
        )

    def pending_multi_gpu_pods(self) -> list[tuple[float, PodRequest]]:
        """Pending pods asking for more than one GPU, behind no scheduling gate
        (candidates for anti-starvation): when each started waiting, and its request,
        longest waiting first (then by namespace and name: the same order however the
        view came to hold them).  The list changes only when
        :attr:`pending_multi_gpu_version` does."""
        pods = self._pods
        entries = [entry for uid in self._pending_multi_gpu if (entry := pods.get(uid)) is not None]
        entries.sort(
            key=lambda entry: (entry.info.started_s, entry.info.namespace, entry.info.name)
        )
        return [(entry.info.started_s, entry.request) for entry in entries]

    def priority_class_value(self, name: str) -> int | None:
        return self._priority_classes.get(name)

    def allocation(self) -> Allocation:
        self._accrue()
        return Allocation(
            {key: milli / MILLI_PER_GPU for key, milli in self._allocated_milli.items() if milli},
            {key: milli / MILLI_PER_GPU for key, milli in self._pending_milli.items() if milli},
            dict(self._gpu_seconds),
        )

    # -- events ----------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        self.settle()
        if isinstance(event, Replaced):
            self._replace(event)
        elif isinstance(event, Upserted):
            self._upsert(event.kind, event.record)
        else:
            self._delete(event.kind, event.key)

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    def _upsert(self, kind: Kind, record: Record) -> None:
        if isinstance(record, NodeSpec):
            if self._nodes.get(record.name) != record:
                self._nodes[record.name] = record
                self._stale_nodes.add(record.name)
                self._remodel(record.name)
        elif isinstance(record, PodInfo):
            self._upsert_pod(record)
        elif isinstance(record, NamespaceInfo):
            self._set_team(record.name, record.team)
            self._set_cost_center(record.name, record.cost_center)
        elif isinstance(record, QuotaInfo):
            self._quotas[record_key(kind, record)] = record
        else:
            self._priority_classes[record.name] = record.value

    def _delete(self, kind: Kind, key: str) -> None:
        if kind == "node":
            if self._nodes.pop(key, None) is not None:
                self._stale_nodes.add(key)
                self._remodel(key)
        elif kind == "pod":
            entry = self._pods.get(key)
            if entry is not None:
                self._remove(entry)
        elif kind == "namespace":
            self._set_team(key, key)
            self._cost_centers.pop(key, None)
        elif kind == "quota":
            self._quotas.pop(key, None)
        else:
            self._priority_classes.pop(key, None)

    def _replace(self, event: Replaced) -> None:
        kind = event.kind
        if kind == "node":
            fresh = {r.name: r for r in event.records if isinstance(r, NodeSpec)}
            changed = list(self._nodes.keys() - fresh.keys())
            changed.extend(name for name, spec in fresh.items() if self._nodes.get(name) != spec)
            self._stale_nodes.update(changed)
            self._nodes = fresh
            for name in changed:
                self._remodel(name)
        elif kind == "pod":
            listed = {r.uid: r for r in event.records if isinstance(r, PodInfo)}
            for uid in self._pods.keys() - listed.keys():
                entry = self._pods[uid]
                # A pod we bound after the list was requested may not be in it yet.
                if entry.assumed_at_s is not None and entry.assumed_at_s >= event.listed_at_s:
                    continue
                self._remove(entry)
            for info in listed.values():
                self._upsert_pod(info)
        elif kind == "namespace":
            teams = {r.name: r.team for r in event.records if isinstance(r, NamespaceInfo)}
            for name in self._teams.keys() | teams.keys():
                self._set_team(name, teams.get(name, name))
            self._cost_centers = {
                r.name: r.cost_center
                for r in event.records
                if isinstance(r, NamespaceInfo) and r.cost_center
            }
        elif kind == "quota":
            self._quotas = {
                record_key(kind, r): r for r in event.records if isinstance(r, QuotaInfo)
            }
        else:
            self._priority_classes = {
                r.name: r.value for r in event.records if isinstance(r, PriorityClassInfo)
            }
        self._missing_kinds.discard(kind)

    # -- our own binds ---------------------------------------------------------------------------

    def assume(
        self, info: PodInfo, node: str, gpus: Sequence[int], *, tentative: bool = False
    ) -> None:
        """Take ``gpus`` of ``node`` for ``info`` now, before the watch shows the binding.

        ``tentative``: filter passed the pod this node alone, so kube-scheduler binds it
        there unless a later step of its cycle fails; the assumption lapses after a while
        unless the watch or a bind confirms it (:meth:`expire_tentative`).  A tentative
        assumption is replaced by the next one for the same pod.

        The caller has checked that the pod fits there (scoring.evaluate on the row);
        a pod that does not fit raises ValueError and leaves the view unchanged, but for
        the pod's own tentative assumption elsewhere, which is gone.
        """
        self.settle()
        state = self.state
        row = state.row_of(node)
        if row is None:
            raise ValueError(f"node {node} is not in the view")
        team = self.team_of(info.namespace)
        request = self._resolve(info.request, team)
        previous = self._pods.get(info.uid)
        if previous is not None and previous.node and not previous.tentative:
            raise ValueError(f"pod {info.key} is already on node {previous.node}")
        if previous is not None and previous.placed is not None:
            self._remove(previous)  # assumed elsewhere by an earlier filter: replaced
        state.place(row, request, list(gpus))
        watched = previous is not None and previous.watched
        if previous is not None and previous.info.uid in self._pods:
            self._remove(previous)
        now = self.clock()
        if watched and previous is not None:
            # What the watch showed (its start time orders pending pods), with this request.
            info = replace(previous.info, request=info.request)
        entry = _Entry(
            info=replace(info, node=node),
            team=team,
            node=node,
            request=request,
            gpus=tuple(int(g) for g in gpus),
            placed=request,
            assumed_at_s=now,
            tentative=tentative,
            watched=watched,
        )
        self._pods[info.uid] = entry
        self._by_node.setdefault(node, {})[info.uid] = None
        self._count(entry, +1)
        self._tentative.pop(info.uid, None)
        if tentative:
            self._tentative[info.uid] = now

    def unassume(self, uid: str) -> None:
        """Take back a filter-time assumption: the pod is pending again if the watch has
        shown it, and forgotten if not (it may be gone: its deletion can reach the view
        before a filter kube-scheduler had in flight)."""
        self.settle()
        entry = self._pods.get(uid)
        self._tentative.pop(uid, None)
        if entry is not None and entry.tentative:
            self._remove(entry)
            if entry.watched:
                self._upsert_pod(replace(entry.info, node=""))

    def expire_tentative(self, ttl_s: float) -> int:
        """Put back to pending the pods assumed at filter time more than ``ttl_s`` ago
        that nobody has bound since (a later step of kube-scheduler's cycle failed);
        returns how many."""
        if not self._tentative:
            return 0
        cutoff = self.clock() - ttl_s
        expired = []
        for uid, at_s in self._tentative.items():
            if at_s > cutoff:
                break
            expired.append(uid)
        for uid in expired:
            self.unassume(uid)
        return len(expired)

    def forget(self, uid: str) -> None:
        """Undo an assumption whose binding failed; a confirmed pod is left alone."""
        self.settle()
        entry = self._pods.get(uid)
        if entry is not None and entry.assumed_at_s is not None:
            self._remove(entry)
            if entry.watched:  # still there, pending: as unassume leaves it
                self._upsert_pod(replace(entry.info, node=""))

    # -- pods ------------------------------------------------------------------------------------

    def _resolve(self, request: PodRequest, team: str) -> PodRequest:
        """``request`` of ``team``, one shared object per distinct (request, team)."""
        key = (request, team)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = request if request.team == team else replace(request, team=team)
            self._resolved[key] = resolved
        return resolved

    def _upsert_pod(self, info: PodInfo) -> None:
        entry = self._pods.get(info.uid)
        if info.terminal:
            if entry is not None:
                self._remove(entry)
            return
        if entry is None:
            team = self.team_of(info.namespace)
            entry = _Entry(info, team, info.node, self._resolve(info.request, team))
            self._pods[info.uid] = entry
            self._link(entry)
            self._count(entry, +1)
            self._place(entry)
            return
        if not info.node and not info.gated and entry.watched:
            # Waiting for GPUs since its gates went (as the view saw it), not since it was
            # created: a pod a queue (Kueue) held back for an hour has not starved for an
            # hour. Kept through later events and lists, which carry the creation time.
            since = time.time() if entry.info.gated else entry.info.started_s
            if since > info.started_s:
                info = replace(info, started_s=since)
        if entry.assumed_at_s is not None:
            entry.watched = True
            if not info.node:
                entry.info = replace(info, node=entry.node)  # what unassume restores
                return  # an event from before our binding; the assumption stands
            if info.node == entry.node:
                entry.assumed_at_s = None  # the watch confirms our bind
                self._tentative.pop(info.uid, None)
                if entry.tentative:
                    entry.tentative = False
                    self._charge(entry, +1)  # kube-scheduler bound it where filter counted it
        # Compared as the view keeps it (with its team): the watch's request carries none.
        if (
            info.node == entry.node
            and info.namespace == entry.info.namespace  # (a UID reused elsewhere: its team)
            and info.gated == entry.info.gated  # a gate lifted: it waits for GPUs now
            and self._resolve(info.request, entry.team) == entry.request
        ):
            entry.info = info
            return
        # Bound elsewhere, bound at last, resized, or another namespace's: out and back in.
        self._remove(entry)
        self._upsert_pod(info)

    def _remove(self, entry: _Entry) -> None:
        if entry.tentative:
            self._tentative.pop(entry.info.uid, None)
        self._unplace(entry)
        self._count(entry, -1)
        self._unlink(entry)
        del self._pods[entry.info.uid]

    def _link(self, entry: _Entry) -> None:
        if entry.node:
            self._by_node.setdefault(entry.node, {})[entry.info.uid] = None

    def _unlink(self, entry: _Entry) -> None:
        on_node = self._by_node.get(entry.node)
        if on_node is not None:
            on_node.pop(entry.info.uid, None)
            if not on_node:
                del self._by_node[entry.node]

    def _place(self, entry: _Entry) -> None:
        """Apply a bound pod to the arrays, unless its node is unknown or about to be rebuilt."""
        if not entry.node or entry.node in self._stale_nodes:
            return
        row = self._state.row_of(entry.node) if entry.node in self._nodes else None
        if row is None:
            return
        request = entry.request
        state = self._state
        gpus = entry.gpus
        if not self._fits(state, row, request, gpus):
            gpus = tuple(int(g) for g in choose_gpus(state.free_milli[[row]], request)[0])
        if not self._fits(state, row, request, gpus):
            request, gpus = self._clamped(state, row, request, gpus)
            self.conflicts += 1
            log.warning(
                "pod %s on %s does not fit the view; accounting what is left",
                entry.info.key,
                entry.node,
            )
        state.place(row, request, list(gpus))
        entry.gpus, entry.placed = gpus, request

    def _unplace(self, entry: _Entry) -> None:
        if entry.placed is None:
            return
        row = self._state.row_of(entry.node)
        if row is not None and entry.node not in self._stale_nodes:
            self._state.release(row, entry.placed, list(entry.gpus))
        entry.placed = None

    @staticmethod
    def _fits(state: ClusterState, row: int, request: PodRequest, gpus: Sequence[int]) -> bool:
        if len(gpus) != request.gpu_count or any(g < 0 for g in gpus):
            return False
        if len(set(gpus)) != len(gpus) or any(g >= state.gpu_count[row] for g in gpus):
            return False
        if request.gpu_count and state.free_milli[row, list(gpus)].min() < request.milli_per_gpu:
            return False
        return bool(
            state.cpu_free_milli[row] >= request.cpu_milli
            and state.memory_free_mib[row] >= request.memory_mib
        )

    @staticmethod
    def _clamped(
        state: ClusterState, row: int, request: PodRequest, gpus: Sequence[int]
    ) -> tuple[PodRequest, tuple[int, ...]]:
        """The part of ``request`` that the row can still hold (reality over-committed it)."""
        usable = tuple(int(g) for g in gpus if g >= 0)
        return (
            PodRequest(
                gpu_count=len(usable),
                milli_per_gpu=request.milli_per_gpu if usable else 0,
                cpu_milli=max(0, min(request.cpu_milli, int(state.cpu_free_milli[row]))),
                memory_mib=max(0, min(request.memory_mib, int(state.memory_free_mib[row]))),
            ),
            usable,
        )

    # -- teams and accounting ----------------------------------------------------------------------

    def _set_team(self, namespace: str, team: str) -> None:
        if self.team_of(namespace) == team:
            if team != namespace:
                self._teams[namespace] = team
            return
        members = [e for e in self._pods.values() if e.info.namespace == namespace]
        for entry in members:
            self._count(entry, -1)
        if team == namespace:
            self._teams.pop(namespace, None)
        else:
            self._teams[namespace] = team
        for entry in members:
            entry.team = team
            entry.request = self._resolve(entry.info.request, team)
            self._count(entry, +1)

    def _set_cost_center(self, namespace: str, cost_center: str) -> None:
        if cost_center:
            self._cost_centers[namespace] = cost_center
        else:
            self._cost_centers.pop(namespace, None)

    def _accrue(self) -> None:
        now = self.clock()
        elapsed_s = now - self._accrued_at_s
        self._accrued_at_s = now
        if elapsed_s <= 0:
            return
        for team, milli in self._charged_milli.items():
            if milli:
                self._gpu_seconds[team] = (
                    self._gpu_seconds.get(team, 0.0) + milli / MILLI_PER_GPU * elapsed_s
                )

    def _charge(self, entry: _Entry, sign: int) -> None:
        """Start (+1) or stop (-1) charging GPU-seconds for a bound pod."""
        self._accrue()
        milli = entry.request.gpu_milli
        self._charged_milli[entry.team] = self._charged_milli.get(entry.team, 0) + sign * milli

    def _count(self, entry: _Entry, sign: int) -> None:
        milli = entry.request.gpu_milli
        if not milli:
            return
        key = (entry.team, entry.request.pod_class.value)
        self.fair_version += 1
        if entry.node:
            if not entry.tentative:
                self._charge(entry, sign)
            self._allocated_milli[key] = self._allocated_milli.get(key, 0) + sign * milli
            if sign > 0:
                spec = self._nodes.get(entry.node)
                entry.model = spec.gpu_model if spec is not None else ""
            by_model = (entry.team, entry.model)
            self._allocated_model_milli[by_model] = (
                self._allocated_model_milli.get(by_model, 0) + sign * milli
            )
        else:
            self._pending_milli[key] = self._pending_milli.get(key, 0) + sign * milli
            request, gated = entry.request, entry.info.gated
            pending = self._pending_requests
            pending[request, gated] = pending.get((request, gated), 0) + sign
            if not pending[request, gated]:
                del pending[request, gated]
            if not gated and self._could_run(request):
                self._count_runnable(entry.team, milli, sign)
            if entry.request.gpu_count > 1 and not gated:  # (a gated pod starves for nothing)
                self.pending_multi_gpu_version += 1
                if sign > 0:
                    self._pending_multi_gpu[entry.info.uid] = None
                else:
                    self._pending_multi_gpu.pop(entry.info.uid, None)

    def _count_runnable(self, team: str, milli: int, count: int) -> None:
        """Count ``count`` (negative: take back) pending pods of ``milli`` for ``team``
        among those some node could take."""
        self._pending_runnable_milli[team] = (
            self._pending_runnable_milli.get(team, 0) + count * milli
        )
        sizes = self._pending_sizes.setdefault(team, {})
        sizes[milli] = sizes.get(milli, 0) + count
        if not sizes[milli]:
            del sizes[milli]

    def _could_run(self, request: PodRequest) -> bool:
        runs = self._runs.get(request)
        if runs is None:
            # The nodes of the arrays as they are: a rebuild that changes their kinds
            # counts again.
            runs = self._runs[request] = fits_when_empty(self._kind_state, request)
        return runs

    def _recount_runnable(self) -> None:
        """After the node kinds changed: which pending pods some node could take, again."""
        self._runs.clear()
        self._pending_runnable_milli.clear()
        self._pending_sizes.clear()
        for (request, gated), count in self._pending_requests.items():
            if not gated and self._could_run(request):
                self._count_runnable(request.team, request.gpu_milli, count)
        self.fair_version += 1

    def _remodel(self, name: str) -> None:
        """Count the GPUs held on node ``name`` under the model it has now (none once it
        is gone), as a fresh list would: fair shares value held GPUs by model, and pods
        may be seen before their node, or the node relabelled, while they run.  Which
        pending pods some node could take may change too: they are counted again at the
        rebuild, but whoever watches ``fair_version`` (the requeue of held pods) must
        know now."""
        self.fair_version += 1
        spec = self._nodes.get(name)
        model = spec.gpu_model if spec is not None else ""
        for uid in self._by_node.get(name, {}):
            entry = self._pods[uid]
            if entry.model != model and entry.request.gpu_milli:
                self._count(entry, -1)
                self._count(entry, +1)

    # -- node set changes --------------------------------------------------------------------------

    def _rebuild(self) -> None:
        old = self._state
        stale = self._stale_nodes
        specs = list(self._nodes.values())
        fresh = ClusterState.from_nodes(specs, max_gpus=None)
        kept = [name for name in self._nodes if name not in stale and old.row_of(name) is not None]
        if kept:
            new_rows = np.fromiter((fresh.row_of(n) for n in kept), dtype=np.int64, count=len(kept))
            old_rows = old.rows_of(kept)
            width = min(old.max_gpus, fresh.max_gpus)
            fresh.free_milli[new_rows, :width] = old.free_milli[old_rows, :width]
            fresh.cpu_free_milli[new_rows] = old.cpu_free_milli[old_rows]
            fresh.memory_free_mib[new_rows] = old.memory_free_mib[old_rows]
            fresh.preemptible_milli[new_rows] = old.preemptible_milli[old_rows]
        # Caches over the arrays (fragment aggregates, node groups) know a state by its
        # id(), which a new object may reuse: newer row versions make every row stale.
        fresh.row_version[:] = int(old.row_version.max(initial=0)) + 1
        self._state = fresh
        kinds = _node_kinds(specs)
        if kinds.keys() != self._kinds.keys():  # else every answer stands
            self._kinds = kinds
            self._kind_state = ClusterState.from_nodes(list(kinds.values()))
            self._recount_runnable()
        # Pods of changed, new and deleted nodes lost their placement with the old arrays.
        touched = [uid for name in stale for uid in self._by_node.get(name, {})]
        self._stale_nodes = set()
        for uid in touched:
            entry = self._pods[uid]
            entry.placed = None
        for uid in touched:
            self._place(self._pods[uid])
        log.info(
            "view rebuilt: %d nodes (%d changed), %d pods re-placed",
            len(specs),
            len(stale),
            len(touched),
        )
