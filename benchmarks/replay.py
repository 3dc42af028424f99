"""Timed replay: pods arrive and leave on a clock, and wait in a queue like kube-scheduler's.

Unlike the FGD protocol (``benchmarks.simulator``: arrivals only, a pod that does
not fit fails), here a pod that does not fit waits, and GPUs come back when pods
finish, so wait times and shares over time can be measured.

The queue follows kube-scheduler: pending pods are tried in priority order, then
oldest first; a pod that fits nowhere (or that a filter held back) is parked and
tried again on the cluster events that may help it (a pod leaving a node it could
fit on, any pod leaving when it may preempt, a change of the fair-share state) and
every ``flush_s`` (kube-scheduler moves its unschedulable pods back after five
minutes).  Identical pods of one team are queued together, so a pass over
thousands of pending pods costs one decision per kind of pod.

Preemption follows kube-scheduler's DefaultPreemption: a pod that fits nowhere
may evict pods of strictly lower priority.  Candidate nodes are those where
evicting every lower-priority pod would make room, taken from a random offset;
on each, the dry run evicts all of them and then spares, most important first
(highest priority, then oldest), every pod whose return still leaves room.  The
node is chosen by fewest PDB violations (none here), lowest highest victim
priority, lowest sum of victim priorities (each shifted by MaxInt32+1, so fewer
victims first), fewest victims, then the node whose earliest-started victim of
that highest priority started latest.
With an extender (the fairpack arm) the candidates go through
``scoring.victims`` first, exactly as the extender's preempt verb does: a node
whose dry-run victims fairpack refuses gets fairpack's own victims there, if any
will do (``scoring.victims.choose_victims``).  Victims release their GPUs
``grace_s`` later, are recreated by their controller at once (a Job's pod starts
over), and the preemptor waits for them.

Where kube-scheduler does otherwise, and this model does not follow:

* pods of one priority go oldest first by creation; kube-scheduler orders them by
  when each last entered its queue (a pod that failed goes behind those not tried
  since) and backs a failed pod off for 1-10 s;
* the flush moves every parked pod at once, every ``flush_s``; kube-scheduler
  moves each pod five minutes after it was parked (checked every 30 s);
* a node whose victims are still terminating is no preemption candidate;
  kube-scheduler dry-runs it too, counting the pod nominated there;
* a nominated node is kept whole from pods of its preemptor's priority or lower;
  kube-scheduler counts only the nominated pod's request there;
* nodes held for starving pods are never nominated ones, which the extender,
  not reading ``nominatedNodeName``, does not know.

An :class:`Arm` is one scheduler configuration: kube-scheduler's default scoring
(``NodeResourcesFit`` LeastAllocated, ``benchmarks.policies.kube``) or
``scoring.evaluate``; hard per-team GPU caps or none; the fairpack extender's
fair-share levers (``scoring.fairshare`` gate, share-aware victims, node holds
for starving large pods) or none.  Everything the extender decides goes through
the same ``scoring`` functions as ``extender.service``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from benchmarks.policies import PolicyContext
from benchmarks.policies.kube import KubeLeastPolicy
from benchmarks.traces import TracePod
from scoring import ClusterState, NodeSpec, OnlineFragments, PodClass, PodRequest, PolicyConfig
from scoring import evaluate as evaluate_placement
from scoring.fairshare import (
    PASS,
    GateDecision,
    TeamShares,
    fair_share_gate,
    gate_holds,
    team_shares,
    water_fill,
)
from scoring.gpus import choose_gpus
from scoring.groups import NodeGroups
from scoring.starvation import is_starving, kept_off, reserved_rows
from scoring.state import MILLI_PER_GPU, IntArray
from scoring.victims import (
    VictimDecision,
    VictimRecord,
    best_nodes,
    choose_victims,
    select_victims,
)

INTERACTIVE_PRIORITY = 1_000_000
"""The platform's ``inference-critical`` PriorityClass."""
BATCH_PRIORITY = 1_000
"""The platform's ``batch-inference`` PriorityClass."""

_PRIORITY_SHIFT = 2**31
"""kube-scheduler adds MaxInt32+1 to each victim's priority before summing them."""

_ARRIVAL, _DEPARTURE, _TERMINATION = 2, 0, 1
"""Event kinds; at equal times departures go first, then evictions, then arrivals."""

_PENDING, _NOMINATED, _RUNNING, _TERMINATING, _DONE = range(5)


@dataclass(frozen=True)
class ReplayPod:
    """One pod of a replay: its request (team, class and priority included), when it
    arrives, and how long it runs once started (``math.inf``: to the end)."""

    name: str
    request: PodRequest
    arrival_s: float
    duration_s: float

    @property
    def team(self) -> str:
        return self.request.team


@dataclass(frozen=True)
class Arm:
    """One scheduler configuration.

    placement : ``"kube-least"`` (kube-scheduler's default NodeResourcesFit
        scoring) or ``"fairpack"`` (``scoring.evaluate`` with ``policy``)
    quotas : GPUs per team that its running pods may not exceed (hard caps, no
        borrowing); None for no quotas
    priorities : whether pods keep their PriorityClass; without, every pod has
        priority 0 and nothing is preempted
    fairness : the fairpack extender's fair-share levers: the filter gate,
        share-aware victims and node holds for starving large pods
    """

    name: str
    placement: str = "kube-least"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    quotas: Mapping[str, float] | None = None
    priorities: bool = True
    fairness: bool = False


