"""The FGD baselines and kube-scheduler's NodeResourcesFit, against hand arithmetic and Go.

Hand-built clusters check each rule; a line-by-line transliteration of the
authors' Go plugins (one node at a time, Python floats are float64 like Go's)
checks the vectorised policies on random clusters, decision after decision.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.policies import POLICIES, Choice, PolicyContext, make_policy
from benchmarks.policies.bestfit import best_fit_scores, normalize_scores
from benchmarks.policies.clustering import ClusteringPolicy, class_bases, clustering_scores
from benchmarks.policies.common import (
    NodeAggregates,
    best_fit_gpus,
    dense_rank,
    feasible_mask,
    pick_best,
    trunc_div,
)
from benchmarks.policies.dotprod import dot_product_scores
from benchmarks.policies.kube import (
    Allocatable,
    least_requested_scores,
    most_requested_scores,
    node_resources_fit_scores,
)
from benchmarks.policies.packing import packing_scores
from benchmarks.policies.random import RandomPolicy
from scoring import ClusterState, NodeSpec, PodRequest, check_feasibility
from scoring.gpus import choose_gpus

BASELINES = ["random", "dotprod", "clustering", "packing", "bestfit", "kube-least", "kube-most"]
DETERMINISTIC = [name for name in BASELINES if name != "random"]


# --- builders ------------------------------------------------------------------------


def gpu_node(
    gpus: int = 2, cpu: int = 64_000, memory: int = 262_144, model: str = "T4"
) -> NodeSpec:
    return NodeSpec(
        name="", cpu_milli=cpu, memory_mib=memory, gpu_count=gpus, gpu_model=model if gpus else ""
    )


def make_state(
    *nodes: NodeSpec,
    free: Sequence[Sequence[int]] | None = None,
    cpu_free: Sequence[int] | None = None,
    memory_free: Sequence[int] | None = None,
) -> ClusterState:
    """A fresh state; ``free`` lists each node's free milli per GPU (default: all free)."""
    named = [dataclasses.replace(node, name=f"node-{i}") for i, node in enumerate(nodes)]
    state = ClusterState.from_nodes(named)
    for row, slots in enumerate(free or []):
        state.free_milli[row, : len(slots)] = slots
    if cpu_free is not None:
        state.cpu_free_milli[:] = cpu_free
    if memory_free is not None:
        state.memory_free_mib[:] = memory_free
    return state


def share(milli: int, cpu: int = 4_000, memory: int = 8_192) -> PodRequest:
    return PodRequest(gpu_count=1, milli_per_gpu=milli, cpu_milli=cpu, memory_mib=memory)


def whole(gpus: int, cpu: int = 8_000, memory: int = 16_384) -> PodRequest:
    return PodRequest(gpu_count=gpus, milli_per_gpu=1000, cpu_milli=cpu, memory_mib=memory)


def cpu_only(cpu: int = 8_000, memory: int = 16_384) -> PodRequest:
    return PodRequest(cpu_milli=cpu, memory_mib=memory)


def context(n_nodes: int, rank: Sequence[int] | None = None, seed: int = 0) -> PolicyContext:
    order = np.arange(n_nodes) if rank is None else np.asarray(rank)
    return PolicyContext(rank=order.astype(np.int64), rng=np.random.default_rng(seed), trace=())


def arrays_of(state: ClusterState) -> dict[str, np.ndarray]:
    return {
        field.name: getattr(state, field.name).copy()
        for field in dataclasses.fields(state)
        if isinstance(getattr(state, field.name), np.ndarray)
    }


