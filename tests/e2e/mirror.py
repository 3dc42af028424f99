"""fairpack's decisions recomputed with ``scoring`` on a test's own inventory.

The mirror reads the very Node and Pod objects the API server returned through the
service's own translation (``extender.objects``), builds a ``ClusterState`` from them and
calls ``scoring.evaluate`` with the service's policy, learning pod shapes the way the
service does: once per pod, when kube-scheduler first sends it to fairpack's filter (that
is, when at least one node passes kube-scheduler's own filters). It must start when the
fairpack process starts (``fresh_fairpack``), so that both have seen the same pods.

kube-scheduler adds fairpack's priority times a dominant weight to its own scores, and
fairpack gives 10 to one node alone: the best, where near-best ties go to a stable order of
node names (``ClusterState.tie_break``). So the mirror predicts one node per pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from extender.config import FairpackConfig
from extender.objects import node_spec, pod_request
from extender.wire import Node, Pod
from scoring import (
    ClusterState,
    Evaluation,
    NodeSpec,
    OnlineFragments,
    PodRequest,
    check_feasibility,
    evaluate,
)


@dataclass(frozen=True)
class Decision:
    request: PodRequest
    best: str | None
    """The node fairpack ranks first (None: the pod fits nowhere)."""
    near_best: frozenset[str]
    """Nodes within the policy's tie tolerance of the best score (the stable order chose)."""
    scores: dict[str, float]
    evaluation: Evaluation


def node_specs(nodes: Sequence[Mapping[str, Any]], config: FairpackConfig) -> list[NodeSpec]:
    return [node_spec(Node.model_validate(node), config) for node in nodes]


class Mirror:
    def __init__(
        self,
        nodes: Sequence[Mapping[str, Any]],
        config: FairpackConfig | None = None,
    ) -> None:
        self.config = config or FairpackConfig()
        self.specs = node_specs(nodes, self.config)
        self.state = ClusterState.from_nodes(self.specs)
        self.fragments = OnlineFragments(self.config.policy.shapes)

    def request(self, pod: Mapping[str, Any], team: str = "") -> PodRequest:
        return pod_request(Pod.model_validate(pod), self.config, team)

    def decide(self, request: PodRequest) -> Decision:
        """fairpack's ranking of the pod over the whole inventory, learning its shape first
        if kube-scheduler would send it to fairpack at all."""
        if check_feasibility(self.state, request).mask.any():
            self.fragments.observe(request)
        rows = np.arange(self.state.n_nodes)
        evaluation = evaluate(
            self.state, request, rows, self.config.policy, self.fragments.aggregates
        )
        names = [self.state.names[int(row)] for row in evaluation.rows]
        scores = dict(zip(names, evaluation.score.tolist(), strict=True))
        best = evaluation.best()
        near: frozenset[str] = frozenset()
        if scores:
            floor = max(scores.values()) - evaluation.tie_tolerance - 1e-12
            near = frozenset(name for name, score in scores.items() if score >= floor)
        return Decision(
            request, names[best] if best is not None else None, near, scores, evaluation
        )

    def place(self, decision: Decision, node: str) -> None:
        """Apply a placement (the one kube-scheduler made, or the simulator's choice)."""
        row = self.state.row_of(node)
        assert row is not None, f"{node} is not in the mirror"
        (index,) = np.flatnonzero(decision.evaluation.rows == row)
        self.state.place(row, decision.request, decision.evaluation.gpus_of(int(index)))

    def used_gpus(self) -> dict[str, float]:
        """GPUs in use per node (whole GPUs plus shares)."""
        free = self.state.free_milli.sum(axis=1)
        capacity = self.state.gpu_count * 1000
        return {
            name: float(used) / 1000
            for name, used in zip(self.state.names, (capacity - free).tolist(), strict=True)
        }
