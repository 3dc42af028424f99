"""Fair shares (scoring/fairshare.py): water-filling, team weights and the filter gate."""

from __future__ import annotations

import numpy as np
import pytest
from builders import PROPERTY, node, state_of
from hypothesis import given
from hypothesis import strategies as st

from scoring.fairshare import (
    EPSILON_GPUS,
    TeamShares,
    capacity_value,
    fair_share_gate,
    free_value,
    gate_holds,
    gpu_value_per_row,
    team_shares,
    team_weights,
    water_fill,
)

# --- water_fill -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "demands", "capacity", "expected"),
    [
        # everyone wants more than the cluster: 8 L = 80 -> L = 10 -> 4L, 2L, L, L
        ([4, 2, 1, 1], [100, 100, 100, 100], 80, [40, 20, 10, 10]),
        # the second team has no demand: 4L + L + L = 60 -> L = 10; it deserves nothing
        ([4, 2, 1, 1], [100, 0, 100, 100], 60, [40, 0, 10, 10]),
        # two zero-demand teams: only the first asks, it gets the whole cluster
        ([4, 2, 1, 1], [100, 0, 0, 0], 60, [60, 0, 0, 0]),
        # team 0 asks 10 < its slice of 30: it keeps 10, the 80 left are split 1:1
        ([1, 1, 1], [10, 100, 100], 90, [10, 40, 40]),
        # a single team gets the cluster (capped by its demand)
        ([3], [50], 40, [40]),
        ([3], [30], 40, [30]),
        # all weights equal: levels 5, 20, 30 saturate (55), the last gets 100 - 55 = 45
        ([1, 1, 1, 1], [5, 20, 30, 100], 100, [5, 20, 30, 45]),
        # all weights equal and all hungry: 100 / 4 each
        ([2, 2, 2, 2], [90, 90, 90, 90], 100, [25, 25, 25, 25]),
        # demand fits: everyone deserves what it asks
        ([4, 2], [10, 10], 100, [10, 10]),
        # weight 2:1 with the heavy team small: 10 for it, the other takes 50 - 10 = 40
        ([2, 1], [10, 100], 50, [10, 40]),
        # weight 0: only what the weighted teams leave (50 - 10 = 40), capped at its demand
        ([1, 0], [10, 50], 50, [10, 40]),
        ([1, 0], [60, 50], 50, [50, 0]),
        # fractional GPUs: 3 teams, 1:1:1 over 2.5 GPUs, one asks 0.5 -> 0.5, 1, 1
        ([1, 1, 1], [0.5, 3, 3], 2.5, [0.5, 1, 1]),
        # demand is the capacity, but 1.35 x 3 + 3.15 sums to 7.200000000000001: everyone fits
        ([1, 3, 3, 3], [1.35, 1.35, 1.35, 3.15], 7.2, [1.35, 1.35, 1.35, 3.15]),
    ],
    ids=[
        "all-hungry-4-2-1-1",
        "zero-demand-team",
        "three-zero-demand-teams",
        "small-demand-lends",
        "single-team-capped",
        "single-team-satisfied",
        "equal-weights-staircase",
        "equal-weights-hungry",
        "demand-fits",
        "heavy-team-small",
        "zero-weight-gets-leftover",
        "zero-weight-gets-nothing",
        "fractional",
        "demand-is-capacity-but-rounds-above",
    ],
)
def test_water_fill(
    weights: list[float], demands: list[float], capacity: float, expected: list[float]
) -> None:
    deserved = water_fill(np.array(weights, float), np.array(demands, float), capacity)
    np.testing.assert_allclose(deserved, expected)


@pytest.mark.parametrize(
    ("weights", "demands", "capacity"),
    [([1, 1], [5, 5], 0.0), ([1, 1], [5, 5], -3.0), ([], [], 10.0), ([1, 2], [0, 0], 10.0)],
    ids=["zero-capacity", "negative-capacity", "no-teams", "no-demand"],
)
def test_water_fill_guards(weights: list[float], demands: list[float], capacity: float) -> None:
    deserved = water_fill(np.array(weights, float), np.array(demands, float), capacity)
    assert deserved.shape == (len(weights),)
    assert (deserved == 0).all()