# --- BestFit -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_free", "gpu_free", "cpu_request", "gpu_request", "expected"),
    [
        # waste 60000/256000 + 1500/16000 = 0.234375 + 0.09375 = 0.328125 -> 67.1875 -> 67
        (64_000, 2_000, 4_000, 500, 67),
        # waste 0.234375 + 800/16000 = 0.284375 -> 71.5625 -> 71
        (64_000, 1_300, 4_000, 500, 71),
        # exact fit: waste 0 -> 100
        (4_000, 500, 4_000, 500, 100),
        # an idle spec-sized node for an empty pod: waste 0.5 + 0.5 -> 0
        (128_000, 8_000, 0, 0, 0),
        # exact 45, but the float is 44.999999999999993 and Go truncates it: 44
        (128_000, 1_800, 8_000, 500, 44),
        # beyond the spec: waste (160000/256000 = 0.625) + 0.5 -> -12.5 truncates to -12
        (160_000, 8_000, 0, 0, -12),
    ],
    ids=[
        "two-free-gpus",
        "partly-used-gpu",
        "exact-fit",
        "idle-spec-node",
        "float-below-45",
        "negative",
    ],
)
def test_best_fit_scores(cpu_free, gpu_free, cpu_request, gpu_request, expected):
    scores = best_fit_scores(np.array([cpu_free]), np.array([gpu_free]), cpu_request, gpu_request)
    assert scores.tolist() == [expected]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # lowest 67, range 33: (71-67)*100//33 = 12, (100-67)*100//33 = 100
        ([67, 71, 100], [0, 12, 100]),
        # all equal: every node MinNodeScore
        ([40, 40], [0, 0]),
        # range 200: 1*100//200 = 0 merges the two lowest, never the top
        ([0, 1, 199, 200], [0, 0, 99, 100]),
    ],
    ids=["spread", "all-equal", "merges-below-the-top"],
)
def test_normalize_scores(raw, expected):
    assert normalize_scores(np.array(raw)).tolist() == expected


@given(st.lists(st.integers(-300, 300), min_size=1, max_size=12))
def test_normalisation_keeps_the_winners(raw):
    scores = np.array(raw)
    normalised = normalize_scores(scores)
    assert ((normalised == normalised.max()) == (scores == scores.max())).all()


@given(st.integers(-200_000, 200_000))
def test_halving_before_or_after_the_division_is_the_same_float(numerator):
    assert numerator / 128_000 * 0.5 == numerator / 256_000
    assert numerator / 8_000 * 0.5 == numerator / 16_000


def test_best_fit_picks_the_fullest_node_and_its_tightest_gpu():
    state = make_state(gpu_node(), gpu_node(), free=[[1000, 1000], [300, 1000]])
    # node 0 scores 67, node 1 (gpu free 1300) scores 71; on node 1 only slot 1 holds 500
    choice = make_policy("bestfit", context(2)).select(state, share(500))
    assert choice == Choice(1, (1,))


# --- DotProd -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_free", "gpu_free", "cpu_request", "gpu_request", "expected"),
    [
        # dot = 0.5*0.03125 + 0.25*0.0625 = 0.03125; 100*(1 - 0.015625) = 98.4375 -> 98
        (64_000, 2_000, 4_000, 500, 98),
        # dot = 1 + 1 = 2: 100*(1 - 1) = 0
        (128_000, 8_000, 128_000, 8_000, 0),
        # CPU-only: dot = 0.5*0.25 = 0.125; 100*(1 - 0.0625) = 93.75 -> 93
        (64_000, 2_000, 32_000, 0, 93),
        # nothing requested: 100
        (64_000, 2_000, 0, 0, 100),
        # exact 66, but the float is 65.999999999999986 and Go truncates it: 65
        (102_400, 7_660, 32_200, 4_000, 65),
    ],
    ids=["share-pod", "full-alignment", "cpu-only", "empty-pod", "float-below-66"],
)
def test_dot_product_scores(cpu_free, gpu_free, cpu_request, gpu_request, expected):
    scores = dot_product_scores(
        np.array([cpu_free]), np.array([gpu_free]), cpu_request, gpu_request
    )
    assert scores.tolist() == [expected]


def test_dot_product_picks_the_least_aligned_node():
    state = make_state(gpu_node(gpus=8), gpu_node(gpus=2), free=[[1000] * 8, [1000, 600]])
    # gpu dot: 8000/8000*500/8000 = 0.0625 on node 0, 1600/8000*0.0625 = 0.0125 on node 1
    # cpu dot equal (0.015625): 100*(1 - 0.0390625) = 96 against 100*(1 - 0.0140625) = 98
    choice = make_policy("dotprod", context(2)).select(state, share(500))
    assert choice == Choice(1, (1,))


