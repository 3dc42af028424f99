"""The fairness scenario (benchmarks/fairness.py): its workload, its report, its command."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks import fairness
from benchmarks.fairness import Scenario, arms, build_workload, plot, run
from benchmarks.traces import load_nodes, load_pods
from extender import cli

TRACE = load_pods()
NODES = load_nodes()
CAPACITY = float(sum(n.gpu_count for n in NODES))
ARM_KEYS = {
    "gpu_utilization",
    "max_share_deviation_pp",
    "interactive_wait_p99_s",
    "batch_wait_p50_s",
    "interactive_preempted_by_batch",
}


def small(seed: int = 42, horizon_s: float = 1200.0) -> Scenario:
    base = Scenario(seed=seed)
    flood, steady, bursty, late = base.teams
    return Scenario(
        horizon_s=horizon_s,
        warmup_s=horizon_s / 4,
        teams=(
            flood,
            steady,
            replace(bursty, start_s=horizon_s / 6, burst_every_s=horizon_s / 2),
            replace(late, start_s=horizon_s / 2),
        ),
        seed=seed,
    )


def test_the_workload_is_seeded() -> None:
    first = build_workload(TRACE, CAPACITY, small(42))
    again = build_workload(TRACE, CAPACITY, small(42))
    other = build_workload(TRACE, CAPACITY, small(43))
    assert first == again
    assert first != other


def test_every_pod_is_a_trace_pod_with_its_own_run_time() -> None:
    by_shape = {
        (p.request.gpu_count, p.request.milli_per_gpu, p.request.cpu_milli, p.request.memory_mib)
        for p in TRACE
    }
    run_times = {max(float((p.deletion_s or 0) - (p.creation_s or 0)), 1.0) for p in TRACE}
    for pod in build_workload(TRACE, CAPACITY, small()):
        request = pod.request
        shape = (request.gpu_count, request.milli_per_gpu, request.cpu_milli, request.memory_mib)
        assert shape in by_shape and pod.duration_s in run_times


def test_each_team_follows_its_plan() -> None:
    scenario = small()
    pods = build_workload(TRACE, CAPACITY, scenario)
    by_team: dict[str, list[Any]] = {}
    for pod in pods:
        by_team.setdefault(pod.team, []).append(pod)
    flood, _, bursty, late = scenario.teams
    assert {p.request.pod_class.value for p in by_team["flood"]} == {"batch"}
    assert {p.request.pod_class.value for p in by_team["steady"]} == {"interactive"}
    assert min(p.arrival_s for p in by_team["late"]) >= late.start_s
    # bursts: every bursty pod arrives within burst_length_s of a burst's start
    starts = [bursty.start_s, bursty.start_s + bursty.burst_every_s]
    assert all(
        any(0 <= p.arrival_s - s <= bursty.burst_length_s for s in starts)
        for p in by_team["bursty"]
    )
    # the flood asks for more than the cluster: offered load 1.3 x capacity
    assert flood.load > 1


def test_hard_quotas_are_the_entitlements() -> None:
    quota_arm = next(arm for arm in arms(Scenario(), CAPACITY) if arm.name == "hard-quota")
    # 6212 GPUs x 4/8, 2/8, 1/8, 1/8, rounded down
    assert quota_arm.quotas == {"flood": 3106, "steady": 1553, "bursty": 776, "late": 776}


@pytest.fixture(scope="module")
def small_run() -> tuple[dict[str, Any], list[Any]]:
    # 60 nodes of the built-in fleet for 20 minutes: the report's shape, not its figures
    return run(small(), NODES[:60], TRACE, jobs=1)


def test_the_report_has_every_arm_and_figure(small_run: tuple[dict[str, Any], list[Any]]) -> None:
    document, _ = small_run
    assert set(document["arms"]) == {
        "free-for-all",
        "free-for-all+priority",
        "hard-quota",
        "fairpack",
    }
    for figures in document["arms"].values():
        assert figures.keys() >= ARM_KEYS
        assert 0 <= figures["gpu_utilization"] <= 1
        assert set(figures["teams"]) == {"flood", "steady", "bursty", "late"}
    assert set(document["criteria"]) == {
        "utilization_at_least_98pct_of_free_for_all",
        "share_deviation_at_most_5pp",
        "share_deviation_below_both_baselines",
        "interactive_p99_at_most_tenth_of_free_for_all",
        "no_interactive_preempted_by_batch",
    }
    json.dumps(document)  # serialisable as it is


def test_the_plot_is_written(small_run: tuple[dict[str, Any], list[Any]], tmp_path: Path) -> None:
    _, results = small_run
    plot(results, tmp_path / "fairness.png")
    assert (tmp_path / "fairness.png").stat().st_size > 10_000


def test_simulate_dispatches_the_fairness_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(fairness, "main", lambda args: seen.append(args) or 0)
    assert cli.main(["simulate", "--scenario", "fairness", "--json", "out.json"]) == 0
    assert seen and seen[0].json == Path("out.json")


def test_the_fairness_scenario_refuses_options_it_would_ignore(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(fairness, "main", lambda args: seen.append(args) or 0)
    argv = ["simulate", "--scenario", "fairness", "--policy", "fgd", "--tune", "2", "--whole-gpus"]
    assert cli.main(argv) == 2
    assert "drop --whole-gpus, --policy, --tune" in capsys.readouterr().err
    assert not seen


@pytest.mark.parametrize("quiet", [False, True])
def test_the_arms_show_their_progress_unless_quiet(
    quiet: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # a whole run takes minutes: the CLI shows each arm finish (--quiet hides it)
    run(small(), NODES[:20], TRACE, jobs=1, arm_names=["free-for-all"], quiet=quiet)
    shown = "fairness arms" in capsys.readouterr().err
    assert shown is not quiet


def test_a_pod_list_with_nothing_for_a_team_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # no LS pod: steady (interactive) has nothing to draw from; said before any arm runs
    batch_only = [pod for pod in TRACE if pod.qos != "LS"]
    monkeypatch.setattr(fairness, "load_pods", lambda path: batch_only)
    monkeypatch.setattr(fairness, "run", lambda *args, **kwargs: pytest.fail("ran"))
    assert fairness.main(argparse.Namespace()) == 2
    assert "team steady draws from the pod list's LS GPU pods" in capsys.readouterr().err
