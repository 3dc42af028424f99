"""``fairpack simulate``: run placement policies through the FGD protocol and report.

    fairpack simulate --policy fgd,bestfit,fairpack --seeds 42-51 --json out.json --plot out.png

Runs every (policy, seed) pair on all cores, prints a table (with the FGD
authors' published figures beside ours when ``--reference`` has them) and writes
the JSON the benchmark reports are made from.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from benchmarks.floor import packing_floor_pct
from benchmarks.policies import POLICIES
from benchmarks.reference import PUBLISHED_NAMES, load_reference
from benchmarks.simulator import RunResult, build_workload, simulate, workload_rng
from benchmarks.traces import BUILTIN_NODES, BUILTIN_PODS, TraceError, load_nodes, load_pods
from scoring import NodeSpec, PodRequest

_NODES: list[NodeSpec] = []
_TRACE: list[PodRequest] = []


class UsageError(ValueError):
    """A command-line value that cannot be used; the message says what to pass."""


def parse_seeds(text: str) -> list[int]:
    """``42-51``, ``42,43,50`` or a mix (``42-45,50``)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = part.split("-", 1)
                seeds.extend(range(int(low), int(high) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise UsageError(f"--seeds: {part!r} is not a seed or a range like 42-51") from None
    if not seeds:
        raise UsageError("--seeds: give at least one seed")
    return sorted(set(seeds))


def parse_policies(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICIES]
    if unknown or not names:
        raise UsageError(
            f"--policy: unknown {', '.join(unknown) or '(none given)'};"
            f" choose from {','.join(POLICIES)}"
        )
    return names


def _run(job: tuple[str, int, float]) -> RunResult:
    policy, seed, tune = job
    return simulate(policy, _NODES, _TRACE, seed, tune)


def run_all(
    nodes: Sequence[NodeSpec],
    trace: Sequence[PodRequest],
    policies: Sequence[str],
    seeds: Sequence[int],
    tune: float,
    jobs: int,
    progress: bool = True,
) -> list[RunResult]:
    """Every (policy, seed) pair, on ``jobs`` processes, in a stable order."""
    global _NODES, _TRACE
    _NODES, _TRACE = list(nodes), list(trace)
    work = [(policy, seed, tune) for policy in policies for seed in seeds]
    from tqdm import tqdm

    bar = tqdm(
        total=len(work), desc="simulating", unit="run", disable=not progress, file=sys.stderr
    )
    results: list[RunResult] = []
    if jobs <= 1:
        for job in work:
            results.append(_run(job))
            bar.update()
    else:
        # Fork, so that workers inherit the loaded trace instead of re-reading it.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(_run, job) for job in work]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    order = {(policy, seed): i for i, (policy, seed, _) in enumerate(work)}
    return sorted(results, key=lambda r: order[(r.policy, r.seed)])


def summarize(
    results: Sequence[RunResult],
    floors: dict[int, float],
    reference: dict[str, dict[int, float]] | None,
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for policy in dict.fromkeys(r.policy for r in results):
        runs = [r for r in results if r.policy == policy]
        values = [r.unallocated_pct_at_100 for r in runs]
        entry: dict[str, Any] = {
            "unallocated_pct_at_100_mean": round(statistics.fmean(values), 3),
            "unallocated_pct_at_100_std": round(statistics.pstdev(values), 3),
            "failed_pods_mean": round(statistics.fmean(r.failed_pods for r in runs), 1),
            "seconds_per_seed_mean": round(statistics.fmean(r.elapsed_s for r in runs), 3),
        }
        # The authors' figures for the seeds we ran, so both means cover the same workloads.
        by_seed = (reference or {}).get(policy, {})
        published = [by_seed[r.seed] for r in runs if r.seed in by_seed]
        if len(published) == len(runs):
            entry["published_unallocated_pct_at_100_mean"] = round(statistics.fmean(published), 3)
            entry["difference_from_published_pp"] = round(
                entry["unallocated_pct_at_100_mean"]
                - entry["published_unallocated_pct_at_100_mean"],
                3,
            )
        summary[policy] = entry
    floor_values = list(floors.values())
    return {
        "summary": summary,
        "floor": {
            "unallocated_pct_at_100_mean": round(statistics.fmean(floor_values), 3),
            "by_seed": {str(seed): value for seed, value in floors.items()},
        },
    }


def print_table(report: dict[str, Any], out: Any = sys.stdout) -> None:
    summary = report["summary"]
    has_reference = any("published_unallocated_pct_at_100_mean" in e for e in summary.values())
    header = (
        f"{'policy':<12} {'unallocated % @100':>18} {'std':>6} {'failed pods':>11} {'s/seed':>7}"
    )
    if has_reference:
        header += f" {'published':>9} {'diff':>6}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for policy, entry in summary.items():
        line = (
            f"{policy:<12} {entry['unallocated_pct_at_100_mean']:>18.2f}"
            f" {entry['unallocated_pct_at_100_std']:>6.2f} {entry['failed_pods_mean']:>11.1f}"
            f" {entry['seconds_per_seed_mean']:>7.2f}"
        )
        if "published_unallocated_pct_at_100_mean" in entry:
            line += (
                f" {entry['published_unallocated_pct_at_100_mean']:>9.2f}"
                f" {entry['difference_from_published_pp']:>+6.2f}"
            )
        print(line, file=out)
    floor = report["floor"]["unallocated_pct_at_100_mean"]
    print(f"{'floor (FFD)':<12} {floor:>18.2f}", file=out)


def plot(results: Sequence[RunResult], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for policy in dict.fromkeys(r.policy for r in results):
        runs = [r for r in results if r.policy == policy]
        arrived = sorted(runs[0].allocated_pct_by_arrived)
        mean = [statistics.fmean(r.allocated_pct_by_arrived[k] for r in runs) for k in arrived]
        axes.plot(arrived, mean, label=policy, linewidth=1.4)
    axes.plot([0, 130], [0, 130], color="grey", linewidth=0.6, linestyle=":")
    axes.set_xlim(0, 130)
    axes.set_ylim(0, 100)
    axes.axvline(100, color="grey", linewidth=0.6)
    axes.set_xlabel("arrived workload (% of cluster GPU capacity)")
    axes.set_ylabel("allocated GPUs (%)")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def report_for(
    nodes_source: str,
    pods_source: str,
    policies: Sequence[str],
    seeds: Sequence[int],
    tune: float,
    jobs: int,
    reference_path: str | None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[RunResult]]:
    """Simulate and summarise one trace: the JSON document ``--json`` writes."""
    nodes = load_nodes(nodes_source)
    trace = [pod.request for pod in load_pods(pods_source)]
    capacity = sum(node.gpu_count for node in nodes) * 1000
    started = time.perf_counter()
    results = run_all(nodes, trace, policies, seeds, tune, jobs, progress)
    wall_s = time.perf_counter() - started
    floors = {
        seed: packing_floor_pct(build_workload(trace, capacity, tune, workload_rng(seed)), capacity)
        for seed in seeds
    }
    workload = Path(pods_source.removeprefix("builtin:")).stem
    reference = load_reference(reference_path, workload) if reference_path else None
    document = {
        "trace": {"nodes": nodes_source, "pods": pods_source, "workload": workload},
        "protocol": {"tune": tune, "seeds": list(seeds)},
        "wall_seconds": round(wall_s, 2),
        "jobs": jobs,
        "results": [
            {
                "policy": r.policy,
                "seed": r.seed,
                "unallocated_pct_at_100": r.unallocated_pct_at_100,
                "failed_pods": r.failed_pods,
                "pods": r.pods,
                "seconds": round(r.elapsed_s, 3),
                "allocated_pct_by_arrived": {
                    str(k): (None if math.isnan(v) else v)
                    for k, v in r.allocated_pct_by_arrived.items()
                },
            }
            for r in results
        ],
        **summarize(results, floors, reference),
    }
    return document, results


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "simulate",
        help="replay a trace through placement policies (FGD paper protocol)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--nodes", default=BUILTIN_NODES, help="openb node list CSV (default: built-in)"
    )
    parser.add_argument(
        "--pods", default=BUILTIN_PODS, help="openb pod list CSV (default: built-in default trace)"
    )
    parser.add_argument(
        "--policy", default=",".join(POLICIES), help=f"comma-separated, from {','.join(POLICIES)}"
    )
    parser.add_argument("--seeds", default="42-51", help="e.g. 42-51 or 42,45 (default 42-51)")
    parser.add_argument(
        "--tune", type=float, default=1.3, help="workload as a multiple of GPU capacity"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="the FGD authors' allocation_by_arrived.csv, to print their figures beside ours",
    )
    parser.add_argument("--json", type=Path, help="write results and summary here")
    parser.add_argument("--plot", type=Path, help="write allocated %% vs arrived %% here (PNG)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    try:
        policies = parse_policies(args.policy)
        seeds = parse_seeds(args.seeds)
        if not args.tune > 0:
            raise UsageError("--tune must be positive")
        if args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        document, results = report_for(
            args.nodes,
            args.pods,
            policies,
            seeds,
            args.tune,
            args.jobs,
            args.reference,
            progress=not args.quiet,
        )
    except (UsageError, TraceError) as exc:
        print(f"fairpack simulate: {exc}", file=sys.stderr)
        return 2
    print_table(document)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(
            results,
            f"{document['trace']['workload']}: allocated GPUs vs arrived workload",
            args.plot,
        )
        print(f"wrote {args.plot}")
    return 0


__all__ = ["PUBLISHED_NAMES", "add_parser", "main", "parse_policies", "parse_seeds", "report_for"]