# --- GpuPacking ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu_count", "full_gpus", "tightest", "pod", "expected"),
    [
        # case 3, idle 2-GPU node: max(33 - 2, 2) = 31
        (2, 2, 1000, share(500), 31),
        # case 3, idle 8-GPU node: max(33 - 8, 8) = 25
        (8, 8, 1000, whole(2), 25),
        # case 3 beyond 16 GPUs: max(33 - 20, 20) = 20 (Go's cap, not 0)
        (20, 20, 1000, share(500), 20),
        # case 2: the tightest GPU that holds 500 is fully free: max(50 - 1, 33) = 49
        (2, 1, 1000, share(500), 49),
        # case 1: 600 free -> 600*100//1000 = 60 -> 60//10 = 6 -> 100 - 6 = 94
        (2, 1, 600, share(500), 94),
        # case 1: 550 -> 55 -> 5 -> 95
        (2, 1, 550, share(500), 95),
        # case 1: 999 -> 99 -> 9 -> 91
        (2, 0, 999, share(500), 91),
        # case 2 for whole GPUs on a used node: max(50 - 2, 33) = 48
        (4, 3, 1000, whole(2), 48),
        # case 2 floor: max(50 - 8, 33) = 42; max(50 - 20, 33) would be 33
        (16, 8, 1000, whole(8), 42),
        # CPU-only pods score 0
        (2, 2, 1000, cpu_only(), 0),
    ],
    ids=[
        "idle-2gpu",
        "idle-8gpu",
        "idle-20gpu-cap",
        "fresh-gpu-on-used-node",
        "shared-600",
        "shared-550",
        "shared-999",
        "whole-on-used-node",
        "whole-8-on-used-16",
        "cpu-only",
    ],
)
def test_packing_scores(gpu_count, full_gpus, tightest, pod, expected):
    scores = packing_scores(
        np.array([gpu_count]),
        np.array([full_gpus]),
        np.array([tightest]),
        pod.gpu_count,
        pod.is_sharing,
    )
    assert scores.tolist() == [expected]


def test_packing_prefers_a_shared_gpu_then_a_used_node_then_a_small_idle_one():
    state = make_state(
        gpu_node(gpus=2),
        gpu_node(gpus=2),
        gpu_node(gpus=2),
        free=[[1000, 1000], [300, 1000], [1000, 600]],
    )
    policy = make_policy("packing", context(3))
    # 31 (idle), 49 (300 too small: fresh GPU), 94 (shared GPU 600)
    assert policy.select(state, share(500)) == Choice(2, (1,))
    # nothing shared holds 700: 31 (idle) against 49 (used node, fresh GPU)
    assert policy.select(state, share(700)) == Choice(1, (1,))


def test_packing_idle_node_counts_gpus_only():
    # node 0 runs a CPU-only pod but its GPUs are all free: still case 3, max(33 - 2, 2) = 31;
    # node 1 is idle with 4 GPUs: 29
    state = make_state(gpu_node(gpus=2), gpu_node(gpus=4), cpu_free=[8_000, 64_000])
    assert make_policy("packing", context(2)).select(state, share(500)) == Choice(0, (0,))


# --- GpuClustering -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu_free", "hosts", "classes", "expected"),
    [
        # empty 2-GPU node: 25*(8000-2000)//8000 = 18, + 25
        (2_000, False, 0, 43),
        # only this class: 25*6500//8000 = 20, + 75
        (1_500, True, 1, 95),
        # this class and another: 25*7500//8000 = 23, + 50
        (500, True, 2, 73),
        # only another class: 25*7000//8000 = 21, + 0
        (1_000, False, 1, 21),
        # 10 free GPUs: 25*(-2000) = -50000, /8000 = -6.25 truncates to -6 (floor: -7), + 25
        (10_000, False, 0, 19),
    ],
    ids=["empty", "only-this-class", "mixed", "only-other-classes", "beyond-spec"],
)
def test_clustering_scores(gpu_free, hosts, classes, expected):
    scores = clustering_scores(
        np.array([gpu_free]), np.array([hosts]), class_bases(np.array([classes]))
    )
    assert scores.tolist() == [expected]


