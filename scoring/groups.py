"""Nodes in identical states, grouped, so a decision scores each state once.

In a large fleet most nodes are copies of a few node types, and many stay
untouched (empty) for long stretches.  Every score term is a pure function of a
node's row in ``ClusterState``, so nodes whose rows are equal score equally and
only one of them, the preferred one, needs scoring.  Groups are exact (rows are
compared as bytes, not hashed) and refreshed by ``row_version``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scoring.state import ClusterState, IntArray

_MAX_IDS_PER_NODE = 8


def _row_bytes(state: ClusterState, row: int) -> bytes:
    scalars = np.array(
        [
            state.gpu_model[row],
            state.gpu_memory_mib[row],
            state.gpu_count[row],
            state.cpu_free_milli[row],
            state.cpu_capacity_milli[row],
            state.memory_free_mib[row],
            state.memory_capacity_mib[row],
            state.capacity_type[row],
            state.preemptible_milli[row],
        ],
        dtype=np.int64,
    )
    # Slot order does not matter to any score, only the multiset of free milli.
    return scalars.tobytes() + np.sort(state.free_milli[row]).tobytes()


@dataclass
class NodeGroups:
    group: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _ids: dict[bytes, int] = field(default_factory=dict)
    _versions: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _state_uid: int = -1

    def refresh(self, state: ClusterState) -> None:
        if len(self._ids) > _MAX_IDS_PER_NODE * state.n_nodes:
            # Ids of states no row is in any more pile up in a long run; start over.
            self._ids.clear()
            self._state_uid = -1
        if self._state_uid != state.uid or len(self._versions) != state.n_nodes:
            self._state_uid = state.uid
            self.group = np.zeros(state.n_nodes, dtype=np.int64)
            self._versions = np.full(state.n_nodes, -1, dtype=np.int64)
        ids = self._ids
        for row in np.flatnonzero(self._versions != state.row_version):
            self.group[row] = ids.setdefault(_row_bytes(state, int(row)), len(ids))
        self._versions[:] = state.row_version

    def representatives(self, rows: IntArray) -> IntArray:
        """The first row of each group among ``rows``, keeping their order.

        Pass ``rows`` in order of preference (e.g. by tie-break rank) and each
        group is represented by its most preferred node.
        """
        _, first = np.unique(self.group[rows], return_index=True)
        return rows[np.sort(first)]