def slow_water_fill(weights: list[float], demands: list[float], capacity: float) -> list[float]:
    """Progressive filling, one saturation at a time: the scalar reference.  Teams of
    weight 0 then share what is left as if their weights were 1."""
    deserved = [0.0] * len(demands)
    for weighted in (True, False):
        active = {i for i, d in enumerate(demands) if (weights[i] > 0) == weighted and d > 0}
        weight = {i: weights[i] if weighted else 1.0 for i in active}
        left = max(capacity - sum(deserved), 0.0)
        while active and left > 1e-12:
            total_weight = sum(weight[i] for i in active)
            # the level rise that saturates the next team, or uses up what is left
            rise = min(
                min((demands[i] - deserved[i]) / weight[i] for i in active), left / total_weight
            )
            for i in list(active):
                deserved[i] += weight[i] * rise
                if deserved[i] >= demands[i] - 1e-12:
                    deserved[i] = demands[i]
                    active.discard(i)
            left = capacity - sum(deserved)
    return deserved


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.floats(0.1, 10, allow_nan=False) | st.just(0.0),
            st.floats(0, 100, allow_nan=False) | st.just(0.0),
        ),
        min_size=1,
        max_size=8,
    ),
    st.floats(0, 400, allow_nan=False),
)
def test_water_fill_matches_progressive_filling(
    teams: list[tuple[float, float]], capacity: float
) -> None:
    weights = [w for w, _ in teams]
    demands = [d for _, d in teams]
    deserved = water_fill(np.array(weights), np.array(demands), capacity)
    np.testing.assert_allclose(
        deserved, slow_water_fill(weights, demands, capacity), rtol=1e-9, atol=EPSILON_GPUS
    )
    assert deserved.sum() == pytest.approx(min(capacity, sum(demands)), abs=1e-6)
    assert (deserved <= np.array(demands) + 1e-9).all()


# --- team weights and values ----------------------------------------------------------------


def test_team_weights_come_from_config_then_quota_then_default() -> None:
    # ml-team-a: configured 3 (beats its quota of 4); ml-team-b: quota 2; ml-team-c: default 1.5
    weights = team_weights(
        ["ml-team-a", "ml-team-b", "ml-team-c"],
        {"ml-team-a": 3.0},
        {"ml-team-a": 4, "ml-team-b": 2},
        1.5,
    )
    np.testing.assert_allclose(weights, [3.0, 2.0, 1.5])
    without_quota = team_weights(["ml-team-b"], {}, {"ml-team-b": 2}, 1.5, from_quota=False)
    np.testing.assert_allclose(without_quota, [1.5])


def test_gpu_values_weigh_capacity_and_free_gpus_by_model() -> None:
    state = state_of(node("big", 8, model="A100"), node("small", 4, model="T4"), node("cpu", 0))
    state.free_milli[0, :2] = 0  # 2 of the A100s taken
    row_value = gpu_value_per_row(state, {"A100": 2.0})
    np.testing.assert_allclose(row_value, [2.0, 1.0, 0.0])
    # capacity: 8 x 2 + 4 x 1 = 20; free: 6 x 2 + 4 x 1 = 16
    assert capacity_value(state, row_value) == 20.0
    assert free_value(state, row_value) == 16.0
    assert (capacity_value(state), free_value(state)) == (12.0, 10.0)
    # Cordoned, the T4 node's 4 free GPUs are nobody's: still capacity, no longer free.
    state.schedulable[1] = False
    assert (capacity_value(state, row_value), free_value(state, row_value)) == (20.0, 12.0)


# --- the gate -------------------------------------------------------------------------------


def shares_of(
    weights: list[float],
    held: list[float],
    pending: list[float],
    capacity: float,
    smallest: list[float] | None = None,
) -> TeamShares:
    teams = [f"t{i}" for i in range(len(weights))]
    return team_shares(
        teams,
        np.array(weights, float),
        np.array(held, float),
        np.array(pending, float),
        capacity,
        np.array(smallest if smallest is not None else [min(p, 1.0) for p in pending], float),
    )


@pytest.mark.parametrize(
    ("shares", "team", "gpus", "free", "hold"),
    [
        # t0 holds 90 of 100, deserves 50 (demand 100+, 100 -> 1:1); t1 holds 10, waits for
        # min(pending 90, deserved 50 - 10) = 40; free 0 - 1 < 40 -> hold
        (shares_of([1, 1], [90, 10], [10, 90], 100), "t0", 1, 0, True),
        # the same with 41 GPUs free: 41 - 1 = 40 >= 40 waiting -> pass
        (shares_of([1, 1], [90, 10], [10, 90], 100), "t0", 1, 41, False),
        # t1 is under its share: it passes whatever t0 waits for
        (shares_of([1, 1], [90, 10], [10, 90], 100), "t1", 1, 0, False),
        # nobody else waits: t0 may go over its share (borrowing), never idle
        (shares_of([1, 1], [90, 10], [10, 0], 100), "t0", 1, 0, False),
        # a single team never holds itself back
        (shares_of([1], [100], [50], 100), "t0", 4, 0, False),
        # within its share after the pod: 40 + 5 <= 50 -> pass
        (shares_of([1, 1], [40, 10], [20, 90], 100), "t0", 5, 0, False),
        # t1's smallest pending pod (8) would take it over (10 + 8 > 15): it waits for
        # nothing the gate could keep free, so t0 passes (deserved: 85 and 15 by demand 15)
        (shares_of([1, 1], [90, 10], [10, 5], 100, smallest=[1, 8]), "t0", 1, 0, False),
        # a team the shares do not know passes
        (shares_of([1, 1], [90, 10], [10, 90], 100), "stranger", 1, 0, False),
        # a pod without GPUs passes
        (shares_of([1, 1], [90, 10], [10, 90], 100), "t0", 0, 0, False),
    ],
    ids=[
        "over-share-others-wait-short",
        "over-share-free-covers-waiters",
        "under-share-passes",
        "nobody-waits-borrow",
        "single-team",
        "within-share",
        "waiter-would-overshoot",
        "unknown-team",
        "cpu-only",
    ],
)
def test_fair_share_gate(
    shares: TeamShares, team: str, gpus: float, free: float, hold: bool
) -> None:
    decision = fair_share_gate(shares, team, gpus, free)
    assert decision.hold == hold
    assert bool(decision.reason) == hold
    # The free GPUs (a sum over every node) may come as a function.
    assert fair_share_gate(shares, team, gpus, lambda: free) == decision


