"""The FGD protocol simulator (benchmarks/simulator.py) and the packing floor (floor.py)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from builders import cpu_only, node, sharing, whole

from benchmarks.floor import first_fit_decreasing_waste_milli, packing_floor_pct
from benchmarks.policies import POLICIES
from benchmarks.simulator import (
    RunResult,
    allocation_by_arrived,
    build_workload,
    node_rank,
    simulate,
    workload_rng,
)
from scoring import PodRequest

# Twenty distinct pods (distinct CPU), so a permutation is visible: 8 sharing, 8 whole, 4 CPU-only.
TRACE = (
    [sharing(100 * (i + 1), 1_000 + i) for i in range(8)]
    + [whole(1 + i % 4, 2_000 + i) for i in range(8)]
    + [cpu_only(3_000 + i) for i in range(4)]
)
TRACE_MILLI = sum(request.gpu_milli for request in TRACE)  # 3600 + 20000 = 23600


# --- build_workload -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [42, 43, 44])
def test_workload_starts_with_a_permutation_of_the_trace(seed: int) -> None:
    workload = build_workload(TRACE, 40_000, 1.3, workload_rng(seed))
    head = workload[: len(TRACE)]
    assert Counter(head) == Counter(TRACE)
    assert head != TRACE  # shuffled (20! orders; the identity would be a broken shuffle)


@pytest.mark.parametrize(
    ("capacity", "tune"), [(40_000, 1.3), (20_000, 1.3), (100_000, 0.5)], ids=["a", "b", "c"]
)
@pytest.mark.parametrize("seed", [42, 43])
def test_appended_draws_stop_by_the_per_gpu_milli_rule(
    capacity: int, tune: float, seed: int
) -> None:
    target = tune * capacity
    workload = build_workload(TRACE, capacity, tune, workload_rng(seed))
    # Replay the run's generator: the permutation, then one trace index per draw.
    replay = workload_rng(seed)
    replay.permutation(len(TRACE))
    requested = TRACE_MILLI
    for appended in workload[len(TRACE) :]:
        drawn = TRACE[int(replay.integers(len(TRACE)))]
        assert appended == drawn  # appended in draw order, not shuffled
        assert requested + drawn.milli_per_gpu <= target
        requested += drawn.gpu_milli
    stopper = TRACE[int(replay.integers(len(TRACE)))]
    assert requested + stopper.milli_per_gpu > target  # the first draw that would pass stops it
    assert sum(request.gpu_milli for request in workload) == requested


def test_the_stop_rule_adds_per_gpu_milli_not_the_total() -> None:
    # One 2-GPU pod (2000 milli, 1000 per GPU), target 1.0 x 9500.
    # 2000 -> 4000 -> 6000 -> 8000: 8000 + 1000 <= 9500, so a 5th is appended -> 10000 > 9500
    # (a rule adding the total, 8000 + 2000 > 9500, would stop at 4 pods).
    workload = build_workload([whole(2)], 9_500, 1.0, workload_rng(0))
    assert len(workload) == 5
    assert sum(request.gpu_milli for request in workload) == 10_000


def test_a_trace_above_the_target_is_tuned_down() -> None:
    # ten 1-GPU pods = 10000 milli > 1.0 x 8000: random pods go until <= 8000 -> 8 pods
    trace = [whole(1, 1_000 + i) for i in range(10)]
    workload = build_workload(trace, 8_000, 1.0, workload_rng(1))
    assert len(workload) == 8
    assert not Counter(workload) - Counter(trace)  # a sub-multiset, nothing drawn anew


@pytest.mark.parametrize("seed", [42, 43, 44])
def test_tune_down_stops_as_soon_as_the_request_is_under_the_target(seed: int) -> None:
    target = 0.5 * 20_000  # 10000 < 23600 requested by TRACE
    workload = build_workload(TRACE, 20_000, 0.5, workload_rng(seed))
    requested = sum(request.gpu_milli for request in workload)
    assert not Counter(workload) - Counter(TRACE)
    assert requested <= target
    largest = max(request.gpu_milli for request in TRACE)
    assert requested > target - largest  # above the target before the last removal


def test_workload_is_a_function_of_the_seed() -> None:
    def build(seed: int) -> list[PodRequest]:
        return build_workload(TRACE, 40_000, 1.3, workload_rng(seed))

    assert build(42) == build(42)
    assert build(42) != build(43)


# --- node_rank ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_nodes", [0, 1, 7, 1213])
def test_node_rank_is_a_permutation(n_nodes: int) -> None:
    assert sorted(node_rank(n_nodes, 42).tolist()) == list(range(n_nodes))


def test_node_rank_is_fixed_per_seed() -> None:
    np.testing.assert_array_equal(node_rank(50, 42), node_rank(50, 42))
    assert node_rank(50, 42).tolist() != node_rank(50, 43).tolist()


# --- allocation_by_arrived ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrived", "used", "capacity", "expected"),
    [
        # capacity 10000: 1% = 100 milli. arrived 100 -> 1%, 120 -> 1.2 -> 1%;
        #   allocated 0.5% and 0.6% -> column 1 = (0.5+0.6)/2 = 0.55
        ([100, 120], [50, 60], 10_000, {1: 0.55}),
        # arrived % rounds half to even: 150 -> 1.5 -> 2, 250 -> 2.5 -> 2, 349 -> 3.49 -> 3
        ([150, 250, 349], [10, 20, 30], 10_000, {1: 0.15, 2: 0.15, 3: 0.3}),
        # allocated % is rounded per record before the mean: capacity 1e6 (1% = 10000 milli);
        #   0.014, 0.014, 0.0249 -> 0.01, 0.01, 0.02 -> mean 0.0133 -> 0.01 (raw mean 0.0176)
        ([10_000, 10_000, 10_000], [140, 140, 249], 1_000_000, {1: 0.01}),
        # no record at 0: k-1 = -1 does not exist, k+1 = 1 does -> 0.55
        ([100, 120], [50, 60], 10_000, {0: 0.55}),
        # only k-1 has records: column 2 takes column 1's mean
        ([100, 120], [50, 60], 10_000, {2: 0.55}),
        # no record at k-1, k, k+1: no value
        ([100, 120], [50, 60], 10_000, {3: math.nan, 130: math.nan}),
    ],
    ids=["mean", "arrived-rounding", "allocated-rounding", "fallback-up", "fallback-down", "none"],
)
def test_allocation_by_arrived(
    arrived: list[int], used: list[int], capacity: int, expected: dict[int, float]
) -> None:
    columns = allocation_by_arrived(np.array(arrived), np.array(used), capacity)
    assert sorted(columns) == list(range(131))
    for k, value in expected.items():
        assert columns[k] == pytest.approx(value, nan_ok=True), k


def test_an_empty_column_takes_the_mean_of_both_neighbours() -> None:
    # records at 1% (0.5, 0.6) and 3% (1.0), none at 2%: (0.5+0.6+1.0)/3 = 0.7
    columns = allocation_by_arrived(np.array([100, 120, 300]), np.array([50, 60, 100]), 10_000)
    assert columns[2] == pytest.approx(0.7)


def test_the_column_mean_is_rounded_like_the_authors_pandas_mean() -> None:
    # capacity 1e6: records 0.01% and 0.02% at arrived 1% -> mean 0.015 -> numpy rounds to 0.02
    columns = allocation_by_arrived(np.array([10_000, 10_000]), np.array([100, 200]), 1_000_000)
    assert columns[1] == 0.02


def test_unallocated_at_100() -> None:
    # 100 - 95.234 = 4.766 -> 4.77
    result = RunResult(
        "fgd", 42, {100: 95.234}, pods=1, failed_pods=0, failed_gpu_milli=0, elapsed_s=0.0
    )
    assert result.unallocated_pct_at_100 == 4.77


# --- simulate -------------------------------------------------------------------------------

SMALL_CLUSTER = [
    node("a", 8, model="A"),
    node("b", 8, model="B"),
    node("c", 2, model="A", cpu_milli=32_000),
    node("d", 2, model="B", cpu_milli=32_000),
    node("e", 4, model="A"),
    node("f", 1, model="B", cpu_milli=16_000),
]  # 25 GPUs
MIXED_TRACE = [
    *(sharing(milli, 4_000) for milli in (100, 250, 300, 500, 500, 700, 900)),
    *(whole(count, 8_000) for count in (1, 1, 2, 4, 8)),
    sharing(500, 4_000, models=["B"]),
    whole(1, 8_000, models=["A"]),
    cpu_only(2_000),
]


@pytest.mark.parametrize("policy", ["fgd", "bestfit", "fairpack", "random"])
def test_simulate_is_deterministic_per_seed(policy: str) -> None:
    first = simulate(policy, SMALL_CLUSTER, MIXED_TRACE, seed=42)
    again = simulate(policy, SMALL_CLUSTER, MIXED_TRACE, seed=42)
    # NaN columns (no record near k) compare equal here, unlike in ==
    np.testing.assert_equal(first.allocated_pct_by_arrived, again.allocated_pct_by_arrived)
    assert replace(first, elapsed_s=0.0, allocated_pct_by_arrived={}) == replace(
        again, elapsed_s=0.0, allocated_pct_by_arrived={}
    )
    assert first.pods == len(build_workload(MIXED_TRACE, 25_000, 1.3, workload_rng(42)))
    # tuned up to 1.3 x capacity: some pods must fail, and the failures are GPU pods
    assert 0 < first.failed_pods <= first.pods
    assert first.failed_gpu_milli > 0
    for k, allocated in first.allocated_pct_by_arrived.items():
        if not math.isnan(allocated):
            assert allocated <= k + 1.5, (k, allocated)  # never more allocated than arrived


# Whole-GPU pods of at most 4 GPUs on 8-GPU nodes: while under 62.5% of the GPUs are in use,
# some node has 4 fully free GPUs (else each has >= 5 of 8 busy). Sharing pods of at most
# 500: while under 50% is in use, some GPU has >= 500 free. Tuned to 0.45 x capacity
# (plus at most 3000 milli of overshoot on 64000), every pod fits under any policy.
AMPLE_CLUSTER = [node(f"n{i}", 8, cpu_milli=10_000_000, memory_mib=10_000_000) for i in range(8)]
AMPLE_TRACES = {
    "whole-gpus": [whole(count, 1_000, 1_024) for count in (1, 1, 2, 2, 4)] + [cpu_only(500)],
    "sharing": [sharing(milli, 1_000, 1_024) for milli in (50, 100, 250, 400, 500)],
}


@pytest.mark.parametrize("trace_name", sorted(AMPLE_TRACES))
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_nothing_fails_when_capacity_is_ample(policy: str, trace_name: str) -> None:
    result = simulate(policy, AMPLE_CLUSTER, AMPLE_TRACES[trace_name], seed=7, tune=0.45)
    assert result.pods > len(AMPLE_TRACES[trace_name])  # tuned up: more than the trace
    assert result.failed_pods == 0
    assert result.failed_gpu_milli == 0


# --- the packing floor ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "waste"),
    [
        ([600, 600, 400, 400], 0),  # 2 GPUs: 600+400 each
        ([700, 700], 600),  # 2 GPUs, 300 left on each
        ([], 0),  # nothing to pack
        ([1000], 0),  # a full GPU leaves nothing
        ([500, 500, 500], 500),  # 2 GPUs: 500+500, 500+(500 left)
        ([300, 300, 300, 300], 800),  # 300x3 on one GPU (100 left), a second with 700 left
        # decreasing order matters: 700, 700, 300, 300 -> [700+300] x 2: 0 left (in the given
        #   order: [300+300], [700], [700] -> 400+300+300 = 1000 left)
        ([300, 300, 700, 700], 0),
        ([1, 1, 1], 997),  # one GPU, 997 left
    ],
    ids=[
        "pairs",
        "two-large",
        "empty",
        "full-gpu",
        "three-halves",
        "four-small",
        "decreasing",
        "tiny",
    ],
)
def test_first_fit_decreasing_waste(shares: list[int], waste: int) -> None:
    assert first_fit_decreasing_waste_milli(shares) == waste


@pytest.mark.parametrize(
    ("workload", "capacity", "floor_pct"),
    [
        # arrived 700, 1400 (<= 2000), then 2400 > 2000 stops: pack [700, 700] -> 600 of 2000
        ([sharing(700), sharing(700), whole(1), sharing(500)], 2_000, 30.0),
        # arrived 700, 1700, 2000 == capacity still counts: [700, 300] -> 1 GPU, 0 left
        ([sharing(700), whole(1), sharing(300), sharing(900)], 2_000, 0.0),
        # only whole GPUs and CPU-only pods: nothing stranded
        ([whole(2), cpu_only(1_000), whole(1)], 4_000, 0.0),
        # 1/3 of 3000 -> 33.33
        ([sharing(500), sharing(500), sharing(500)], 3_000, round(100 * 500 / 3_000, 2)),
    ],
    ids=["stops-past-capacity", "at-capacity-included", "no-sharing", "rounded"],
)
def test_packing_floor_pct(workload: list[PodRequest], capacity: int, floor_pct: float) -> None:
    assert packing_floor_pct(workload, capacity) == floor_pct
