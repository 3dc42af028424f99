"""The simulator and ``fairpack simulate`` on synthetic fleets, the whole-GPU view, snapshots."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from builders import cpu_only, node, sharing, state_of, whole

from benchmarks import simulate_cli
from benchmarks.policies import POLICIES, PolicyContext, make_policy
from benchmarks.policies.fgd import NO_MODEL, gpu_memory_by_model, typical_shapes
from benchmarks.simulator import simulate, snapshot_index, whole_gpus, workload_rng
from benchmarks.synthetic import (
    A100_40,
    L4,
    L40S,
    NODE_TYPES,
    SHAPES,
    WORKLOADS,
    SyntheticWorkload,
    fleet_from_spec,
)
from scoring import ON_DEMAND, ClusterState, PodClass, PodRequest

GIB = 1024
SMALL_FLEET = "synthetic:nodes=40,mix=l4x1:0.25,a10gx1:0.25,l40sx4:0.25,a100-40x8:0.25"


@pytest.mark.parametrize(
    ("request_", "rounded"),
    [
        # a 300-milli share becomes one whole GPU, CPU and memory kept
        (sharing(300, 2_000, 512), whole(1, 2_000, 512)),
        (sharing(999, models=["A"]), whole(1, models=["A"])),
        (whole(2, 4_000), whole(2, 4_000)),  # whole already
        (cpu_only(1_000), cpu_only(1_000)),  # no GPU stays none
    ],
    ids=["share", "share-models", "whole", "cpu-only"],
)
def test_whole_gpus_rounds_shares_up(request_: PodRequest, rounded: PodRequest) -> None:
    assert whole_gpus([request_]) == [rounded]


@pytest.mark.parametrize(
    ("arrived", "capacity", "index"),
    [
        ([500, 1000, 1500], 1000, 1),  # reaches 1000 exactly at the 2nd arrival
        ([500, 1200, 1500], 1000, 1),  # passes it at the 2nd
        ([500, 900], 1000, 1),  # never reaches it: the last arrival
        ([], 1000, -1),  # nothing arrives
    ],
    ids=["reaches", "passes", "never", "empty"],
)
def test_snapshot_index(arrived: list[int], capacity: int, index: int) -> None:
    assert snapshot_index(np.array(arrived, dtype=np.int64), capacity) == index


def test_a_synthetic_run_measures_at_arrived_100() -> None:
    nodes = fleet_from_spec(SMALL_FLEET)
    workload = SyntheticWorkload.from_spec("synthetic:mixed")
    first = simulate("bestfit", nodes, workload, seed=42, tune=1.0)
    again = simulate("bestfit", nodes, workload, seed=42, tune=1.0)
    assert first.metrics == again.metrics
    assert first.metrics is not None
    # tune 1.0: the last pod reaches capacity, so the snapshot is at >= 100%
    assert first.metrics.arrived_pct >= 100.0
    assert first.pods == len(
        workload.arrivals(sum(n.gpu_count for n in nodes) * 1000, 1.0, workload_rng(42))
    )
    assert len(first.decision_s) == first.pods
    assert (first.decision_s > 0).all()
    assert first.metrics.gpu_memory_waste_gib > 0  # 20 GiB pods on 40-45 GiB GPUs, at least


def test_a_trace_run_has_no_memory_waste() -> None:
    nodes = [node(f"n{i}", 4) for i in range(4)]
    result = simulate("fgd", nodes, [sharing(500), whole(1), whole(2)], seed=1)
    assert result.metrics is not None
    assert result.metrics.gpu_memory_waste_gib == 0.0
    assert set(result.metrics.failed_pods_by_gpus) >= {"0", "1", "2", "4", "8", "share"}


def _allowed(state: ClusterState, row: int, request: PodRequest) -> bool:
    model_ok = (
        not request.allowed_models or state.models[state.gpu_model[row]] in request.allowed_models
    )
    return bool(model_ok and state.gpu_memory_mib[row] >= request.min_gpu_memory_mib)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_baselines_respect_gpu_memory_and_models_on_synthetic_fleets(policy: str) -> None:
    state = ClusterState.from_nodes(fleet_from_spec(SMALL_FLEET))
    workload = SyntheticWorkload.from_spec("synthetic:llm-serving")
    rng = np.random.default_rng(0)
    context = PolicyContext(
        rank=rng.permutation(state.n_nodes), rng=rng, trace=workload.popularity_sample(0)
    )
    chosen = make_policy(policy, context)
    placed = 0
    for request in workload.arrivals(state.total_gpu_milli, 1.0, np.random.default_rng(1)):
        choice = chosen.select(state, request)
        if choice is None:
            continue
        assert _allowed(state, choice.row, request), (request, state.names[choice.row])
        state.place(choice.row, request, choice.gpus)
        placed += 1
    assert placed > 20


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_40_gib_pod_never_lands_on_a_24_gib_gpu(policy: str) -> None:
    # An idle L4 (22.5 GiB) alone: chat-13b (40 GiB) fits nowhere.  With an idle L40S node
    # (45 GiB) beside it, the L40S takes it, whatever the node order.
    chat_13b = SHAPES["chat-13b"].request()
    l4, l40s = (
        NODE_TYPES["l4x1"].spec("l4", ON_DEMAND),
        NODE_TYPES["l40sx4"].spec("l40s", ON_DEMAND),
    )
    for rank in ([0, 1], [1, 0]):
        context = PolicyContext(
            rank=np.array(rank[:1]), rng=np.random.default_rng(0), trace=[chat_13b]
        )
        assert make_policy(policy, context).select(state_of(l4), chat_13b) is None
        context = PolicyContext(rank=np.array(rank), rng=np.random.default_rng(0), trace=[chat_13b])
        choice = make_policy(policy, context).select(state_of(l4, l40s), chat_13b)
        assert choice is not None and choice.row == 1


# --- FGD's typical shapes on fleets with GPU memory -------------------------------------------

MEMORY = {L4: 23034, L40S: 46068, A100_40: 40960}


@pytest.mark.parametrize(
    ("request_", "models"),
    [
        # 40 GiB = 40960 MiB: the L40S (46068) and the A100-40 (40960, just enough)
        (whole(1, min_gpu_memory_mib=40 * GIB), {L40S, A100_40}),
        # 16 GiB: every model
        (whole(1, min_gpu_memory_mib=16 * GIB), {L4, L40S, A100_40}),
        # 16 GiB, FP8 models only: L4 and L40S
        (
            whole(1, min_gpu_memory_mib=16 * GIB, models=[L4, L40S, "NVIDIA-H100-80GB-HBM3"]),
            {L4, L40S},
        ),
        # 70 GiB: no GPU of this fleet has that much
        (whole(2, min_gpu_memory_mib=70 * GIB), {NO_MODEL}),
        # no minimum: the shape's own (empty = any) models
        (whole(1), set()),
    ],
    ids=["40-gib", "16-gib", "16-gib-fp8", "70-gib", "no-minimum"],
)
def test_typical_shapes_narrow_models_by_gpu_memory(request_: PodRequest, models: set[str]) -> None:
    table = typical_shapes([request_], memory_by_model=MEMORY)
    assert table.allowed_models == (frozenset(models),)
    # without the fleet's memory, the minimum is ignored (the authors' shapes)
    assert typical_shapes([request_]).allowed_models == (request_.allowed_models,)


def test_gpu_memory_by_model_takes_the_smallest_per_model() -> None:
    state = state_of(
        node("a", 1, model="X", gpu_memory_mib=100),
        node("b", 1, model="X", gpu_memory_mib=80),
        node("c", 1, model="Y", gpu_memory_mib=50),
        node("d", 0),
    )
    assert gpu_memory_by_model(state) == {"X": 80, "Y": 50}


# --- the command line -----------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    simulate_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", *argv])
    return int(args.run(args))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--cluster", "synthetic:nodes=10,mix=h200x8:1"],
            "unknown node type 'h200x8' (known: h100x8",
        ),
        (["--cluster", SMALL_FLEET, "--workload", "synthetic:chat"], "'chat': unknown workload"),
        (
            [
                "--cluster",
                "synthetic:nodes=10,mix=l4x1",
                "--workload",
                "synthetic:mixed,interactive=2",
            ],
            "interactive must be between 0 and 1",
        ),
        (
            ["--cluster", SMALL_FLEET, "--workload", "synthetic:mixed", "--tune", "0.6"],
            "--tune must be at least 1 (got 0.6)",
        ),
        (
            ["--cluster", SMALL_FLEET, "--workload", "synthetic:mixed", "--tune", "inf"],
            "--tune must be at most 10 (got inf)",
        ),
        (
            # Not a run that grows until the machine runs out of memory.
            ["--cluster", SMALL_FLEET, "--workload", "synthetic:mixed", "--tune", "1e9"],
            "--tune must be at most 10 (got 1000000000.0)",
        ),
        (
            ["--cluster", SMALL_FLEET, "--workload", "synthetic:mixed", "--tune", "nan"],
            "--tune must be at most 10 (got nan)",
        ),
    ],
    ids=[
        "node-type",
        "workload",
        "interactive",
        "tune-below-capacity",
        "tune-infinite",
        "tune-huge",
        "tune-nan",
    ],
)
def test_cli_rejects_bad_specs_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_cli([*argv, "--quiet", "--jobs", "1"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("51-42", "'51-42' runs backwards; did you mean 42-51?"),
        ("51-42,45", "runs backwards"),  # not silently seed 45 alone
        ("-5", "seeds are whole numbers from 0"),
        ("42--45", "seeds are whole numbers from 0"),
        ("x", "is not a seed"),
        ("0-100000000", "more than 10,000 seeds"),  # refused before a list is built
        ("0-5000,6000-11000", "more than 10,000 seeds"),
    ],
)
def test_bad_seeds_are_refused(text: str, message: str) -> None:
    with pytest.raises(simulate_cli.UsageError, match=message):
        simulate_cli.parse_seeds(text)


def test_seeds() -> None:
    assert simulate_cli.parse_seeds("42-44,50,43") == [42, 43, 44, 50]
    assert simulate_cli.parse_seeds("0") == [0]
    assert len(simulate_cli.parse_seeds("1-10000")) == 10_000  # the most one run takes


def test_workload_help_names_every_synthetic_workload() -> None:
    commands = argparse.ArgumentParser().add_subparsers()
    simulate_cli.add_parser(commands)
    (simulate,) = commands.choices.values()
    (workload,) = (action for action in simulate._actions if action.dest == "workload")
    for name in WORKLOADS:
        assert name in (workload.help or ""), name


def test_a_missing_reference_is_refused_before_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_runs(*args: object, **kwargs: object) -> None:
        raise AssertionError("simulated before reading --reference")

    monkeypatch.setattr(simulate_cli, "run_all", no_runs)
    missing = tmp_path / "allocation_by_arrived.csv"
    argv = ["--cluster", SMALL_FLEET, "--workload", "synthetic:mixed", "--seeds", "42"]
    assert _run_cli([*argv, "--reference", str(missing), "--quiet", "--jobs", "1"]) == 2
    assert f"{missing}: no such reference file" in capsys.readouterr().err


def test_cli_refuses_both_nodes_and_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run_cli(["--cluster", SMALL_FLEET, "--nodes", "x.csv"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_cluster_too_small_for_arrived_100_still_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Five 8-GPU nodes: an 8-GPU pod is 2.5% of the capacity, so some seeds have no
    # arrival at 99..101% and their figure at 100 is NaN.
    out = tmp_path / "tiny.json"
    argv = ["--cluster", "synthetic:nodes=5,mix=h100x8:1", "--workload", "synthetic:llm-serving"]
    argv += ["--policy", "bestfit", "--seeds", "42-45", "--quiet", "--jobs", "1"]
    assert _run_cli([*argv, "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "give a cluster with more GPUs" in captured.err
    assert "nan" in captured.out

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    document = json.loads(out.read_text(), parse_constant=refuse)
    assert document["summary"]["bestfit"]["unallocated_pct_at_100_mean"] is None
    assert None in [r["unallocated_pct_at_100"] for r in document["results"]]


def test_load_workload_whole_suffix() -> None:
    source, name = simulate_cli.load_workload("builtin:openb_pod_list_default.csv:whole")
    assert name == "openb_pod_list_default:whole"
    assert not any(r.is_sharing for r in source.shapes())
    plain, plain_name = simulate_cli.load_workload("builtin:openb_pod_list_default.csv")
    assert plain_name == "openb_pod_list_default"
    assert any(r.is_sharing for r in plain.shapes())
    # the flag and the suffix mean the same
    flagged, flagged_name = simulate_cli.load_workload(
        "builtin:openb_pod_list_default.csv", whole=True
    )
    assert flagged_name == name and list(flagged.shapes()) == list(source.shapes())


def test_report_for_a_synthetic_run_has_the_new_summary_keys() -> None:
    document, results = simulate_cli.report_for(
        SMALL_FLEET,
        "synthetic:batch-inference",
        ["bestfit", "fairpack"],
        [42],
        1.0,
        1,
        None,
        progress=False,
    )
    assert document["trace"]["workload"] == "synthetic:batch-inference"
    for entry in document["summary"].values():
        for key in (
            "stranded_gpus_mean",
            "gpu_memory_waste_gib_mean",
            "gpu_memory_waste_pct_mean",
            "gpu_memory_waste_half_load_gib_mean",
            "failed_pods_at_half_load_mean",
            "decision_ms_p50",
            "decision_ms_p99",
        ):
            assert not math.isnan(entry[key]), key
        assert set(entry["failed_pods_by_gpus_mean"]) >= {"0", "1", "2", "4", "8", "share"}
    run = document["results"][0]
    assert {
        "stranded_gpus",
        "gpu_memory_waste_gib",
        "failed_pods_by_gpus",
        "snapshot_arrived_pct",
    } <= set(run)
    assert document["floor"]["unallocated_pct_at_100_mean"] == 0.0  # no sharing pods
    assert all(r.metrics is not None for r in results)


def test_interactive_class_survives_into_requests() -> None:
    assert SHAPES["chat-7b"].request().pod_class is PodClass.INTERACTIVE
