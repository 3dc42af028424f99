"""GPU choice (scoring/gpus.py), evaluate/Evaluation.best and extender_priorities (placement.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from builders import (
    PROPERTY,
    cpu_only,
    node,
    set_free,
    shared_gpu_of,
    sharing,
    state_of,
    whole,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from scoring import (
    Candidates,
    ClusterState,
    Evaluation,
    PodRequest,
    PolicyConfig,
    choose_gpus,
    evaluate,
    extender_priorities,
)
from scoring.gpus import lowest_free_gpus, tightest_gpu
from scoring.terms import memory_fit

# --- GPU choice -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free_milli", "milli", "expected"),
    [
        # 700, 500 and 1000 hold 400; the least free of them is 500 (slot 2)
        ([[300, 700, 500, 1000]], 400, [2]),
        ([[600, 600]], 500, [0]),  # tie: lowest index
        ([[400, 1000]], 400, [0]),  # exactly enough counts
        ([[100, 200]], 300, [-1]),  # none holds it
        ([[1000, 0]], 1, [0]),  # a padded/busy slot (0 free) never holds anything
        # one answer per row
        ([[1000, 250], [900, 950], [0, 0]], 200, [1, 0, -1]),
    ],
    ids=["tightest", "tie-lowest-index", "exact", "none", "skips-empty-slot", "per-row"],
)
def test_tightest_gpu(free_milli: list[list[int]], milli: int, expected: list[int]) -> None:
    assert tightest_gpu(np.array(free_milli), milli).tolist() == expected


@pytest.mark.parametrize(
    ("free_milli", "count", "expected"),
    [
        ([[1000, 500, 1000, 1000]], 2, [[0, 2]]),  # lowest-index fully free, skipping the used
        ([[500, 1000]], 2, [[1, -1]]),  # only one fully free: -1 fills the gap
        ([[999, 0]], 1, [[-1]]),  # 999 is not a whole GPU
        ([[1000, 1000]], 0, [[]]),  # nothing asked
        ([[0, 1000], [1000, 0]], 1, [[1], [0]]),  # per row
    ],
    ids=["skips-used", "too-few", "none", "zero-count", "per-row"],
)
def test_lowest_free_gpus(
    free_milli: list[list[int]], count: int, expected: list[list[int]]
) -> None:
    assert lowest_free_gpus(np.array(free_milli), count).tolist() == expected


def test_lowest_free_gpus_keeps_its_shape_when_more_are_asked_than_slots() -> None:
    # 2 slots, 3 GPUs asked: two real answers and one -1
    assert lowest_free_gpus(np.array([[1000, 1000]]), 3).tolist() == [[0, 1, -1]]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (cpu_only(1_000), [[], []]),  # no GPU asked: zero columns
        # sharing 400: row 0 tightest is 500 (slot 1); row 1 only slot 0 (1000)
        (sharing(400), [[1], [0]]),
        # whole 1: row 0 slot 0 (1000); row 1 slot 0
        (whole(1), [[0], [0]]),
        # whole 2: row 0 slots 0,2; row 1 has one -> -1
        (whole(2), [[0, 2], [0, -1]]),
    ],
    ids=["cpu-only", "sharing", "whole-1", "whole-2"],
)
def test_choose_gpus(request_: PodRequest, expected: list[list[int]]) -> None:
    free_milli = np.array([[1000, 500, 1000, 300], [1000, 200, 0, 0]])
    chosen = choose_gpus(free_milli, request_)
    assert chosen.shape == (2, request_.gpu_count)
    assert chosen.tolist() == expected


def test_choose_gpus_on_no_rows() -> None:
    empty = np.zeros((0, 4), dtype=np.int64)
    assert choose_gpus(empty, whole(2)).shape == (0, 2)
    assert choose_gpus(empty, sharing(100)).shape == (0, 1)
    assert choose_gpus(empty, cpu_only(1)).shape == (0, 0)


# --- extender_priorities --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        # best 0.9 -> 10; the rest by distance from the worst (0.1) over 0..9:
        #   0.5 -> floor((0.5-0.1)/(0.9-0.1)*10) = floor(5.0) = 5; 0.1 -> 0
        ([0.5, 0.9, 0.1], [5, 10, 0]),
        # a runner-up a hair below the best stays below: floor(0.999*10) = floor(9.99) = 9
        ([1.0, 0.999, 0.0], [10, 9, 0]),
        ([0.7, 0.7, 0.2], [10, 10, 0]),  # tied best: both on top
        ([0.3, 0.3, 0.3], [10, 10, 10]),  # all equal: all on top, no division by zero
        ([0.0], [10]),  # single node
        ([], []),  # empty candidate list
        # within 1e-12 of the best counts as the best (float noise from weighted sums)
        ([0.6, 0.6 - 1e-13, 0.0], [10, 10, 0]),
    ],
    ids=[
        "spread",
        "runner-up-below-top",
        "tied-best",
        "all-equal",
        "single",
        "empty",
        "float-noise",
    ],
)
def test_extender_priorities(score: list[float], expected: list[int]) -> None:
    priorities = extender_priorities(np.array(score, dtype=np.float64))
    assert priorities.dtype == np.int64
    assert priorities.tolist() == expected


@PROPERTY
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_extender_priorities_keep_the_best_strictly_on_top(score: list[float]) -> None:
    values = np.array(score)
    priorities = extender_priorities(values)
    top = values >= values.max() - 1e-12
    assert (priorities[top] == 10).all()
    assert (priorities[~top] < 10).all()
    assert (priorities >= 0).all()
    # never reverses an order: a higher score never gets a lower priority
    order = np.argsort(values, kind="stable")
    assert (np.diff(priorities[order]) >= 0).all()


# --- evaluate -------------------------------------------------------------------------------


def _three_nodes() -> ClusterState:
    # row 0: too small for whole(2); row 1: idle 8-GPU 16 GiB; row 2: half-used 8-GPU 32 GiB
    state = state_of(
        node("small", 1, gpu_memory_mib=16_384),
        node("idle", 8, gpu_memory_mib=16_384),
        node("half", 8, gpu_memory_mib=32_768),
    )
    return set_free(state, 2, [0, 0, 0, 0, 1000, 1000, 1000, 1000], 32_000)


def test_evaluate_scores_feasible_rows_by_the_weighted_mean_of_terms() -> None:
    state = _three_nodes()
    policy = PolicyConfig(weights={"best_fit": 1.0, "memory_fit": 3.0, "fragmentation": 0.0})
    evaluation = evaluate(state, whole(2, 8_000), np.array([2, 0, 1]), policy)
    assert evaluation.rows.tolist() == [2, 1]  # feasible ones, in the order given
    assert [evaluation.gpus_of(i) for i in range(2)] == [(4, 5), (0, 1)]
    assert set(evaluation.terms) == {"best_fit", "memory_fit"}  # zero weight: not computed
    # best_fit: row 2: gpu 4000-2000=2000 of 8000, cpu 32000-8000=24000 of 64000
    #   -> 1-(0.25+0.375)/2 = 0.6875; row 1: 6000/8000, 56000/64000 -> 1-(0.75+0.875)/2
    assert evaluation.terms["best_fit"].tolist() == pytest.approx([0.6875, 0.1875])
    # memory_fit: smallest 16384: row 2 16384/32768 = 0.5; row 1 1
    assert evaluation.terms["memory_fit"].tolist() == pytest.approx([0.5, 1.0])
    # (1*0.6875 + 3*0.5)/4 = 0.546875; (1*0.1875 + 3*1)/4 = 0.796875
    assert evaluation.score.tolist() == pytest.approx([0.546875, 0.796875])
    assert evaluation.best() == 1
    assert evaluation.feasibility.reason_counts() == {"node(s) have fewer than 2 GPUs": 1}


def test_evaluate_with_the_default_policy_stays_in_zero_one() -> None:
    state = _three_nodes()
    evaluation = evaluate(state, sharing(300, 1_000), np.arange(3), PolicyConfig())
    assert set(evaluation.terms) == {"fragmentation", "memory_fit"}
    assert ((evaluation.score >= 0) & (evaluation.score <= 1)).all()
    expected = (
        1.0 * 0.5  # no shape mix: the fragmentation term is neutral
        + 1.0 * memory_fit(_candidates(evaluation, state))
    ) / 2.0
    assert evaluation.score.tolist() == pytest.approx(expected.tolist())


def _candidates(evaluation: Evaluation, state: ClusterState) -> Candidates:
    request_ = evaluation.feasibility.request
    return Candidates(
        state, request_, evaluation.rows, shared_gpu_of(state, request_, evaluation.rows)
    )


@pytest.mark.parametrize(
    "rows",
    [np.zeros(0, dtype=np.int64), np.array([0])],
    ids=["no-candidates", "none-feasible"],
)
def test_evaluate_with_nothing_feasible(rows: np.ndarray) -> None:
    evaluation = evaluate(_three_nodes(), whole(2), rows, PolicyConfig())
    assert evaluation.rows.tolist() == []
    assert evaluation.score.tolist() == []
    assert evaluation.best() is None


def test_best_breaks_ties_by_rank_then_by_input_order() -> None:
    # three identical idle nodes: every score equal
    # (best returns an index into the candidates, rank is indexed by node row)
    state = state_of(node("a"), node("b"), node("c"))
    evaluation = evaluate(state, whole(1), np.array([2, 0, 1]), PolicyConfig())
    assert evaluation.best() == 0  # no rank: first candidate (row 2)
    assert evaluation.best(np.array([2, 0, 1])) == 2  # rank[row 1] = 0 -> candidate 2
    assert evaluation.best(np.array([1, 2, 0])) == 0  # rank[row 2] = 0 -> candidate 0
    assert evaluation.best(np.array([0, 1, 2])) == 1  # rank[row 0] = 0 -> candidate 1


def test_best_takes_a_strictly_higher_score_over_rank() -> None:
    state = set_free(state_of(node("a"), node("b")), 1, [0, 0, 0, 0, 1000, 1000, 1000, 1000])
    policy = PolicyConfig(weights={"best_fit": 1.0})
    evaluation = evaluate(state, whole(1), np.array([0, 1]), policy)
    # row 1 is fuller, so it wins although row 0 ranks first
    assert evaluation.best(np.array([0, 1])) == 1


# --- PolicyConfig ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"best_fitt": 1.0}, "unknown score term 'best_fitt' (known: best_fit, class_placement"),
        ({"best_fit": -1.0}, "weight of 'best_fit' must be >= 0, got -1.0"),
        ({"best_fit": float("nan")}, "Input should be a finite number"),
        ({"best_fit": float("inf")}, "Input should be a finite number"),
        ({"best_fit": 0.0, "memory_fit": 0.0}, "at least one score term needs a positive weight"),
        ({}, "at least one score term needs a positive weight"),
    ],
    ids=["unknown-term", "negative", "nan", "inf", "all-zero", "empty"],
)
def test_policy_config_refuses(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        PolicyConfig(weights=weights)
    assert message in str(error.value)
    assert error.value.errors()[0]["loc"][0] == "weights"


# --- tie tolerance and the stable node order --------------------------------------------------


def _evaluation_with(score: list[float], tolerance: float, names: list[str]) -> Evaluation:
    state = state_of(*(node(name, 1) for name in names))
    policy = PolicyConfig(weights={"best_fit": 1.0}, tie_tolerance=tolerance)
    evaluation = evaluate(state, whole(1), np.arange(len(names)), policy)
    return dataclasses.replace(evaluation, score=np.array(score))


@pytest.mark.parametrize(
    ("score", "tolerance", "rank", "expected"),
    [
        # 0.495 is within 0.01 of 0.5: a tie, and rank 0 (row 1) wins it
        ([0.5, 0.495, 0.3], 0.01, [2, 0, 1], 1),
        # no tolerance: the strictly highest wins whatever the order
        ([0.5, 0.495, 0.3], 0.0, [2, 0, 1], 0),
        # 0.3 is 0.2 below the best: outside a 0.1 tolerance even with the lowest rank
        ([0.5, 0.45, 0.3], 0.1, [1, 2, 0], 0),
    ],
    ids=["near-best-by-rank", "no-tolerance", "outside-tolerance"],
)
def test_best_takes_the_lowest_rank_among_near_best(
    score: list[float], tolerance: float, rank: list[int], expected: int
) -> None:
    evaluation = _evaluation_with(score, tolerance, ["a", "b", "c"])
    assert evaluation.best(np.array(rank)) == expected


def test_best_defaults_to_the_name_order_of_the_state() -> None:
    evaluation = _evaluation_with([0.4, 0.4, 0.4], 0.0, ["a", "b", "c"])
    lowest = int(np.argmin(evaluation.state.tie_break))
    assert evaluation.best() == lowest
    # The order is a function of the names alone: another state with the same names agrees.
    again = state_of(node("c", 1), node("a", 1), node("b", 1))
    assert again.tie_break[again.row_of("a")] == evaluation.state.tie_break[0]


# GPU sizes as GPU Feature Discovery reports them: L4, A10G, A100-40GB, L40S, H100, A100-80GB.
GFD_MEMORY_MIB = (23_034, 23_028, 40_960, 46_068, 81_559, 81_920)


@PROPERTY
@given(
    memory=st.lists(
        st.sampled_from(GFD_MEMORY_MIB) | st.integers(1, 100_000), min_size=2, max_size=6
    ),
    order=st.permutations(range(6)),
)
def test_memory_fit_never_takes_a_larger_gpu_class_when_the_rest_is_equal(
    memory: list[int], order: list[int]
) -> None:
    # Idle nodes alike but for their GPU memory, in any node order: the pod goes to the
    # smallest GPU, or to one within the tie band of it (2%: an H100's 81559 MiB and an
    # A100's 81920 are one class, and the node order picks between them).
    state = state_of(*(node(f"n{i}", 2, gpu_memory_mib=m) for i, m in enumerate(memory)))
    policy = PolicyConfig()
    best = evaluate(state, whole(1), np.arange(len(memory)), policy).best(
        np.array(order[: len(memory)])
    )
    assert best is not None
    assert min(memory) / memory[best] >= 1 - policy.tie_tolerance - 1e-12
    if max(memory) > min(memory) / (1 - policy.tie_tolerance):  # classes apart: never the largest
        assert memory[best] < max(memory)


@pytest.mark.parametrize(
    ("score", "best", "expected"),
    [
        # the chosen best alone gets 10; an equal score lost on order gets 9
        ([0.7, 0.7, 0.2], 1, [9, 10, 0]),
        # all equal: the winner 10, everyone else 9
        ([0.3, 0.3], 0, [10, 9]),
        # a near-best winner below the maximum still gets 10; the maximum 9
        ([0.5, 0.495, 0.1], 1, [9, 10, 0]),
    ],
    ids=["tie-lost-on-order", "all-equal", "near-best-winner"],
)
def test_extender_priorities_with_a_chosen_best(
    score: list[float], best: int, expected: list[int]
) -> None:
    assert extender_priorities(np.array(score), best).tolist() == expected