def test_clustering_groups_pods_of_a_class():
    state = make_state(gpu_node(), gpu_node(), gpu_node())
    policy = ClusteringPolicy(context(3))

    def place(request: PodRequest) -> Choice:
        choice = policy.select(state, request)
        assert choice is not None
        state.place(choice.row, request, choice.gpus)
        policy.placed(state, request, choice)
        return choice

    # all empty: 18 + 25 = 43 each, lowest rank
    assert place(share(500)) == Choice(0, (0,))
    # a 1-GPU pod: node 0 hosts only shares (25*6500//8000 = 20 + 0) against 43
    assert place(whole(1)) == Choice(1, (0,))
    # another share: node 0 (20 + 75 = 95) beats empty node 2 (43) and node 1 (21 + 0)
    assert place(share(300)) == Choice(0, (0,))
    # a CPU-only pod scores 0 everywhere: lowest rank
    assert place(cpu_only()) == Choice(0, ())
    # released: node 1 hosts nothing again and ties with node 2 at 43 (+ free 2000)
    policy.released(state, whole(1), Choice(1, (0,)))
    state.release(1, whole(1), (0,))
    assert policy.select(state, whole(2)) == Choice(1, (0, 1))


# --- kube-scheduler NodeResourcesFit -------------------------------------------------


def kube_node() -> ClusterState:
    # cpu 8000 (2000 used), memory 16384 (none used), 2 GPUs with 500 milli used
    return make_state(
        gpu_node(gpus=2, cpu=8_000, memory=16_384), free=[[1000, 500]], cpu_free=[6_000]
    )


@pytest.mark.parametrize(
    ("policy", "pod", "expected"),
    [
        # least: cpu (8000-4000)*100//8000 = 50, memory (16384-4096)*100//16384 = 75,
        # GPU not requested: skipped -> (50 + 75) // 2 = 62
        ("kube-least", PodRequest(cpu_milli=2_000, memory_mib=4_096), 62),
        # least with the GPU: used 500 + 500 of 2000 -> 50; (50 + 75 + 50) // 3 = 58
        ("kube-least", share(500, cpu=2_000, memory=4_096), 58),
        # most: cpu 4000*100//8000 = 50, memory 4096*100//16384 = 25 -> 75 // 2 = 37
        ("kube-most", PodRequest(cpu_milli=2_000, memory_mib=4_096), 37),
        # most with the GPU: 1000*100//2000 = 50 -> (50 + 25 + 50) // 3 = 41
        ("kube-most", share(500, cpu=2_000, memory=4_096), 41),
    ],
    ids=["least-cpu-pod", "least-gpu-pod", "most-cpu-pod", "most-gpu-pod"],
)
def test_kube_scores(policy, pod, expected):
    state = kube_node()
    nodes = NodeAggregates()
    nodes.refresh(state)
    scorer = least_requested_scores if policy == "kube-least" else most_requested_scores
    requested = [
        state.cpu_capacity_milli - state.cpu_free_milli + pod.cpu_milli,
        state.memory_capacity_mib - state.memory_free_mib + pod.memory_mib,
    ]
    allocatable = [state.cpu_capacity_milli, state.memory_capacity_mib]
    if pod.gpu_milli:
        allocatable.append(state.gpu_count * 1000)
        requested.append(allocatable[-1] - nodes.total_free_milli + pod.gpu_milli)
    scores = node_resources_fit_scores(requested, Allocatable.of(allocatable), scorer)
    assert scores.tolist() == [expected]


@pytest.mark.parametrize(
    ("scorer", "requested", "allocatable", "expected"),
    [
        # allocatable 0 is skipped, weight included: only cpu (1000*100//4000 = 25 / 75)
        (most_requested_scores, [[1_000], [0]], [[4_000], [0]], [25]),
        (least_requested_scores, [[1_000], [0]], [[4_000], [0]], [75]),
        # no resource left: 0
        (least_requested_scores, [[0]], [[0]], [0]),
        # over-requested: least gives 0, most counts it as full (100)
        (least_requested_scores, [[5_000]], [[4_000]], [0]),
        (most_requested_scores, [[5_000]], [[4_000]], [100]),
    ],
    ids=["most-skips-zero", "least-skips-zero", "nothing-left", "least-over", "most-over"],
)
def test_node_resources_fit_guards(scorer, requested, allocatable, expected):
    scores = node_resources_fit_scores(
        [np.array(r) for r in requested], Allocatable.of([np.array(a) for a in allocatable]), scorer
    )
    assert scores.tolist() == expected