def test_the_gate_counts_free_gpus_only_for_a_team_that_would_grow_over_its_share() -> None:
    shares = shares_of([1, 1], [90, 10], [10, 90], 100)  # t0 over its share, t1 under
    asked: list[str] = []

    def free_gpus() -> float:
        asked.append("asked")
        return 0.0

    assert not fair_share_gate(shares, "t1", 1, free_gpus).hold
    assert asked == []
    assert fair_share_gate(shares, "t0", 1, free_gpus).hold
    assert asked == ["asked"]


@pytest.mark.parametrize(
    ("released", "hold"),
    [
        # evicting 2 of its own GPUs for a 2-GPU pod: the team does not grow -> pass
        (2.0, False),
        # evicting 1 of its own for 2: it grows by 1, to 91 > 50, while t1 waits -> hold
        (1.0, True),
    ],
    ids=["swap-own-pods", "grows-anyway"],
)
def test_gate_lets_a_team_swap_its_own_pods(released: float, hold: bool) -> None:
    shares = shares_of([1, 1], [90, 10], [10, 90], 100)
    assert fair_share_gate(shares, "t0", 2, released, released).hold == hold


def test_gate_reason_says_who_holds_what_against_what() -> None:
    decision = fair_share_gate(shares_of([1, 1], [90, 10], [10, 90], 100), "t0", 1, 0)
    assert decision.reason == (
        "team t0 holds 90.0 GPUs against a deserved 50.0; teams under their share"
        " (t1 10.0/50.0) wait for 40.0 GPUs and 0.0 are free"
    )


team_rows = st.lists(
    st.tuples(
        st.floats(0.5, 8),  # weight
        st.integers(0, 60),  # held
        st.integers(0, 60),  # pending
        st.integers(1, 8),  # smallest pending pod
    ),
    min_size=1,
    max_size=6,
)


def random_shares(rows: list[tuple[float, int, int, int]], capacity: int) -> TeamShares:
    return shares_of(
        [w for w, *_ in rows],
        [h for _, h, _, _ in rows],
        [p for *_, p, _ in rows],
        capacity,
        [min(s, p) if p else 0 for *_, p, s in rows],
    )


@PROPERTY
@given(team_rows, st.integers(1, 300), st.integers(0, 100), st.data())
def test_gate_never_idles_gpus(
    rows: list[tuple[float, int, int, int]], capacity: int, free: int, data: st.DataObject
) -> None:
    """Whenever a pod is held, some other team waits and its smallest pod would pass."""
    shares = random_shares(rows, capacity)
    team = data.draw(st.integers(0, len(rows) - 1))
    gpus = data.draw(st.integers(1, 8))
    decision = fair_share_gate(shares, f"t{team}", gpus, free)
    waiters = [
        i
        for i in range(len(rows))
        if i != team
        and shares.pending[i] > 0
        and not fair_share_gate(shares, f"t{i}", shares.smallest_pending[i], free).hold
        and shares.held[i] < shares.deserved[i]
    ]
    if decision.hold:
        assert waiters, "held with nobody able to use the free GPUs"
    if not waiters:
        assert not decision.hold


@PROPERTY
@given(team_rows, st.integers(1, 300), st.integers(0, 100), st.data())
def test_gate_holds_matches_the_scalar_gate(
    rows: list[tuple[float, int, int, int]], capacity: int, free: int, data: st.DataObject
) -> None:
    shares = random_shares(rows, capacity)
    pods = data.draw(
        st.lists(st.tuples(st.integers(-1, len(rows) - 1), st.integers(0, 8)), max_size=10)
    )
    team_index = np.array([t for t, _ in pods], dtype=np.int64)
    gpus = np.array([g for _, g in pods], dtype=float)
    expected = [
        fair_share_gate(shares, f"t{t}" if t >= 0 else "stranger", g, free).hold for t, g in pods
    ]
    assert gate_holds(shares, team_index, gpus, free).tolist() == expected


def test_over_share_teams_and_excess() -> None:
    # deserved 50/50: t0 holds 90 (40 over), t1 10 (40 under)
    shares = shares_of([1, 1], [90, 10], [10, 90], 100)
    assert shares.over_share_teams == frozenset({"t0"})
    assert (shares.excess("t0"), shares.excess("t1"), shares.excess("nobody")) == (40, -40, 0)
    assert shares.as_dict()["t1"] == {
        "weight": 1.0,
        "held_gpus": 10.0,
        "pending_gpus": 90.0,
        "deserved_gpus": 50.0,
    }