@dataclass(frozen=True)
class ReplaySettings:
    horizon_s: float
    teams: tuple[str, ...]
    weights: tuple[float, ...]
    """Entitlement weights of ``teams``: the deserved shares of every arm, and the
    fairpack arm's gate and victims."""
    sample_s: float = 60.0
    grace_s: float = 30.0
    """terminationGracePeriodSeconds of a victim."""
    flush_s: float = 300.0
    max_preemption_candidates: int = 32
    """kube-scheduler dry-runs max(100, 10% of nodes); fewer here, for speed."""
    tick_s: float = 1.0
    """Events are handled in passes at multiples of this (kube-scheduler is not instant
    either); a pod arrives at the next tick."""
    seed: int = 0


@dataclass
class WaitRecord:
    team: str
    pod_class: str
    gpu_count: int
    gpus: float
    arrival_s: float
    wait_s: float
    started: bool
    recreated: bool


@dataclass
class PreemptionRecord:
    at_s: float
    preemptor_team: str
    preemptor_class: str
    victim_team: str
    victim_class: str
    victim_gpus: float


@dataclass
class ReplayResult:
    arm: str
    teams: tuple[str, ...]
    capacity_gpus: float
    times_s: np.ndarray
    held_gpus: np.ndarray
    """shape (n_samples, n_teams)"""
    pending_gpus: np.ndarray
    deserved_gpus: np.ndarray
    allocated_gpus: np.ndarray
    """shape (n_samples,): every running pod's GPUs, of any team"""
    waits: list[WaitRecord]
    preemptions: list[PreemptionRecord]
    decisions: int
    gate_holds: int
    elapsed_s: float


@dataclass(slots=True)
class _Instance:
    pod: ReplayPod
    request: PodRequest
    arrival_s: float
    recreated: bool = False
    status: int = _PENDING
    started_s: float = math.nan
    row: int = -1
    gpus: tuple[int, ...] = ()
    completed: bool = False


@dataclass(slots=True)
class _Bucket:
    """Pending pods with the same request (team, class and priority included)."""

    index: int
    request: PodRequest
    team_index: int
    queue: deque[int] = field(default_factory=deque)
    parked: bool = False


def trace_replay_pods(
    trace: Sequence[TracePod], team_of: Mapping[str, str] | None = None
) -> list[ReplayPod]:
    """The trace's own timing: arrival at creation, running until deletion.

    LS pods are interactive (priority ``inference-critical``), the others batch
    (``batch-inference``); pods without times are left out.
    """
    pods = []
    for pod in trace:
        if pod.creation_s is None or pod.deletion_s is None:
            continue
        interactive = pod.qos == "LS"
        request = replace(
            pod.request,
            team=(team_of or {}).get(pod.name, "default"),
            pod_class=PodClass.INTERACTIVE if interactive else PodClass.BATCH,
            priority=INTERACTIVE_PRIORITY if interactive else BATCH_PRIORITY,
        )
        duration = max(float(pod.deletion_s - pod.creation_s), 1.0)
        pods.append(ReplayPod(pod.name, request, float(pod.creation_s), duration))
    return pods


