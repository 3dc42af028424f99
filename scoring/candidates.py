"""The feasible nodes of one decision, as every score term sees them."""

from __future__ import annotations

from dataclasses import dataclass

from scoring.fragmentation import FragmentAggregates
from scoring.request import PodRequest
from scoring.state import ClusterState, IntArray


@dataclass(frozen=True)
class Candidates:
    """Feasible rows and the GPU slots the request would take on each.

    rows : ndarray of shape (n_candidates,)
    gpus : ndarray of shape (n_candidates, request.gpu_count)
    fragments : aggregates over the recently seen pod shapes, or None when the
        caller has no shape mix yet (the fragmentation term is then neutral).
    """

    state: ClusterState
    request: PodRequest
    rows: IntArray
    gpus: IntArray
    fragments: FragmentAggregates | None = None

    def __len__(self) -> int:
        return len(self.rows)
