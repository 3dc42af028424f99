"""The four extender verbs over the live view, free of HTTP.

Filter and prioritize call ``scoring.evaluate``, the very function the simulator
calls.  Inputs arrive validated (``extender.wire``); what is wrong in them beyond
their shape raises :class:`BadRequestError` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, partial
from itertools import compress
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

from extender.config import FairpackConfig, LiveConfig
from extender.errors import BadRequestError, BindError, ObjectError
from extender.metrics import UNKNOWN_MODEL, Metrics
from extender.objects import PodInfo, pod_request
from extender.view import ClusterView
from extender.wire import (
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderPreemptionArgs,
    HostPriorityEncoder,
    Pod,
    PreEncoded,
)
from scoring import (
    ClusterState,
    Evaluation,
    OnlineFragments,
    PodRequest,
    evaluate,
    extender_priorities,
)
from scoring.fairshare import (
    PASS,
    GateDecision,
    TeamShares,
    capacity_value,
    fair_share_gate,
    free_value,
    gpu_value_per_row,
    team_shares,
    team_weights,
)
from scoring.feasibility import Check, check_feasibility, failed_counts
from scoring.fragmentation import FloatArray
from scoring.gpus import choose_gpus
from scoring.groups import NodeGroups
from scoring.incremental import IncrementalEvaluator, Scored
from scoring.names import names_at
from scoring.placement import MAX_EXTENDER_PRIORITY
from scoring.policy import StarvationConfig
from scoring.starvation import is_starving, kept_off, reserved_rows
from scoring.state import BoolArray, IntArray
from scoring.terms import reads_over_share
from scoring.victims import (
    VictimDecision,
    VictimRecord,
    best_nodes,
    choose_victims,
    select_victims,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

NEUTRAL_PRIORITY = 5
"""What prioritize gives a node the view does not know: no opinion either way."""
UNKNOWN_NODE_REASON = "node(s) not yet in fairpack's view"
HELD_NODE_REASON = "node(s) held for a starving {gpus}-GPU pod"
"""Nodes kept free of smaller pods while a large pod waits for them to drain."""
GATE_HOLD_REASON = "team over its fair share while teams under it wait"
"""How ``fairpack_filter_rejections_total`` counts the fair-share gate's holds: their
reason, with its live figures, would make a new series of nearly every one."""
EXPLAIN_TOP_NODES = 5
_REGROUP_AFTER = 8
"""Forget old node-group ids once there are this many per node."""
_GROUPING_PAYS_BELOW = 0.5
"""Group identical nodes while groups are fewer than this share of the candidates."""
_REGROUP_CHECK_EVERY = 64
_WARM_MIX_BUDGET_S = 0.002
"""How long after an answer the service may spend bringing remembered evaluations
to a new shape mix (one at least, once one is due)."""
_CARRY_CHANGED_ROWS = 8
"""A remembered evaluation is completed (every column patched, after an answer) once
more candidates than this changed since it last was; until then each decision with it
evaluates those rows again, which costs little next to copying every column."""
_INCREMENTAL_FROM_NODES = 2_000
"""Below this many nodes, evaluating them all costs less than patching a few rows in
(mostly fixed numpy overhead either way): in-process filter p50 at 1,500 nodes 1.04 ms
evaluating all, 1.10 patching; at 3,000, 1.55 against 1.15."""


class Binder(Protocol):
    """Posts a pod's binding; raises BindError when the API server refuses it."""

    async def bind(self, namespace: str, name: str, uid: str, node: str) -> None: ...


class ViewOnlyBinder:
    """For a static inventory: there is no API server, the view is the cluster."""

    async def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        return None


class Requeuer(Protocol):
    """Makes kube-scheduler retry a pending pod (``extender.watch.KubeRequeuer``)."""

    async def requeue(self, namespace: str, name: str) -> None: ...


@dataclass(frozen=True)
class PodKey:
    uid: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Outcome:
    """One evaluation spread over the request's known nodes (in request order).

    ``source`` covers one representative per group of identical nodes;
    ``group`` maps each requested row to its representative's index there.
    """

    source: Evaluation | Scored
    """The evaluation, or (every requested row evaluated) what a decision reads of it,
    the rest made when first asked for."""
    group: IntArray
    rows: IntArray
    grouped: bool = True
    """False: every requested row was evaluated, ``group`` is 0, 1, 2, ..."""

    @property
    def evaluation(self) -> Evaluation:
        source = self.source
        return source if isinstance(source, Evaluation) else source.evaluation

    @property
    def mask(self) -> BoolArray:
        if isinstance(self.source, Scored):
            return self.source.mask
        mask = self.source.feasibility.mask
        return mask[self.group] if self.grouped else mask

    @property
    def failed_check(self) -> IntArray:
        failed_check = self.evaluation.feasibility.failed_check
        return failed_check[self.group] if self.grouped else failed_check

    def failed_counts(self) -> IntArray:
        """How many requested rows fail each check, indexed by ``CheckKind``."""
        if isinstance(self.source, Scored):
            return self.source.failed_counts
        return failed_counts(self.failed_check)

    def _scores(self, among: BoolArray | None) -> tuple[IntArray, FloatArray, int | None]:
        """The feasible requested rows (within ``among``), their scores, and the index of
        the best among them (None when there are none)."""
        source = self.source
        if isinstance(source, Scored):
            feasible = np.flatnonzero(source.mask if among is None else source.mask & among)
            score = source.score[feasible]
        elif not self.grouped and among is None:
            feasible = source.feasibility.feasible_index
            score = source.score
        else:
            by_representative = np.zeros(len(source.feasibility.mask))
            by_representative[source.feasibility.mask] = source.score
            mask = self.mask if among is None else self.mask & among
            feasible = np.flatnonzero(mask)
            score = by_representative[self.group[feasible]]
        if len(feasible) == 0:
            return feasible, np.zeros(0), None
        near = np.flatnonzero(score >= score.max() - source.tie_tolerance - 1e-12)
        tie_break = source.state.tie_break[self.rows[feasible[near]]]
        return feasible, score, int(near[np.argmin(tie_break)])

    def priorities(self) -> IntArray:
        """0..10 per requested row: infeasible rows 0, the best alone on top.

        Members of a group share their representative's score; the stable node
        order picks the winner among every near-best member, as
        ``Evaluation.best`` does over the representatives in the simulator.
        """
        feasible, score, best = self._scores(None)
        priorities = np.zeros(len(self.group), dtype=np.int64)
        if best is not None:
            priorities[feasible] = extender_priorities(score, best)
        return priorities

    def evaluated(self, index: int) -> int | None:
        """Index into ``evaluation.rows`` of requested row ``index`` (its group's
        stand-in), None where it does not fit."""
        group = int(self.group[index])
        source = self.source
        mask = source.mask if isinstance(source, Scored) else source.feasibility.mask
        return int(np.count_nonzero(mask[:group])) if mask[group] else None

    def best(self, among: BoolArray | None = None) -> int | None:
        """Index into the requested rows of the node :meth:`priorities` ranks 10 when
        asked about the feasible rows within ``among`` (all by default)."""
        feasible, _, best = self._scores(among)
        return None if best is None else int(feasible[best])


