"""``fairpack simulate``: run placement policies through the FGD protocol and report.

    fairpack simulate --policy fgd,bestfit,fairpack --seeds 42-51 --json out.json --plot out.png
    fairpack simulate --pods ../shared/data/alibaba-gpu-2023/openb_pod_list_default.csv:whole
    fairpack simulate --cluster synthetic:nodes=2000,mix=h100x8:0.3,a100x8:0.3,l40sx4:0.2,l4x1:0.2 \
        --workload synthetic:llm-serving --policy fairpack,fgd,bestfit --seeds 42

Runs every (policy, seed) pair on all cores, prints a table (with the FGD
authors' published figures beside ours when ``--reference`` has them) and writes
the JSON the benchmark reports are made from.  Besides the unallocated GPU % at
arrived = 100%, each run reports, at that point, the stranded GPUs, the GPU memory
allocated beyond the pods' minimums and the failed pods by size
(``benchmarks/metrics.py``), and every decision's time (p50/p99 per policy).

``--cluster`` is an openb node list or a ``synthetic:`` fleet, ``--workload`` an
openb pod list or a ``synthetic:`` workload (``benchmarks/synthetic.py``);
``--whole-gpus`` (or a ``:whole`` suffix on the pod list) rounds every GPU request
up to whole GPUs.
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

import numpy as np

from benchmarks.floor import packing_floor_pct
from benchmarks.metrics import SIZE_KEYS, percentiles_ms
from benchmarks.policies import POLICIES
from benchmarks.reference import PUBLISHED_NAMES, load_reference
from benchmarks.simulator import (
    RunResult,
    TraceWorkload,
    WorkloadSource,
    as_workload,
    simulate,
    whole_gpus,
    workload_rng,
)
from benchmarks.synthetic import (
    WORKLOADS,
    SpecError,
    SyntheticWorkload,
    fleet_from_spec,
    is_synthetic,
    parse_fleet_spec,
    parse_workload_spec,
)
from benchmarks.traces import BUILTIN_NODES, BUILTIN_PODS, TraceError, load_nodes, load_pods
from scoring import NodeSpec, PodRequest

WHOLE_SUFFIX = ":whole"

_NODES: list[NodeSpec] = []
_WORKLOAD: WorkloadSource = TraceWorkload(())


class UsageError(ValueError):
    """A command-line value that cannot be used; the message says what to pass."""


DEFAULT_TUNE = 1.3
"""The FGD protocol's workload: pods drawn until they ask for 130% of the GPUs."""
MAX_TUNE = 10.0
"""The largest ``--tune``: the workload grows with it, and past a full cluster it adds
only pods that fail (the FGD protocol's 1.3 already overfills by 30%)."""


MAX_SEEDS = 10_000
"""The most seeds one run takes (a seed is a whole simulation, seconds each): a typo such
as ``0-100000000`` is refused rather than built into a list and run for months."""


