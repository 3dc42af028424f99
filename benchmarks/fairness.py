"""The fairness scenario: teams of unequal weight contend for the Alibaba fleet.

    fairpack simulate --scenario fairness --json out/fairness.json --plot out/fairness.png

Four teams share the built-in node list (1,213 nodes, 6,212 GPUs) with weights
4:2:1:1, and every pod they submit is a pod of the built-in trace: its GPUs, CPU,
memory and run time (deletion minus creation), drawn with the run's seed.  The
LS pods are interactive inference (PriorityClass ``inference-critical``), the
others batch (``batch-inference``).  Their demand is uneven on purpose:

* ``flood`` (weight 4) submits batch work at more than the whole cluster can run;
* ``steady`` (weight 2) runs interactive inference at a constant rate;
* ``bursty`` (weight 1) submits a large batch burst every so often, nothing between;
* ``late`` (weight 1) starts halfway through with a mix of both classes.

Arrival rates are set by offered load (GPU-seconds asked per second, as a share of
the cluster's GPUs): rate = load x GPUs / mean(GPUs x run time) of the team's
pods, run times counted up to the horizon.

The same pods go through each arm (``benchmarks.replay``):

* ``free-for-all``: kube-scheduler's default scoring, no quotas, no PriorityClasses
  (every pod equal, first come first served, nothing preempted);
* ``free-for-all+priority``: the same with the platform's PriorityClasses, so
  interactive pods preempt batch ones; it shows what priorities alone buy;
* ``hard-quota``: kube-scheduler with the PriorityClasses and a hard cap per team
  at its entitlement (capacity x weight / total weight), no borrowing;
* ``fairpack``: kube-scheduler with the PriorityClasses and the fairpack extender
  (``scoring.evaluate`` with the class terms, the fair-share gate, share-aware
  preemption, node holds for starving large pods), no quotas.

Measures, over the contended window (after the first ``warmup_s``):
``gpu_utilization`` (allocated GPUs / capacity, time-averaged),
``max_share_deviation_pp`` (the largest time-averaged |GPUs held - deserved
share| of a team, in percentage points of the cluster; deserved by water-filling
over the arm's own demand), wait percentiles per class (pods still pending at
the end count with the wait so far), and preemptions by class.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.replay import (
    BATCH_PRIORITY,
    INTERACTIVE_PRIORITY,
    Arm,
    ReplayPod,
    ReplayResult,
    ReplaySettings,
    replay,
)
from benchmarks.traces import (
    BUILTIN_NODES,
    BUILTIN_PODS,
    TraceError,
    TracePod,
    load_nodes,
    load_pods,
)
from scoring import NodeSpec, PodClass, PolicyConfig
from scoring.policy import DEFAULT_WEIGHTS, FairnessConfig


@dataclass(frozen=True)
class TeamPlan:
    """One team's entitlement and demand.

    pool : ``"batch"``, ``"interactive"`` or ``"mixed"`` (the trace's own mix)
    load : offered load while active, as a share of the cluster's GPUs; for a
        bursty team, the GPUs of one burst as a share of the cluster's
    """

    name: str
    weight: float
    pool: str
    load: float
    start_s: float = 0.0
    burst_every_s: float = 0.0
    burst_length_s: float = 0.0


@dataclass(frozen=True)
class Scenario:
    horizon_s: float = 4 * 3600.0
    warmup_s: float = 1800.0
    teams: tuple[TeamPlan, ...] = (
        TeamPlan("flood", 4.0, "batch", 1.3),
        TeamPlan("steady", 2.0, "interactive", 0.2),
        TeamPlan(
            "bursty", 1.0, "batch", 0.3, start_s=2700.0, burst_every_s=3600.0, burst_length_s=180.0
        ),
        TeamPlan("late", 1.0, "mixed", 0.25, start_s=2 * 3600.0),
    )
    seed: int = 42


_POOL_QOS = {"interactive": "LS ", "batch": "non-LS ", "mixed": ""}


def _pool(trace: Sequence[TracePod], plan: TeamPlan) -> list[TracePod]:
    """The trace pods ``plan``'s team draws from: GPU pods with both times, of its pool."""
    timed = [
        pod
        for pod in trace
        if pod.request.gpu_count and pod.creation_s is not None and pod.deletion_s is not None
    ]
    if plan.pool == "interactive":
        timed = [pod for pod in timed if pod.qos == "LS"]
    elif plan.pool == "batch":
        timed = [pod for pod in timed if pod.qos != "LS"]
    if not timed:
        raise TraceError(
            f"team {plan.name} draws from the pod list's {_POOL_QOS[plan.pool]}GPU pods with"
            " creation and deletion times, and it has none"
        )
    return timed


def _replay_pod(template: TracePod, team: str, index: int, arrival_s: float) -> ReplayPod:
    interactive = template.qos == "LS"
    request = replace(
        template.request,
        team=team,
        pod_class=PodClass.INTERACTIVE if interactive else PodClass.BATCH,
        priority=INTERACTIVE_PRIORITY if interactive else BATCH_PRIORITY,
    )
    assert template.creation_s is not None and template.deletion_s is not None
    duration = max(float(template.deletion_s - template.creation_s), 1.0)
    return ReplayPod(f"{team}-{index:06d}", request, arrival_s, duration)


def team_pods(
    plan: TeamPlan,
    pool: Sequence[TracePod],
    capacity_gpus: float,
    horizon_s: float,
    rng: np.random.Generator,
) -> list[ReplayPod]:
    """The team's pods: trace pods drawn with replacement, at Poisson times or in bursts."""
    gpus = np.array([pod.request.gpu_milli / 1000 for pod in pool])
    run_s = np.array(
        [
            min(max(float(pod.deletion_s or 0) - float(pod.creation_s or 0), 1.0), horizon_s)
            for pod in pool
        ]
    )
    pods: list[ReplayPod] = []
    if plan.burst_every_s:
        start = plan.start_s
        while start < horizon_s:
            asked = 0.0
            while asked < plan.load * capacity_gpus:
                template = int(rng.integers(len(pool)))
                asked += gpus[template]
                at = start + float(rng.uniform(0.0, plan.burst_length_s))
                pods.append(_replay_pod(pool[template], plan.name, len(pods), at))
            start += plan.burst_every_s
        return sorted(pods, key=lambda pod: pod.arrival_s)
    rate = plan.load * capacity_gpus / float((gpus * run_s).mean())
    at = plan.start_s + float(rng.exponential(1.0 / rate))
    while at < horizon_s:
        template = int(rng.integers(len(pool)))
        pods.append(_replay_pod(pool[template], plan.name, len(pods), at))
        at += float(rng.exponential(1.0 / rate))
    return pods


def build_workload(
    trace: Sequence[TracePod], capacity_gpus: float, scenario: Scenario
) -> list[ReplayPod]:
    """Every team's pods, each team from its own seeded stream."""
    pods: list[ReplayPod] = []
    for i, plan in enumerate(scenario.teams):
        rng = np.random.default_rng([scenario.seed, i])
        pool = _pool(trace, plan)
        pods.extend(team_pods(plan, pool, capacity_gpus, scenario.horizon_s, rng))
    return sorted(pods, key=lambda pod: (pod.arrival_s, pod.name))


def arms(scenario: Scenario, capacity_gpus: float) -> list[Arm]:
    weights = {plan.name: plan.weight for plan in scenario.teams}
    total = sum(weights.values())
    quotas = {team: math.floor(capacity_gpus * w / total) for team, w in weights.items()}
    fairpack_policy = PolicyConfig(
        weights={**DEFAULT_WEIGHTS, "class_placement": 0.5, "reclaim_cost": 0.5},
        fairness=FairnessConfig(team_weights=weights),
    )
    return [
        Arm("free-for-all", placement="kube-least", priorities=False),
        Arm("free-for-all+priority", placement="kube-least", priorities=True),
        Arm("hard-quota", placement="kube-least", quotas=quotas, priorities=True),
        Arm("fairpack", placement="fairpack", policy=fairpack_policy, fairness=True),
    ]


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def summarize(result: ReplayResult, window: tuple[float, float]) -> dict[str, Any]:
    """The arm's figures over ``window`` (see the module docstring)."""
    start, end = window
    in_window = (result.times_s >= start) & (result.times_s < end)
    capacity = result.capacity_gpus
    held = result.held_gpus[in_window]
    deserved = result.deserved_gpus[in_window]
    demand = held + result.pending_gpus[in_window]
    gap_pp = np.abs(held - deserved).mean(axis=0) / capacity * 100.0
    waits = [w for w in result.waits if start <= w.arrival_s < end]

    def wait_of(
        pod_class: str | None = None, team: str | None = None, min_gpus: int = 0
    ) -> list[float]:
        return [
            w.wait_s
            for w in waits
            if (pod_class is None or w.pod_class == pod_class)
            and (team is None or w.team == team)
            and w.gpu_count >= min_gpus
        ]

    interactive, batch = wait_of("interactive"), wait_of("batch")
    large = wait_of(min_gpus=8)
    preemptions = result.preemptions
    teams = {}
    for i, team in enumerate(result.teams):
        team_waits = wait_of(team=team)
        teams[team] = {
            "held_gpus_mean": round(float(held[:, i].mean()), 1),
            "deserved_gpus_mean": round(float(deserved[:, i].mean()), 1),
            "share_deviation_pp": round(float(gap_pp[i]), 2),
            "wait_p50_s": _percentile(team_waits, 50),
            "wait_p99_s": _percentile(team_waits, 99),
            "pods": len(team_waits),
        }
        for pod_class in ("interactive", "batch"):
            class_waits = wait_of(pod_class, team)
            if class_waits:
                teams[team][f"{pod_class}_wait_p99_s"] = _percentile(class_waits, 99)
    return {
        "gpu_utilization": round(float(result.allocated_gpus[in_window].mean() / capacity), 4),
        "max_share_deviation_pp": round(float(gap_pp.max()), 2),
        "interactive_wait_p50_s": _percentile(interactive, 50),
        "interactive_wait_p99_s": _percentile(interactive, 99),
        "batch_wait_p50_s": _percentile(batch, 50),
        "batch_wait_p99_s": _percentile(batch, 99),
        "large_pod_wait_p50_s": _percentile(large, 50),
        "large_pod_wait_max_s": round(max(large), 1) if large else None,
        "interactive_preempted_by_batch": sum(
            1
            for p in preemptions
            if p.preemptor_class == "batch" and p.victim_class == "interactive"
        ),
        "preemptions": len(preemptions),
        "preempted_gpus": round(sum(p.victim_gpus for p in preemptions), 1),
        "pods_still_pending_at_end": sum(1 for w in waits if not w.started),
        "contended_fraction": round(float((demand.sum(axis=1) >= capacity).mean()), 3),
        "teams": teams,
        "scheduling_decisions": result.decisions,
        "gate_holds": result.gate_holds,
        "seconds": round(result.elapsed_s, 1),
    }


def criteria(arms_summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's acceptance checks, computed from the measured figures."""
    fair, free, quota = (arms_summary[name] for name in ("fairpack", "free-for-all", "hard-quota"))
    free_p99 = free["interactive_wait_p99_s"] or 0.0
    fair_p99 = fair["interactive_wait_p99_s"] or 0.0
    return {
        "utilization_at_least_98pct_of_free_for_all": fair["gpu_utilization"]
        >= 0.98 * free["gpu_utilization"],
        "share_deviation_at_most_5pp": fair["max_share_deviation_pp"] <= 5.0,
        "share_deviation_below_both_baselines": fair["max_share_deviation_pp"]
        < min(free["max_share_deviation_pp"], quota["max_share_deviation_pp"]),
        "interactive_p99_at_most_tenth_of_free_for_all": fair_p99 <= 0.1 * free_p99,
        "no_interactive_preempted_by_batch": fair["interactive_preempted_by_batch"] == 0,
    }


_JOB: dict[str, Any] = {}


def _run_arm(arm: Arm) -> ReplayResult:
    return replay(_JOB["nodes"], _JOB["pods"], arm, _JOB["settings"])


def run(
    scenario: Scenario,
    nodes: Sequence[NodeSpec],
    trace: Sequence[TracePod],
    jobs: int = 1,
    arm_names: Sequence[str] | None = None,
    quiet: bool = True,
) -> tuple[dict[str, Any], list[ReplayResult]]:
    """Every arm over the scenario's workload: the JSON document and the raw results."""
    capacity = float(sum(node.gpu_count for node in nodes))
    pods = build_workload(trace, capacity, scenario)
    settings = ReplaySettings(
        horizon_s=scenario.horizon_s,
        teams=tuple(plan.name for plan in scenario.teams),
        weights=tuple(plan.weight for plan in scenario.teams),
        seed=scenario.seed,
    )
    chosen = [arm for arm in arms(scenario, capacity) if arm_names is None or arm.name in arm_names]
    _JOB.update(nodes=list(nodes), pods=pods, settings=settings)
    started = time.perf_counter()
    # Each arm replays four hours of arrivals (minutes on two cores): show them finish.
    progress = partial(tqdm, total=len(chosen), unit="arm", file=sys.stderr, disable=quiet)
    if jobs <= 1 or len(chosen) == 1:
        results = [_run_arm(arm) for arm in progress(chosen, desc="fairness arms")]
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(jobs, len(chosen)), mp_context=context) as pool:
            results = list(progress(pool.map(_run_arm, chosen), desc="fairness arms"))
    window = (scenario.warmup_s, scenario.horizon_s)
    summary = {result.arm: summarize(result, window) for result in results}
    document: dict[str, Any] = {
        "scenario": {
            "nodes": len(nodes),
            "capacity_gpus": capacity,
            "horizon_s": scenario.horizon_s,
            "window_s": list(window),
            "seed": scenario.seed,
            "pods": len(pods),
            "teams": [
                {
                    "name": plan.name,
                    "weight": plan.weight,
                    "pool": plan.pool,
                    "load": plan.load,
                    "start_s": plan.start_s,
                    "burst_every_s": plan.burst_every_s or None,
                    "pods": sum(1 for pod in pods if pod.team == plan.name),
                }
                for plan in scenario.teams
            ],
            "arms": {
                arm.name: {
                    "placement": arm.placement,
                    "quotas": dict(arm.quotas) if arm.quotas else None,
                    "priority_classes": arm.priorities,
                    "fairpack_extender": arm.fairness,
                    "score_weights": dict(arm.policy.weights)
                    if arm.placement == "fairpack"
                    else None,
                }
                for arm in chosen
            },
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
        "arms": summary,
    }
    if {"fairpack", "free-for-all", "hard-quota"} <= summary.keys():
        document["criteria"] = criteria(summary)
    return document, results


def plot(results: Sequence[ReplayResult], path: Path) -> None:
    """Per arm, each team's GPUs (solid) against its deserved share (dashed) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, len(results), figsize=(4.2 * len(results), 3.8), dpi=120, sharey=True, squeeze=False
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, result in zip(axes[0], results, strict=True):
        hours = result.times_s / 3600.0
        for i, team in enumerate(result.teams):
            color = colors[i % len(colors)]
            ax.plot(hours, result.held_gpus[:, i], color=color, linewidth=1.2, label=f"{team} held")
            ax.plot(
                hours,
                result.deserved_gpus[:, i],
                color=color,
                linewidth=1.0,
                linestyle="--",
                label=f"{team} deserved",
            )
        ax.set_title(result.arm, fontsize=10)
        ax.set_xlabel("hours")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("GPUs")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    # The format named, so that a path without a suffix is the file written (not path.png).
    figure.savefig(path, format=Path(path).suffix[1:].lower() or "png")
    plt.close(figure)


def print_table(document: dict[str, Any], out: Any = sys.stdout) -> None:
    columns = (
        ("gpu_utilization", "util"),
        ("max_share_deviation_pp", "dev pp"),
        ("interactive_wait_p99_s", "int p99 s"),
        ("batch_wait_p50_s", "batch p50 s"),
        ("large_pod_wait_p50_s", "8-GPU p50 s"),
        ("preemptions", "preempt"),
        ("interactive_preempted_by_batch", "int by batch"),
    )
    header = f"{'arm':<22}" + "".join(f"{title:>13}" for _, title in columns)
    print(header, file=out)
    print("-" * len(header), file=out)
    for name, entry in document["arms"].items():
        cells = "".join(f"{'-' if entry[key] is None else entry[key]!s:>13}" for key, _ in columns)
        print(f"{name:<22}{cells}", file=out)
    for check, passed in document.get("criteria", {}).items():
        print(f"  {'pass' if passed else 'FAIL'}  {check}", file=out)


def main(args: argparse.Namespace) -> int:
    """``fairpack simulate --scenario fairness``: the built-in fleet and trace unless
    ``--nodes``/``--pods`` name other openb files; the first of ``--seeds``."""
    seeds = str(getattr(args, "seeds", "") or Scenario.seed)
    try:
        seed = int(seeds.split(",")[0].split("-")[0])
        nodes = load_nodes(getattr(args, "nodes", None) or BUILTIN_NODES)
        trace = load_pods(getattr(args, "pods", None) or BUILTIN_PODS)
        scenario = Scenario(seed=seed)
        for plan in scenario.teams:
            _pool(trace, plan)  # a pod list with nothing for a team: say so before the run
    except (ValueError, TraceError) as exc:
        print(f"fairpack simulate: {exc}", file=sys.stderr)
        return 2
    jobs = max(1, int(getattr(args, "jobs", 1) or 1))
    quiet = bool(getattr(args, "quiet", False))
    document, results = run(scenario, nodes, trace, jobs=jobs, quiet=quiet)
    print_table(document)
    if getattr(args, "json", None):
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {args.json}")
    if getattr(args, "plot", None):
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0
