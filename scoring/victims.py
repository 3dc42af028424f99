"""Which preemption victims fairpack agrees to, in what order, and on which nodes.

kube-scheduler's preemption proposes, per candidate node, the smallest set of
lower-priority pods whose eviction makes room (its dry run), then asks the
extender.  fairpack accepts a node's proposal only if it agrees to every victim
there (returning a subset would leave the preemptor without room) and the
fair-share gate lets the preemptor through once they are gone.  It refuses a
victim that is:

* marked not preemptible;
* interactive (or unknown to fairpack, so possibly interactive) while the
  preemptor is batch: a batch pod never preempts an interactive one;
* of a team that is not over its share while the preemptor's team would be
  over its own with the pod, its own victims given back: a team under its
  share is not the victim of a team over it (a team that makes room from its
  own pods and so ends within its share is not over it); nor does such a
  preemptor take more from a team over its share than that team's excess, so
  no team is pushed under its share by one that ends over its own (which would
  then win the GPUs back by the same rule, and so on).

Victims are ordered by :func:`victim_order_key`: batch before interactive, then
the teams furthest over their share, then lowest priority, then the most
recently started (least work lost).

kube-scheduler's dry run picks victims by priority and start time alone, blind
to teams: on a node it may propose another team's pods, at its share, where the
preemptor's own team's batch pods would do.  Where fairpack refuses the
proposal it names victims of its own on that node (:func:`choose_victims`;
kube-scheduler takes back any pods of the node): the pods these rules allow,
taken in the victim order until the preemptor fits and the rules and the gate
hold, then spared, most protected first, while they still do.  So a team at its
share makes room for its interactive pod from its own batch work.  fairpack
does not see PodDisruptionBudgets: such a node keeps the violation count
kube-scheduler gave its own proposal.

Among the accepted nodes only the best tier goes back to kube-scheduler
(:func:`best_nodes`): fewest PDB violations, then the node whose most protected
victim comes earliest in that order by class and by team.  kube-scheduler then
picks among them by its own rules (lowest victim priority, fewest victims,
latest start), which are the rest of the order.

Pure functions over plain records: the extender's preempt verb and the
simulator's preemption both call them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from scoring.fairshare import EPSILON_GPUS, GateDecision, TeamShares
from scoring.request import PodClass, PodRequest


@dataclass(frozen=True)
class VictimRecord:
    uid: str
    team: str = ""
    pod_class: PodClass | None = None
    """None when fairpack does not know the pod."""
    priority: int = 0
    preemptible: bool = True
    started_s: float = 0.0
    gpus: float = 0.0
    """GPUs (value units) the pod holds."""


@dataclass(frozen=True)
class VictimDecision:
    victims: tuple[VictimRecord, ...] = ()
    refused: str = ""
    """Why the node is refused; empty when it is accepted."""

    @property
    def accepted(self) -> bool:
        return not self.refused


VictimKey = tuple[int, float, int, float]


def _class_rank(victim: VictimRecord) -> int:
    return 0 if victim.pod_class == PodClass.BATCH else 1


def victim_order_key(
    victim: VictimRecord, excess_by_team: Mapping[str, float] | frozenset[str] = frozenset()
) -> VictimKey:
    """Sort key, first evicted first: class, then share, then priority, then start.

    ``excess_by_team`` maps a team to the GPUs it holds beyond its deserved share
    (a set of over-share team names counts each as 1 GPU over, the rest 0).
    """
    if isinstance(excess_by_team, frozenset):
        excess = 1.0 if victim.team in excess_by_team else 0.0
    else:
        excess = excess_by_team.get(victim.team, 0.0)
    return (_class_rank(victim), -excess, victim.priority, -victim.started_s)


def _excess(shares: TeamShares | None) -> dict[str, float]:
    if shares is None:
        return {}
    return {team: float(shares.held[i] - shares.deserved[i]) for i, team in enumerate(shares.teams)}


def preemptor_over_share(
    preemptor: PodRequest,
    shares: TeamShares | None,
    preemptor_gpus: float | None = None,
    released_gpus: float = 0.0,
) -> bool:
    """Whether the preemptor's team would hold more than its deserved share with the pod,
    once ``released_gpus`` of its own pods are gone (False without shares or for a team
    they do not know)."""
    if shares is None or (i := shares.index(preemptor.team)) is None:
        return False
    size = preemptor.gpu_milli / 1000 if preemptor_gpus is None else preemptor_gpus
    return bool(shares.held[i] - released_gpus + size > shares.deserved[i] + EPSILON_GPUS)


def _refusal(preemptor: PodRequest, victim: VictimRecord) -> str:
    """Why ``victim`` may never be evicted for ``preemptor`` ("" when it may)."""
    if not victim.preemptible:
        return f"pod {victim.uid} is not preemptible"
    if preemptor.pod_class == PodClass.BATCH:
        if victim.pod_class is None:
            return f"pod {victim.uid} is unknown to fairpack and may be interactive"
        if victim.pod_class == PodClass.INTERACTIVE:
            return f"pod {victim.uid} is interactive; a batch pod cannot evict it"
    return ""


def _at_or_under_share(shares: TeamShares, team: str) -> bool:
    j = shares.index(team)
    return j is not None and bool(shares.held[j] <= shares.deserved[j] + EPSILON_GPUS)


def _share_refusal(
    preemptor: PodRequest,
    victims: Sequence[VictimRecord],
    shares: TeamShares | None,
    preemptor_gpus: float | None,
) -> str:
    """Why ``victims`` may not go together for ``preemptor`` by the share rule ("" when they
    may): the preemptor's team, its own victims gone, would be over its share with the pod,
    and one is of another team at or under its share, or the victims of another team would
    leave it under its share."""
    if shares is None:
        return ""
    own = sum(victim.gpus for victim in victims if victim.team == preemptor.team)
    if not preemptor_over_share(preemptor, shares, preemptor_gpus, own):
        return ""
    evicted: dict[str, float] = {}
    for victim in victims:
        if victim.team == preemptor.team:
            continue
        if _at_or_under_share(shares, victim.team):
            j = shares.index(victim.team)
            assert j is not None
            return (
                f"pod {victim.uid} is of team {victim.team}, which holds"
                f" {shares.held[j]:.1f} GPUs of a deserved {shares.deserved[j]:.1f},"
                f" and team {preemptor.team} would be over its share"
            )
        evicted[victim.team] = evicted.get(victim.team, 0.0) + victim.gpus
    for team, gpus in evicted.items():
        j = shares.index(team)
        if j is not None and shares.held[j] - gpus < shares.deserved[j] - EPSILON_GPUS:
            return (
                f"evicting {gpus:g} GPUs of team {team}, which holds {shares.held[j]:.1f} of a"
                f" deserved {shares.deserved[j]:.1f}, would leave it under its share, and team"
                f" {preemptor.team} would be over its own"
            )
    return ""


def select_victims(
    preemptor: PodRequest,
    offered: Sequence[VictimRecord],
    shares: TeamShares | None = None,
    *,
    preemptor_gpus: float | None = None,
    over_share_teams: frozenset[str] = frozenset(),
) -> VictimDecision:
    """The ordered victims of one node, or the reason the node is refused.

    ``shares`` (None: fairness off) decides who is over their share;
    ``preemptor_gpus`` is the preemptor's size in the same units (its GPU count
    by default).  Without shares, ``over_share_teams`` only orders the victims.
    """
    if not offered:
        return VictimDecision(refused="no victims proposed")
    for victim in offered:
        refused = _refusal(preemptor, victim)
        if refused:
            return VictimDecision(refused=refused)
    refused = _share_refusal(preemptor, offered, shares, preemptor_gpus)
    if refused:
        return VictimDecision(refused=refused)
    excess: Mapping[str, float] | frozenset[str] = (
        _excess(shares) if shares is not None else over_share_teams
    )
    ordered = sorted(offered, key=lambda v: victim_order_key(v, excess))
    return VictimDecision(victims=tuple(ordered))


def choose_victims(
    preemptor: PodRequest,
    on_node: Sequence[VictimRecord],
    fits: Callable[[Sequence[VictimRecord]], bool],
    shares: TeamShares | None = None,
    *,
    gate: Callable[[Sequence[VictimRecord]], GateDecision] | None = None,
    preemptor_gpus: float | None = None,
) -> VictimDecision:
    """fairpack's own victims on one node, or the reason there are none.

    on_node : every pod on the node (pods of the preemptor's priority or above,
        and pods the rules of :func:`select_victims` refuse, are never taken)
    fits : whether the preemptor fits the node once the given pods are gone
    gate : the fair-share gate once the given pods are gone (None: no gate)

    The allowed pods are taken in :func:`victim_order_key` order until the
    preemptor fits, the share rule holds and the gate passes; then each taken
    pod, most protected first, is spared if all three still hold without it
    (kube-scheduler's reprieve, in fairpack's order), in rounds until none can
    be: no victim left could be spared alone.  The victims come back in that
    order.  Where taking them in order finds no set (the share rule can refuse a
    set because of a pod that others could replace), a node of at most
    ``_EVERY_SET_UP_TO`` allowed pods is searched set by set, smallest first; not
    where, with them all gone, the pod still lacks room or the gate holds it (``fits``
    and ``gate`` only pass more as more pods go).
    """
    allowed = [
        victim
        for victim in on_node
        if victim.priority < preemptor.priority and not _refusal(preemptor, victim)
    ]
    own = sum(victim.gpus for victim in allowed if victim.team == preemptor.team)
    if shares is not None and preemptor_over_share(preemptor, shares, preemptor_gpus, own):
        # Over its share even with all its own pods here gone: the share rule refuses
        # every pod of a team at or under its share.
        allowed = [
            victim
            for victim in allowed
            if victim.team == preemptor.team or not _at_or_under_share(shares, victim.team)
        ]
    if not allowed:
        return VictimDecision(refused="no pod on the node that fairpack may evict")
    excess = _excess(shares)
    allowed.sort(key=lambda v: victim_order_key(v, excess))

    def blocked(victims: Sequence[VictimRecord]) -> str:
        if not fits(victims):
            return "the pod would not fit"
        refused = _share_refusal(preemptor, victims, shares, preemptor_gpus)
        if refused:
            return refused
        if gate is not None and (decision := gate(victims)).hold:
            return decision.reason or "the fair-share gate would hold the pod"
        return ""

    taken: list[VictimRecord] = []
    for victim in allowed:
        taken.append(victim)
        reason = blocked(taken)
        if not reason:
            break
    else:
        # The pod fits and the gate passes only more with more pods gone: where either
        # refuses them all, no set will do.  Only the share rule's refusal is searched.
        share_refused = reason == _share_refusal(preemptor, allowed, shares, preemptor_gpus)
        found = (
            _first_set(allowed, blocked)
            if share_refused and len(allowed) <= _EVERY_SET_UP_TO
            else None
        )
        if found is None:
            return VictimDecision(
                refused=f"even with every pod fairpack may evict here gone, {reason}"
            )
        taken = found
    # Spare what is not needed, most protected first.  Sparing another team's pod can
    # leave fewer of the team's own needed by the share rule, the last one taken
    # included: so again, until a round spares none.
    spared_any = True
    while spared_any:
        spared_any = False
        for victim in reversed(taken):
            spared = [v for v in taken if v is not victim]
            if spared and not blocked(spared):
                taken, spared_any = spared, True
    return VictimDecision(victims=tuple(taken))


_EVERY_SET_UP_TO = 8
"""Allowed pods on a node up to which every set of them is tried (255 sets at most)."""


def _first_set(
    allowed: Sequence[VictimRecord], blocked: Callable[[Sequence[VictimRecord]], str]
) -> list[VictimRecord] | None:
    """The first set of ``allowed`` that nothing blocks, smallest first, then in their
    order; None if there is none."""
    for size in range(1, len(allowed) + 1):
        for subset in itertools.combinations(allowed, size):
            if not blocked(subset):
                return list(subset)
    return None


def node_cost(
    decision: VictimDecision,
    pdb_violations: int = 0,
    excess_by_team: Mapping[str, float] | None = None,
) -> tuple[int, int, float]:
    """How costly the node's eviction is, lower better: PDB violations, then the
    class and the share of its most protected victim."""
    excess = excess_by_team or {}
    worst_class = max((_class_rank(v) for v in decision.victims), default=0)
    least_over = min((excess.get(v.team, 0.0) for v in decision.victims), default=0.0)
    return (pdb_violations, worst_class, -round(least_over, 6))


def best_nodes(
    decisions: Mapping[str, VictimDecision],
    pdb_violations: Mapping[str, int],
    shares: TeamShares | None = None,
) -> list[str]:
    """The accepted nodes of the best tier (see :func:`node_cost`), in input order."""
    excess = _excess(shares)
    costs = {
        node: node_cost(decision, pdb_violations.get(node, 0), excess)
        for node, decision in decisions.items()
        if decision.accepted
    }
    if not costs:
        return []
    best = min(costs.values())
    return [node for node, cost in costs.items() if cost == best]
