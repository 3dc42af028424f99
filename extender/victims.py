"""Which of kube-scheduler's proposed victims fairpack agrees to, and in what order.

kube-scheduler proposes, per candidate node, the pods it would evict.  fairpack
accepts a node only if it agrees to every victim there (returning a subset would
leave the preemptor without room), and refuses it otherwise:

* a pod marked not preemptible is never a victim;
* an interactive pod is never the victim of a batch pod (nor is a pod fairpack
  does not know, which might be interactive).

Accepted victims are ordered: batch before interactive, over-share teams first,
then lowest priority, then least work lost (the most recently started first).
Pure functions over plain records; fair-share order moves into scoring later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scoring import PodClass, PodRequest


@dataclass(frozen=True)
class VictimRecord:
    uid: str
    team: str = ""
    pod_class: PodClass | None = None
    """None when fairpack does not know the pod."""
    priority: int = 0
    preemptible: bool = True
    started_s: float = 0.0


@dataclass(frozen=True)
class VictimDecision:
    victims: tuple[VictimRecord, ...] = ()
    refused: str = ""
    """Why the node is refused; empty when it is accepted."""

    @property
    def accepted(self) -> bool:
        return not self.refused


def victim_order_key(
    victim: VictimRecord, over_share_teams: frozenset[str] = frozenset()
) -> tuple[int, int, int, float]:
    return (
        0 if victim.pod_class == PodClass.BATCH else 1,
        0 if victim.team in over_share_teams else 1,
        victim.priority,
        -victim.started_s,
    )


def select_victims(
    preemptor: PodRequest,
    offered: Sequence[VictimRecord],
    over_share_teams: frozenset[str] = frozenset(),
) -> VictimDecision:
    """The ordered victims of one node, or the reason the node is refused."""
    if not offered:
        return VictimDecision(refused="no victims proposed")
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
    ordered = sorted(offered, key=lambda v: victim_order_key(v, over_share_teams))
    return VictimDecision(victims=tuple(ordered))
