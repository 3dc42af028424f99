"""What a simulated placement policy is: given the state and a pod, pick a node and GPUs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from scoring import ClusterState, PodRequest
from scoring.state import IntArray


@dataclass(frozen=True)
class Choice:
    row: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know before the run starts.

    rank : ndarray of shape (n_nodes,)
        The run's fixed node order (the FGD simulator's per-seed name prefix): among
        equal integer scores, the lowest rank wins.
    rng : the run's random generator (only the Random policy draws from it).
    trace : the original trace's requests (FGD's offline shape popularity; a
        policy that uses it sees the future, which is FGD's documented advantage).
    """

    rank: IntArray
    rng: np.random.Generator
    trace: Sequence[PodRequest]


class Policy(Protocol):
    def select(self, state: ClusterState, request: PodRequest) -> Choice | None:
        """The node and GPU slots for ``request``, or None when no node fits.

        Must not modify ``state``; the simulator applies the choice.
        """
        ...


def best_by_rank(rows: IntArray, scores: np.ndarray, rank: IntArray) -> int:
    """Index into ``rows`` of the highest score, ties to the lowest rank."""
    top = np.flatnonzero(scores == scores.max())
    return int(top[np.argmin(rank[rows[top]])]) if len(top) > 1 else int(top[0])
