"""Which preemption victims fairpack agrees to, in what order, and on which nodes.

kube-scheduler's preemption proposes, per candidate node, the smallest set of
lower-priority pods whose eviction makes room (its dry run), then asks the
extender.  fairpack accepts a node only if it agrees to every victim there
(returning a subset would leave the preemptor without room), and refuses it when
a victim is:

* marked not preemptible;
* interactive (or unknown to fairpack, so possibly interactive) while the
  preemptor is batch: a batch pod never preempts an interactive one;
* of a team that is not over its share while the preemptor's team would be
  over its own with the pod: a team under its share is not the victim of a team
  over it.

Victims are ordered by :func:`victim_order_key`: batch before interactive, then
the teams furthest over their share, then lowest priority, then the most
recently started (least work lost).  Among the accepted nodes only the best tier
goes back to kube-scheduler (:func:`best_nodes`): fewest PDB violations, then the
node whose most protected victim comes earliest in that order by class and by
team.  kube-scheduler then picks among them by its own rules (lowest victim
priority, fewest victims, latest start), which are the rest of the order.

Pure functions over plain records: the extender's preempt verb and the
simulator's preemption both call them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scoring.fairshare import EPSILON_GPUS, TeamShares
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
    preemptor_over = False
    if shares is not None and (i := shares.index(preemptor.team)) is not None:
        size = preemptor.gpu_milli / 1000 if preemptor_gpus is None else preemptor_gpus
        preemptor_over = shares.held[i] + size > shares.deserved[i] + EPSILON_GPUS
    excess: Mapping[str, float] | frozenset[str] = (
        _excess(shares) if shares is not None else over_share_teams
    )
    for victim in offered:
        if not victim.preemptible:
            return VictimDecision(refused=f"pod {victim.uid} is not preemptible")
        if preemptor.pod_class == PodClass.BATCH:
            if victim.pod_class is None:
                return VictimDecision(
                    refused=f"pod {victim.uid} is unknown to fairpack and may be interactive"
                )
            if victim.pod_class == PodClass.INTERACTIVE:
                return VictimDecision(
                    refused=f"pod {victim.uid} is interactive; a batch pod cannot evict it"
                )
        if preemptor_over and shares is not None and victim.team != preemptor.team:
            j = shares.index(victim.team)
            if j is not None and shares.held[j] <= shares.deserved[j] + EPSILON_GPUS:
                return VictimDecision(
                    refused=(
                        f"pod {victim.uid} is of team {victim.team}, which holds"
                        f" {shares.held[j]:.1f} GPUs of a deserved {shares.deserved[j]:.1f},"
                        f" and team {preemptor.team} would be over its share"
                    )
                )
    ordered = sorted(offered, key=lambda v: victim_order_key(v, excess))
    return VictimDecision(victims=tuple(ordered))


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
