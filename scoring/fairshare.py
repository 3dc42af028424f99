"""Fair share across teams: weighted max-min (water-filling) and the filter gate.

    deserved = water_fill(weights, demand = held + pending, capacity)

Water-filling raises one water level ``L`` until the cluster is full: each team
gets ``min(demand, weight * L)``.  A team that asks for less than its weighted
slice keeps only what it asks for, and what it leaves is shared by the others in
proportion to their weights, so idle entitlement is always lent out.  Teams
without demand deserve nothing.  When every demand fits, every team deserves
its demand.

The gate is the filter's fairness lever.  It holds back a pod whose team would
end up above its deserved share, but only while teams under their share wait for
more GPUs than are free once the pod is placed; in every other case it passes,
so it never keeps GPUs idle for nobody.  Both are pure functions over arrays:
the extender feeds them from its view, the simulator from its ledger.

GPUs may be valued by model (``FairnessConfig.gpu_values``, an 80 GiB GPU worth
more than a 16 GiB one); every amount here is then in value units, and with no
values configured one GPU is worth 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from scoring.fragmentation import FloatArray
from scoring.state import MILLI_PER_GPU, BoolArray, ClusterState, IntArray

EPSILON_GPUS = 1e-6
"""Amounts within this of each other are equal (sums of shares are not exact)."""


def water_fill(weights: FloatArray, demands: FloatArray, capacity: float) -> FloatArray:
    """Weighted max-min shares of ``capacity``.

    weights, demands : ndarray of shape (n_teams,), both >= 0
    Returns the deserved amount per team, shape (n_teams,): never above the
    team's demand, summing to ``min(capacity, sum(demands))``.

    Teams with weight 0 get only what the weighted teams leave, shared among
    themselves as if their weights were equal.
    """
    demands = np.maximum(np.asarray(demands, dtype=float), 0.0)
    weights = np.maximum(np.asarray(weights, dtype=float), 0.0)
    deserved = np.zeros(len(demands))
    if capacity <= 0 or len(demands) == 0:
        return deserved  # no capacity (or no team): nothing to share
    weighted = (weights > 0) & (demands > 0)
    deserved[weighted] = _fill(weights[weighted], demands[weighted], capacity)
    left = capacity - float(deserved.sum())
    unweighted = (weights == 0) & (demands > 0)
    if left > EPSILON_GPUS and unweighted.any():
        deserved[unweighted] = _fill(np.ones(int(unweighted.sum())), demands[unweighted], left)
    return deserved


def _fill(weights: FloatArray, demands: FloatArray, capacity: float) -> FloatArray:
    """Water-filling over teams that all have positive weight and demand."""
    if demands.sum() <= capacity:
        return demands.copy()  # everyone fits: no level needed
    ratio = demands / weights  # the level at which each team is saturated
    order = np.argsort(ratio, kind="stable")
    demand_sorted, weight_sorted, ratio_sorted = demands[order], weights[order], ratio[order]
    saturated_demand = np.concatenate(([0.0], np.cumsum(demand_sorted)[:-1]))
    unsaturated_weight = weights.sum() - np.concatenate(([0.0], np.cumsum(weight_sorted)[:-1]))
    # Filled at level ratio_sorted[k]: the k teams below it saturated, the rest at weight * level.
    filled = saturated_demand + ratio_sorted * unsaturated_weight
    # The first level that fills the cluster; none when the demands sum above the capacity
    # only by rounding (the last level then fills it: every team gets its demand).
    k = min(int(np.searchsorted(filled, capacity)), len(filled) - 1)
    level = (capacity - saturated_demand[k]) / unsaturated_weight[k]
    return np.minimum(demands, weights * level)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class TeamShares:
    """Every team's holding, demand and deserved share at one moment (value units).

    teams : team names, one per entry of the arrays
    weights, held, pending, deserved : ndarray of shape (n_teams,)
    smallest_pending : ndarray of shape (n_teams,), the smallest pending pod of
        each team (0 without pending pods)
    capacity : the cluster's GPUs
    """

    teams: tuple[str, ...]
    weights: FloatArray
    held: FloatArray
    pending: FloatArray
    deserved: FloatArray
    smallest_pending: FloatArray
    capacity: float
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({team: i for i, team in enumerate(self.teams)})

    def index(self, team: str) -> int | None:
        return self._index.get(team)

    def excess(self, team: str) -> float:
        """GPUs the team holds beyond its deserved share (negative: below it; 0: unknown team)."""
        i = self._index.get(team)
        return 0.0 if i is None else float(self.held[i] - self.deserved[i])

    @property
    def over_share_teams(self) -> frozenset[str]:
        over = self.held > self.deserved + EPSILON_GPUS
        return frozenset(team for team, is_over in zip(self.teams, over, strict=True) if is_over)

    def waiting(self) -> FloatArray:
        """Per team, the GPUs it waits for and deserves: min(pending, deserved - held).

        0 for a team whose smallest pending pod would already take it above its
        share: the gate holds that pod too, so keeping GPUs free for it would idle them.
        """
        deficit = np.maximum(self.deserved - self.held, 0.0)
        can_use = (self.pending > 0) & (
            self.held + self.smallest_pending <= self.deserved + EPSILON_GPUS
        )
        return np.where(can_use, np.minimum(self.pending, deficit), 0.0)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            team: {
                "weight": round(float(self.weights[i]), 6),
                "held_gpus": round(float(self.held[i]), 3),
                "pending_gpus": round(float(self.pending[i]), 3),
                "deserved_gpus": round(float(self.deserved[i]), 3),
            }
            for i, team in enumerate(self.teams)
        }


def team_shares(
    teams: Sequence[str],
    weights: FloatArray,
    held: FloatArray,
    pending: FloatArray,
    capacity: float,
    smallest_pending: FloatArray | None = None,
) -> TeamShares:
    """Deserved shares by water-filling over demand = held + pending."""
    held = np.asarray(held, dtype=float)
    pending = np.asarray(pending, dtype=float)
    return TeamShares(
        teams=tuple(teams),
        weights=np.asarray(weights, dtype=float),
        held=held,
        pending=pending,
        deserved=water_fill(weights, held + pending, capacity),
        smallest_pending=(
            np.zeros(len(held)) if smallest_pending is None else np.asarray(smallest_pending, float)
        ),
        capacity=float(capacity),
    )


def team_weights(
    teams: Sequence[str],
    configured: Mapping[str, float],
    quota_gpus: Mapping[str, float],
    default_weight: float,
    *,
    from_quota: bool = True,
) -> FloatArray:
    """Each team's entitlement weight: the config's, else its GPU quota, else the default."""
    weights = np.empty(len(teams))
    for i, team in enumerate(teams):
        if team in configured:
            weights[i] = configured[team]
        elif from_quota and quota_gpus.get(team, 0) > 0:
            weights[i] = quota_gpus[team]
        else:
            weights[i] = default_weight
    return weights


def model_values(state: ClusterState, values: Mapping[str, float]) -> FloatArray:
    """Value of one GPU of each model of ``state.models`` (1 where none is configured)."""
    return np.array([values.get(model, 1.0) for model in state.models], dtype=float)


def gpu_value_per_row(state: ClusterState, values: Mapping[str, float]) -> FloatArray:
    """Value of one GPU of each node, shape (n_nodes,); 0 for nodes without GPUs."""
    per_model = model_values(state, values)
    has_model = state.gpu_model >= 0
    value = np.zeros(state.n_nodes)
    value[has_model] = per_model[state.gpu_model[has_model]] if len(per_model) else 1.0
    return value


def capacity_value(state: ClusterState, row_value: FloatArray | None = None) -> float:
    """The cluster's GPUs, in value units (plain GPUs without values); a cordoned node's
    too: it is cordoned for a while (a drain, a repair), and its pods hold their GPUs."""
    if row_value is None:
        return float(state.gpu_count.sum())
    return float((state.gpu_count * row_value).sum())


def free_value(state: ClusterState, row_value: FloatArray | None = None) -> float:
    """Free GPU capacity (whole and partial GPUs) of the nodes open to new pods (cordoned
    ones left out), in value units."""
    free_gpus = state.free_milli.sum(axis=1) * state.schedulable / MILLI_PER_GPU
    if row_value is None:
        return float(free_gpus.sum())
    return float((free_gpus * row_value).sum())


@dataclass(frozen=True)
class GateDecision:
    hold: bool = False
    reason: str = ""
    """Why the pod is held: which team holds how much against what it deserves."""


PASS = GateDecision()


def fair_share_gate(
    shares: TeamShares,
    team: str,
    request_gpus: float,
    free_gpus: float | Callable[[], float],
    released_gpus: float = 0.0,
) -> GateDecision:
    """Hold a pod of ``team`` asking ``request_gpus``, or let it pass.

    Held only when both hold:

    * the team would grow above its deserved share with the pod:
      ``held - released + request > deserved`` and ``request > released``;
    * other teams under their share wait for more GPUs than would be free after
      it: ``free - request < sum of the others' waiting()``.

    ``released_gpus`` are the team's own pods that placing this one evicts (in
    preemption): a team that swaps its own batch work for interactive work does
    not grow, and passes.  A team unknown to ``shares`` and a pod without GPUs
    always pass.  ``free_gpus`` may be a function: it is called only when the team
    would grow above its share (the free GPUs are a sum over every node).
    """
    i = shares.index(team)
    if i is None or request_gpus <= 0 or request_gpus <= released_gpus + EPSILON_GPUS:
        return PASS
    if shares.held[i] - released_gpus + request_gpus <= shares.deserved[i] + EPSILON_GPUS:
        return PASS
    waiting = shares.waiting()
    waiting[i] = 0.0
    waiting_gpus = float(waiting.sum())
    if waiting_gpus <= EPSILON_GPUS:
        return PASS
    if callable(free_gpus):
        free_gpus = free_gpus()
    if free_gpus - request_gpus >= waiting_gpus - EPSILON_GPUS:
        return PASS
    waiting_teams = ", ".join(
        f"{shares.teams[j]} {shares.held[j]:.1f}/{shares.deserved[j]:.1f}"
        for j in np.flatnonzero(waiting > EPSILON_GPUS).tolist()
    )
    return GateDecision(
        hold=True,
        reason=(
            f"team {team} holds {shares.held[i]:.1f} GPUs against a deserved"
            f" {shares.deserved[i]:.1f}; teams under their share ({waiting_teams}) wait for"
            f" {waiting_gpus:.1f} GPUs and {free_gpus:.1f} are free"
        ),
    )


def gate_holds(
    shares: TeamShares, team_index: IntArray, request_gpus: FloatArray, free_gpus: float
) -> BoolArray:
    """:func:`fair_share_gate` for many pods at once: True where the pod is held.

    team_index : ndarray of shape (n_pods,), index into ``shares.teams`` (-1: unknown team)
    request_gpus : ndarray of shape (n_pods,)
    """
    known = team_index >= 0
    index = np.where(known, team_index, 0)
    over = shares.held[index] + request_gpus > shares.deserved[index] + EPSILON_GPUS
    waiting = shares.waiting()
    others_waiting = waiting.sum() - waiting[index]
    short = (others_waiting > EPSILON_GPUS) & (
        free_gpus - request_gpus < others_waiting - EPSILON_GPUS
    )
    return known & (request_gpus > 0) & over & short  # type: ignore[no-any-return]
