"""Synthetic fleets and workloads (benchmarks/synthetic.py): specs, proportions, determinism."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from builders import state_of

import benchmarks.synthetic
from benchmarks.synthetic import (
    FP8_PRODUCTS,
    NODE_TYPES,
    SHAPES,
    WORKLOADS,
    FleetSpec,
    SpecError,
    SyntheticWorkload,
    WorkloadSpec,
    allocatable,
    fleet_from_spec,
    make_fleet,
    node_labels,
    node_type_counts,
    parse_fleet_spec,
    parse_workload_spec,
    shape_weights,
)
from scoring import ON_DEMAND, SPOT, PodClass, check_feasibility

MIX = "h100x8:0.3,a100x8:0.3,l40sx4:0.2,l4x1:0.2"

# --- fleet specs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"synthetic:nodes=2000,mix={MIX}",
            FleetSpec(2000, (("h100x8", 0.3), ("a100x8", 0.3), ("l40sx4", 0.2), ("l4x1", 0.2))),
        ),
        # relative weights: 3 and 1 -> 0.75 and 0.25
        (
            "synthetic:nodes=10,mix=a10gx1:3,a10gx4:1",
            FleetSpec(10, (("a10gx1", 0.75), ("a10gx4", 0.25))),
        ),
        # a type without a weight weighs 1; options after the mix end it
        ("synthetic:nodes=5,mix=l4x1,spot=0.5,seed=3", FleetSpec(5, (("l4x1", 1.0),), 0.5, 3)),
        # options before the mix, spaces around parts
        ("synthetic:spot=0, nodes=1, mix=h100x8:1", FleetSpec(1, (("h100x8", 1.0),), 0.0)),
        # a zero weight drops the type
        ("synthetic:nodes=4,mix=l4x1:1,a10gx1:0", FleetSpec(4, (("l4x1", 1.0),))),
    ],
    ids=["brief", "relative", "bare-type", "options-first", "zero-weight"],
)
def test_parse_fleet_spec(text: str, expected: FleetSpec) -> None:
    assert parse_fleet_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodes=10,mix=l4x1:1", "starts with 'synthetic:'"),
        (
            "synthetic:nodes=10,mix=h200x8:1",
            "'mix=h200x8:1': unknown node type 'h200x8' (known: h100x8, a100x8",
        ),
        ("synthetic:mix=l4x1:1", "missing nodes=N"),
        ("synthetic:nodes=10", "missing mix=TYPE:WEIGHT"),
        ("synthetic:nodes=ten,mix=l4x1", "'nodes=ten': nodes must be a number"),
        ("synthetic:nodes=0,mix=l4x1", "'nodes=0': nodes must be at least 1"),
        ("synthetic:nodes=10,mix=l4x1:x", "'mix=l4x1:x': the weight of l4x1 must be a number"),
        ("synthetic:nodes=10,mix=l4x1:-1", "the weight of l4x1 must be >= 0"),
        ("synthetic:nodes=10,mix=l4x1:0", "the mix weights sum to 0"),
        ("synthetic:nodes=10,mix=l4x1,l4x1", "'l4x1': node type 'l4x1' appears twice"),
        ("synthetic:nodes=10,mix=l4x1,spot=2", "'spot=2': spot must be between 0 and 1"),
        ("synthetic:nodes=10,mix=l4x1,gpus=8", "'gpus=8': unknown key 'gpus'"),
        ("synthetic:nodes=10,l4x1", "'l4x1': expected key=value"),
        ("synthetic:nodes=10,,mix=l4x1", "empty part"),
        ("synthetic:nodes=10,mix=l4x1:nan", "must be finite"),
    ],
    ids=[
        "prefix",
        "unknown-type",
        "no-nodes",
        "no-mix",
        "nodes-text",
        "nodes-zero",
        "weight-text",
        "weight-negative",
        "weights-zero",
        "duplicate",
        "spot-range",
        "unknown-key",
        "type-outside-mix",
        "empty-part",
        "nan",
    ],
)
def test_bad_fleet_specs_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_fleet_spec(text)
    assert message in str(error.value)


def test_fleet_spec_round_trips() -> None:
    spec = parse_fleet_spec("synthetic:nodes=10,mix=l4x1:3,a10gx1:1,spot=0.5,seed=2")
    assert parse_fleet_spec(str(spec)) == spec


# --- node types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vcpus", "memory_gib", "expected"),
    [
        # CPU: 60 (1st core) + 10 (2nd) + 2x5 (3rd, 4th) + 4x2.5 (5th-8th) = 90 -> 8000-90
        # memory: 255 + 11x110 + 100 = 1565 MiB -> 32768-1565
        (8, 32, (7910, 31203)),
        # 60 + 10 + 10 + 44x2.5 = 190 -> 47810; 393216-1565
        (48, 384, (47810, 391651)),
        # 60 + 10 + 10 + 188x2.5 = 550 -> 191450; 2097152-1565
        (192, 2048, (191450, 2095587)),
        # one core: 60 only
        (1, 1, (940, -541)),
    ],
    ids=["8-vcpu", "48-vcpu", "192-vcpu", "1-vcpu"],
)
def test_allocatable(vcpus: int, memory_gib: int, expected: tuple[int, int]) -> None:
    assert allocatable(vcpus, memory_gib) == expected


def test_node_types_carry_gfd_facts() -> None:
    spec = NODE_TYPES["l40sx4"].spec("l40sx4-00001", SPOT)
    assert (spec.gpu_count, spec.gpu_model, spec.gpu_memory_mib) == (4, "NVIDIA-L40S", 46068)
    assert spec.pool == "l40sx4-spot"
    labels = node_labels(NODE_TYPES["h100x8"], ON_DEMAND)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert (labels["nvidia.com/gpu.compute.major"], labels["nvidia.com/gpu.compute.minor"]) == (
        "9",
        "0",
    )
    assert labels["karpenter.sh/capacity-type"] == "on-demand"


# --- fleets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "mix", "expected"),
    [
        # 10 x (0.3, 0.3, 0.4) = 3, 3, 4 exactly
        (10, [("a", 0.3), ("b", 0.3), ("c", 0.4)], {"a": 3, "b": 3, "c": 4}),
        # 7 x (0.5, 0.5) = 3.5 each: floors 3+3, one left goes to the first on the tie
        (7, [("a", 0.5), ("b", 0.5)], {"a": 4, "b": 3}),
        # 10 x (0.25, 0.35, 0.4) = 2.5, 3.5, 4: floors 2+3+4 = 9, the 0.5s tie -> a
        (10, [("a", 0.25), ("b", 0.35), ("c", 0.4)], {"a": 3, "b": 3, "c": 4}),
        # 1 x (0.6, 0.4): 0.6 has the larger remainder
        (1, [("a", 0.6), ("b", 0.4)], {"a": 1, "b": 0}),
        # 2000 x the brief's mix: 600, 600, 400, 400
        (
            2000,
            [("h", 0.3), ("a", 0.3), ("l", 0.2), ("s", 0.2)],
            {"h": 600, "a": 600, "l": 400, "s": 400},
        ),
    ],
    ids=["exact", "half-tie", "remainders", "one-node", "brief"],
)
def test_node_type_counts(
    nodes: int, mix: list[tuple[str, float]], expected: dict[str, int]
) -> None:
    assert node_type_counts(nodes, mix) == expected


def test_fleet_is_deterministic_per_seed() -> None:
    spec = parse_fleet_spec(f"synthetic:nodes=300,mix={MIX}")
    first = make_fleet(spec, np.random.default_rng(5))
    assert first == make_fleet(spec, np.random.default_rng(5))
    assert first != make_fleet(spec, np.random.default_rng(6))  # other spot draws
    assert fleet_from_spec(f"synthetic:nodes=300,mix={MIX}") == fleet_from_spec(
        f"synthetic:nodes=300,mix={MIX}"
    )
    assert len({node.name for node in first}) == 300


def test_fleet_follows_the_mix_and_the_spot_shares() -> None:
    spec = parse_fleet_spec("synthetic:nodes=20000,mix=h100x8:0.3,a10gx1:0.7")
    fleet = make_fleet(spec, np.random.default_rng(0))
    types = Counter(node.pool.rsplit("-", 1)[0] for node in fleet)
    assert types == {"h100x8": 6000, "a10gx1": 14000}
    for name, count in types.items():
        spot = sum(n.capacity_type == SPOT for n in fleet if n.pool.startswith(name + "-"))
        # Bernoulli(p) over n nodes: std sqrt(p(1-p)/n) <= 0.0065 here; 4 std of room
        assert spot / count == pytest.approx(NODE_TYPES[name].spot_share, abs=0.026)


def test_spot_option_overrides_every_type() -> None:
    fleet = fleet_from_spec("synthetic:nodes=4000,mix=h100x8,l4x1,spot=0.8")
    share = sum(node.capacity_type == SPOT for node in fleet) / len(fleet)
    assert share == pytest.approx(0.8, abs=0.03)  # std 0.0063


# --- workloads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("synthetic:llm-serving", WorkloadSpec("llm-serving")),
        ("synthetic:mixed,interactive=0.3", WorkloadSpec("mixed", 0.3)),
        ("synthetic:batch-inference,interactive=0", WorkloadSpec("batch-inference", 0.0)),
        ("synthetic:llm-serving,models=any", WorkloadSpec("llm-serving", any_model=True)),
    ],
    ids=["plain", "interactive", "batch-only-at-0", "any-model"],
)
def test_parse_workload_spec(text: str, expected: WorkloadSpec) -> None:
    assert parse_workload_spec(text) == expected
    assert parse_workload_spec(str(expected)) == expected


def test_models_any_drops_only_the_model_requirements() -> None:
    plain = SyntheticWorkload(WorkloadSpec("llm-serving"))
    anywhere = SyntheticWorkload(WorkloadSpec("llm-serving", any_model=True))
    assert any(r.allowed_models for r in plain.requests)
    assert not any(r.allowed_models for r in anywhere.requests)
    assert [replace(r, allowed_models=frozenset()) for r in plain.requests] == list(
        anywhere.requests
    )
    assert anywhere.table() == plain.table()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "synthetic:chat",
            "'chat': unknown workload (known: llm-serving, batch-inference, mixed, training)",
        ),
        ("synthetic:mixed,batch=0.3", "'batch=0.3': unknown option"),
        ("synthetic:mixed,models=fp8", "'models=fp8': unknown option (known: interactive=SHARE"),
        ("synthetic:mixed,interactive=1.5", "interactive must be between 0 and 1"),
        ("synthetic:batch-inference,interactive=0.3", "has no interactive shapes"),
        ("llm-serving", "starts with 'synthetic:'"),
    ],
    ids=["unknown", "option", "models", "range", "no-class", "prefix"],
)
def test_bad_workload_specs_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_workload_spec(text)
    assert message in str(error.value)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_weights_sum_to_one(name: str) -> None:
    assert sum(WORKLOADS[name].values()) == pytest.approx(1.0)


def test_interactive_share_reweights_the_classes() -> None:
    # mixed at 0.3: interactive shapes (0.5 in all) scale by 0.3/0.5, batch by 0.7/0.5;
    # chat-7b 0.25 x 0.6 = 0.15, batch-7b 0.20 x 1.4 = 0.28
    weights = shape_weights(WorkloadSpec("mixed", 0.3))
    interactive = sum(w for s, w in weights.items() if SHAPES[s].pod_class is PodClass.INTERACTIVE)
    assert interactive == pytest.approx(0.3)
    assert weights["chat-7b"] == pytest.approx(0.15)
    assert weights["batch-7b"] == pytest.approx(0.28)
    # interactive=1 leaves only interactive shapes
    assert all(
        SHAPES[s].pod_class is PodClass.INTERACTIVE
        for s in shape_weights(WorkloadSpec("mixed", 1.0))
    )


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_samples_follow_the_shape_weights(name: str) -> None:
    workload = SyntheticWorkload(WorkloadSpec(name))
    pods = workload.sample(50_000, np.random.default_rng(1))
    counts = Counter(pods)
    for request, weight in zip(workload.requests, workload.weights, strict=True):
        # std sqrt(w(1-w)/n) <= 0.0023 at n = 50000: 0.01 is over 4 std
        assert counts[request] / len(pods) == pytest.approx(weight, abs=0.01)


def test_arrivals_are_deterministic_and_reach_the_target() -> None:
    workload = SyntheticWorkload.from_spec("synthetic:mixed")
    capacity, tune = 400_000, 1.3  # target 520000 milli: more than one draw batch of pods
    first = workload.arrivals(capacity, tune, np.random.default_rng(42))
    assert first == workload.arrivals(capacity, tune, np.random.default_rng(42))
    assert first != workload.arrivals(capacity, tune, np.random.default_rng(43))
    requested = sum(r.gpu_milli for r in first)
    assert requested >= tune * capacity  # the last pod reaches the target...
    assert requested - first[-1].gpu_milli < tune * capacity  # ...the one before did not
    assert workload.popularity_sample(42) == workload.popularity_sample(42)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_fits_some_idle_node_type(shape: str) -> None:
    request = SHAPES[shape].request()
    state = state_of(*(t.spec(name, ON_DEMAND) for name, t in NODE_TYPES.items()))
    assert check_feasibility(state, request).mask.any()


def test_shape_requests_carry_gib_cores_and_models() -> None:
    request = SHAPES["chat-8b-fp8"].request()
    # 16 GiB = 16384 MiB per GPU, 4 cores = 4000 milli, 24 GiB = 24576 MiB
    assert (request.min_gpu_memory_mib, request.cpu_milli, request.memory_mib) == (
        16384,
        4000,
        24576,
    )
    assert request.allowed_models == frozenset(FP8_PRODUCTS)
    assert SHAPES["preprocess"].request().gpu_count == 0


def documented_workloads() -> dict[str, dict[str, tuple[str, ...]]]:
    """The module docstring's shape tables, per workload: shape -> its row's cells."""
    doc = benchmarks.synthetic.__doc__ or ""
    tables: dict[str, dict[str, tuple[str, ...]]] = {}
    # Each workload's paragraph opens a line with ``name``: and its table follows.
    for name, body in re.findall(r"^``([a-z-]+)``:(.*?)(?=^``|\Z)", doc, re.M | re.S):
        rows = [line.split() for line in body.splitlines() if line[:1].islower()]
        tables[name] = {row[0]: tuple(row[1:]) for row in rows if row[0] in SHAPES}
    return tables


def test_the_docstring_tables_are_the_workloads() -> None:
    documented = documented_workloads()
    assert set(documented) == set(WORKLOADS)
    for name, weights in WORKLOADS.items():
        rows = {}
        for shape, weight in weights.items():
            s = SHAPES[shape]
            models = "FP8" if s.models == FP8_PRODUCTS else "any" if s.gpus else "-"
            rows[shape] = (
                str(s.pod_class),
                str(s.gpus),
                str(s.gpu_memory_gib),
                f"{s.cpus:g}",
                str(s.memory_gib),
                models,
                f"{weight:.2f}",
            )
        assert documented[name] == rows, name
