"""The placement entry point shared by the extender and the simulator.

``evaluate`` answers both of kube-scheduler's questions for one pod over a set of
candidate nodes: which may take it (with a reason for each that may not) and how
good each is (a weighted mean of the policy's score terms, in [0, 1]).  The
service maps the scores to the extender's 0..10; the simulator takes the best.
Both call this function, so a simulated result speaks for production.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoring.candidates import Candidates
from scoring.feasibility import Feasibility, check_feasibility
from scoring.fragmentation import FloatArray, FragmentAggregates
from scoring.gpus import choose_gpus
from scoring.policy import PolicyConfig
from scoring.request import PodRequest
from scoring.state import ClusterState, IntArray
from scoring.terms import TERMS

MAX_EXTENDER_PRIORITY = 10


@dataclass(frozen=True)
class Evaluation:
    """The outcome for one pod.

    feasibility : every candidate row with its first failed check
    rows : ndarray of shape (n_feasible,), the feasible rows in input order
    gpus : ndarray of shape (n_feasible, gpu_count), the slots the pod would take
    score : ndarray of shape (n_feasible,), weighted mean of the terms, in [0, 1]
    terms : each term's values over ``rows``
    """

    feasibility: Feasibility
    rows: IntArray
    gpus: IntArray
    score: FloatArray
    terms: dict[str, FloatArray]

    def best(self, rank: IntArray | None = None) -> int | None:
        """Index into ``rows`` of the best node, or None when nothing fits.

        Ties go to the lowest ``rank[row]`` (a fixed node order), else to the
        first candidate.
        """
        if len(self.rows) == 0:
            return None
        top = np.flatnonzero(self.score >= self.score.max() - 1e-12)
        if rank is None or len(top) == 1:
            return int(top[0])
        return int(top[np.argmin(rank[self.rows[top]])])


def evaluate(
    state: ClusterState,
    request: PodRequest,
    rows: IntArray,
    policy: PolicyConfig,
    fragments: FragmentAggregates | None = None,
) -> Evaluation:
    """Feasibility and scores of ``request`` on the nodes ``rows`` of ``state``."""
    feasibility = check_feasibility(state, request, rows)
    feasible = feasibility.feasible_rows
    gpus = choose_gpus(state.free_milli[feasible], request)
    candidates = Candidates(state, request, feasible, gpus, fragments)
    weights = {name: w for name, w in policy.weights.items() if w > 0}
    terms = {name: TERMS[name](candidates) for name in weights}
    total_weight = sum(weights.values())
    score = np.zeros(len(feasible))
    for name, weight in weights.items():
        score += weight * terms[name]
    score /= total_weight
    return Evaluation(feasibility, feasible, gpus, score, terms)


def extender_priorities(score: FloatArray) -> IntArray:
    """Map scores in [0, 1] to the extender's integers 0..10, best node(s) strictly on top.

    The best score(s) get 10; the rest are spread over 0..9 by their distance from
    the worst (the worst gets 0), so rounding never lifts a runner-up level with
    the winner.
    """
    if len(score) == 0:
        return np.zeros(0, dtype=np.int64)
    high, low = float(score.max()), float(score.min())
    top = score >= high - 1e-12
    if high - low <= 1e-12:
        return np.full(len(score), MAX_EXTENDER_PRIORITY, dtype=np.int64)
    # Below the top the ratio is < 1, so the floor lands in 0..9.
    spread = np.floor((score - low) / (high - low) * MAX_EXTENDER_PRIORITY).astype(np.int64)
    return np.where(top, MAX_EXTENDER_PRIORITY, np.minimum(spread, MAX_EXTENDER_PRIORITY - 1))
