"""The placement entry point shared by the extender and the simulator.

``evaluate`` answers both of kube-scheduler's questions for one pod over a set of
candidate nodes: which may take it (with a reason for each that may not) and how
good each is (a weighted mean of the policy's score terms, in [0, 1]).  The
service maps the scores to the extender's 0..10; the simulator takes the best.
Both call this function, so a simulated result speaks for production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from scoring.candidates import Candidates
from scoring.feasibility import Feasibility, check_feasibility
from scoring.fragmentation import FloatArray, FragmentAggregates
from scoring.gpus import choose_gpus, tightest_gpu
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
    score : ndarray of shape (n_feasible,), weighted mean of the terms, in [0, 1]
    terms : each term's values over ``rows``
    tie_tolerance : scores within this of the best are ties (see ``PolicyConfig``)
    """

    state: ClusterState
    request: PodRequest
    feasibility: Feasibility
    rows: IntArray
    score: FloatArray
    terms: dict[str, FloatArray]
    tie_tolerance: float = 0.0

    def best(self, tie_break: IntArray | None = None) -> int | None:
        """Index into ``rows`` of the best node, or None when nothing fits.

        Nodes within ``tie_tolerance`` of the highest score are equally good; the
        lowest ``tie_break[row]`` among them wins (the state's stable node order
        by default).
        """
        if len(self.rows) == 0:
            return None
        order = self.state.tie_break if tie_break is None else tie_break
        top = np.flatnonzero(self.score >= self.score.max() - self.tie_tolerance - 1e-12)
        if len(top) == 1:
            return int(top[0])
        return int(top[np.argmin(order[self.rows[top]])])

    def gpus_of(self, index: int) -> tuple[int, ...]:
        """The GPU slots the pod takes on ``rows[index]``."""
        row = int(self.rows[index])
        slots = choose_gpus(self.state.free_milli[row : row + 1], self.request)[0]
        return tuple(int(slot) for slot in slots)

    def priorities(self, tie_break: IntArray | None = None) -> IntArray:
        """The extender's 0..10 for every feasible row: the best node alone gets 10."""
        return extender_priorities(self.score, self.best(tie_break))


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
    shared_gpu = (
        tightest_gpu(state.free_milli[feasible], request.milli_per_gpu)
        if request.is_sharing
        else np.zeros(0, dtype=np.int64)
    )
    candidates = Candidates(state, request, feasible, shared_gpu, fragments)
    terms = {name: TERMS[name](candidates) for name, w in policy.weights.items() if w > 0}
    return weigh(state, request, feasibility, terms, policy)


def weigh(
    state: ClusterState,
    request: PodRequest,
    feasibility: Feasibility,
    terms: dict[str, FloatArray],
    policy: PolicyConfig,
) -> Evaluation:
    """The Evaluation of the feasible rows from their term values (one per weighted term):
    the weighted mean, summed in the policy's order, so equal terms give equal floats."""
    feasible = feasibility.feasible_rows
    score = weighted_mean(terms, policy, len(feasible))
    return Evaluation(
        state,
        request,
        feasibility,
        feasible,
        score,
        terms,
        policy.tie_tolerance / total_weight(policy),
    )


def total_weight(policy: PolicyConfig) -> float:
    return sum(w for w in policy.weights.values() if w > 0)


def weighted_mean(terms: Mapping[str, FloatArray], policy: PolicyConfig, size: int) -> FloatArray:
    """The weighted mean of the weighted terms' values (``size`` of each), summed in the
    policy's order: the one definition, so that equal values give equal floats wherever
    a score is taken (the incremental evaluator takes it for a few rows at a time)."""
    score = np.zeros(size)
    for name, weight in policy.weights.items():
        if weight > 0:
            score += weight * terms[name]
    score /= total_weight(policy)
    return score


def extender_priorities(
    score: FloatArray, best: int | None = None, span: tuple[float, float] | None = None
) -> IntArray:
    """Map scores in [0, 1] to the extender's integers 0..10, the best strictly on top.

    ``best`` (an index into ``score``) alone gets 10; without it, every node at
    the highest score does.  The rest are spread over 0..9 by their distance
    from the worst (the worst gets 0), so rounding never lifts a runner-up level
    with the winner.  ``span``: the (highest, lowest) score of all the nodes when
    ``score`` holds only some of them.
    """
    if len(score) == 0:
        return np.zeros(0, dtype=np.int64)
    high, low = (float(score.max()), float(score.min())) if span is None else span
    if best is None:
        top = score >= high - 1e-12
    else:
        top = np.zeros(len(score), dtype=bool)
        top[best] = True
    if high - low <= 1e-12:
        return np.where(top, MAX_EXTENDER_PRIORITY, MAX_EXTENDER_PRIORITY - 1)
    # Below the top the ratio is < 1 (or 1 for a tie lost on order), so the
    # floor, capped at 9, lands in 0..9.
    spread = np.floor((score - low) / (high - low) * MAX_EXTENDER_PRIORITY).astype(np.int64)
    return np.where(top, MAX_EXTENDER_PRIORITY, np.minimum(spread, MAX_EXTENDER_PRIORITY - 1))
