"""IncrementalEvaluator (scoring/incremental.py): always the answer evaluate gives."""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import numpy as np
import pytest
from builders import (
    PROPERTY,
    clusters,
    node,
    requests,
    set_free,
    shape_table,
    shape_tables,
    state_of,
    whole,
)
from hypothesis import given
from hypothesis import strategies as st

from scoring import (
    SPOT,
    ClusterState,
    Evaluation,
    FragmentAggregates,
    PodClass,
    PodRequest,
    PolicyConfig,
    ShapeTable,
    evaluate,
)
from scoring.feasibility import CheckKind
from scoring.incremental import IncrementalEvaluator, Scored
from scoring.terms import TERMS

# Every term weighted, so that each is held to being a function of its node's row.
EVERY_TERM = PolicyConfig(weights=dict.fromkeys(TERMS, 1.0))


def assert_same(got: Evaluation, expected: Evaluation) -> None:
    assert np.array_equal(got.rows, expected.rows)
    assert np.array_equal(got.feasibility.mask, expected.feasibility.mask)
    assert np.array_equal(got.feasibility.failed_check, expected.feasibility.failed_check)
    assert [kind for kind, _ in got.feasibility.checks] == [
        kind for kind, _ in expected.feasibility.checks
    ]
    for (_, passed), (_, want) in zip(
        got.feasibility.checks, expected.feasibility.checks, strict=True
    ):
        assert np.array_equal(passed, want)
    assert got.terms.keys() == expected.terms.keys()
    for name, values in expected.terms.items():
        assert np.array_equal(got.terms[name], values), name
    assert np.array_equal(got.score, expected.score)  # the same floats, not nearly
    assert got.tie_tolerance == expected.tie_tolerance
    assert got.best() == expected.best()


# The same resources asked for by pods of other teams, classes and priorities.
_OWNERS = st.tuples(
    st.sampled_from(["", "a", "b"]),
    st.sampled_from(list(PodClass)),
    st.booleans(),
    st.sampled_from([0, 100]),
)


