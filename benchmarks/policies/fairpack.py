"""fairpack's production policy in the simulator: ``scoring.evaluate``, as the extender calls it.

Shapes are learned online from the arrivals so far (no look at the future), with
the default ``PolicyConfig``.  Ties (identical nodes) go to the run's node order.
"""

from __future__ import annotations

from benchmarks.policies.base import Choice, PolicyContext
from benchmarks.policies.common import GroupLeaders
from scoring import ClusterState, OnlineFragments, PodRequest, PolicyConfig, evaluate
from scoring.groups import NodeGroups


class FairpackPolicy:
    def __init__(self, context: PolicyContext, config: PolicyConfig | None = None) -> None:
        self.rank = context.rank
        self.leaders = GroupLeaders(context.rank)
        self.config = config or PolicyConfig()
        self.fragments = OnlineFragments(self.config.shapes)
        self.groups = NodeGroups()

    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        self.fragments.observe(request)
        # Identical nodes score identically: evaluate the best-ranked of each kind.
        self.groups.refresh(state)
        rows = self.leaders.leaders(self.groups.group)
        evaluation = evaluate(state, request, rows, self.config, self.fragments.aggregates)
        best = evaluation.best(self.rank)
        if best is None:
            return None
        return Choice(int(evaluation.rows[best]), evaluation.gpus_of(best))