class Replay:
    """One arm over one workload; :meth:`run` returns its :class:`ReplayResult`."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        pods: Sequence[ReplayPod],
        arm: Arm,
        settings: ReplaySettings,
    ) -> None:
        self.arm = arm
        self.settings = settings
        self.state = ClusterState.from_nodes(nodes)
        self.capacity_gpus = float(self.state.gpu_count.sum())
        self.pods = sorted(pods, key=lambda p: p.arrival_s)
        self.rng = np.random.default_rng([settings.seed, 7])
        rank = np.random.default_rng([settings.seed, 1]).permutation(self.state.n_nodes)
        self.rank = rank
        self.by_rank = np.argsort(rank)
        self.kube = KubeLeastPolicy(PolicyContext(rank=rank, rng=self.rng, trace=[]))
        self.policy = arm.policy
        self.fragments = OnlineFragments(arm.policy.shapes)
        self.groups = NodeGroups()
        self.teams = settings.teams
        self.team_index = {team: i for i, team in enumerate(self.teams)}
        self.weights = np.array(settings.weights, dtype=float)
        n_teams = len(self.teams)
        self.held_milli = np.zeros(n_teams)
        self.pending_milli = np.zeros(n_teams)
        self.pending_sizes: list[dict[int, int]] = [{} for _ in self.teams]
        self.instances: list[_Instance] = []
        self.unprioritized: dict[PodRequest, PodRequest] = {}
        self.buckets: list[_Bucket] = []
        self.bucket_of: dict[PodRequest, _Bucket] = {}
        self.events: list[tuple[float, int, int, int]] = []
        self.sequence = 0
        self.on_row: list[set[int]] = [set() for _ in range(self.state.n_nodes)]
        self.terminating_on_row = np.zeros(self.state.n_nodes, dtype=np.int64)
        self.levels: dict[int, tuple[IntArray, IntArray, IntArray]] = {}
        self.dirty_rows: set[int] = set()
        self.pod_left = False
        """A pod left a node since the last pass (kube-scheduler requeues on its deletion)."""
        self.touched_rows: dict[int, tuple[int, int, int, int] | None] = {}
        """Rows placed on in this pass, with (free cpu, free memory, fully free GPUs, most
        free milli on one GPU) once asked for."""
        self.fresh: set[int] = set()
        self.parked: set[int] = set()
        self.held_rows = np.zeros(0, dtype=np.int64)
        self.held_for: tuple[int, ...] = ()
        self.held_map: dict[int, int] = {}
        self.next_flush_s = settings.flush_s
        self.shares_cache: tuple[int, TeamShares] | None = None
        self.ledger_version = 0
        self.demand_version = 0
        self.deserved_version = -1
        self.nominated_ids: list[int] = []
        self.returning: list[int] = []
        self.nominated_rows: dict[int, int] = {}
        """Rows a preemptor waits on, with its priority."""
        self.victim_records: dict[int, VictimRecord] = {}
        self.blocked: set[int] = set()
        self.waits: list[WaitRecord] = []
        self.preemptions: list[PreemptionRecord] = []
        self.decisions = 0
        self.gate_holds = 0
        self._bucket_arrays: tuple[int, dict[str, np.ndarray]] | None = None

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> ReplayResult:
        import time

        started = time.perf_counter()
        for pod in self.pods:
            if pod.arrival_s < self.settings.horizon_s:
                arrival = self._tick(pod.arrival_s)
                self._push(arrival, _ARRIVAL, self._new_instance(pod, arrival))
        samples: list[tuple[float, np.ndarray, np.ndarray, float]] = []
        sample_at = 0.0
        horizon = self.settings.horizon_s
        while True:
            # The next event, or the next flush of the parked pods should nothing happen first.
            now = min(self.events[0][0] if self.events else math.inf, self.next_flush_s)
            if now >= horizon:
                break
            while sample_at < now:
                samples.append(self._sample(sample_at))
                sample_at += self.settings.sample_s
            while self.events and self.events[0][0] == now:
                _, kind, _, index = heapq.heappop(self.events)
                self._handle(now, kind, index)
            self._schedule(now)
        while sample_at < horizon:
            samples.append(self._sample(sample_at))
            sample_at += self.settings.sample_s
        for instance in self.instances:
            if instance.status in (_PENDING, _NOMINATED) and instance.arrival_s < horizon:
                self._record_wait(instance, horizon, started=False)
        times = np.array([s[0] for s in samples])
        held = np.array([s[1] for s in samples]).reshape(len(samples), len(self.teams))
        pending = np.array([s[2] for s in samples]).reshape(len(samples), len(self.teams))
        deserved = np.array(
            [
                water_fill(self.weights, h + p, self.capacity_gpus)
                for h, p in zip(held, pending, strict=True)
            ]
        ).reshape(len(samples), len(self.teams))
        return ReplayResult(
            arm=self.arm.name,
            teams=self.teams,
            capacity_gpus=self.capacity_gpus,
            times_s=times,
            held_gpus=held,
            pending_gpus=pending,
            deserved_gpus=deserved,
            allocated_gpus=np.array([s[3] for s in samples]),
            waits=self.waits,
            preemptions=self.preemptions,
            decisions=self.decisions,
            gate_holds=self.gate_holds,
            elapsed_s=time.perf_counter() - started,
        )

    def _sample(self, at_s: float) -> tuple[float, np.ndarray, np.ndarray, float]:
        allocated = (self.state.total_gpu_milli - int(self.state.free_milli.sum())) / MILLI_PER_GPU
        return (
            at_s,
            self.held_milli / MILLI_PER_GPU,
            self.pending_milli / MILLI_PER_GPU,
            allocated,
        )

    def _tick(self, at_s: float) -> float:
        tick = self.settings.tick_s
        return math.ceil(at_s / tick - 1e-9) * tick

    def _push(self, at_s: float, kind: int, instance: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (self._tick(at_s), kind, self.sequence, instance))

    def _new_instance(self, pod: ReplayPod, arrival_s: float, recreated: bool = False) -> int:
        request = pod.request
        if not self.arm.priorities:
            unprioritized = self.unprioritized.get(request)
            if unprioritized is None:
                unprioritized = self.unprioritized[request] = replace(request, priority=0)
            request = unprioritized
        self.instances.append(_Instance(pod, request, arrival_s, recreated))
        return len(self.instances) - 1

    # -- events ----------------------------------------------------------------------------------

    def _handle(self, now: float, kind: int, index: int) -> None:
        instance = self.instances[index]
        if kind == _ARRIVAL:
            self._arrive(index)
        elif kind == _DEPARTURE:
            if instance.status == _RUNNING:
                self._release(index)
                instance.status = _DONE
            elif instance.status == _TERMINATING:
                instance.completed = True
        else:
            self._terminate(now, index)

    def _arrive(self, index: int) -> None:
        instance = self.instances[index]
        request = instance.request
        if self.arm.placement == "fairpack":
            self.fragments.observe(request)
        bucket = self.bucket_of.get(request)
        if bucket is None:
            bucket = _Bucket(len(self.buckets), request, self.team_index.get(request.team, -1))
            self.buckets.append(bucket)
            self.bucket_of[request] = bucket
        if not bucket.queue and not bucket.parked:
            self.fresh.add(bucket.index)
        elif not bucket.queue:
            # An empty parked bucket: its park no longer says anything about this pod.
            self._unpark(bucket)
            self.fresh.add(bucket.index)
        bucket.queue.append(index)
        self._ledger_pending(instance, +1)

    def _terminate(self, now: float, index: int) -> None:
        """A victim's grace period is over: its GPUs come back, its controller recreates it."""
        instance = self.instances[index]
        self._release(index, counted_on_row=False)
        self.terminating_on_row[instance.row] -= 1
        instance.status = _DONE
        if not instance.completed:
            self._arrive(self._new_instance(instance.pod, now, recreated=True))
        if self.terminating_on_row[instance.row] == 0:
            waiting = [i for i in self.nominated_ids if self.instances[i].row == instance.row]
            for nominated in waiting:
                self._return_nominated(nominated)

    def _return_nominated(self, index: int) -> None:
        """The victims are gone: the preemptor is tried on its node first (kube-scheduler
        keeps a nominated node's room from pods of lower or equal priority)."""
        self.nominated_ids.remove(index)
        self.returning.append(index)
        self.nominated_rows.pop(self.instances[index].row, None)

    def _start_nominated(self, now: float) -> None:
        for index in self.returning:
            instance = self.instances[index]
            request, row = instance.request, instance.row
            bucket = self.bucket_of[request]
            if (
                not self._quota_blocks(bucket)
                and not self._gate_holds(now, index)
                and self._fits_row(row, request)
            ):
                gpus = tuple(int(g) for g in choose_gpus(self.state.free_milli[[row]], request)[0])
                self._start(now, index, row, gpus)
            else:
                self._requeue(index)
            self.dirty_rows.add(row)  # what the preemptor leaves there is for the others
        self.returning.clear()

    def _requeue(self, index: int) -> None:
        instance = self.instances[index]
        instance.status = _PENDING
        instance.row = -1
        bucket = self.bucket_of[instance.request]
        bucket.queue.appendleft(index)
        self._unpark(bucket)
        self.fresh.add(bucket.index)

    # -- the ledger ------------------------------------------------------------------------------

    def _ledger_pending(self, instance: _Instance, sign: int) -> None:
        team = self.team_index.get(instance.request.team)
        if team is None:
            return
        milli = instance.request.gpu_milli
        self.pending_milli[team] += sign * milli
        if sign > 0:
            self.demand_version += 1
        sizes = self.pending_sizes[team]
        sizes[milli] = sizes.get(milli, 0) + sign
        if sizes[milli] == 0:
            del sizes[milli]
        self.ledger_version += 1

    def _ledger_held(self, instance: _Instance, sign: int) -> None:
        team = self.team_index.get(instance.request.team)
        if team is not None:
            self.held_milli[team] += sign * instance.request.gpu_milli
            self.ledger_version += 1
            if sign < 0:
                self.demand_version += 1

    def shares(self) -> TeamShares:
        cached = self.shares_cache
        if cached is not None and cached[0] == self.ledger_version:
            return cached[1]
        smallest = np.array([min(s, default=0) / MILLI_PER_GPU for s in self.pending_sizes])
        held = self.held_milli / MILLI_PER_GPU
        pending = self.pending_milli / MILLI_PER_GPU
        if cached is not None and self.deserved_version == self.demand_version:
            # A pod starting moves GPUs from pending to held: demand, and so the
            # deserved shares, stay as they were.
            shares = replace(cached[1], held=held, pending=pending, smallest_pending=smallest)
        else:
            shares = team_shares(
                self.teams, self.weights, held, pending, self.capacity_gpus, smallest
            )
            self.deserved_version = self.demand_version
        self.shares_cache = (self.ledger_version, shares)
        return shares

    # -- placing and releasing -------------------------------------------------------------------

    def _level(self, priority: int) -> tuple[IntArray, IntArray, IntArray]:
        level = self.levels.get(priority)
        if level is None:
            n, g = self.state.free_milli.shape
            level = (
                np.zeros((n, g), dtype=np.int64),
                np.zeros(n, dtype=np.int64),
                np.zeros(n, dtype=np.int64),
            )
            self.levels[priority] = level
        return level

    def _count_on_row(self, index: int, sign: int) -> None:
        instance = self.instances[index]
        request = instance.request
        slots, cpu, memory = self._level(request.priority)
        if request.gpu_count:
            slots[instance.row, list(instance.gpus)] += sign * request.milli_per_gpu
        cpu[instance.row] += sign * request.cpu_milli
        memory[instance.row] += sign * request.memory_mib
        if sign > 0:
            self.on_row[instance.row].add(index)
        else:
            self.on_row[instance.row].discard(index)

    def _start(self, now: float, index: int, row: int, gpus: tuple[int, ...]) -> None:
        instance = self.instances[index]
        self.state.place(row, instance.request, gpus)
        self.touched_rows[row] = None
        instance.status = _RUNNING
        instance.row = row
        instance.gpus = gpus
        instance.started_s = now
        self._count_on_row(index, +1)
        self._ledger_pending(instance, -1)
        self._ledger_held(instance, +1)
        self._record_wait(instance, now, started=True)
        if math.isfinite(instance.pod.duration_s):
            self._push(now + instance.pod.duration_s, _DEPARTURE, index)

    def _release(self, index: int, counted_on_row: bool = True) -> None:
        instance = self.instances[index]
        self.state.release(instance.row, instance.request, instance.gpus)
        self.victim_records.pop(index, None)
        if counted_on_row:
            self._count_on_row(index, -1)
        self._ledger_held(instance, -1)
        self.dirty_rows.add(instance.row)
        self.pod_left = True

    def _record_wait(self, instance: _Instance, now: float, started: bool) -> None:
        request = instance.request
        self.waits.append(
            WaitRecord(
                team=request.team,
                pod_class=request.pod_class.value,
                gpu_count=request.gpu_count,
                gpus=request.gpu_milli / MILLI_PER_GPU,
                arrival_s=instance.arrival_s,
                wait_s=now - instance.arrival_s,
                started=started,
                recreated=instance.recreated,
            )
        )

    # -- the scheduling pass ---------------------------------------------------------------------

    def _unpark(self, bucket: _Bucket) -> None:
        bucket.parked = False
        self.parked.discard(bucket.index)

    def _park(self, bucket: _Bucket) -> None:
        bucket.parked = True
        self.parked.add(bucket.index)

    def _schedule(self, now: float) -> None:
        if self.returning:
            self._start_nominated(now)
        if self.arm.fairness:
            self._refresh_holds(now)
        flush = now >= self.next_flush_s
        if flush:
            self.next_flush_s = now + self.settings.flush_s
        # Where each bucket may fit now: the rows freed since it was parked (None: anywhere).
        wake: dict[int, list[int] | None] = {}
        if flush:
            wake = dict.fromkeys(self.parked)
        elif self.parked and (self.dirty_rows or self.arm.quotas or self.arm.fairness):
            wake = self._woken(now)
        wake.update(dict.fromkeys(self.fresh))
        self.fresh.clear()
        self.dirty_rows.clear()
        self.pod_left = False
        self.touched_rows.clear()
        if not wake:
            return
        heap = []
        for b in wake:
            bucket = self.buckets[b]
            if bucket.queue:
                heap.append((self._queue_key(bucket), b))
        heapq.heapify(heap)
        unfit_shapes: set[tuple[object, ...]] = set()
        while heap:
            _, b = heapq.heappop(heap)
            bucket = self.buckets[b]
            if not bucket.queue:
                continue
            rows = wake[b]
            # Each row fitted the bucket when the pass began; a row taken since may not.
            if rows is not None and not any(
                row not in self.touched_rows or self._fits_touched_row(row, bucket.request)
                for row in rows
            ):
                outcome = False  # taken by the pods tried before it in this pass
            else:
                outcome = self._try(now, bucket, unfit_shapes)
            if outcome and bucket.queue:
                heapq.heappush(heap, (self._queue_key(bucket), b))
            elif not outcome:
                self._park(bucket)
            else:
                self._unpark(bucket)

    def _queue_key(self, bucket: _Bucket) -> tuple[int, float, int]:
        head = bucket.queue[0]
        return (-bucket.request.priority, self.instances[head].arrival_s, head)

    def _fits_row(self, row: int, request: PodRequest) -> bool:
        """Whether ``request`` fits node ``row`` now (holds for starving pods included)."""
        state = self.state
        if 0 < request.gpu_count < self.held_map.get(row, 0):
            return False
        if request.allowed_models and (
            state.gpu_model[row] < 0
            or state.models[state.gpu_model[row]] not in request.allowed_models
        ):
            return False
        free = state.free_milli[row].copy()
        if int(state.gpu_memory_mib[row]) < request.min_gpu_memory_mib:
            return False
        return _fits(free, int(state.cpu_free_milli[row]), int(state.memory_free_mib[row]), request)

    def _fits_touched_row(self, row: int, request: PodRequest) -> bool:
        """Whether ``request`` still fits a row placed on in this pass (which it fitted
        when the pass began: model and GPU memory need no second look)."""
        if 0 < request.gpu_count < self.held_map.get(row, 0):
            return False
        summary = self.touched_rows[row]
        if summary is None:
            state = self.state
            free: list[int] = state.free_milli[row].tolist()
            summary = (
                int(state.cpu_free_milli[row]),
                int(state.memory_free_mib[row]),
                sum(1 for f in free if f >= MILLI_PER_GPU),
                max(free),
            )
            self.touched_rows[row] = summary
        cpu, memory, full_free, max_free = summary
        if cpu < request.cpu_milli or memory < request.memory_mib:
            return False
        if request.gpu_count == 0:
            return True
        if request.is_sharing:
            return max_free >= request.milli_per_gpu
        return full_free >= request.gpu_count

    def _woken(self, now: float) -> dict[int, list[int] | None]:
        """Parked buckets that the changes since the last pass may help, with where."""
        woken: dict[int, list[int] | None] = {}
        parked = np.fromiter(self.parked, dtype=np.int64)
        arrays = self._shape_arrays()
        if self.dirty_rows:
            state = self.state
            full_free = (state.free_milli >= MILLI_PER_GPU).sum(axis=1)
            max_free = state.free_milli.max(axis=1)
            held = dict(zip(self.held_rows.tolist(), self.held_for, strict=True))
            gpu_count = arrays["gpu_count"][parked]
            for row in self.dirty_rows:
                model = int(state.gpu_model[row])
                fits = (
                    (arrays["cpu"][parked] <= state.cpu_free_milli[row])
                    & (arrays["memory"][parked] <= state.memory_free_mib[row])
                    & arrays["model_ok"][parked, model + 1]
                    & (arrays["min_memory"][parked] <= state.gpu_memory_mib[row])
                    & np.where(
                        arrays["sharing"][parked],
                        arrays["milli"][parked] <= max_free[row],
                        gpu_count <= full_free[row],
                    )
                )
                if row in held:
                    fits &= ~((gpu_count > 0) & (gpu_count < held[row]))
                if row in self.nominated_rows:
                    fits &= arrays["priority"][parked] > self.nominated_rows[row]
                for b in parked[fits].tolist():
                    rows = woken.setdefault(b, [])
                    assert rows is not None
                    rows.append(row)
        if self.pod_left and self.arm.priorities and self.levels:
            # kube-scheduler requeues a pod that fit nowhere on any pod's deletion
            # (NodeResourcesFit's queueing hint), and runs its preemption again: where it
            # fits matters not, so a pod that may preempt is tried anywhere.
            may_preempt = arrays["priority"][parked] > min(self.levels)
            woken.update(dict.fromkeys(parked[may_preempt].tolist()))
        if self.blocked:
            woken.update(dict.fromkeys(self._unblocked(now)))
        return woken

    def _unblocked(self, now: float) -> set[int]:
        """Parked buckets held back by a quota or by the gate whose hold has lifted."""
        blocked = np.fromiter(self.blocked, dtype=np.int64)
        arrays = self._shape_arrays()
        team = arrays["team"][blocked]
        size = arrays["gpus"][blocked]
        lifted = np.ones(len(blocked), dtype=bool)
        quotas = self.arm.quotas
        if quotas is not None:
            cap = np.array([quotas.get(t, np.inf) for t in self.teams] + [np.inf])
            held = np.append(self.held_milli / MILLI_PER_GPU, 0.0)
            lifted &= held[team] + size <= cap[team] + 1e-9
        if self.arm.fairness:
            free = float(self.state.free_milli.sum()) / MILLI_PER_GPU
            held_back = gate_holds(self.shares(), team, size, free)
            large = arrays["gpu_count"][blocked] >= self.policy.fairness.starvation.min_gpus
            for i in np.flatnonzero(held_back & large).tolist():
                queue = self.buckets[int(blocked[i])].queue
                held_back[i] = not (queue and self._starving(now, queue[0]))
            lifted &= ~held_back
        return set(blocked[lifted].tolist())

    def _shape_arrays(self) -> dict[str, np.ndarray]:
        cached = self._bucket_arrays
        if cached is not None and cached[0] == len(self.buckets):
            return cached[1]
        state = self.state
        requests = [bucket.request for bucket in self.buckets]
        model_ok = np.zeros((len(requests), len(state.models) + 1), dtype=bool)
        for i, request in enumerate(requests):
            if request.gpu_count == 0:
                model_ok[i, :] = True
                continue
            for m, model in enumerate(state.models):
                model_ok[i, m + 1] = not request.allowed_models or model in request.allowed_models
        arrays = {
            "gpu_count": np.array([r.gpu_count for r in requests], dtype=np.int64),
            "milli": np.array([r.milli_per_gpu for r in requests], dtype=np.int64),
            "sharing": np.array([r.is_sharing for r in requests], dtype=bool),
            "cpu": np.array([r.cpu_milli for r in requests], dtype=np.int64),
            "memory": np.array([r.memory_mib for r in requests], dtype=np.int64),
            "min_memory": np.array([r.min_gpu_memory_mib for r in requests], dtype=np.int64),
            "model_ok": model_ok,
            "team": np.array([b.team_index for b in self.buckets], dtype=np.int64),
            "priority": np.array([r.priority for r in requests], dtype=np.int64),
            "gpus": np.array([r.gpu_milli / MILLI_PER_GPU for r in requests]),
        }
        self._bucket_arrays = (len(self.buckets), arrays)
        return arrays

    def _try(self, now: float, bucket: _Bucket, unfit_shapes: set[tuple[object, ...]]) -> bool:
        """Try the bucket's first pod: True when it started or was nominated for preemption."""
        index = bucket.queue[0]
        request = bucket.request
        self.blocked.discard(bucket.index)
        if self._quota_blocks(bucket):
            self.blocked.add(bucket.index)
            return False
        shares = self.shares() if self.arm.fairness else None
        if self._gate_holds(now, index):
            # kube-scheduler runs preemption after any failed filter; the extender accepts
            # only evictions the gate allows (the team's own pods, or enough room freed).
            self.blocked.add(bucket.index)
            if self._may_preempt(request) and self._preempt(now, index, shares):
                bucket.queue.popleft()
                return True
            return False
        shape = (
            request.gpu_count,
            request.milli_per_gpu,
            request.cpu_milli,
            request.memory_mib,
            request.min_gpu_memory_mib,
            request.allowed_models,
        )
        choice = None if shape in unfit_shapes else self._select(request, shares)
        if choice is not None:
            bucket.queue.popleft()
            self._start(now, index, *choice)
            return True
        unfit_shapes.add(shape)
        if self._may_preempt(request) and self._preempt(now, index, shares):
            bucket.queue.popleft()
            return True
        return False

    def _may_preempt(self, request: PodRequest) -> bool:
        return self.arm.priorities and request.priority > min(self.levels, default=request.priority)

    def _quota_blocks(self, bucket: _Bucket) -> bool:
        """The team's running pods and this one would pass the team's hard quota."""
        quotas = self.arm.quotas
        request = bucket.request
        if quotas is None or request.team not in quotas or bucket.team_index < 0:
            return False
        held = self.held_milli[bucket.team_index] / MILLI_PER_GPU
        return bool(held + request.gpu_milli / MILLI_PER_GPU > quotas[request.team] + 1e-9)

    def _gate_holds(self, now: float, index: int) -> bool:
        """The fairpack extender's filter gate (a starving large pod is exempt)."""
        request = self.instances[index].request
        if not self.arm.fairness or not request.gpu_count or self._starving(now, index):
            return False
        free = float(self.state.free_milli.sum()) / MILLI_PER_GPU
        size = request.gpu_milli / MILLI_PER_GPU
        if fair_share_gate(self.shares(), request.team, size, free).hold:
            self.gate_holds += 1
            return True
        return False

    def _select(
        self, request: PodRequest, shares: TeamShares | None
    ) -> tuple[int, tuple[int, ...]] | None:
        self.decisions += 1
        state = self.state
        off = self._off_rows(request)
        allowed = None
        if off:
            allowed = np.ones(state.n_nodes, dtype=bool)
            allowed[off] = False
        if self.arm.placement != "fairpack":
            choice = self.kube.select(state, request, allowed)
            return None if choice is None else (choice.row, choice.gpus)
        state.over_share_teams = shares.over_share_teams if shares is not None else frozenset()
        self.groups.refresh(state)
        order = self.by_rank if allowed is None else self.by_rank[allowed[self.by_rank]]
        rows = self.groups.representatives(order)
        evaluation = evaluate_placement(
            state, request, rows, self.policy, self.fragments.aggregates
        )
        best = evaluation.best(self.rank)
        if best is None:
            return None
        return int(evaluation.rows[best]), evaluation.gpus_of(best)

    def _off_rows(self, request: PodRequest) -> list[int]:
        """Rows ``request`` may not take: held for a larger starving pod, or nominated to
        a preemptor of at least its priority (kube-scheduler counts a nominated pod's
        request on its node for pods of lower or equal priority)."""
        off = [row for row, gpus in self.held_map.items() if 0 < request.gpu_count < gpus]
        off.extend(
            row for row, priority in self.nominated_rows.items() if request.priority <= priority
        )
        return off

    # -- anti-starvation -------------------------------------------------------------------------

    def _starving(self, now: float, index: int) -> bool:
        config = self.policy.fairness.starvation
        instance = self.instances[index]
        waited = now - instance.arrival_s
        return config.enabled and is_starving(
            instance.request, waited, config.min_gpus, config.wait_s
        )

    def _refresh_holds(self, now: float) -> None:
        config = self.policy.fairness.starvation
        if not config.enabled:
            return
        starving: list[tuple[float, PodRequest]] = []
        for bucket in self.buckets:
            if bucket.request.gpu_count < config.min_gpus:
                continue
            # Each bucket is oldest first: its first few starving pods are all that can count.
            for index in itertools.islice(bucket.queue, config.max_reserved_nodes):
                if not self._starving(now, index):
                    break
                starving.append((self.instances[index].arrival_s, bucket.request))
        starving.sort(key=lambda item: item[0])
        nominated = np.zeros(self.state.n_nodes, dtype=bool)
        nominated[list(self.nominated_rows)] = True
        rows, sizes = reserved_rows(
            self.state,
            [request for _, request in starving],
            config.max_reserved_nodes,
            exclude=nominated,
        )
        released = set(self.held_rows.tolist()) - set(rows.tolist())
        self.dirty_rows |= released
        self.held_rows, self.held_for = rows, sizes
        self.held_map = dict(zip(rows.tolist(), sizes, strict=True))

    # -- preemption ------------------------------------------------------------------------------

    def _preempt(self, now: float, index: int, shares: TeamShares | None) -> bool:
        """kube-scheduler's DefaultPreemption (with the extender's say in the fairpack arm)."""
        instance = self.instances[index]
        request = instance.request
        lower = [p for p in self.levels if p < request.priority]
        if not lower:
            return False
        state = self.state
        free_if = state.free_milli.copy()
        cpu_if = state.cpu_free_milli.copy()
        memory_if = state.memory_free_mib.copy()
        evictable = np.zeros(state.n_nodes, dtype=bool)
        for priority in lower:
            slots, cpu, memory = self.levels[priority]
            free_if += slots
            cpu_if += cpu
            memory_if += memory
            evictable |= (slots.sum(axis=1) > 0) | (cpu > 0) | (memory > 0)
        if request.gpu_count:
            if request.is_sharing:
                gpu_ok = (free_if >= request.milli_per_gpu).any(axis=1)
            else:
                gpu_ok = (free_if >= MILLI_PER_GPU).sum(axis=1) >= request.gpu_count
            gpu_ok &= state.model_mask(request.allowed_models)
            gpu_ok &= state.gpu_memory_mib >= request.min_gpu_memory_mib
        else:
            gpu_ok = np.ones(state.n_nodes, dtype=bool)
        mask = (
            gpu_ok
            & (cpu_if >= request.cpu_milli)
            & (memory_if >= request.memory_mib)
            & evictable
            & (self.terminating_on_row == 0)
        )
        if self.arm.fairness and self.held_for:
            mask[self.held_rows[kept_off(request, self.held_for)]] = False
        candidates = np.flatnonzero(mask)
        if len(candidates) == 0:
            return False
        offset = int(self.rng.integers(len(candidates)))
        candidates = np.roll(candidates, -offset)[: self.settings.max_preemption_candidates]
        proposals: dict[int, list[int]] = {}
        for row in candidates.tolist():
            victims = self._dry_run(row, request)
            if victims:
                proposals[row] = victims
        if not proposals:
            return False
        if self.arm.fairness:
            proposals = self._extender_preempt(request, proposals, shares)
            if not proposals:
                return False
        row, victims = min(proposals.items(), key=lambda item: self._kube_node_key(item[1]))
        for victim in victims:
            self._evict(now, victim, request)
        instance.status = _NOMINATED
        instance.row = row
        self.nominated_ids.append(index)
        self.nominated_rows[row] = max(
            self.nominated_rows.get(row, request.priority), request.priority
        )
        return True

    def _dry_run(self, row: int, request: PodRequest) -> list[int]:
        """kube-scheduler's selectVictimsOnNode: evict all lower-priority pods, spare what fits."""
        state = self.state
        lower = [
            i for i in self.on_row[row] if self.instances[i].request.priority < request.priority
        ]
        if not lower:
            return []
        # Plain lists: a node's few GPUs are summed faster in Python than in numpy.
        free: list[int] = state.free_milli[row].tolist()
        cpu = int(state.cpu_free_milli[row])
        memory = int(state.memory_free_mib[row])
        for i in lower:
            victim = self.instances[i]
            for gpu in victim.gpus:
                free[gpu] += victim.request.milli_per_gpu
            cpu += victim.request.cpu_milli
            memory += victim.request.memory_mib
        if not _fits_list(free, cpu, memory, request):
            return []
        # Most important first: highest priority, then the oldest.
        lower.sort(key=lambda i: (-self.instances[i].request.priority, self.instances[i].started_s))
        victims = []
        for i in lower:
            spared = self.instances[i]
            r = spared.request
            for gpu in spared.gpus:
                free[gpu] -= r.milli_per_gpu
            cpu -= r.cpu_milli
            memory -= r.memory_mib
            if _fits_list(free, cpu, memory, request):
                continue
            for gpu in spared.gpus:
                free[gpu] += r.milli_per_gpu
            cpu += r.cpu_milli
            memory += r.memory_mib
            victims.append(i)
        return victims

    def _kube_node_key(self, victims: list[int]) -> tuple[int, int, int, float]:
        """pickOneNodeForPreemption's order, smallest first: highest victim priority, sum
        of priorities each shifted by MaxInt32+1 (so that fewer victims cost less), fewest
        victims, then the latest earliest start among the highest-priority victims."""
        priorities = [self.instances[i].request.priority for i in victims]
        highest = max(priorities)
        earliest_start = min(
            self.instances[i].started_s
            for i in victims
            if self.instances[i].request.priority == highest
        )
        shifted_sum = sum(priorities) + len(victims) * _PRIORITY_SHIFT
        return (highest, shifted_sum, len(victims), -earliest_start)

    def _extender_preempt(
        self, request: PodRequest, proposals: dict[int, list[int]], shares: TeamShares | None
    ) -> dict[int, list[int]]:
        """What the extender's preempt verb answers (``extender.service.Extender.preempt``):
        the accepted rows, each with its victims (fairpack's own where it refused the dry
        run's)."""
        decisions: dict[str, VictimDecision] = {}
        state = self.state
        free = float(state.free_milli.sum()) / MILLI_PER_GPU
        size = request.gpu_milli / MILLI_PER_GPU

        def gate(victims: Sequence[VictimRecord]) -> GateDecision:
            if shares is None:
                return PASS
            freed = sum(victim.gpus for victim in victims)
            own = sum(victim.gpus for victim in victims if victim.team == request.team)
            return fair_share_gate(shares, request.team, size, free + freed, own)

        for row, victims in proposals.items():
            records = [self._victim_record(i) for i in victims]
            decision = select_victims(request, records, shares)
            if decision.accepted and (held := gate(records)).hold:
                decision = VictimDecision(refused=held.reason)
            if not decision.accepted:
                on_row = [self._victim_record(i) for i in self.on_row[row]]
                fits = partial(self._fits_without, row, request)
                decision = choose_victims(request, on_row, fits, shares, gate=gate)
            decisions[str(row)] = decision
        kept = best_nodes(decisions, {}, shares)
        return {int(name): [int(v.uid) for v in decisions[name].victims] for name in kept}

    def _fits_without(self, row: int, request: PodRequest, victims: Sequence[VictimRecord]) -> bool:
        """Whether ``request`` fits node ``row`` once ``victims`` (pods on it) are gone."""
        state = self.state
        free: list[int] = state.free_milli[row].tolist()
        cpu = int(state.cpu_free_milli[row])
        memory = int(state.memory_free_mib[row])
        for record in victims:
            victim = self.instances[int(record.uid)]
            r = victim.request
            for gpu in victim.gpus:
                free[gpu] += r.milli_per_gpu
            cpu += r.cpu_milli
            memory += r.memory_mib
        return _fits_list(free, cpu, memory, request)

    def _victim_record(self, index: int) -> VictimRecord:
        """The extender's record of a running pod (the same until it stops: kept)."""
        record = self.victim_records.get(index)
        if record is None:
            instance = self.instances[index]
            request = instance.request
            record = self.victim_records[index] = VictimRecord(
                uid=str(index),
                team=request.team,
                pod_class=request.pod_class,
                priority=request.priority,
                preemptible=request.preemptible,
                started_s=instance.started_s,
                gpus=request.gpu_milli / MILLI_PER_GPU,
            )
        return record

    def _evict(self, now: float, index: int, preemptor: PodRequest) -> None:
        instance = self.instances[index]
        self._count_on_row(index, -1)
        instance.status = _TERMINATING
        self.terminating_on_row[instance.row] += 1
        self._push(now + self.settings.grace_s, _TERMINATION, index)
        self.preemptions.append(
            PreemptionRecord(
                at_s=now,
                preemptor_team=preemptor.team,
                preemptor_class=preemptor.pod_class.value,
                victim_team=instance.request.team,
                victim_class=instance.request.pod_class.value,
                victim_gpus=instance.request.gpu_milli / MILLI_PER_GPU,
            )
        )


def _fits(free: IntArray, cpu: int, memory: int, request: PodRequest) -> bool:
    if cpu < request.cpu_milli or memory < request.memory_mib:
        return False
    if request.gpu_count == 0:
        return True
    if request.is_sharing:
        return bool((free >= request.milli_per_gpu).any())
    return int((free >= MILLI_PER_GPU).sum()) >= request.gpu_count


def _fits_list(free: list[int], cpu: int, memory: int, request: PodRequest) -> bool:
    """:func:`_fits` over a plain list of a node's free milli-GPUs."""
    if cpu < request.cpu_milli or memory < request.memory_mib:
        return False
    if request.gpu_count == 0:
        return True
    if request.is_sharing:
        return any(f >= request.milli_per_gpu for f in free)
    return sum(1 for f in free if f >= MILLI_PER_GPU) >= request.gpu_count


def replay(
    nodes: Sequence[NodeSpec], pods: Sequence[ReplayPod], arm: Arm, settings: ReplaySettings
) -> ReplayResult:
    """Run one arm over ``pods``."""
    return Replay(nodes, pods, arm, settings).run()