class _Later(Generic[T]):
    """A value made when first asked for: bookkeeping deferred past the answer
    (``ClusterView.defer``), ready by the time anything reads it."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make: Callable[[], T] | None = make
        self._value: T | None = None

    def get(self) -> T:
        if self._make is not None:
            self._value, self._make = self._make(), None
        return self._value  # type: ignore[return-value]


@dataclass(frozen=True)
class _KnownNodes:
    state: ClusterState
    names: Sequence[str]
    rows: IntArray
    known: Sequence[str]


def _refuse_duplicates(names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise BadRequestError(f"node {name!r} appears more than once")
            seen.add(name)


@dataclass(frozen=True)
class _TopNodes:
    """The node chosen (passed, or ranked 10) and the next best (one per group of
    identical nodes), with every score term; picked at the decision, made readable only
    when ``/debug/explain`` asks, and small: a record outlives its evaluation's arrays."""

    names: tuple[str, ...]
    score: FloatArray
    span: tuple[float, float]
    terms: dict[str, FloatArray]
    free_milli: IntArray
    request: PodRequest
    chosen: bool
    """The first node is the one chosen (it gets 10); else the nodes are by score alone."""

    @classmethod
    def of(
        cls,
        state: ClusterState,
        outcome: Outcome,
        chosen: int | None,
        chosen_free: IntArray | None = None,
    ) -> _TopNodes:
        """``chosen``: the index into the requested rows of the node passed or ranked
        first (None: none was singled out); ``chosen_free``: its GPUs' free milli as the
        decision saw them (the pod may count there by now)."""
        source = outcome.source
        if isinstance(source, Scored):
            # Read where the decision left it: making the whole Evaluation for a few
            # nodes would copy every column.
            fitting = np.flatnonzero(source.mask)
            score, candidates = source.score[fitting], source.rows[fitting]
        else:
            score, candidates = source.score, source.rows
        first = None if chosen is None else outcome.evaluated(chosen)
        count = min(EXPLAIN_TOP_NODES, len(score))
        top = np.argpartition(-score, count - 1)[:count] if count else np.zeros(0, np.int64)
        if first is not None:
            top = top[top != first]
        top = top[np.argsort(-score[top], kind="stable")]
        rows = candidates[top]
        if first is not None:
            # The node itself, with its group's values (it may not be the stand-in).
            top = np.concatenate(([first], top[: count - 1]))
            rows = np.concatenate(([outcome.rows[chosen]], rows[: count - 1]))
        free_milli = state.free_milli[rows]
        if first is not None and chosen_free is not None:
            free_milli[0] = chosen_free
        return cls(
            tuple(state.names[row] for row in rows.tolist()),
            score[top],
            (float(score.max()), float(score.min())) if len(score) else (0.0, 0.0),
            (
                source.terms_at(fitting[top])
                if isinstance(source, Scored)
                else {name: values[top] for name, values in source.terms.items()}
            ),
            free_milli,
            source.request,
            first is not None,
        )

    def first(self) -> _TopNodes:
        """The first node alone."""
        return replace(
            self,
            names=self.names[:1],
            score=self.score[:1],
            terms={name: values[:1] for name, values in self.terms.items()},
            free_milli=self.free_milli[:1],
        )

    def render(self) -> list[dict[str, Any]]:
        priorities = extender_priorities(self.score, 0 if self.chosen else None, self.span)
        gpus = choose_gpus(self.free_milli, self.request).tolist()
        return [
            {
                "node": name,
                "score": round(float(self.score[i]), 6),
                "priority": int(priorities[i]),
                "gpus": gpus[i],
                "terms": {term: round(float(v[i]), 6) for term, v in self.terms.items()},
            }
            for i, name in enumerate(self.names)
        ]


@dataclass(frozen=True)
class _FilterMemo:
    """The last filter's answer, valid for the prioritize of the same cycle.

    kube-scheduler sends prioritize the nodes that passed every filter: when they
    are exactly the nodes that passed ours and nothing they are scored on changed in
    between (same arrays, same versions of those rows, same policy and shape table,
    and the same over-share teams where a term reads them), prioritize answers from
    the filter's evaluation.  Pods created or bound elsewhere meanwhile (a busy
    cluster) do not spoil it.  The versions are taken after the pod's own assumption
    on a node passed alone: that node is the one filter ranked first, and gets 10.
    """

    uid: str
    request: PodRequest
    state: ClusterState
    policy: Any
    aggregates: Any
    outcome: Outcome
    passed_rows: IntArray
    passed_names: list[str]
    passed_versions: IntArray
    over_share: frozenset[str]
    top: _Later[_TopNodes]
    """What /debug/explain shows for the filter, and for a prioritize answered here."""
    priorities: IntArray | None = None
    """The answer for ``passed_rows`` when filter already knows it (None: from ``outcome``)."""


class _Capacity(NamedTuple):
    row_value: FloatArray | None
    capacity: float
    gpu_value: float


@dataclass(frozen=True)
class _FairContext:
    """Fair shares and node holds for one decision; None shares: fairness is off.

    row_value : value of one GPU per node (None: every GPU is worth 1)
    gpu_value : value of one GPU of a pending pod (the cluster's mean)
    held_rows, held_for : nodes held for starving large pods, and their pods' GPU counts
    """

    shares: TeamShares | None
    row_value: FloatArray | None = None
    gpu_value: float = 1.0
    held_rows: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    held_for: tuple[int, ...] = ()
    starving: bool = False
    """The pod is a starving large pod: the gate lets it through (``scoring.starvation``)."""

    def request_gpus(self, request: PodRequest) -> float:
        return request.gpu_milli / 1000 * self.gpu_value

    def gate(
        self,
        state: ClusterState,
        request: PodRequest,
        victims: Sequence[VictimRecord] = (),
        free: Callable[[], float] | None = None,
    ) -> GateDecision:
        """The fair-share gate for ``request``, after evicting ``victims`` (preemption);
        ``free`` gives the free GPUs of ``state`` when the caller keeps them."""
        if self.shares is None or not request.gpu_count or self.starving:
            return PASS
        freed = sum(v.gpus for v in victims)
        own = sum(v.gpus for v in victims if v.team == request.team)
        count = free or (lambda: free_value(state, self.row_value))
        return fair_share_gate(
            self.shares, request.team, self.request_gpus(request), lambda: count() + freed, own
        )

    def kept_off_rows(self, request: PodRequest) -> tuple[IntArray, tuple[int, ...]]:
        """Held rows ``request`` must keep off, and the GPU counts they are held for."""
        if not self.held_for:
            return np.zeros(0, dtype=np.int64), ()
        off = kept_off(request, self.held_for)
        return self.held_rows[off], tuple(self.held_for[i] for i in off.tolist())


class _StarvingMemo(NamedTuple):
    """Which pending large pods starve, valid for one set of them until ``until_s``."""

    version: int
    config: StarvationConfig
    until_s: float
    requests: list[PodRequest]


@dataclass(frozen=True)
class _Hold:
    """A pod fairpack's filter left with no node: by the gate, or by node holds alone."""

    key: PodKey
    request: PodRequest
    gate: bool
    kept_off: frozenset[int]
    """Rows held for starving pods that this pod had to keep off."""


