"""ShapeLearner and OnlineFragments (scoring/shapes.py): the shape mix learned from arrivals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import cpu_only, sharing, whole
from pydantic import ValidationError

from scoring import OnlineFragments, PodRequest, ShapeLearner, ShapeLearning
from scoring.shapes import shape_of

NO_DECAY = math.inf  # 2 ** (1/inf) = 1: every arrival counts 1, exactly

A = sharing(500, 4_000)
B = whole(1, 8_000)
C = cpu_only(2_000)
D = whole(8, 32_000)
SHAPES = (A, B, C, D)


def learner_after(arrivals: list[PodRequest], half_life_pods: float) -> ShapeLearner:
    learner = ShapeLearner(half_life_pods)
    for request in arrivals:
        learner.observe(request)
    return learner


def popularity_vector(learner: ShapeLearner) -> np.ndarray:
    popularity = learner.popularity()
    return np.array([popularity.get(shape_of(request), 0.0) for request in SHAPES])


def test_shape_of_is_what_fragments_are_computed_from() -> None:
    request = sharing(300, 1_000, 2_048, models=["A"])
    # Host memory plays no part; the minimum GPU memory does (0 here: none asked).
    assert shape_of(request) == (1_000, 300, 1, frozenset({"A"}), 0)
    needs_memory = whole(1, 4_000, 0, min_gpu_memory_mib=40 * 1024)
    assert shape_of(needs_memory) == (4_000, 1_000, 1, frozenset(), 40 * 1024)


def test_no_data() -> None:
    learner = ShapeLearner(100.0)
    assert learner.popularity() == {}
    assert learner.table(0.95) is None
    assert learner.observed == 0


@pytest.mark.parametrize(
    ("arrivals", "half_life", "expected"),
    [
        ([A], 10.0, {A: 1.0}),
        # increments 1, 2 (doubling per half-life of 1): A 1/3, B 2/3
        ([A, B], 1.0, {A: 1 / 3, B: 2 / 3}),
        # increments 1, 2, 4: A 1+2 = 3, B 4 -> 3/7, 4/7
        ([A, A, B], 1.0, {A: 3 / 7, B: 4 / 7}),
        # half-life 2: increments 1, sqrt 2 -> A 1/(1+1.41421) = 0.41421
        ([A, B], 2.0, {A: 1 / (1 + math.sqrt(2)), B: math.sqrt(2) / (1 + math.sqrt(2))}),
        # no decay: plain frequencies 2/4, 1/4, 1/4
        ([A, C, A, D], NO_DECAY, {A: 0.5, C: 0.25, D: 0.25}),
    ],
    ids=["one-shape", "half-life-1", "three-arrivals", "half-life-2", "no-decay"],
)
def test_popularity(
    arrivals: list[PodRequest], half_life: float, expected: dict[PodRequest, float]
) -> None:
    popularity = learner_after(arrivals, half_life).popularity()
    assert popularity == pytest.approx({shape_of(r): share for r, share in expected.items()})


def test_rescaling_keeps_the_mix_and_stays_finite() -> None:
    # half-life 1 doubles the increment per arrival: 2**1100 would overflow a float without
    # the periodic rescale. A 1100 times, then B once: B's count 2**1100 equals A's
    # 2**0 + ... + 2**1099 = 2**1100 - 1, so B holds half.
    learner = learner_after([A] * 1_100 + [B], 1.0)
    popularity = learner.popularity()
    assert learner.observed == 1_101
    assert popularity[shape_of(B)] == pytest.approx(0.5, rel=1e-9)
    assert popularity[shape_of(A)] == pytest.approx(0.5, rel=1e-9)


def _draw(rng: np.random.Generator, mix: list[float], n: int) -> list[PodRequest]:
    return [SHAPES[i] for i in rng.choice(len(SHAPES), size=n, p=mix)]


def test_converges_to_a_stationary_mix() -> None:
    mix = [0.5, 0.3, 0.15, 0.05]
    rng = np.random.default_rng(7)
    learner = learner_after(_draw(rng, mix, 20_000), 2_000.0)
    # decayed counts weigh the last ~2 x 2000 / ln 2 = 5770 arrivals: std of 0.5 is ~0.007
    np.testing.assert_allclose(popularity_vector(learner), mix, atol=0.03)


def test_follows_a_change_of_mix() -> None:
    old, new = [0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]
    rng = np.random.default_rng(11)
    half_life = 1_000.0
    learner = learner_after(_draw(rng, old, 10_000), half_life)
    assert popularity_vector(learner).argmax() == 0  # A leads the old mix

    for request in _draw(rng, new, 1_000):  # one half-life: the two mixes weigh alike
        learner.observe(request)
    np.testing.assert_allclose(
        popularity_vector(learner), 0.5 * np.array(old) + 0.5 * np.array(new), atol=0.04
    )

    for request in _draw(rng, new, 4_000):  # five half-lives in all: old weighs 2**-5 = 3%
        learner.observe(request)
    popularity = popularity_vector(learner)
    np.testing.assert_allclose(popularity, new, atol=0.04)
    assert popularity.argmax() == 3  # D leads now
    assert popularity[0] < 0.1


@pytest.mark.parametrize(
    ("coverage", "kept", "weights"),
    [
        # popularity A 0.5, B 0.3, C 0.2 (5, 3, 2 of 10 arrivals)
        (0.45, [A], [1.0]),  # 0.5 >= 0.45 after A
        (0.5, [A], [1.0]),  # exactly covered by A
        (0.7, [A, B], [0.625, 0.375]),  # 0.5 < 0.7, 0.8 >= 0.7; renormalised 0.5/0.8, 0.3/0.8
        (0.95, [A, B, C], [0.5, 0.3, 0.2]),
        (1.0, [A, B, C], [0.5, 0.3, 0.2]),
    ],
    ids=["below-first", "exactly-first", "two", "most", "all"],
)
def test_coverage_keeps_the_most_popular_shapes(
    coverage: float, kept: list[PodRequest], weights: list[float]
) -> None:
    learner = learner_after([C, A, B, A, C, B, A, A, B, A], NO_DECAY)
    table = learner.table(coverage)
    assert table is not None
    assert table.cpu_milli.tolist() == [r.cpu_milli for r in kept]
    assert table.milli_per_gpu.tolist() == [r.milli_per_gpu for r in kept]
    assert table.gpu_count.tolist() == [r.gpu_count for r in kept]
    assert table.weight.tolist() == pytest.approx(weights)


@pytest.mark.parametrize(
    ("gpu_coverage", "kept_gpus"),
    [
        # 17 A (500 milli), 2 B (1 GPU), 1 D (8 GPUs) of 20 arrivals.  By pods, 0.95 keeps
        # A, B (0.85, then 0.95).  GPUs asked for: A 17 x 500 = 8500, B 2000, D 8000 of
        # 18500: A 46%, D 43%, B 11%.
        (0.0, [1, 1]),  # by pods alone: D (5% of pods) is dropped
        (0.4, [1, 1]),  # A's 46% of the GPUs covers 0.4 already
        (0.5, [1, 1, 8]),  # A 46% < 0.5, then D: kept although rare
        (1.0, [1, 1, 8]),
    ],
    ids=["pods-only", "first-consumer-enough", "second-consumer", "all-gpus"],
)
def test_gpu_coverage_keeps_rare_shapes_that_ask_for_many_gpus(
    gpu_coverage: float, kept_gpus: list[int]
) -> None:
    learner = learner_after([A] * 17 + [B] * 2 + [D], NO_DECAY)
    table = learner.table(0.95, gpu_coverage)
    assert table is not None
    # Most popular first, weights renormalised over the shapes kept (by pods).
    assert table.gpu_count.tolist() == kept_gpus
    shares = [17, 2, 1][: len(kept_gpus)]
    assert table.weight.tolist() == pytest.approx([n / sum(shares) for n in shares])


def test_equal_popularity_is_ordered_by_the_shape_values() -> None:
    # A (4000 CPU) arrived first, B (8000 CPU) second; equal counts: as in FGD's
    # typical shapes, the larger values lead, whatever the arrival order
    table = learner_after([A, B], NO_DECAY).table(0.5)
    assert table is not None
    assert table.cpu_milli.tolist() == [8_000]


def test_online_fragments_rebuild_the_table_every_refresh_period() -> None:
    fragments = OnlineFragments(
        ShapeLearning(half_life_pods=NO_DECAY, coverage=1.0, refresh_every_pods=3)
    )
    assert fragments.aggregates is None  # nothing seen: the fragmentation term stays neutral
    fragments.observe(A)
    assert fragments.aggregates is None  # a table is built from the arrivals before one
    fragments.observe(B)
    first = fragments.aggregates
    assert first is not None and first.shapes.n_shapes == 1  # A's alone
    fragments.observe(B)
    fragments.observe(B)
    assert fragments.aggregates is first  # 3 arrivals since the build, not yet rebuilt
    fragments.observe(B)  # the next arrival rebuilds it first
    assert fragments.aggregates is not first
    assert fragments.aggregates.shapes.n_shapes == 2
    # A 1 of 4, B 3 of 4; B leads
    assert fragments.aggregates.shapes.weight.tolist() == pytest.approx([0.75, 0.25])


def test_a_table_built_ahead_is_the_one_the_next_arrival_puts_in_force() -> None:
    # The service builds it after its answer: the aggregates in force stay until the
    # next arrival, which decides with what it would have built itself.
    def fed(*arrivals: PodRequest) -> OnlineFragments:
        fragments = OnlineFragments(
            ShapeLearning(half_life_pods=NO_DECAY, coverage=1.0, refresh_every_pods=2)
        )
        for arrival in arrivals:
            fragments.observe(arrival)
        return fragments

    early = fed(A, B, B, B, B)  # rebuilt at the 2nd and 4th: due again
    in_force = early.aggregates
    assert early.upcoming is in_force  # nothing built ahead yet
    early.prepare()
    ahead = early.upcoming
    assert ahead is not in_force and early.aggregates is in_force
    early.prepare()
    assert early.upcoming is ahead  # built once
    early.observe(A)
    assert early.aggregates is ahead
    late = fed(A, B, B, B, B, A)
    assert late.aggregates is not None and ahead is not None
    assert late.aggregates.shapes.weight.tolist() == ahead.shapes.weight.tolist()
    early.prepare()  # not due: nothing built
    assert early.upcoming is ahead


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("half_life_pods", 0.0),
        ("coverage", 0.0),
        ("coverage", 1.5),
        ("refresh_every_pods", 0),
        ("unknown_field", 1),
    ],
    ids=["half-life-zero", "coverage-zero", "coverage-above-one", "refresh-zero", "extra-field"],
)
def test_shape_learning_refuses(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as error:
        ShapeLearning(**{field: value})
    assert error.value.errors()[0]["loc"] == (field,)