def test_kube_least_spreads_and_kube_most_packs():
    state = make_state(gpu_node(cpu=16_000), gpu_node(cpu=16_000), cpu_free=[16_000, 8_000])
    request = cpu_only(cpu=4_000, memory=0)
    assert make_policy("kube-least", context(2)).select(state, request) == Choice(0, ())
    assert make_policy("kube-most", context(2)).select(state, request) == Choice(1, ())


# --- every policy ----------------------------------------------------------------------


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize(
    "pod", [share(500), whole(2), cpu_only()], ids=["share", "whole", "cpu-only"]
)
def test_ties_go_to_the_lowest_rank(name, pod):
    state = make_state(gpu_node(), gpu_node(), gpu_node())
    choice = make_policy(name, context(3, rank=[2, 0, 1])).select(state, pod)
    assert choice is not None
    assert choice.row == 1


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize(
    "pod",
    [
        whole(4),
        share(500, cpu=100_000),
        share(500, memory=300_000),
        PodRequest(gpu_count=1, milli_per_gpu=500, allowed_models=frozenset({"A100"})),
        share(700),
    ],
    ids=["too-many-gpus", "too-much-cpu", "too-much-memory", "wrong-model", "no-gpu-holds-it"],
)
def test_infeasible_gives_none(name, pod):
    state = make_state(gpu_node(), gpu_node(), free=[[600, 0], [0, 300]])
    assert make_policy(name, context(2)).select(state, pod) is None


@pytest.mark.parametrize("name", BASELINES)
def test_select_does_not_modify_the_state(name):
    state = make_state(
        gpu_node(gpus=4), gpu_node(gpus=2), free=[[1000, 400, 0, 1000], [1000, 1000]]
    )
    before = arrays_of(state)
    policy = make_policy(name, context(2))
    for request in [share(300), whole(1), cpu_only(), share(900)]:
        policy.select(state, request)
    after = arrays_of(state)
    assert before.keys() == after.keys()
    for key, array in before.items():
        np.testing.assert_array_equal(array, after[key], err_msg=key)


@pytest.mark.parametrize(
    ("free", "pod", "expected"),
    [
        # tightest GPU holding 500: 600 at slots 1 and 2, the lower index wins
        ([700, 600, 600, 1000], share(500), (1,)),
        # a fully free GPU is the tightest when nothing used holds it
        ([300, 1000, 1000, 0], share(500), (1,)),
        # whole GPUs: the lowest-index fully free ones
        ([1000, 200, 1000, 1000], whole(2), (0, 2)),
        ([1000, 1000], cpu_only(), ()),
    ],
    ids=["tightest-lowest-index", "fresh-gpu", "lowest-free", "cpu-only"],
)
def test_best_fit_gpus(free, pod, expected):
    assert best_fit_gpus(np.array(free), pod) == expected


def test_every_baseline_is_registered():
    assert set(BASELINES) <= POLICIES.keys()


# --- Random --------------------------------------------------------------------------


def test_random_draws_only_feasible_nodes_and_fitting_gpus():
    state = make_state(
        gpu_node(gpus=4),
        gpu_node(gpus=4),
        gpu_node(gpus=4),
        free=[[200, 600, 1000, 0], [100, 100, 100, 100], [500, 0, 0, 0]],
    )
    policy = RandomPolicy(context(3, seed=7))
    seen: Counter[tuple[int, tuple[int, ...]]] = Counter()
    for _ in range(400):
        choice = policy.select(state, share(500))
        assert choice is not None
        seen[(choice.row, choice.gpus)] += 1
    # node 1 cannot hold 500; node 0 offers slots 1 and 2, node 2 slot 0
    assert set(seen) == {(0, (1,)), (0, (2,)), (2, (0,))}
    # uniform over nodes first: about half the draws land on node 2
    assert 150 < seen[(2, (0,))] < 250


def test_random_takes_the_lowest_free_gpus_and_repeats_with_the_seed():
    state = make_state(gpu_node(gpus=4), gpu_node(gpus=4), free=[[0, 1000, 1000, 1000], [1000] * 4])
    draws = [RandomPolicy(context(2, seed=3)).select(state, whole(2)) for _ in range(2)]
    assert draws[0] == draws[1]
    assert draws[0] in (Choice(0, (1, 2)), Choice(1, (0, 1)))