@PROPERTY
@given(
    state=clusters(min_nodes=2, max_nodes=12),
    tables=st.lists(st.none() | shape_tables(), min_size=1, max_size=2),
    asks=st.lists(requests(), min_size=1, max_size=2),
    owners=st.lists(_OWNERS, min_size=1, max_size=3),
    policy=st.sampled_from([EVERY_TERM, PolicyConfig()]),
    steps=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.booleans(),
            st.booleans(),
            st.integers(0, 1),
            st.booleans(),
            st.integers(0, 3),
        ),
        max_size=12,
    ),
)
def test_every_answer_is_evaluates(
    state: ClusterState,
    tables: list[ShapeTable | None],
    asks: list[PodRequest],
    owners: list[tuple[str, PodClass, bool, int]],
    policy: PolicyConfig,
    steps: list[tuple[int, bool, bool, int, bool, int]],
) -> None:
    # The shape mix the service learns is replaced now and then (every 50 arrivals).
    mixes = [None if t is None else FragmentAggregates(t, cpu_stranding=True) for t in tables]
    pods = [
        replace(ask, team=team, pod_class=pod_class, preemptible=preemptible, priority=priority)
        for ask in asks
        for team, pod_class, preemptible, priority in owners
    ]
    every = np.arange(state.n_nodes)
    incremental = IncrementalEvaluator()
    kept: list[tuple[Evaluation, Evaluation]] = []
    later: list[tuple[Scored, Evaluation]] = []
    for step, (index, place, over_share, mix, look_now, asked) in enumerate(steps):
        request, fragments = pods[index % len(pods)], mixes[mix % len(mixes)]
        # The nodes asked about: all in order, or (as kube-scheduler sends them) in
        # another order, or some of them.
        order = np.random.default_rng([step, asked]).permutation(state.n_nodes)
        rows = (every, order, order[: max(1, state.n_nodes // 2)], order[:1])[asked]
        if over_share:  # what reclaim_cost reads: a change of it is a change of every row
            state.over_share_teams = state.over_share_teams ^ {request.team}
        scored = incremental.score(state, request, rows, policy, fragments)
        expected = evaluate(state, request, rows, policy, fragments)
        # What a decision reads is there at once ...
        assert np.array_equal(scored.mask, expected.feasibility.mask)
        assert np.array_equal(scored.score[scored.mask], expected.score)
        assert scored.tie_tolerance == expected.tie_tolerance
        if look_now:
            assert_same_reading(scored, expected)
            got = scored.evaluation
            assert got.request == request
            assert_same(got, expected)
            kept.append((got, expected))
        else:  # ... and the rest is made later, after the state has moved on
            later.append((scored, expected))
        best = expected.best()
        if place and best is not None:
            state.place(int(expected.rows[best]), request, expected.gpus_of(best))
    for scored, expected in later:
        assert_same_reading(scored, expected)
        assert scored.evaluation.request == scored.request
        assert_same(scored.evaluation, expected)
    # Evaluations handed out are never patched in place.
    for got, expected in kept:
        assert_same_arrays_as(got, expected)


def assert_same_reading(scored: Scored, expected: Evaluation) -> None:
    """What the service reads of an answer without making its Evaluation: the count of
    candidates failing each check, and the terms of some that fit."""
    failed_check = expected.feasibility.failed_check
    assert scored.failed_counts.tolist() == [
        int(np.count_nonzero(failed_check == kind)) for kind in range(len(CheckKind))
    ]
    fitting = np.flatnonzero(scored.mask)
    at = np.arange(len(fitting))[::-1]  # every one that fits, in another order
    got = scored.terms_at(fitting[at])
    assert list(got) == list(expected.terms)
    for name, values in expected.terms.items():
        assert np.array_equal(got[name], values[at]), name


def assert_same_arrays_as(got: Evaluation, expected: Evaluation) -> None:
    assert np.array_equal(got.score, expected.score)
    assert np.array_equal(got.feasibility.mask, expected.feasibility.mask)
    for name, values in expected.terms.items():
        assert np.array_equal(got.terms[name], values)


def test_only_changed_rows_are_evaluated_again() -> None:
    state = state_of(*(node(f"n{i}", 8) for i in range(8)))
    rows = np.arange(8)
    incremental = IncrementalEvaluator()
    request, policy = whole(2, 4_000), PolicyConfig()
    first = incremental.evaluate(state, request, rows, policy)
    assert incremental.evaluate(state, request, rows, policy) is first
    state.place(3, request, (0, 1))
    patched = incremental.evaluate(state, request, rows, policy)
    assert patched is not first and incremental.patched == 2
    assert_same(patched, evaluate(state, request, rows, policy))
    # kube-scheduler sends the nodes in another order every cycle, and fewer as they
    # fill: the same entry answers, at the nodes asked about.
    for asked in (rows.copy(), rows[::-1].copy(), np.array([6, 3, 1])):
        assert_same(
            incremental.evaluate(state, request, asked, policy),
            evaluate(state, request, asked, policy),
        )
    assert incremental.patched == 5


@pytest.mark.parametrize(
    ("min_gpu_memory_mib", "asked", "fit"),
    [
        # The large GPUs alone: the smallest among them is the floor, not the cluster's.
        (0, [2, 1], [1.0, 1.0]),
        # A 16 GiB GPU asked about does not hold a 20 GiB pod: the floor is 32 GiB.
        (20_000, [0, 1], [1.0]),
        # Every node but the smallest: the floor is 24,000 MiB.
        (0, [3, 2, 1], [1.0, 24_000 / 32_768, 24_000 / 32_768]),
    ],
)
def test_memory_fit_divides_by_the_smallest_gpu_among_the_nodes_asked_about(
    min_gpu_memory_mib: int, asked: list[int], fit: list[float]
) -> None:
    state = state_of(
        node("small", 8, gpu_memory_mib=16_384),
        node("big", 8, gpu_memory_mib=32_768),
        node("big-2", 8, gpu_memory_mib=32_768),
        node("mid", 8, gpu_memory_mib=24_000),
    )
    request = whole(1, 1_000, min_gpu_memory_mib=min_gpu_memory_mib)
    policy = PolicyConfig()
    incremental = IncrementalEvaluator()
    everything = incremental.score(state, request, np.arange(4), policy)
    assert everything.terms_at(np.array([1]))["memory_fit"][0] < 1.0  # the cluster's floor
    scored = incremental.score(state, request, np.array(asked), policy)
    expected = evaluate(state, request, np.array(asked), policy)
    assert expected.terms["memory_fit"].tolist() == fit
    assert np.array_equal(scored.score[scored.mask], expected.score)
    assert scored.terms_at(np.flatnonzero(scored.mask))["memory_fit"].tolist() == fit
    assert_same(scored.evaluation, expected)
    assert incremental.patched == 1


def test_many_changed_rows_and_a_new_policy_evaluate_afresh() -> None:
    state = state_of(*(node(f"n{i}", 8) for i in range(8)))
    rows = np.arange(8)
    incremental = IncrementalEvaluator()
    request, policy = whole(1, 1_000), PolicyConfig()
    incremental.evaluate(state, request, rows, policy)
    for row in range(3):  # 3 of 8 changed: more than a quarter
        state.place(row, request, (0,))
    incremental.evaluate(state, request, rows, policy)
    assert incremental.patched == 0
    incremental.evaluate(state, request, rows, PolicyConfig(tie_tolerance=0.5))
    assert incremental.patched == 0


def test_it_remembers_a_bounded_number_of_requests() -> None:
    state = state_of(*(node(f"n{i}", 8) for i in range(4)))
    rows = np.arange(4)
    incremental = IncrementalEvaluator(size=2)
    policy = PolicyConfig()
    for cpu in (1_000, 2_000, 3_000):
        incremental.evaluate(state, whole(1, cpu), rows, policy)
    incremental.evaluate(state, whole(1, 1_000), rows, policy)  # the oldest was dropped
    incremental.evaluate(state, whole(1, 3_000), rows, policy)  # still there
    assert incremental.patched == 1


def test_pods_share_an_evaluation_only_when_no_weighted_term_tells_them_apart() -> None:
    state = state_of(node("spot", 8, capacity_type=SPOT), node("on-demand", 8), node("other", 8))
    rows = np.arange(3)
    batch = whole(1, 1_000)
    interactive = replace(batch, team="b", pod_class=PodClass.INTERACTIVE)
    by_class = PolicyConfig(weights={"fragmentation": 1.0, "class_placement": 1.0})
    for policy, shared in ((PolicyConfig(), 1), (by_class, 0)):
        incremental = IncrementalEvaluator()
        incremental.evaluate(state, batch, rows, policy)
        got = incremental.evaluate(state, interactive, rows, policy)
        assert incremental.patched == shared
        assert_same(got, evaluate(state, interactive, rows, policy))


def test_a_new_shape_mix_takes_the_fragmentation_term_again_and_keeps_the_rest() -> None:
    state = state_of(*(node(f"n{i}", 8) for i in range(6)))
    set_free(state, 1, [0, 0, 1000, 1000, 1000, 1000, 1000, 1000])
    rows = np.arange(6)
    eight = FragmentAggregates(shape_table((0, 1000, 8, (), 1.0)))
    two = FragmentAggregates(shape_table((0, 1000, 2, (), 1.0)))
    incremental, policy, request = IncrementalEvaluator(), PolicyConfig(), whole(1, 1_000)
    first = incremental.evaluate(state, request, rows, policy, eight)
    got = incremental.evaluate(state, request, rows, policy, two)
    assert incremental.patched == 1
    assert_same(got, evaluate(state, request, rows, policy, two))
    assert not np.array_equal(got.terms["fragmentation"], first.terms["fragmentation"])


@pytest.mark.parametrize(("weights", "patched"), [({"fragmentation": 1.0}, 1), (None, 0)])
def test_the_over_share_teams_matter_only_to_a_term_that_reads_them(
    weights: dict[str, float] | None, patched: int
) -> None:
    state = state_of(*(node(f"n{i}", 8) for i in range(4)))
    rows, request = np.arange(4), whole(1, 1_000)
    policy = EVERY_TERM if weights is None else PolicyConfig(weights=weights)
    incremental = IncrementalEvaluator()
    incremental.evaluate(state, request, rows, policy)
    state.over_share_teams = frozenset({"team-z"})
    got = incremental.evaluate(state, request, rows, policy)
    assert incremental.patched == patched
    assert_same(got, evaluate(state, request, rows, policy))


def test_it_holds_on_to_no_replaced_state_or_shape_mix() -> None:
    def cluster() -> ClusterState:
        return state_of(*(node(f"n{i}", 8) for i in range(4)))

    rows, request, policy = np.arange(4), whole(1, 1_000), PolicyConfig()
    incremental = IncrementalEvaluator()
    old_state, old_mix = cluster(), FragmentAggregates(shape_table((0, 1000, 2, (), 1.0)))
    incremental.evaluate(old_state, request, rows, policy, old_mix)
    state = cluster()
    incremental.evaluate(state, whole(2, 1_000), rows, policy, old_mix)
    mix = FragmentAggregates(shape_table((0, 1000, 4, (), 1.0)))
    incremental.evaluate(state, request, rows, policy, mix)
    gone = weakref.ref(old_state), weakref.ref(old_mix)
    del old_state, old_mix
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


@pytest.mark.parametrize("above", [0, 8])
def test_entries_left_incomplete_let_go_of_a_replaced_shape_mix(above: int) -> None:
    # The service completes an entry after an answer only once enough changed since
    # (``above``); one patched under a mix that has been replaced is completed anyway,
    # and holds that mix no longer.
    state = state_of(*(node(f"n{i}", 8) for i in range(40)))
    rows, policy = np.arange(40), PolicyConfig()
    shapes = [whole(1, 1_000), whole(2, 1_000)]
    incremental = IncrementalEvaluator()
    old_mix = FragmentAggregates(shape_table((0, 1000, 2, (), 1.0)))
    for row, request in enumerate(shapes * 2):  # the second round patches changed rows in
        incremental.score(state, request, rows, policy, old_mix)
        state.place(row, whole(1, 1_000), (0,))
    incremental.complete(above=above)
    kept = [type(entry).__name__ for entry in incremental._entries.values()]
    # A new mix in force: the last decision's.
    mix = FragmentAggregates(shape_table((0, 1000, 4, (), 1.0)))
    incremental.score(state, whole(4, 1_000), rows, policy, mix)
    incremental.complete(above=above)
    gone = weakref.ref(old_mix)
    del old_mix
    gc.collect()
    assert gone() is None
    assert kept == (["_Columns", "_Columns"] if above == 0 else ["_Quick", "_Quick"])
    for request in shapes:
        assert_same(
            incremental.evaluate(state, request, rows, policy, mix),
            evaluate(state, request, rows, policy, mix),
        )


def test_a_shape_mix_that_is_gone_is_not_taken_for_no_mix() -> None:
    state = state_of(*(node(f"n{i}", 8) for i in range(6)))
    set_free(state, 1, [0, 0, 1000, 1000, 1000, 1000, 1000, 1000])
    rows, request, policy = np.arange(6), whole(1, 1_000), PolicyConfig()
    incremental = IncrementalEvaluator()
    mix = FragmentAggregates(shape_table((0, 1000, 8, (), 1.0)))
    incremental.evaluate(state, request, rows, policy, mix)
    del mix
    gc.collect()
    assert_same(
        incremental.evaluate(state, request, rows, policy), evaluate(state, request, rows, policy)
    )


def test_memory_fit_follows_the_smallest_gpu_that_fits_as_it_fills_and_drains() -> None:
    # 24, 48 and 80 GiB GPUs and one of unknown memory, two GPUs a node, 20 nodes:
    # one pod changes one node, well under the share that is evaluated afresh.
    sizes = [24_576, 49_152, 81_920, 0]
    state = state_of(*(node(f"n{i}", 2, gpu_memory_mib=sizes[i % 4]) for i in range(20)))
    rows = np.arange(state.n_nodes)
    incremental = IncrementalEvaluator()
    request, policy = whole(2, 1_000), PolicyConfig()
    smallest_seen, placed = [], []
    # Fill every node by the policy's own choice, then drain in reverse.
    while (evaluation := incremental.evaluate(state, request, rows, policy)).best() is not None:
        assert_same(evaluation, evaluate(state, request, rows, policy))
        fit = evaluation.terms["memory_fit"]
        smallest_seen.append(int(evaluation.rows[fit == 1.0][0]))
        row = int(evaluation.rows[evaluation.best()])
        state.place(row, request, (0, 1))
        placed.append(row)
    for row in reversed(placed):
        state.release(row, request, (0, 1))
        evaluation = incremental.evaluate(state, request, rows, policy)
        assert_same(evaluation, evaluate(state, request, rows, policy))
    assert incremental.patched == 2 * len(placed)  # never evaluated afresh
    # Memory fit took the 24 GiB nodes first: the smallest size that fits moved up.
    assert {sizes[row % 4] for row in smallest_seen} >= {24_576, 49_152}


def test_an_evaluation_made_later_is_that_of_the_state_at_the_call() -> None:
    # The service reads the whole evaluation after its answer, when later pods may have
    # been counted on the same nodes: what it reads must not have moved with them.
    state = state_of(*(node(f"n{i}", 8, cpu_milli=64_000) for i in range(8)))
    rows, request = np.arange(8), whole(1, 4_000)
    incremental = IncrementalEvaluator()
    later = []
    for _ in range(5):
        later.append(
            (
                incremental.score(state, request, rows, EVERY_TERM),
                evaluate(state, request, rows, EVERY_TERM),
            )
        )
        state.place(5, request, (len(later) - 1,))
    assert [type(scored.entry).__name__ for scored, _ in later] == ["_Columns"] + ["_Quick"] * 4
    for scored, expected in later:
        assert_same_reading(scored, expected)
        assert_same(scored.evaluation, expected)
    assert len({float(expected.score[5]) for _, expected in later}) > 1  # node 5 did move


def test_answers_never_read_in_full_do_not_pile_up() -> None:
    # A caller that only ever decides (never reads an evaluation in full) patches the
    # same entry again and again: completing the last is one step, however many came.
    state = state_of(*(node(f"n{i}", 8) for i in range(40)))
    rows, request = np.arange(40), whole(1, 1_000)
    incremental = IncrementalEvaluator()
    for i in range(400):
        scored = incremental.score(state, request, rows, EVERY_TERM)
        row = i // 2 % 40
        (state.place if i % 2 == 0 else state.release)(row, request, (0,))
    scored = incremental.score(state, request, rows, EVERY_TERM)
    assert_same(scored.evaluation, evaluate(state, request, rows, EVERY_TERM))


def test_an_entry_brought_ahead_to_the_next_mix_waits_for_it() -> None:
    # The service brings its entries to the next shape mix before a new pod puts it in
    # force; a pod filtered again meanwhile still decides with the mix in force, and
    # neither undoes the other.
    state = state_of(*(node(f"n{i}", 8) for i in range(6)))
    set_free(state, 1, [0, 0, 1000, 1000, 1000, 1000, 1000, 1000])
    rows, request, policy = np.arange(6), whole(1, 1_000), PolicyConfig()
    now = FragmentAggregates(shape_table((0, 1000, 8, (), 1.0)))
    upcoming = FragmentAggregates(shape_table((0, 1000, 2, (), 1.0)))
    incremental = IncrementalEvaluator()
    incremental.score(state, request, rows, policy, now)
    assert incremental.warm(state, policy, upcoming) == 1
    retried = incremental.score(state, request, rows, policy, now)
    assert_same(retried.evaluation, evaluate(state, request, rows, policy, now))
    assert incremental.warm(state, policy, upcoming) == 0  # still ahead: nothing to redo
    state.place(3, request, (0,))
    arrived = incremental.score(state, request, rows, policy, upcoming)
    assert_same(arrived.evaluation, evaluate(state, request, rows, policy, upcoming))
    assert incremental.warm(state, policy, upcoming) == 0
