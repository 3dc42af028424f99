"""The feasible nodes of one decision, as every score term sees them."""

from __future__ import annotations

from dataclasses import dataclass

from scoring.fragmentation import FragmentAggregates
from scoring.request import PodRequest
from scoring.state import ClusterState, IntArray


@dataclass(frozen=True)
class Candidates:
    """Feasible rows and, for a GPU-sharing request, the GPU it would share on each.

    rows : ndarray of shape (n_candidates,)
    shared_gpu : ndarray of shape (n_candidates,), the slot a sharing request
        takes (the tightest that fits); empty for other requests, which take
        fully free GPUs, all alike to every score term
    fragments : aggregates over the recently seen pod shapes, or None when the
        caller has no shape mix yet (the fragmentation term is then neutral).
    """

    state: ClusterState
    request: PodRequest
    rows: IntArray
    shared_gpu: IntArray
    fragments: FragmentAggregates | None = None

    def __len__(self) -> int:
        return len(self.rows)