# --- shared helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "rank", "mask", "expected"),
    [
        ([5, 7, 7], [0, 2, 1], [True, True, True], 2),
        ([5, 7, 7], [0, 2, 1], [True, True, False], 1),
        ([5, 7, 7], [0, 1, 1], [True, True, True], 1),  # equal ranks: lower row
        ([5, 7, 7], [0, 1, 2], [False, False, False], None),
    ],
    ids=["tie-to-rank", "masked-out", "equal-ranks", "nothing-feasible"],
)
def test_pick_best(scores, rank, mask, expected):
    assert pick_best(np.array(mask), np.array(scores), dense_rank(np.array(rank))) == expected


@given(st.integers(-(2**53) + 1, 2**53 - 1), st.integers(1, 10**6))
def test_trunc_div_is_go_division(numerator, denominator):
    quotient = abs(numerator) // denominator
    expected = -quotient if numerator < 0 else quotient
    assert trunc_div(np.array([numerator]), denominator).tolist() == [expected]


# --- against a transliteration of the authors' Go code ------------------------------

MAX_SCORE = 100


def go_div(a: int, b: int) -> int:
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


def go_best_fit(cpu_left: int, gpu_left: list[int], cpu: int, gpu_total: int) -> int:
    free_vec, req_vec = [float(cpu_left), float(sum(gpu_left))], [float(cpu), float(gpu_total)]
    spec, weights = [128000.0, 8000.0], [0.5, 0.5]
    score = 0.0
    for i in range(2):
        score += (free_vec[i] - req_vec[i]) / spec[i] * weights[i]
    return int((1.0 - score) * float(MAX_SCORE))


def go_normalize(scores: list[int]) -> list[int]:
    highest, lowest = max(scores), min(scores)
    if highest == lowest:
        return [0] * len(scores)
    return [go_div((s - lowest) * MAX_SCORE, highest - lowest) for s in scores]


def go_dot_product(cpu_left: int, gpu_left: list[int], cpu: int, gpu_total: int) -> int:
    node_vec = [cpu_left / 128000, sum(gpu_left) / 8000]
    pod_vec = [cpu / 128000, gpu_total / 8000]
    inner = 0.0
    for a, b in zip(node_vec, pod_vec, strict=True):
        inner += a * b
    return int(float(MAX_SCORE) * (1 - inner / 2))