class _Bounded(OrderedDict[str, Any]):
    """A dict that forgets its oldest entries beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


def resources_alone_place(pod: Any) -> bool:
    """Whether the preemptor (a raw Pod) fits a node by resources alone: no required pod
    (anti-)affinity, no hard topology spread, no host ports.  Only then may fairpack
    name victims of its own: it checks resources, while kube-scheduler, which may
    have proposed its victims for those other constraints, does not check an
    extender's victims again.  Malformed fields count as constraints."""

    def mapping(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    def items(value: Any) -> list[Any]:
        return value if isinstance(value, list) else []

    spec = mapping(mapping(pod).get("spec"))
    affinity = mapping(spec.get("affinity"))
    for kind in ("podAffinity", "podAntiAffinity"):
        if mapping(affinity.get(kind)).get("requiredDuringSchedulingIgnoredDuringExecution"):
            return False
    for constraint in items(spec.get("topologySpreadConstraints")):
        if mapping(constraint).get("whenUnsatisfiable", "DoNotSchedule") != "ScheduleAnyway":
            return False
    for container in items(spec.get("containers")) + items(spec.get("initContainers")):
        for port in items(mapping(container).get("ports")):
            if mapping(port).get("hostPort"):
                return False
    return True


def _highest_priority_first(decision: VictimDecision) -> list[VictimRecord]:
    """A node's victims as kube-scheduler's dry run lists them, highest priority first:
    it ranks candidate nodes by ``Pods[0]``'s priority, taking it for the highest.  Ties
    keep fairpack's victim order."""
    return sorted(decision.victims, key=lambda victim: -victim.priority)


class Extender:
    """kube-scheduler's extender over a :class:`ClusterView`.

    One instance per process; its methods run on the event loop, one at a time,
    so the view never changes in the middle of a decision.
    """

    def __init__(
        self,
        view: ClusterView,
        config: LiveConfig | None = None,
        binder: Binder | None = None,
        metrics: Metrics | None = None,
        *,
        request_cache_size: int = 4096,
        observed_pods: int = 200_000,
        explained_pods: int = 1024,
        shortcuts: bool = True,
        requeuer: Requeuer | None = None,
    ) -> None:
        self.view = view
        self.requeuer = requeuer
        """Asks kube-scheduler to retry a pod whose hold lifted (None: nobody to ask)."""
        self.config = config or LiveConfig()
        self.binder: Binder = binder or ViewOnlyBinder()
        self.metrics = metrics or Metrics()
        self.fragments = OnlineFragments(
            self.config.current.policy.shapes, keep_growth_by_shape=True
        )
        self.config.subscribe(self._on_config)
        self.shortcuts = shortcuts
        """Group identical nodes and reuse the filter's evaluation (exact; off for tests)."""
        self._groups = NodeGroups()
        self._incremental = IncrementalEvaluator()
        """Nodes mostly in states of their own: the request's list evaluated once, then
        only where rows changed."""
        self._known_nodes: dict[str, _KnownNodes] = {}
        self._priority_encoder = HostPriorityEncoder()
        self._memo: _FilterMemo | None = None
        self._fair_cache: tuple[Any, _FairContext] | None = None
        self._capacity: tuple[tuple[int, Any], _Capacity] | None = None
        self._deserved_shown: dict[str, float] = {}
        """The ``fairpack_gpus_deserved`` value last set per team."""
        self._starving: _StarvingMemo | None = None
        self._decisions = 0
        self._after: deque[Callable[[], object]] = deque()
        self._regroup_rows: tuple[ClusterState, IntArray] | None = None
        self._group_share = 0.0
        self._requests = _Bounded(request_cache_size)
        self._observed = _Bounded(observed_pods)
        self._explained = _Bounded(explained_pods)
        self._holds: dict[str, _Hold] = {}
        """Pending pods the filter held on every node it could have passed, by UID."""

    def _on_config(self, config: FairpackConfig) -> None:
        if not config.policy.fairness.enabled:
            self._forget_deserved(self._deserved_shown.keys())
            self._fair_cache = None  # enabled again, the same shares are shown again
        if config.policy.shapes != self.fragments.config:
            self.fragments = OnlineFragments(config.policy.shapes, keep_growth_by_shape=True)
        self._requests.clear()

    # -- pods and nodes of a request -------------------------------------------------------------

    def _pod(self, pod: Pod | None) -> tuple[PodKey, PodRequest]:
        """The pod's identity and request; the request is cached per UID and resourceVersion."""
        metadata = pod.metadata if pod is not None else None
        if pod is None or metadata is None:
            raise BadRequestError("Pod is missing")
        if not metadata.uid or not metadata.name:
            raise BadRequestError("Pod.metadata needs a name and a uid")
        key = PodKey(metadata.uid, metadata.namespace or "default", metadata.name)
        team = self.view.team_of(key.namespace)
        version = metadata.resource_version
        # Without a version (not from the API server) the same UID may say anything.
        cached = self._requests.get(key.uid) if version else None
        if cached is not None and cached[0] == version:
            request: PodRequest = cached[1]
            if request.team == team:
                return key, request
        try:
            request = pod_request(pod, self.config.current, team)
        except ObjectError as exc:
            raise BadRequestError(str(exc)) from None
        if version:
            self._requests.put(key.uid, (version, request))
        return key, request

    @staticmethod
    def _node_names(args: ExtenderArgs) -> Sequence[str]:
        if args.node_names is not None:
            names = args.node_names
        elif args.nodes is not None:
            names = [
                item.metadata.name if item and item.metadata and item.metadata.name else ""
                for item in args.nodes.items or ()
            ]
            if "" in names:
                raise BadRequestError("Nodes.items has a node without metadata.name")
        else:
            raise BadRequestError("NodeNames and Nodes are both null")
        if not names:
            raise BadRequestError("the node list is empty")
        return names

    def _rows(
        self, state: ClusterState, names: Sequence[str], verb: str
    ) -> tuple[IntArray, Sequence[str]]:
        """Rows of the known nodes and their names, in request order.

        The last list per verb is remembered while the arrays stay the same: a
        prioritize asks about the nodes its filter passed.
        """
        cached = self._known_nodes.get(verb)
        if (
            cached is not None
            and cached.state is state
            and (cached.names is names or cached.names == names)
        ):
            known = cached.known
        else:
            rows = state.rows_of(names)
            if len(rows) == len(names):  # every name known: a name twice is a row twice
                known = names
                if np.bincount(rows, minlength=state.n_nodes).max(initial=0) > 1:
                    _refuse_duplicates(names)  # names the first one seen twice
            else:
                _refuse_duplicates(names)
                known = [n for n in names if state.row_of(n) is not None]
            cached = _KnownNodes(state, names, rows, known)
            self._known_nodes[verb] = cached
        if len(known) != len(names):
            self.metrics.unknown_nodes.labels(verb).inc(len(names) - len(known))
        return cached.rows, known

    # -- fair shares -----------------------------------------------------------------------------

    def _fair(self, state: ClusterState, key: PodKey, request: PodRequest) -> _FairContext:
        """Team shares (from the view, plus the pod itself when the view has not seen it)
        and the nodes held for starving pods; also sets ``state.over_share_teams``."""
        fairness = self.config.current.policy.fairness
        if not fairness.enabled:
            state.over_share_teams = frozenset()
            return _FairContext(None)
        quotas = self.view.quota_gpus_by_team()
        context = self._fair_shares(state, quotas)
        placement = self.view.lookup(key.uid)
        if request.gpu_count and (placement is None or placement.node):
            # Not pending in the view (no watch yet, or a bind it has not caught up with):
            # the pod's own demand still counts for its team.
            context = self._with_pod(context, request, quotas)
        held_rows, held_for = self._starvation_holds(state)
        if held_for:
            context = replace(context, held_rows=held_rows, held_for=held_for)
        starvation = fairness.starvation
        if (
            starvation.enabled
            and placement is not None
            and not placement.node
            and placement.info.started_s > 0
            and is_starving(
                request,
                time.time() - placement.info.started_s,
                starvation.min_gpus,
                starvation.wait_s,
            )
        ):
            context = replace(context, starving=True)
        assert context.shares is not None
        state.over_share_teams = context.shares.over_share_teams
        return context

    def _fair_shares(self, state: ClusterState, quotas: Mapping[str, int]) -> _FairContext:
        """The view's fair shares, kept while no team's GPUs, demand or weight changes."""
        cache_key = (
            self.view.fair_version,
            state.uid,
            self.config.current.policy.fairness,
            tuple(sorted(quotas.items())),
        )
        cached = self._fair_cache
        if cached is None or cached[0] != cache_key:
            cached = (cache_key, self._fair_context(state, quotas))
            self._fair_cache = cached
            shares = cached[1].shares
            assert shares is not None
            shown = self._deserved_shown
            self._forget_deserved(shown.keys() - set(shares.teams))  # nothing held or pending
            for team, deserved in zip(shares.teams, shares.deserved.tolist(), strict=True):
                if shown.get(team) != deserved:  # an assumption seldom moves them
                    shown[team] = deserved
                    self.metrics.gpus_deserved.labels(team).set(deserved)
        return cached[1]

    def _forget_deserved(self, teams: Iterable[str]) -> None:
        """Drop ``fairpack_gpus_deserved`` of teams the shares no longer hold."""
        for team in list(teams):
            del self._deserved_shown[team]
            self.metrics.gpus_deserved.remove(team)

    def _warm_fair_shares(self) -> None:
        """After an assumption, the shares the next pod's filter will ask for (unless a
        change comes first, which makes them again)."""
        if self.config.current.policy.fairness.enabled:
            self._fair_shares(self.view.state, self.view.quota_gpus_by_team())

    def _with_pod(
        self, context: _FairContext, request: PodRequest, quotas: Mapping[str, int]
    ) -> _FairContext:
        """``context`` with ``request`` pending for its team."""
        shares = context.shares
        assert shares is not None
        size = context.request_gpus(request)
        teams = list(shares.teams)
        weights, held, pending, smallest = (
            shares.weights,
            shares.held,
            shares.pending.copy(),
            shares.smallest_pending.copy(),
        )
        i = shares.index(request.team)
        if i is None:
            fairness = self.config.current.policy.fairness
            weight = team_weights(
                [request.team],
                fairness.team_weights,
                quotas,
                fairness.default_weight,
                from_quota=fairness.weights_from_quota,
            )
            teams.append(request.team)
            weights = np.concatenate((weights, weight))
            held = np.concatenate((held, [0.0]))
            pending = np.concatenate((pending, [0.0]))
            smallest = np.concatenate((smallest, [size]))
            i = len(teams) - 1
        smallest[i] = min(smallest[i], size) if pending[i] > 0 else size
        pending[i] += size
        return replace(
            context,
            shares=team_shares(teams, weights, held, pending, shares.capacity, smallest),
        )

    def _fair_context(self, state: ClusterState, quotas: Mapping[str, int]) -> _FairContext:
        fairness = self.config.current.policy.fairness
        ledger = self.view.fair_ledger()
        values = fairness.gpu_values
        row_value, capacity, gpu_value = self._capacity_of(state, values)
        held: dict[str, float] = {}
        for (team, model), amount in ledger.held.items():
            held[team] = held.get(team, 0.0) + amount * values.get(model, 1.0)
        pending = {team: amount * gpu_value for team, amount in ledger.pending.items()}
        smallest = {team: amount * gpu_value for team, amount in ledger.smallest_pending.items()}
        teams = sorted(held.keys() | pending.keys())
        weights = team_weights(
            teams,
            fairness.team_weights,
            quotas,
            fairness.default_weight,
            from_quota=fairness.weights_from_quota,
        )
        shares = team_shares(
            teams,
            weights,
            np.array([held.get(t, 0.0) for t in teams]),
            np.array([pending.get(t, 0.0) for t in teams]),
            capacity,
            np.array([smallest.get(t, 0.0) for t in teams]),
        )
        return _FairContext(shares, row_value, gpu_value)

    def _capacity_of(self, state: ClusterState, values: Mapping[str, float]) -> _Capacity:
        """The value of each node's GPUs, of the cluster's and of its mean GPU: fixed for
        a state's nodes (a node added or resized makes a new state)."""
        key = (state.uid, values)
        if self._capacity is None or self._capacity[0] != key:
            row_value = gpu_value_per_row(state, values) if values else None
            capacity = capacity_value(state, row_value)
            gpus = float(state.gpu_count.sum())
            gpu_value = capacity / gpus if gpus and row_value is not None else 1.0
            self._capacity = (key, _Capacity(row_value, capacity, gpu_value))
        return self._capacity[1]

    def _starvation_holds(self, state: ClusterState) -> tuple[IntArray, tuple[int, ...]]:
        config = self.config.current.policy.fairness.starvation
        if not config.enabled:
            return np.zeros(0, dtype=np.int64), ()
        starving = self._starving_requests(config)
        if not starving:
            return np.zeros(0, dtype=np.int64), ()
        return reserved_rows(state, starving, config.max_reserved_nodes)

    def _starving_requests(self, config: StarvationConfig) -> list[PodRequest]:
        """The pending large pods past their wait, longest waiting first.

        Kept until the pending large pods change or the next of them reaches its
        wait: a backlog of thousands would otherwise be walked twice per decision.
        """
        now = time.time()
        version = self.view.pending_multi_gpu_version
        memo = self._starving
        if memo is not None and memo[:2] == (version, config) and now < memo.until_s:
            return memo.requests
        starving, next_at_s = [], math.inf
        for started_s, request in self.view.pending_multi_gpu_pods():
            # Too small to ever starve: it must not set when to look again either.
            if started_s <= 0 or request.gpu_count < config.min_gpus:
                continue
            if is_starving(request, now - started_s, config.min_gpus, config.wait_s):
                starving.append((started_s, request))
            else:
                next_at_s = min(next_at_s, started_s + config.wait_s)
        starving.sort(key=lambda pod: pod[0])
        requests = [request for _, request in starving]
        self._starving = _StarvingMemo(version, config, next_at_s, requests)
        return requests

    def _evaluate(self, state: ClusterState, request: PodRequest, rows: IntArray) -> Evaluation:
        return evaluate(state, request, rows, self.config.current.policy, self.fragments.aggregates)

    def _outcome(self, state: ClusterState, request: PodRequest, rows: IntArray) -> Outcome:
        """``scoring.evaluate`` over ``rows``, once per group of identical nodes.

        Every score term is a function of a node's row alone (and of the set of
        candidate values, which groups keep), so nodes in identical states get
        identical answers; the simulator evaluates the same way.  Where nodes are each
        in a state of their own, from ``_INCREMENTAL_FROM_NODES`` candidates, the last
        pod of the same shape's evaluation of every node is patched where rows changed
        (``scoring.incremental``), whichever nodes are asked about.
        """
        self._decisions += 1
        grouping = self.shortcuts and len(rows) > 0
        if grouping and self._group_share > _GROUPING_PAYS_BELOW:
            # Nearly every node is in a state of its own: grouping costs more than it
            # saves. Look again now and then, as nodes fill up or drain (after the answer:
            # grouping changes no answer, only the work of the next ones).
            grouping = False
            if self._decisions % _REGROUP_CHECK_EVERY == 0:
                self._regroup_rows = state, rows
                self._after_answer(self._look_at_grouping)
        if not grouping:
            if self.shortcuts and len(rows) >= _INCREMENTAL_FROM_NODES:
                scored = self._incremental.score(
                    state, request, rows, self.config.current.policy, self.fragments.aggregates
                )
                return Outcome(scored, np.arange(len(rows)), rows, grouped=False)
            evaluation = self._evaluate(state, request, rows)
            return Outcome(evaluation, np.arange(len(rows)), rows, grouped=False)
        group, members = self._grouped(state, rows)
        return Outcome(self._evaluate(state, request, members), group, rows)

    def _complete_evaluations(self) -> None:
        self._incremental.complete(above=_CARRY_CHANGED_ROWS)

    def _warm_mix(self) -> None:
        """Bring the remembered evaluations to the shape mix the next pod decides with
        (built ahead after the answer, every 50 arrivals or so), most recently used
        first, for up to ``_WARM_MIX_BUDGET_S`` per answer."""
        deadline = time.perf_counter() + _WARM_MIX_BUDGET_S
        state, policy, mix = self.view.state, self.config.current.policy, self.fragments.upcoming
        while self._incremental.warm(state, policy, mix) and time.perf_counter() < deadline:
            pass

    def _look_at_grouping(self) -> None:
        """Note whether grouping would pay for the last node list :meth:`_outcome` asked."""
        asked, self._regroup_rows = self._regroup_rows, None
        if asked is not None and asked[0] is self.view.state:  # the same nodes still
            self._grouped(*asked)

    def _grouped(self, state: ClusterState, rows: IntArray) -> tuple[IntArray, IntArray]:
        """Per requested row, its group among them (numbered densely), and one requested
        row per group; notes the share of groups per row for :meth:`_outcome`."""
        groups = self._groups
        if len(groups.group) and int(groups.group.max()) > _REGROUP_AFTER * max(state.n_nodes, 1):
            # The group ids of states long gone pile up; start afresh now and then.
            groups = self._groups = NodeGroups()
        groups.refresh(state)
        group_of_row = groups.group[rows]
        # One member per group stands for it (any will do: they are identical), and
        # the groups are numbered densely; no sort, unlike np.unique.
        member = np.empty(int(group_of_row.max()) + 1, dtype=np.int64)
        member[group_of_row] = np.arange(len(rows))
        present = np.zeros(len(member), dtype=bool)
        present[group_of_row] = True
        dense = np.cumsum(present) - 1
        self._group_share = float(dense[-1] + 1) / len(rows)
        return dense[group_of_row], rows[member[present]]

    # -- filter ----------------------------------------------------------------------------------

    def filter(
        self, args: ExtenderArgs, raw_nodes: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        """``ExtenderFilterResult`` for ``args``; ``raw_nodes`` are the request's Nodes.items.

        The nodes that fail are listed, with their reasons, only when none passes:
        kube-scheduler reads them for its FailedScheduling event and to choose where
        preemption might help, both only when no node is left (a FitError,
        ``schedule_one.go``).  Once a node passes they would be bytes to encode, send
        and decode for nothing; the rejections are counted in the metrics either way.
        """
        self.view.settle()  # the last filter's assumption, before anything is read
        key, request = self._pod(args.pod)
        names = self._node_names(args)
        if key.uid not in self._observed:
            self._observed.put(key.uid, None)
            self.fragments.observe(request)
        self._expire_assumptions()
        # Scheduled again: where its last filter counted it, it was not bound.
        self.view.unassume(key.uid)
        state = self.view.state
        fair = self._fair(state, key, request)
        rows, known = self._rows(state, names, "filter")
        outcome = self._outcome(state, request, rows)
        mask = outcome.mask
        held_reasons, gate_reason = self._held_back(state, fair, request, rows, mask)
        eligible = mask
        if held_reasons:
            eligible = mask.copy()
            eligible[list(held_reasons)] = False
        best_only = self.config.current.filter_passes == "best"
        # The node prioritize would rank 10 among those that may take the pod.
        best = outcome.best(eligible if held_reasons else None)
        if best_only:
            # It alone passes; the others go unlisted (kube-scheduler drops them
            # without a status).
            passing = np.array([] if best is None else [best], dtype=np.int64)
        else:
            passing = np.flatnonzero(eligible)
        passed = names_at(known, passing.tolist())
        if held_reasons and not passed and self.requeuer is not None:
            self._remember_hold(fair, key, request)
        if passed and self._holds:
            self._holds.pop(key.uid, None)
        # Made after the answer (it only explains it), from the chosen node's GPUs as
        # they are before the pod counts there.
        chosen_free = None if best is None else state.free_milli[rows[best]].copy()
        top = _Later(partial(_TopNodes.of, state, outcome, best, chosen_free))
        assumed = len(passed) == 1 and request.gpu_count
        if assumed:
            # Counted there right after the answer, before anything reads the view again
            # (whatever reads it settles first): kube-scheduler's next request finds it.
            row = int(rows[passing[0]])
            self.view.defer(partial(self._assume_at_filter, state, key, request, row))
            self.view.defer(self._warm_fair_shares)
        self._memo = None
        if self.shortcuts and passed and not held_reasons:
            # A prioritize of this pod over the nodes passed is answered from this
            # evaluation while they stand still (their versions taken after the pod's
            # own assumption). One node passed alone is the one prioritize ranks 10
            # (kube-scheduler skips prioritize for a single feasible node; a caller that
            # asks anyway gets the filter's answer, not the pod weighed against its own
            # assumption there).
            passed_rows = rows[passing]
            memo = partial(
                _FilterMemo,
                key.uid,
                request,
                state,
                self.config.current.policy,
                self.fragments.aggregates,
                outcome,
                passed_rows,
                passed,
            )

            def remember() -> None:
                self._memo = memo(
                    state.row_version[passed_rows],
                    state.over_share_teams,
                    top,
                    np.full(1, MAX_EXTENDER_PRIORITY, dtype=np.int64) if best_only else None,
                )

            if assumed:
                self.view.defer(remember)
            else:
                remember()
        unknown = (
            [name for name in names if state.row_of(name) is None]
            if len(known) != len(names)
            else []
        )
        if unknown and not request.gpu_count:  # no GPUs asked: fairpack has nothing against them
            passed_set = set(passed) | set(unknown)
            passed, unknown = [name for name in names if name in passed_set], []
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        record: dict[str, Any] = {
            "at_s": time.time(),
            "nodes": len(names),
            "passed": len(passed),
            "outranked": int(np.count_nonzero(eligible)) - len(passed) if best_only else 0,
            "rejected": {},
            "unknown_nodes": len(names) - len(known),
            "top": top,
        }
        self._explained.pop(key.key, None)  # a new cycle: the last one's steps are stale
        self._explain(key, request)["filter"] = record
        rejections = partial(
            self._rejections, outcome, request, known, held_reasons, gate_reason, unknown
        )
        if passed:  # counted after the answer: only the metrics and explain show them
            self.view.defer(lambda: record.update(rejected=rejections(None)))
        else:  # the reasons are the answer
            record["rejected"] = rejections((failed, unresolvable))
        self.view.defer(top.get)
        # The rest of the evaluation was left to be made from what the call fixed: when
        # first read, or after an answer once enough has changed since it last was.
        self._after_answer(self._complete_evaluations)
        self._after_answer(self.fragments.prepare)
        self._after_answer(self._warm_mix)
        result: dict[str, Any] = {
            "Nodes": None,
            "NodeNames": passed,
            "FailedNodes": failed,
            "FailedAndUnresolvableNodes": unresolvable,
            "Error": "",
        }
        if args.node_names is None and raw_nodes is not None:
            keep = set(passed)
            items = [item for item in raw_nodes if item["metadata"]["name"] in keep]
            result["Nodes"] = {"metadata": {}, "items": items}
            result["NodeNames"] = None
        return result

    def _assume_at_filter(
        self, state: ClusterState, key: PodKey, request: PodRequest, row: int
    ) -> None:
        """Count the pod on the one node filter passes: kube-scheduler binds a pod with one
        feasible node there without scoring, and the next pod's filter may come before the
        binding does (or, without a bindVerb, before the watch shows it)."""
        placement = self.view.lookup(key.uid)
        info = (
            placement.info
            if placement is not None and not placement.node
            else PodInfo(key.uid, key.namespace, key.name, "", request, started_s=time.time())
        )
        gpus = choose_gpus(state.free_milli[row : row + 1], request)[0].tolist()
        node = state.names[row]
        try:
            self.view.assume(replace(info, request=request), node, gpus, tentative=True)
        except ValueError:  # the view has it bound already: the watch is ahead of this filter
            return
        self.metrics.filter_assumptions.labels("assumed").inc()
        self._explain(key, request)["assumed"] = {"at_s": time.time(), "node": node, "gpus": gpus}

    def _expire_assumptions(self) -> None:
        expired = self.view.expire_tentative(self.config.current.assume_ttl_s)
        if expired:
            log.info("%d pod(s) passed by filter were not bound in time; pending again", expired)
            self.metrics.filter_assumptions.labels("expired").inc(expired)

    def _rejections(
        self,
        outcome: Outcome,
        request: PodRequest,
        known: Sequence[str],
        held_reasons: Mapping[int, str],
        gate_reason: str | None,
        unknown: list[str],
        listed: tuple[dict[str, str], dict[str, str]] | None,
    ) -> dict[str, int]:
        """The rejected nodes counted by reason (and in the metrics, the gate's holds as
        ``GATE_HOLD_REASON``); with ``listed``, also written there by name: (failed,
        failed and unresolvable)."""
        counts: dict[str, int] = {}
        by_kind = outcome.failed_counts()
        failed_check = None if listed is None else outcome.failed_check
        for kind in np.flatnonzero(by_kind).tolist():
            check = Check.of(kind, request)
            counts[check.reason] = counts.get(check.reason, 0) + int(by_kind[kind])
            if listed is not None:
                assert failed_check is not None
                failed, unresolvable = listed
                (unresolvable if check.unresolvable else failed).update(
                    dict.fromkeys(compress(known, (failed_check == kind).tolist()), check.reason)
                )
        for index, reason in held_reasons.items():
            counts[reason] = counts.get(reason, 0) + 1
            if listed is not None:
                listed[0][known[index]] = reason
        if unknown:
            counts[UNKNOWN_NODE_REASON] = len(unknown)
            if listed is not None:
                listed[0].update(dict.fromkeys(unknown, UNKNOWN_NODE_REASON))
        for reason, count in counts.items():
            label = GATE_HOLD_REASON if reason == gate_reason else reason
            self.metrics.filter_rejections.labels(label).inc(count)
        return counts

    def _held_back(
        self,
        state: ClusterState,
        fair: _FairContext,
        request: PodRequest,
        rows: IntArray,
        mask: BoolArray,
    ) -> tuple[dict[int, str], str | None]:
        """Indexes into ``rows`` of the feasible nodes the fair-share levers hold back,
        with the reason for each, and the gate's reason when it held them all."""
        if fair.shares is None or not mask.any():
            return {}, None
        gate = fair.gate(state, request)
        if gate.hold:
            self.metrics.fairshare_holds.labels(request.team).inc()
            return dict.fromkeys(np.flatnonzero(mask).tolist(), gate.reason), gate.reason
        off_rows, held_for = fair.kept_off_rows(request)
        if not len(off_rows):
            return {}, None
        reason_of_row = {
            row: HELD_NODE_REASON.format(gpus=gpus)
            for row, gpus in zip(off_rows.tolist(), held_for, strict=True)
        }
        kept = np.flatnonzero(mask & np.isin(rows, off_rows))
        return {
            i: reason_of_row[row] for i, row in zip(kept.tolist(), rows[kept].tolist(), strict=True)
        }, None

    # -- holds that lift --------------------------------------------------------------------------
    #
    # kube-scheduler retries a pod the extender rejected on any cluster event, such as the
    # deletion that lifts its hold; but it may retry before fairpack's watch has seen that
    # event, be held again, and then wait for the next event, or five minutes.  So fairpack
    # remembers the pods it held and, once its view shows a hold lifted, makes
    # kube-scheduler retry them.

    def _remember_hold(self, fair: _FairContext, key: PodKey, request: PodRequest) -> None:
        off_rows, _ = fair.kept_off_rows(request)
        gate = fair.gate(self.view.state, request).hold
        self._holds[key.uid] = _Hold(key, request, gate, frozenset(off_rows.tolist()))

    def lifted_holds(self) -> list[PodKey]:
        """The held pods whose hold the view no longer shows, forgotten here; pods bound
        or gone are forgotten too.

        A hold lifts when the gate no longer holds the pod, and a pod held only by node
        holds when one of its held nodes is released.
        """
        lifted: list[PodKey] = []
        self.view.settle()  # the last filter's assumption
        self._expire_assumptions()  # an assumption nobody bound may be what holds them
        state = self.view.state
        free: list[float] = []  # a sum over every node: once per pass
        gates: dict[tuple[str, int, bool], bool] = {}

        for uid, hold in list(self._holds.items()):
            placement = self.view.lookup(uid)
            if placement is None or placement.node:
                del self._holds[uid]
                continue
            fair = self._fair(state, hold.key, hold.request)
            same = (hold.request.team, hold.request.gpu_milli, fair.starving)
            if same not in gates:

                def free_gpus(fair: _FairContext = fair) -> float:
                    if not free:
                        free.append(free_value(state, fair.row_value))
                    return free[0]

                gates[same] = fair.gate(state, hold.request, free=free_gpus).hold
            if gates[same]:
                continue
            off_rows, _ = fair.kept_off_rows(hold.request)
            if hold.gate or not hold.kept_off <= set(off_rows.tolist()):
                del self._holds[uid]
                lifted.append(hold.key)
        return lifted

    async def requeue_lifted_holds(self, interval_s: float = 1.0, recheck_s: float = 15.0) -> None:
        """Forever: every ``interval_s`` in which what the holds depend on changed (GPUs
        held or pending, quotas, the policy), ask kube-scheduler to retry the pods whose
        hold lifted; and every ``recheck_s`` whatever changed (a large pod's wait running
        out lets it through the gate).  Quota and policy changes and time are no events
        to kube-scheduler: without this, their pods would wait for an unrelated event, or
        five minutes."""
        requeuer = self.requeuer
        if requeuer is None:
            return
        seen: tuple[int, dict[str, int], FairpackConfig] | None = None
        checked_s = time.monotonic()
        while True:
            await asyncio.sleep(interval_s)
            if not self._holds:
                continue
            now = (self.view.fair_version, self.view.quota_gpus_by_team(), self.config.current)
            if now == seen and time.monotonic() - checked_s < recheck_s:
                continue
            seen, checked_s = now, time.monotonic()
            try:
                lifted = self.lifted_holds()
            except Exception:  # a bug here must not end the loop: log it, try next time
                log.exception("could not check the held pods")
                continue
            for key in lifted:
                log.info("hold on %s lifted; asking kube-scheduler to retry it", key.key)
                self.metrics.holds_lifted.inc()
                try:
                    await requeuer.requeue(key.namespace, key.name)
                except Exception:  # the next event retries it anyway; keep the loop alive
                    log.warning("could not requeue %s", key.key, exc_info=True)

    # -- prioritize ------------------------------------------------------------------------------

    def prioritize(self, args: ExtenderArgs) -> PreEncoded:
        """``HostPriorityList``: every requested host, 0..10, the best strictly on top."""
        self.view.settle()  # the last filter's assumption, and its memo
        key, request = self._pod(args.pod)
        names = self._node_names(args)
        state = self.view.state
        over_share_read = reads_over_share(self.config.current.policy.weights)
        if over_share_read:  # the shares gate nodes at filter alone
            self._fair(state, key, request)
        memo = self._memo
        known: Sequence[str]
        if (
            memo is not None
            and memo.uid == key.uid
            and memo.state is state
            and memo.request == request
            and memo.policy is self.config.current.policy
            and memo.aggregates is self.fragments.aggregates
            and (not over_share_read or memo.over_share == state.over_share_teams)
            and memo.passed_names == names
            and np.array_equal(state.row_version[memo.passed_rows], memo.passed_versions)
        ):
            rows, known = memo.passed_rows, names
            outcome = memo.outcome
            priorities = (
                outcome.priorities()[outcome.mask] if memo.priorities is None else memo.priorities
            )
            feasible_nodes = len(priorities)
            # The filter's ranking, of the nodes asked about (the one passed alone).
            top = memo.top if memo.priorities is None else _Later(lambda: memo.top.get().first())
            self.metrics.prioritize_reused.inc()
        else:
            rows, known = self._rows(state, names, "prioritize")
            outcome = self._outcome(state, request, rows)
            priorities = outcome.priorities()
            feasible_nodes = int(np.count_nonzero(outcome.mask))
            ranked_first = np.flatnonzero(priorities == MAX_EXTENDER_PRIORITY)
            top = _Later(
                partial(
                    _TopNodes.of, state, outcome, int(ranked_first[0]) if feasible_nodes else None
                )
            )
        self._explain(key, request)["prioritize"] = {
            "at_s": time.time(),
            "feasible": feasible_nodes,
            "top": top,
        }
        self.view.defer(top.get)
        if len(known) == len(names):
            return self._priority_encoder.encode(state.names, rows, priorities)
        by_name = dict(zip(known, priorities.tolist(), strict=True))
        return HostPriorityEncoder.encode_names(
            names, [by_name.get(host, NEUTRAL_PRIORITY) for host in names]
        )

    # -- preempt ---------------------------------------------------------------------------------

    def preempt(self, args: ExtenderPreemptionArgs, own_victims: bool = True) -> dict[str, Any]:
        """``ExtenderPreemptionResult``: the nodes whose victims fairpack agrees to, and
        (``own_victims``, see :func:`resources_alone_place`) fairpack's own victims where
        it refuses kube-scheduler's."""
        self.view.settle()  # the last filter's assumption
        key, request = self._pod(args.pod)
        proposals = self._proposals(args)
        # Preempting for it: where its filter counted it (a later extender rejected the
        # node), it is not going.  Counted there, its team would hold it twice.
        self.view.unassume(key.uid)
        state = self.view.state
        fair = self._fair(state, key, request)
        off_rows, held_for = fair.kept_off_rows(request)
        held = dict(zip(off_rows.tolist(), held_for, strict=True))
        # The free GPUs, a sum over every node, once for all the gate calls below: the
        # state does not change during the call (evictions are tried on ``scratch``).
        free = cache(partial(free_value, state, fair.row_value))
        scratch: ClusterState | None = None
        decisions: dict[str, VictimDecision] = {}
        for node, (uids, _) in proposals.items():
            records = [self._victim(uid, fair) for uid in uids]
            decision = select_victims(
                request, records, fair.shares, preemptor_gpus=fair.request_gpus(request)
            )
            row = state.row_of(node)
            if row is None and request.gpu_count:
                # The filter rejects it for a GPU pod: what the eviction frees would go unused.
                decision = VictimDecision(refused=UNKNOWN_NODE_REASON)
            elif row is not None and row in held:
                decision = VictimDecision(refused=HELD_NODE_REASON.format(gpus=held[row]))
            elif decision.accepted and fair.shares is not None:
                gate = fair.gate(state, request, records, free)
                if gate.hold:
                    decision = VictimDecision(refused=gate.reason)
            if decision.accepted and row is not None:
                scratch = scratch if scratch is not None else state.copy()
                if not self._fits_after_eviction(scratch, request, node, uids):
                    decision = VictimDecision(refused="the pod would not fit after the eviction")
            if not decision.accepted and own_victims and row is not None and row not in held:
                # kube-scheduler's victims break fairpack's rules here: name fairpack's own.
                scratch = scratch if scratch is not None else state.copy()
                decision = self._own_victims(scratch, request, node, fair, decision, free)
            if not decision.accepted:
                log.debug("preemption of %s on %s refused: %s", key.key, node, decision.refused)
                self.metrics.preemption_nodes.labels("refused").inc()
            decisions[node] = decision
        pdb_violations = {node: pdb for node, (_, pdb) in proposals.items()}
        best = best_nodes(decisions, pdb_violations, fair.shares)
        outranked = sum(1 for d in decisions.values() if d.accepted) - len(best)
        self.metrics.preemption_nodes.labels("accepted").inc(len(best))
        if outranked:
            self.metrics.preemption_nodes.labels("outranked").inc(outranked)
        return {
            "NodeNameToMetaVictims": {
                node: {
                    "Pods": [
                        {"UID": victim.uid} for victim in _highest_priority_first(decisions[node])
                    ],
                    "NumPDBViolations": pdb_violations[node],
                }
                for node in best
            }
        }

    @staticmethod
    def _proposals(args: ExtenderPreemptionArgs) -> dict[str, tuple[list[str], int]]:
        proposals: dict[str, tuple[list[str], int]] = {}
        if args.node_name_to_meta_victims is not None:
            for node, meta in args.node_name_to_meta_victims.items():
                metas = (meta.pods or []) if meta else []
                uids = [pod.uid for pod in metas if pod is not None]
                proposals[node] = (uids, meta.num_pdb_violations if meta else 0)
        elif args.node_name_to_victims is not None:
            for node, victims in args.node_name_to_victims.items():
                pods = (victims.pods or []) if victims else []
                uids = [
                    pod.metadata.uid
                    for pod in pods
                    if pod is not None and pod.metadata is not None and pod.metadata.uid
                ]
                proposals[node] = (uids, victims.num_pdb_violations if victims else 0)
        else:
            raise BadRequestError("NodeNameToMetaVictims and NodeNameToVictims are both null")
        return proposals

    def _victim(self, uid: str, fair: _FairContext) -> VictimRecord:
        placement = self.view.lookup(uid)
        if placement is None:
            return VictimRecord(uid)
        request = placement.request
        gpus = request.gpu_milli / 1000
        if fair.row_value is not None:
            row = self.view.state.row_of(placement.node)
            gpus *= float(fair.row_value[row]) if row is not None else fair.gpu_value
        return VictimRecord(
            uid=uid,
            team=placement.team,
            pod_class=request.pod_class,
            priority=request.priority,
            preemptible=request.preemptible,
            started_s=placement.info.started_s,
            gpus=gpus,
        )

    def _own_victims(
        self,
        scratch: ClusterState,
        request: PodRequest,
        node: str,
        fair: _FairContext,
        refused: VictimDecision,
        free: Callable[[], float],
    ) -> VictimDecision:
        """fairpack's victims on ``node`` (``scoring.victims.choose_victims``) in place of
        kube-scheduler's, which it ``refused``; still refused when none will do.  ``free``:
        the cluster's free GPUs before any eviction."""
        state = self.view.state
        # Only pods the watch has shown on the node: kube-scheduler fails the whole call on
        # a UID its cache does not hold there (and, the extender being ignorable, goes on
        # with its own proposals), so none of our own binds it may not have seen yet.  A
        # deletion our watch has not caught up with remains a (milliseconds) window.
        on_node = [
            self._victim(placement.info.uid, fair)
            for placement in self.view.pods_on(node)
            if not placement.assumed
        ]

        def fits(victims: Sequence[VictimRecord]) -> bool:
            return self._fits_after_eviction(scratch, request, node, [v.uid for v in victims])

        def gate(victims: Sequence[VictimRecord]) -> GateDecision:
            return fair.gate(state, request, victims, free)

        own = choose_victims(
            request,
            on_node,
            fits,
            fair.shares,
            gate=gate,
            preemptor_gpus=fair.request_gpus(request),
        )
        if not own.accepted:
            return VictimDecision(refused=f"{refused.refused}; {own.refused}")
        return own

    def _fits_after_eviction(
        self, scratch: ClusterState, request: PodRequest, node: str, uids: Sequence[str]
    ) -> bool:
        row = scratch.row_of(node)
        assert row is not None
        evicted = []
        for uid in uids:
            placement = self.view.lookup(uid)
            if placement is not None and placement.placed is not None and placement.node == node:
                scratch.release(row, placement.placed, list(placement.gpus))
                evicted.append(placement)
        fits = len(self._evaluate(scratch, request, np.array([row])).rows) == 1
        for placement in evicted:
            assert placement.placed is not None
            scratch.place(row, placement.placed, list(placement.gpus))
        return fits

    # -- bind ------------------------------------------------------------------------------------

    async def bind(self, args: ExtenderBindingArgs) -> dict[str, str]:
        """``ExtenderBindingResult``: assume the placement at once, then post the binding."""
        self.view.settle()  # the last filter's assumption, which the fit check must see
        key = PodKey(args.pod_uid, args.pod_namespace, args.pod_name)
        node = args.node
        placement = self.view.lookup(key.uid)
        if placement is not None and placement.tentative:
            self.view.unassume(key.uid)  # assumed by filter; now where kube-scheduler binds it
            placement = self.view.lookup(key.uid)
        if placement is not None and placement.node:
            self.metrics.binds.labels("refused").inc()
            return {"Error": f"pod {key.key} is already bound to node {placement.node}"}
        cached = self._requests.get(key.uid)
        request: PodRequest | None = cached[1] if cached is not None else None
        if request is None and placement is not None:
            request = placement.request
        state = self.view.state
        row = state.row_of(node)
        assumed = False
        if request is not None and row is not None:
            # Only whether the node still fits and which GPUs the pod takes: no scores.
            feasibility = check_feasibility(state, request, np.array([row]))
            if not feasibility.mask[0]:
                reasons = feasibility.reason_counts()
                self.metrics.binds.labels("conflict").inc()
                return {"Error": f"node {node} no longer fits pod {key.key}: {next(iter(reasons))}"}
            gpus = choose_gpus(state.free_milli[row : row + 1], request)[0].tolist()
            self.view.assume(
                PodInfo(key.uid, key.namespace, key.name, "", request, started_s=time.time()),
                node,
                gpus,
            )
            assumed = True
            self._explain(key, request)["bind"] = {"at_s": time.time(), "node": node, "gpus": gpus}
        elif request is not None and request.gpu_count:
            self.metrics.binds.labels("refused").inc()
            return {"Error": f"node {node} is not in fairpack's view"}
        try:
            await self.binder.bind(key.namespace, key.name, key.uid, node)
        except BindError as exc:
            if assumed:
                self.view.forget(key.uid)
            self.metrics.binds.labels("failed").inc()
            return {"Error": str(exc)}
        self._requests.pop(key.uid, None)
        self.metrics.binds.labels("bound" if assumed else "unaccounted").inc()
        return {"Error": ""}

    # -- debugging -------------------------------------------------------------------------------

    def _explain(self, key: PodKey, request: PodRequest) -> dict[str, Any]:
        record: dict[str, Any] | None = self._explained.get(key.key)
        if record is None or record["uid"] != key.uid:
            record = {
                "pod": key.key,
                "uid": key.uid,
                "request": {
                    "gpus": request.gpu_count,
                    "milli_per_gpu": request.milli_per_gpu,
                    "cpu_milli": request.cpu_milli,
                    "memory_mib": request.memory_mib,
                    "min_gpu_memory_mib": request.min_gpu_memory_mib,
                    "gpu_models": sorted(request.allowed_models),
                    "team": request.team,
                    "class": request.pod_class.value,
                    "priority": request.priority,
                },
            }
            self._explained.put(key.key, record)
        return record

    def explain(self, pod: str) -> dict[str, Any] | None:
        """The last decision for ``namespace/name``."""
        self.settle()
        record: dict[str, Any] | None = self._explained.get(pod)
        if record is None:
            return None
        return {
            key: {**value, "top": value["top"].get().render()}
            if isinstance(value, dict) and isinstance(value.get("top"), _Later)
            else value
            for key, value in record.items()
        }

    @property
    def unsettled(self) -> bool:
        """Whether the last answers left work for :meth:`settle`."""
        return self.view.unsettled or bool(self._after)

    def settle(self) -> None:
        """Do the work the last answers left for later: what reads the view as the answer
        saw it (``ClusterView.defer``), then the rest (:meth:`_after_answer`)."""
        self.view.settle()
        after = self._after
        while after:
            try:
                after.popleft()()
            except Exception:
                log.exception("bookkeeping after the answer failed")

    def _after_answer(self, work: Callable[[], object]) -> None:
        """Do ``work`` at the next :meth:`settle` (after the answer is sent), once however
        often it is asked for meanwhile: work that reads the view as it is by then, or
        nothing that moves (unlike ``ClusterView.defer``, nothing waits for it)."""
        if work not in self._after:
            self._after.append(work)

    def debug_state(self) -> dict[str, Any]:
        self.settle()
        view = self.view
        state = view.state
        free_milli = state.free_milli.sum(axis=1).tolist()
        full_free = (state.free_milli >= 1000).sum(axis=1).tolist()
        nodes = [
            {
                "name": name,
                "model": spec.gpu_model,
                "gpu_memory_mib": spec.gpu_memory_mib,
                "gpus": spec.gpu_count,
                "free_gpus": free / 1000,
                "whole_free_gpus": whole,
                "spot": bool(spec.capacity_type),
                "cordoned": not spec.schedulable,
            }
            for name, spec, free, whole in zip(
                state.names,
                (view.nodes[n] for n in state.names),
                free_milli,
                full_free,
                strict=True,
            )
        ]
        models: dict[str, dict[str, float]] = {}
        for node in nodes:
            if node["gpus"]:
                model = str(node["model"]) or UNKNOWN_MODEL
                totals = models.setdefault(model, {"gpus": 0, "free_gpus": 0.0})
                totals["gpus"] += node["gpus"]
                if not node["cordoned"]:  # free for nobody
                    totals["free_gpus"] += node["free_gpus"]
        allocation = view.allocation()
        teams: dict[str, dict[str, Any]] = {}
        for (team, pod_class), gpus in allocation.allocated.items():
            teams.setdefault(team, {"allocated_gpus": {}, "pending_gpus": {}})
            teams[team]["allocated_gpus"][pod_class] = gpus
        for (team, pod_class), gpus in allocation.pending.items():
            teams.setdefault(team, {"allocated_gpus": {}, "pending_gpus": {}})
            teams[team]["pending_gpus"][pod_class] = gpus
        for team, quota in view.quota_gpus_by_team().items():
            teams.setdefault(team, {"allocated_gpus": {}, "pending_gpus": {}})["quota_gpus"] = quota
        for team, seconds in allocation.gpu_seconds.items():
            teams.setdefault(team, {"allocated_gpus": {}, "pending_gpus": {}})
            teams[team]["gpu_seconds"] = round(seconds, 3)
        return {
            "ready": view.ready,
            "pods": view.pod_count,
            "assumed_pods": view.assumed_count,
            "models": models,
            "teams": teams,
            "nodes": nodes,
        }