def parse_seeds(text: str) -> list[int]:
    """``42-51``, ``42,43,50`` or a mix (``42-45,50``)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = part.split("-", 1)
                first, last = int(low), int(high)
            else:
                first = last = int(part)
        except ValueError:
            raise UsageError(f"--seeds: {part!r} is not a seed or a range like 42-51") from None
        if min(first, last) < 0:
            raise UsageError(f"--seeds: {part!r}: seeds are whole numbers from 0")
        if last < first:
            raise UsageError(f"--seeds: {part!r} runs backwards; did you mean {last}-{first}?")
        if len(seeds) + last - first >= MAX_SEEDS:
            raise UsageError(
                f"--seeds: {text!r} names more than {MAX_SEEDS:,} seeds, a run of days;"
                " the reports use 10 (42-51)"
            )
        seeds.extend(range(first, last + 1))
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


def load_cluster(source: str) -> tuple[list[NodeSpec], str]:
    """The nodes of an openb node list or a ``synthetic:`` fleet, and the source as reported."""
    if is_synthetic(source):
        return fleet_from_spec(source), str(parse_fleet_spec(source))
    return load_nodes(source), source


def load_workload(source: str, whole: bool = False) -> tuple[WorkloadSource, str]:
    """An openb pod list (``:whole`` rounds it to whole GPUs) or a ``synthetic:`` workload.

    Returns the workload and its name in reports: the pod list's stem (with
    ``:whole``), or the canonical synthetic spec.
    """
    if is_synthetic(source):
        # Synthetic pods take whole GPUs already: --whole-gpus changes nothing.
        spec = parse_workload_spec(source)
        return SyntheticWorkload(spec), str(spec)
    if source.endswith(WHOLE_SUFFIX):
        source, whole = source.removesuffix(WHOLE_SUFFIX), True
    trace = [pod.request for pod in load_pods(source)]
    name = Path(source.removeprefix("builtin:")).stem
    if whole:
        return TraceWorkload(whole_gpus(trace)), name + WHOLE_SUFFIX
    return TraceWorkload(trace), name


def _run(job: tuple[str, int, float]) -> RunResult:
    policy, seed, tune = job
    return simulate(policy, _NODES, _WORKLOAD, seed, tune)


def run_all(
    nodes: Sequence[NodeSpec],
    trace: Sequence[PodRequest] | WorkloadSource,
    policies: Sequence[str],
    seeds: Sequence[int],
    tune: float,
    jobs: int,
    progress: bool = True,
) -> list[RunResult]:
    """Every (policy, seed) pair, on ``jobs`` processes, in a stable order."""
    global _NODES, _WORKLOAD
    _NODES, _WORKLOAD = list(nodes), as_workload(trace)
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
        # NaN when a seed has no arrival near 100% (a cluster of few GPUs); pstdev
        # cannot take NaN.
        measured = not any(math.isnan(v) for v in values)
        entry: dict[str, Any] = {
            "unallocated_pct_at_100_mean": round(statistics.fmean(values), 3),
            "unallocated_pct_at_100_std": round(statistics.pstdev(values), 3)
            if measured
            else math.nan,
            "failed_pods_mean": round(statistics.fmean(r.failed_pods for r in runs), 1),
            "seconds_per_seed_mean": round(statistics.fmean(r.elapsed_s for r in runs), 3),
            **_metrics_summary(runs),
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


def _metrics_summary(runs: Sequence[RunResult]) -> dict[str, Any]:
    """Means of the snapshot metrics and pooled decision-time percentiles of one policy."""
    measured = [r.metrics for r in runs if r.metrics is not None]
    entry: dict[str, Any] = {}
    if measured:
        keys = dict.fromkeys(k for m in measured for k in m.failed_pods_by_gpus)
        entry |= {
            "stranded_gpus_mean": round(statistics.fmean(m.stranded_gpus for m in measured), 1),
            "gpu_memory_waste_gib_mean": round(
                statistics.fmean(m.gpu_memory_waste_gib for m in measured), 1
            ),
            "gpu_memory_waste_pct_mean": round(
                statistics.fmean(m.gpu_memory_waste_pct for m in measured), 2
            ),
            "gpu_memory_waste_half_load_gib_mean": round(
                statistics.fmean(m.gpu_memory_waste_half_load_gib for m in measured), 1
            ),
            "failed_pods_at_half_load_mean": round(
                statistics.fmean(m.failed_pods_at_half_load for m in measured), 1
            ),
            "failed_pods_by_gpus_mean": {
                key: round(statistics.fmean(m.failed_pods_by_gpus.get(key, 0) for m in measured), 1)
                for key in keys
            },
        }
    p50, p99 = percentiles_ms(np.concatenate([r.decision_s for r in runs]))
    return entry | {"decision_ms_p50": p50, "decision_ms_p99": p99}


def _failed_cell(failed: dict[str, float]) -> str:
    return " ".join(f"{key}:{failed[key]:g}" for key in failed if failed[key] or key in SIZE_KEYS)


def print_table(report: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout  # the current one, not the one at import
    summary = report["summary"]
    has_reference = any("published_unallocated_pct_at_100_mean" in e for e in summary.values())
    header = (
        f"{'policy':<12} {'unallocated % @100':>18} {'std':>6} {'failed pods':>11}"
        f" {'stranded GPUs':>13} {'mem waste GiB':>13} {'waste %':>7} {'@50% GiB':>9}"
        f" {'s/seed':>7} {'p50 ms':>7} {'p99 ms':>7}"
    )
    if has_reference:
        header += f" {'published':>9} {'diff':>6}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for policy, entry in summary.items():
        line = (
            f"{policy:<12} {entry['unallocated_pct_at_100_mean']:>18.2f}"
            f" {entry['unallocated_pct_at_100_std']:>6.2f} {entry['failed_pods_mean']:>11.1f}"
            f" {entry.get('stranded_gpus_mean', math.nan):>13.1f}"
            f" {entry.get('gpu_memory_waste_gib_mean', math.nan):>13.1f}"
            f" {entry.get('gpu_memory_waste_pct_mean', math.nan):>7.2f}"
            f" {entry.get('gpu_memory_waste_half_load_gib_mean', math.nan):>9.1f}"
            f" {entry['seconds_per_seed_mean']:>7.2f}"
            f" {entry['decision_ms_p50']:>7.3f} {entry['decision_ms_p99']:>7.3f}"
        )
        if "published_unallocated_pct_at_100_mean" in entry:
            line += (
                f" {entry['published_unallocated_pct_at_100_mean']:>9.2f}"
                f" {entry['difference_from_published_pp']:>+6.2f}"
            )
        print(line, file=out)
    floor = report["floor"]["unallocated_pct_at_100_mean"]
    print(f"{'floor (FFD)':<12} {floor:>18.2f}", file=out)
    print(
        "@50% GiB: GPU memory waste of the pods placed when arrivals reached half the capacity",
        file=out,
    )
    print("\nfailed pods by GPUs at arrived = 100% (mean per seed)", file=out)
    for policy, entry in summary.items():
        print(f"{policy:<12} {_failed_cell(entry.get('failed_pods_by_gpus_mean', {}))}", file=out)


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
    # The format named, so that a path without a suffix is the file written (not path.png).
    figure.savefig(path, format=Path(path).suffix[1:].lower() or "png")
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
    whole: bool = False,
) -> tuple[dict[str, Any], list[RunResult]]:
    """Simulate and summarise one trace: the JSON document ``--json`` writes.

    ``nodes_source`` and ``pods_source`` are openb CSVs or ``synthetic:`` specs;
    ``whole`` rounds a trace's GPU requests up to whole GPUs.
    """
    nodes, nodes_label = load_cluster(nodes_source)
    source, workload = load_workload(pods_source, whole)
    capacity = sum(node.gpu_count for node in nodes) * 1000
    if capacity == 0:
        raise UsageError(f"{nodes_label}: the cluster has no GPUs")
    # Read before the runs: a mistyped path must not cost the whole simulation first.
    reference = load_reference(reference_path, workload) if reference_path else None
    started = time.perf_counter()
    results = run_all(nodes, source, policies, seeds, tune, jobs, progress)
    wall_s = time.perf_counter() - started
    floors = {
        seed: packing_floor_pct(source.arrivals(capacity, tune, workload_rng(seed)), capacity)
        for seed in seeds
    }
    document = {
        "trace": {"nodes": nodes_label, "pods": pods_source, "workload": workload},
        "protocol": {"tune": tune, "seeds": list(seeds)},
        "wall_seconds": round(wall_s, 2),
        "jobs": jobs,
        "results": [_run_json(r) for r in results],
        **summarize(results, floors, reference),
    }
    return document, results


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json_ready(value: Any) -> Any:
    """``value`` with NaN as null: ``json.dumps`` would write NaN, which is not JSON."""
    if isinstance(value, float):
        return _or_none(value)
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


def unmeasured_seeds(results: Sequence[RunResult]) -> list[int]:
    """Seeds whose runs have no allocation at arrived = 100%: no arrival came near it."""
    seeds = (r.seed for r in results if math.isnan(r.unallocated_pct_at_100))
    return sorted(set(seeds))


def _run_json(result: RunResult) -> dict[str, Any]:
    p50, p99 = percentiles_ms(result.decision_s)
    return {
        "policy": result.policy,
        "seed": result.seed,
        "unallocated_pct_at_100": _or_none(result.unallocated_pct_at_100),
        "failed_pods": result.failed_pods,
        "pods": result.pods,
        "seconds": round(result.elapsed_s, 3),
        **(result.metrics.as_json() if result.metrics is not None else {}),
        "decision_ms_p50": p50,
        "decision_ms_p99": p99,
        "allocated_pct_by_arrived": {
            str(k): (None if math.isnan(v) else v)
            for k, v in result.allocated_pct_by_arrived.items()
        },
    }


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "simulate",
        help="replay a trace through placement policies (FGD paper protocol)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--cluster",
        help="openb node list CSV, or synthetic:nodes=N,mix=TYPE:WEIGHT,...[,spot=S][,seed=K]",
    )
    cluster.add_argument("--nodes", help="openb node list CSV (default: built-in)")
    workload = parser.add_mutually_exclusive_group()
    workload.add_argument(
        "--workload",
        help="openb pod list CSV, or synthetic:NAME[,interactive=SHARE][,models=any]"
        f" ({', '.join(WORKLOADS)})",
    )
    workload.add_argument(
        "--pods",
        help="openb pod list CSV, PATH:whole for whole GPUs (default: built-in default trace)",
    )
    parser.add_argument(
        "--whole-gpus",
        action="store_true",
        help="round every GPU request up to whole GPUs (a sharing pod takes one GPU)",
    )
    parser.add_argument(
        "--policy", default=",".join(POLICIES), help=f"comma-separated, from {','.join(POLICIES)}"
    )
    parser.add_argument("--seeds", default="42-51", help="e.g. 42-51 or 42,45 (default 42-51)")
    parser.add_argument(
        "--tune",
        type=float,
        default=DEFAULT_TUNE,
        help=f"workload as a multiple of GPU capacity (default {DEFAULT_TUNE})",
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
    parser.add_argument(
        "--scenario",
        choices=("fairness",),
        help="instead of the FGD protocol: teams contending over time (benchmarks/fairness.py)",
    )
    parser.set_defaults(run=main)


def _refuse_outside_fairness(args: argparse.Namespace) -> None:
    """The fairness scenario has its own teams, workload and arms: say so rather than
    ignore the options that shape an FGD-protocol run."""
    ignored = [
        flag
        for flag, given in (
            ("--cluster", args.cluster),
            ("--workload", args.workload),
            ("--whole-gpus", args.whole_gpus),
            ("--policy", args.policy != ",".join(POLICIES)),
            ("--tune", args.tune != DEFAULT_TUNE),
            ("--reference", args.reference),
        )
        if given
    ]
    if ignored:
        raise UsageError(
            f"--scenario fairness takes --nodes, --pods, --seeds, --jobs, --json and --plot;"
            f" drop {', '.join(ignored)}"
        )


def main(args: argparse.Namespace) -> int:
    try:
        seeds = parse_seeds(args.seeds)
        if args.scenario == "fairness":
            from benchmarks import fairness

            _refuse_outside_fairness(args)
            return fairness.main(args)
        policies = parse_policies(args.policy)
        if not args.tune <= MAX_TUNE:  # NaN and inf too
            raise UsageError(
                f"--tune must be at most {MAX_TUNE:g} (got {args.tune}): the report ends at"
                " 130% of capacity, and every pod beyond the cluster's fill only fails"
            )
        if not args.tune >= 1:
            raise UsageError(
                f"--tune must be at least 1 (got {args.tune}): the report measures the cluster"
                " when the arrived GPU requests reach its capacity, which a smaller workload"
                " never does"
            )
        if args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        document, results = report_for(
            args.cluster or args.nodes or BUILTIN_NODES,
            args.workload or args.pods or BUILTIN_PODS,
            policies,
            seeds,
            args.tune,
            args.jobs,
            args.reference,
            progress=not args.quiet,
            whole=args.whole_gpus,
        )
    except (UsageError, TraceError, SpecError) as exc:
        print(f"fairpack simulate: {exc}", file=sys.stderr)
        return 2
    print_table(document)
    unmeasured = unmeasured_seeds(results)
    if unmeasured:
        print(
            f"fairpack simulate: seeds {','.join(map(str, unmeasured))}: no arrival came within"
            " 1% of the cluster's GPU capacity, so 'unallocated % @100' is nan; give a cluster"
            " with more GPUs",
            file=sys.stderr,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_ready(document), indent=1) + "\n")
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


__all__ = [
    "PUBLISHED_NAMES",
    "add_parser",
    "load_cluster",
    "load_workload",
    "main",
    "parse_policies",
    "parse_seeds",
    "report_for",
]