def go_packing(gpu_left: list[int], milli: int, count: int) -> int:
    if milli <= 0:
        return 0
    fully_free = sum(1 for left in gpu_left if left == 1000)
    if fully_free == len(gpu_left):
        return max(MAX_SCORE // 3 - fully_free, fully_free)
    needed, fresh, used = count, 0, []
    for idx in sorted(range(len(gpu_left)), key=lambda i: gpu_left[i]):  # stable
        if needed == 0:
            break
        if milli <= gpu_left[idx]:
            needed -= 1
            used.append(idx)
            fresh += gpu_left[idx] == 1000
    assert needed == 0
    if fresh > 0:
        return max(MAX_SCORE // 2 - fresh, MAX_SCORE // 3)
    ratio = sum(gpu_left[g] * 100 // 1000 for g in used)
    return max(MAX_SCORE - ratio // 10, MAX_SCORE // 2)


def affinity_tag(request: PodRequest) -> str:
    if request.gpu_count == 0:
        return "no-gpu"
    if request.gpu_count == 1 and request.milli_per_gpu < 1000:
        return "share-gpu"
    return f"{request.gpu_count}-gpu"


def go_clustering(gpu_left: list[int], affinity: Counter[str], tag: str) -> int:
    if tag == "no-gpu":
        return 0
    fill = go_div(MAX_SCORE // 4 * (8000 - sum(gpu_left)), 8000)
    classes = {c for c, n in affinity.items() if n > 0 and c != "no-gpu"}
    if tag in classes:
        return fill + (MAX_SCORE * 3 // 4 if len(classes) == 1 else MAX_SCORE * 2 // 4)
    return fill + (MAX_SCORE // 4 if not classes else 0)


def kube(strategy: str, resources: list[tuple[int, int, int, bool]]) -> int:
    """resources: (node requested, allocatable, pod request, is extended) per resource."""
    node_score = weight_sum = 0
    for used, allocatable, pod, extended in resources:
        if pod == 0 and extended:
            continue
        requested = used + pod
        if allocatable == 0:
            continue
        if strategy == "least":
            score = 0 if requested > allocatable else (allocatable - requested) * 100 // allocatable
        else:
            score = min(requested, allocatable) * 100 // allocatable
        node_score += score
        weight_sum += 1
    return 0 if weight_sum == 0 else node_score // weight_sum


def go_gpus(gpu_left: list[int], request: PodRequest) -> tuple[int, ...]:
    """``allocateGpuIdBasedOnBestFit``."""
    if request.gpu_count == 0:
        return ()
    if request.milli_per_gpu < 1000:
        candidate = -1
        for idx, left in enumerate(gpu_left):
            if left >= request.milli_per_gpu and (candidate == -1 or left < gpu_left[candidate]):
                candidate = idx
        return (candidate,)
    ids, needed = [], request.gpu_milli
    for idx, left in enumerate(gpu_left):
        if needed <= 0:
            break
        if left == 1000:
            ids.append(idx)
            needed -= 1000
    return tuple(ids)


NodeScore = Callable[[ClusterState, int, PodRequest, dict[int, Counter[str]]], int]


def go_score(name: str) -> NodeScore:
    def score(state: ClusterState, row: int, request: PodRequest, affinity: dict) -> int:
        gpu_left = state.free_milli[row, : state.gpu_count[row]].tolist()
        cpu_left = int(state.cpu_free_milli[row])
        if name == "bestfit":
            return go_best_fit(cpu_left, gpu_left, request.cpu_milli, request.gpu_milli)
        if name == "dotprod":
            return go_dot_product(cpu_left, gpu_left, request.cpu_milli, request.gpu_milli)
        if name == "packing":
            return go_packing(gpu_left, request.milli_per_gpu, request.gpu_count)
        if name == "clustering":
            return go_clustering(gpu_left, affinity.get(row, Counter()), affinity_tag(request))
        cpu_cap, mem_cap = int(state.cpu_capacity_milli[row]), int(state.memory_capacity_mib[row])
        gpu_cap = int(state.gpu_count[row]) * 1000
        return kube(
            name.removeprefix("kube-"),
            [
                (cpu_cap - cpu_left, cpu_cap, request.cpu_milli, False),
                (mem_cap - int(state.memory_free_mib[row]), mem_cap, request.memory_mib, False),
                (gpu_cap - sum(gpu_left), gpu_cap, request.gpu_milli, True),
            ],
        )

    return score


def reference_select(
    name: str,
    state: ClusterState,
    request: PodRequest,
    rank: np.ndarray,
    affinity: dict[int, Counter[str]],
) -> Choice | None:
    rows = check_feasibility(state, request, np.arange(state.n_nodes)).feasible_rows.tolist()
    if not rows:
        return None
    scores = [go_score(name)(state, row, request, affinity) for row in rows]
    if name == "bestfit":
        scores = go_normalize(scores)
    best = max(scores)
    row = min(
        (r for r, s in zip(rows, scores, strict=True) if s == best), key=lambda r: (rank[r], r)
    )
    return Choice(row, go_gpus(state.free_milli[row, : state.gpu_count[row]].tolist(), request))


def random_cluster(rng: np.random.Generator) -> ClusterState:
    nodes = []
    for _ in range(int(rng.integers(1, 10))):
        gpus = int(rng.choice([0, 1, 2, 4, 8, 8, 10]))  # 10 GPUs: beyond the authors' spec
        cpu = int(rng.choice([8, 16, 32, 64, 96, 128, 160])) * 1000
        model = str(rng.choice(["T4", "V100"]))
        nodes.append(
            gpu_node(gpus=gpus, cpu=cpu, memory=int(rng.choice([32, 256])) * 1024, model=model)
        )
    return make_state(*nodes)


def random_request(rng: np.random.Generator) -> PodRequest:
    cpu = int(rng.choice([0, 500, 1_000, 3_152, 8_000, 12_500, 32_000]))
    memory = int(rng.choice([0, 1_024, 16_384, 65_536]))
    models = frozenset({str(rng.choice(["T4", "V100"]))}) if rng.random() < 0.2 else frozenset()
    kind = rng.random()
    if kind < 0.2:
        return PodRequest(cpu_milli=cpu, memory_mib=memory)
    if kind < 0.6:
        milli = int(rng.choice([50, 100, 250, 470, 500, 810, 999, int(rng.integers(1, 1000))]))
        return PodRequest(1, milli, cpu, memory, allowed_models=models)
    gpus = int(rng.choice([1, 1, 2, 4, 8]))
    return PodRequest(gpus, 1000, cpu, memory, allowed_models=models)


@pytest.mark.parametrize(
    ("vectorised", "scalar"),
    [(best_fit_scores, go_best_fit), (dot_product_scores, go_dot_product)],
    ids=["bestfit", "dotprod"],
)
@pytest.mark.parametrize(
    ("cpu_request", "gpu_request"),
    [(0, 0), (4_000, 500), (3_152, 810), (32_000, 0), (11_300, 1_000), (32_200, 4_000)],
    ids=["empty", "share-500", "share-810", "cpu-only", "one-gpu", "four-gpus"],
)
def test_float_scorers_match_go_on_a_grid(vectorised, scalar, cpu_request, gpu_request):
    # Free CPU 0..128000 by 500 and free GPU milli 0..8000 by 50: the truncation is
    # sensitive to the order of float operations, so any reordering shows up here.
    cpu_free = np.repeat(np.arange(cpu_request, 128_001, 500), 161)
    gpu_free = np.tile(np.arange(0, 8_001, 50), len(cpu_free) // 161)
    keep = gpu_free >= gpu_request
    cpu_free, gpu_free = cpu_free[keep], gpu_free[keep]
    expected = [
        scalar(cpu, [gpu], cpu_request, gpu_request)
        for cpu, gpu in zip(cpu_free.tolist(), gpu_free.tolist(), strict=True)
    ]
    assert vectorised(cpu_free, gpu_free, cpu_request, gpu_request).tolist() == expected


@pytest.mark.parametrize("name", DETERMINISTIC)
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_matches_the_go_transliteration_decision_after_decision(name, seed):
    rng = np.random.default_rng(seed)
    state = random_cluster(rng)
    rank = rng.permutation(state.n_nodes).astype(np.int64)
    policy = make_policy(name, PolicyContext(rank=rank, rng=rng, trace=()))
    affinity: dict[int, Counter[str]] = {}
    placed: list[tuple[Choice, PodRequest]] = []
    for _ in range(40):
        request = random_request(rng)
        choice = policy.select(state, request)
        assert choice == reference_select(name, state, request, rank, affinity)
        if choice is None:
            continue
        state.place(choice.row, request, choice.gpus)
        if hasattr(policy, "placed"):
            policy.placed(state, request, choice)
        affinity.setdefault(choice.row, Counter())[affinity_tag(request)] += 1
        placed.append((choice, request))
        if rng.random() < 0.15:  # now and then a pod leaves
            gone, gone_request = placed.pop(int(rng.integers(len(placed))))
            state.release(gone.row, gone_request, gone.gpus)
            if hasattr(policy, "released"):
                policy.released(state, gone_request, gone)
            affinity[gone.row][affinity_tag(gone_request)] -= 1


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_lean_feasibility_and_aggregates_match_the_scoring_core(seed):
    rng = np.random.default_rng(seed)
    state = random_cluster(rng)
    nodes = NodeAggregates()
    rows = np.arange(state.n_nodes)
    for _ in range(30):
        nodes.refresh(state)
        np.testing.assert_array_equal(nodes.total_free_milli, state.free_milli.sum(axis=1))
        np.testing.assert_array_equal(nodes.full_gpus, (state.free_milli >= 1000).sum(axis=1))
        request = random_request(rng)
        mask = feasible_mask(state, request, nodes)
        np.testing.assert_array_equal(mask, check_feasibility(state, request, rows).mask)
        feasible = np.flatnonzero(mask)
        if len(feasible) == 0:
            continue
        row = int(rng.choice(feasible))
        gpus = best_fit_gpus(state.free_milli[row], request)
        assert gpus == tuple(choose_gpus(state.free_milli[row : row + 1], request)[0].tolist())
        state.place(row, request, gpus)
